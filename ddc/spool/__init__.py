"""The egress's disk spool: frames wait on disk while the sink cannot keep up.

A destination that is down or slow (a Kafka cluster restarting, a full disk
behind a file sink) makes the sink block. The in-memory stage buffer then fills
within seconds, and the egress, which cannot slow the sender down, would drop.
With a spool, frames that do not fit in memory are appended to segment files
instead, and the sink reads them back, in order, once it has room again. A full
spool drops the newest frames, counted and logged; for Kafka the missing
offsets are then reported like any other gap.

Order is kept by one rule: while the spool holds anything, new frames go to the
spool, never to memory, and the sink empties memory before it reads the spool.
The spool survives a crash or restart of the egress: segment files are only
deleted once read, and the position of the first frame not yet delivered is
saved (by an atomic rename) each time the sink has written a batch, so a
restart replays at most one batch (which Kafka's deduplication drops). The
files are not fsync'd: a crash of the process loses nothing, a power cut may
lose the last frames written, which are then reported as missing.

As a write-ahead log (`spool.write_ahead`, the default for a Kafka sink), every
frame is appended before the sink sees it, and memory only spares reading it
back. A frame is released once the sink says it is delivered: for Kafka, once
librdkafka has reported on every record produced from it, not when write()
merely queued them. An egress killed with records in its buffer or in
librdkafka's queue then replays them at the next start, and the destination's
deduplication drops what had been delivered after all.

No library was used: the queue needs exactly this format (length, frame id and
CRC per entry, whole-segment deletion) and is a hundred lines; persistent-queue
packages store pickles or SQLite rows and add a copy per frame.
"""

from ddc.spool.buffer import SpooledBuffer
from ddc.spool.disk import ENTRY, DiskSpool, LogPosition, SpooledFrame

__all__ = ["ENTRY", "DiskSpool", "LogPosition", "SpooledBuffer", "SpooledFrame"]
