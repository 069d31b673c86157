"""What every source and sink provides to a link.

Records are (metadata: bytes, value: bytes) pairs. The metadata format belongs to
the handler type, which lets the transport stay ignorant of what it carries.
"""

import abc
import threading
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from ddc._core.ring import RecordRing


class RecordView(NamedTuple):
    """What a filter may know about a record beyond its value; data is False for control records (Kafka
    positions and placeholders), which filters never judge."""

    data: bool
    topic: str | None = None
    headers: tuple = ()


PLAIN_DATA = RecordView(True)


class RecordDescription:
    """How a handler's records look to filters and log lines; the defaults suit opaque payloads."""

    def placeholder(self, record, reason: str):
        """What crosses (or is written) instead of a record a filter or a size limit dropped ("filtered" or
        "too_large"), so the egress can count it instead of reporting it missing; None: nothing."""
        return None

    def coordinates(self, metadata: bytes) -> dict:
        """Log fields that say where a record came from (its source coordinates)."""
        return {}

    def describe(self, metadata: bytes) -> RecordView:
        return PLAIN_DATA


class Source(RecordDescription, abc.ABC):
    """Produces records on the ingress; runs in a thread of its own until stopping is set."""

    #: What the link's buffer does when full, unless the config says otherwise.
    default_when_full = "drop"
    #: Whether the source's data can wait while the link cannot send (Kafka, a file): then a frame the kernel
    #: refused is sent again and nothing after it acknowledged; otherwise (UDP) the loss is counted.
    can_wait = False

    def __init__(self, link_name: str, config):
        self.link_name = link_name
        self.config = config

    def open(self) -> None:
        """Acquires sockets or connections; raises OSError with a clear message if it cannot."""

    @abc.abstractmethod
    def run(self, output: "RecordRing", stopping: threading.Event) -> None:
        """Puts records into the link's ring until stopping is set, then returns: put_many() for records made
        in Python, reserve()/commit(), or in C (put_entries, ddc/_core/ring.pxd), to write them in place."""

    def close(self) -> None:
        """Releases what open acquired."""

    #: Whether the link (and, once all links have, the proxy) stops when run() returns by itself.
    stops_link_at_end = False

    def healthy(self) -> bool:
        """Whether the source can take data in; sent across the diode in every heartbeat."""
        return True

    def acknowledge(self, count: int) -> None:
        """The link has sent (or settled) the next `count` records it took from the buffer, in order.

        Sources that keep data at rest (Kafka) commit their position from this."""

    def counters(self) -> dict:
        return {}


class Sink(RecordDescription, abc.ABC):
    """Delivers records on the egress."""

    def __init__(self, link_name: str, config):
        self.link_name = link_name
        self.config = config

    def open(self) -> None:
        """Acquires sockets or connections; raises OSError with a clear message if it cannot."""

    #: Whether the link stops once the sender has shut down (one-shot transfers).
    stops_after_sender_shutdown = False

    #: Whether write() takes values as read-only memoryviews into the received frame (a sink that only writes
    #: them out): the egress then spares a copy of every value, unless filters will read them.
    takes_value_views = False

    #: Whether the sink has write_batch(): it takes a whole record batch and makes no Python object per record.
    #: The egress uses it when no filter is configured.
    takes_batches = False

    @abc.abstractmethod
    def write(self, records: list) -> None:
        """Delivers a batch of records in order."""

    def write_batch(self, batch) -> int:
        """Delivers every record of a record batch (ddc/_core/records.pyx) in order; returns how many. Raises
        ValueError, having delivered nothing, if the batch is malformed."""
        raise NotImplementedError

    def idle(self) -> None:
        """No records came for a moment: serve what asynchronous delivery has pending (reports, errors)."""

    #: Whether delivery is confirmed after write() returns (Kafka's delivery reports). With a write-ahead log the
    #: egress then calls track_deliveries() before open(), start_frame() before writing each frame's records, and
    #: releases frames from the log up to delivered(); otherwise a frame is delivered once written.
    confirms_later = False

    def track_deliveries(self) -> None:
        """From now on, follow each frame's records until their delivery is confirmed."""

    def start_frame(self, position) -> None:
        """The records written next come from the frame the write-ahead log holds at position (None: it does
        not hold it)."""

    def delivered(self):
        """The log position of the newest frame that is delivered, with every frame started before it; None if
        no frame was completed since the last call."""
        return None

    def sender_restarted(self) -> None:
        """The records that follow come from a new ingress process (a new link session)."""

    def close(self) -> None:
        """Flushes and releases what open acquired."""

    def counters(self) -> dict:
        return {}
