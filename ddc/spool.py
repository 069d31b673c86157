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

import errno
import logging
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import NamedTuple

from ddc.stage_buffer import EVERYTHING, StageBuffer

log = logging.getLogger("ddc.spool")

ENTRY = struct.Struct("<IQI")  # frame length, frame id, CRC-32 of the frame
SEGMENT_BYTES = 64 << 20
SEGMENTS_AT_LEAST = 8  # a small spool still has several segments, so released ones can be deleted
SEGMENT_SUFFIX = ".spool"
QUEUE_FILE = "queue"
OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


class SpooledFrame(bytes):
    """A frame read back from disk: its bytes, the frame id it arrived with and where the log holds it."""

    frame_id: int = 0
    log_position = None


class LogPosition(NamedTuple):
    """Where the write-ahead log holds a frame: its segment, where its entry starts and ends, and its place in the
    log since the spool was opened (frames read back at the start come first)."""

    segment: int
    start: int
    end: int
    ordinal: int


def _segment_name(number: int) -> str:
    return f"{number:016d}{SEGMENT_SUFFIX}"


class DiskSpool:
    """A bounded FIFO of frames in segment files under one directory; not thread-safe (SpooledBuffer locks).

    The file `queue` lists the segments in reading order, each with the offset of its first unread frame.
    Order is usually the segments' numbers, except after save_before_stop(): frames that were still in memory at
    shutdown are older than the spool's and go first."""

    def __init__(self, directory: str | os.PathLike, max_bytes: int, segment_bytes: int = SEGMENT_BYTES):
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise OSError(f"spool directory {str(self.directory)!r} is not writable ({error.strerror}); "
                          "create it for the user DDC runs as, or set spool.path elsewhere") from None
        self.max_bytes = max_bytes
        self.segment_bytes = min(segment_bytes, max(max_bytes // SEGMENTS_AT_LEAST, 64 << 10))
        self.frames = 0  # not yet read; as a write-ahead log, not yet released
        self.frames_corrupt = 0
        self.disk_bytes = 0
        self.queue: list[list[int]] = []  # [segment number, offset of its first unread frame], reading order
        self._read_index = 0  # the queue entry being read; those before it are read, not yet settled
        self._writer: int | None = None  # file descriptor of the segment being appended to
        self._writer_number = 0
        self._writer_size = 0
        self._reader = None
        self._log_reader = None  # the write-ahead log's reader, apart from read()'s
        self._log_reader_number = 0
        self.save_error: OSError | None = None
        self._load()
        # Ordinals of the write-ahead log: frames appended and released since the spool was opened, loaded included.
        self._appended, self._released = self.frames, 0

    # ---- state on disk ----

    def _path(self, number: int) -> Path:
        return self.directory / _segment_name(number)

    def _load(self) -> None:
        numbers = sorted(int(path.name[:-len(SEGMENT_SUFFIX)]) for path in self.directory.glob("*" + SEGMENT_SUFFIX)
                         if path.name[:-len(SEGMENT_SUFFIX)].isdigit())
        self._next_number = numbers[-1] + 1 if numbers else 1
        try:
            listed = [[int(field) for field in line.split()] for line in
                      (self.directory / QUEUE_FILE).read_text().splitlines() if line.strip()]
        except (OSError, ValueError):
            listed = [[number, 0] for number in numbers]
        self.queue = [entry for entry in listed if len(entry) == 2 and entry[0] in numbers]
        queued = {number for number, _ in self.queue}
        for number in numbers:
            if number not in queued:
                self._path(number).unlink()  # read and delivered; the egress stopped before deleting it
        for number, _ in self.queue:
            self.disk_bytes += self._path(number).stat().st_size
        for number, offset in self.queue:
            self.frames += self._count_and_repair(number, offset)

    def _count_and_repair(self, number: int, offset: int) -> int:
        """Counts a segment's unread frames and cuts off a torn last entry (a crash while writing it)."""
        path = self._path(number)
        frames, good = 0, offset
        with open(path, "rb") as segment:
            segment.seek(offset)
            while True:
                header = segment.read(ENTRY.size)
                if len(header) < ENTRY.size:
                    break
                length, _, _ = ENTRY.unpack(header)
                if len(segment.read(length)) < length:
                    break
                good += ENTRY.size + length
                frames += 1
        size = path.stat().st_size
        if good < size:
            log.warning(f"spool segment {path} ends in a partly written frame (the egress stopped while writing "
                        "it); it is cut off and its records are reported missing")
            self.disk_bytes -= size - good
            os.truncate(path, good)
        return frames

    def _save_queue(self) -> None:
        temporary = self.directory / (QUEUE_FILE + ".new")
        temporary.write_text("".join(f"{number} {offset}\n" for number, offset in self.queue))
        os.replace(temporary, self.directory / QUEUE_FILE)

    # ---- writing ----

    def has_room(self, length: int) -> bool:
        return self.disk_bytes + ENTRY.size + length <= self.max_bytes

    def append(self, frame, frame_id: int) -> LogPosition:
        """Writes straight to the file (no user-space buffer, so a killed process loses nothing); on an
        error, such as a full disk, the segment is left as it was and OSError raised."""
        if self._writer is None or self._writer_size + ENTRY.size + len(frame) > self.segment_bytes:
            number = self._new_segment(at_front=False)
            try:
                self._open_writer(number)
            except OSError:
                self._writer = None
                self.queue.remove([number, 0])
                raise
        start = self._writer_size
        self._writer_size = self._write(self._writer, start, frame, frame_id)
        self._appended += 1
        return LogPosition(self._writer_number, start, self._writer_size, self._appended - 1)

    def save_before_stop(self, frames) -> None:
        """Puts frames older than everything spooled (the ones still in memory at shutdown) in front of it,
        in a new segment, and closes the spool."""
        if frames:
            segment = os.open(self._path(self._new_segment(at_front=True)), OPEN_FLAGS, 0o600)
            try:
                size = 0
                for frame in frames:
                    size = self._write(segment, size, frame, frame.frame_id)
            finally:
                os.close(segment)
        self.close()

    def _write(self, segment: int, size: int, frame, frame_id: int) -> int:
        """Appends one entry to the segment of that size; returns its new size."""
        entry = ENTRY.size + len(frame)
        try:
            if os.writev(segment, [ENTRY.pack(len(frame), frame_id, zlib.crc32(frame)), frame]) != entry:
                raise OSError(errno.ENOSPC, "short write")
        except OSError:
            os.ftruncate(segment, size)
            raise
        self.disk_bytes += entry
        self.frames += 1
        return size + entry

    def _new_segment(self, at_front: bool) -> int:
        number, self._next_number = self._next_number, self._next_number + 1
        entry = [number, 0]
        if at_front:
            self.queue.insert(0, entry)
        else:
            self.queue.append(entry)
        try:
            self._save_queue()  # before the file exists: a segment on disk but not queued is deleted at start
        except OSError:
            self.queue.remove(entry)
            raise
        return number

    def _open_writer(self, number: int) -> None:
        if self._writer is not None:
            os.close(self._writer)
            self._writer = None
        self._writer = os.open(self._path(number), OPEN_FLAGS, 0o600)
        self._writer_number = number
        self._writer_size = 0

    # ---- reading ----

    def read(self, max_bytes: int) -> list:
        """The oldest frames, up to max_bytes (at least one if any); they stay on disk until settle()."""
        taken, taken_bytes = [], 0
        while self.frames and (not taken or taken_bytes < max_bytes):
            frame = self._read_one()
            if frame is None:
                continue
            taken.append(frame)
            taken_bytes += len(frame)
        return taken

    def _read_one(self) -> SpooledFrame | None:
        if self._reader is None:
            number, offset = self.queue[self._read_index]
            self._reader = open(self._path(number), "rb")
            self._reader.seek(offset)
        header = self._reader.read(ENTRY.size)
        if len(header) < ENTRY.size:
            self._reader.close()
            self._reader = None
            if self._read_index + 1 < len(self.queue):
                self._read_index += 1
            else:
                self.frames = 0  # the count disagreed with the files; what is on disk wins
            return None
        self.frames -= 1
        return self._entry(self._reader, header)

    def _entry(self, reader, header: bytes) -> SpooledFrame | None:
        """The frame after its entry header, or None (counted) if it fails its checksum."""
        length, frame_id, checksum = ENTRY.unpack(header)
        data = reader.read(length)
        if len(data) < length or zlib.crc32(data) != checksum:
            self.frames_corrupt += 1
            log.error(f"spool segment {reader.name}: a frame failed its checksum and was dropped; its "
                      "records are reported missing", extra={"fields": {"frame_id": frame_id}})
            return None
        frame = SpooledFrame(data)
        frame.frame_id = frame_id
        return frame

    def settle(self) -> None:
        """What was read so far is delivered: the segments read to the end are deleted, the queue saved."""
        finished = [number for number, _ in self.queue[:self._read_index]]
        del self.queue[:self._read_index]
        self._read_index = 0
        if self.frames == 0:
            # Empty: start afresh, so the directory does not keep a fully read segment.
            self.close()
            finished += [number for number, _ in self.queue]
            self.queue = []
        elif self._reader is not None:
            self.queue[0][1] = self._reader.tell()
        self._save_queue()
        for number in finished:
            path = self._path(number)
            self.disk_bytes -= path.stat().st_size
            path.unlink()

    # ---- as a write-ahead log ----

    def first_unreleased(self) -> LogPosition | None:
        """Where reading the log starts after a restart: its oldest frame not yet released."""
        if not self.frames:
            return None
        number, offset = self.queue[0]
        return LogPosition(number, offset, offset, self._released)

    def read_at(self, cursor: LogPosition, max_bytes: int) -> tuple[list, LogPosition | None, LogPosition | None]:
        """The log's frames from cursor on (its segment, start and ordinal), up to max_bytes (at least one if
        any), each with its log_position; where the next read starts, None at the end of the log; and the
        position of a corrupt entry skipped after the last frame taken, which nothing later would release."""
        taken, taken_bytes, skipped = [], 0, None
        number, offset, ordinal = cursor.segment, cursor.start, cursor.ordinal
        while not taken or taken_bytes < max_bytes:
            if self._log_reader is None or self._log_reader_number != number:
                if self._log_reader is not None:
                    self._log_reader.close()
                    self._log_reader = None
                try:
                    self._log_reader, self._log_reader_number = open(self._path(number), "rb"), number
                except FileNotFoundError:
                    header = b""  # deleted by hand: read on from the next segment
            if self._log_reader is not None and self._log_reader_number == number:
                self._log_reader.seek(offset)
                header = self._log_reader.read(ENTRY.size)
            if len(header) < ENTRY.size:
                # The next segment in reading order: a spool left by a run without the log may have put one
                # in front.
                index = next((index for index, entry in enumerate(self.queue) if entry[0] == number), None)
                if number == self._writer_number or index is None or index + 1 == len(self.queue):
                    return taken, None, skipped
                number, offset = self.queue[index + 1]
                continue
            frame = self._entry(self._log_reader, header)
            end = offset + ENTRY.size + ENTRY.unpack(header)[0]
            if frame is None:
                skipped = LogPosition(number, offset, end, ordinal)
            else:
                frame.log_position = LogPosition(number, offset, end, ordinal)
                taken.append(frame)
                taken_bytes += len(frame)
                skipped = None
            offset, ordinal = end, ordinal + 1
        if number == self._writer_number and offset >= self._writer_size:
            return taken, None, skipped
        return taken, LogPosition(number, offset, offset, ordinal), skipped

    def release(self, position: LogPosition) -> None:
        """The frame at position and every frame before it are delivered: the log forgets them. A queue file
        that cannot be saved (a full disk) only means more to replay after a restart, so it is logged, and the
        next release saves it again."""
        if position.ordinal < self._released:
            return
        self.frames -= position.ordinal + 1 - self._released
        self._released = position.ordinal + 1
        finished = []
        while self.queue and self.queue[0][0] != position.segment:
            finished.append(self.queue.pop(0)[0])
        if self.frames <= 0:
            # Empty: start afresh, so the directory does not keep a fully released segment.
            self.frames = 0
            self.close()
            finished += [number for number, _ in self.queue]
            self.queue = []
        elif self.queue:
            self.queue[0][1] = position.end
        try:
            self._save_queue()
            self.save_error = None
        except OSError as error:
            if self.save_error is None:
                log.error(f"spool at {self.directory}: cannot save where delivery has got to ({error.strerror}); "
                          "a restart now would replay more than it needs (the destination drops what it holds)")
            self.save_error = error
        for number in finished:
            path = self._path(number)
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
            self.disk_bytes -= size

    def close(self) -> None:
        if self._writer is not None:
            os.close(self._writer)
        for reader in (self._reader, self._log_reader):
            if reader is not None:
                reader.close()
        self._writer = self._reader = self._log_reader = None
        self._writer_number = 0


class SpooledBuffer:
    """The egress's frame buffer with a disk spool behind it: a FrameBuffer, as StageBuffer is.

    As a write-ahead log, every frame is appended to the spool and, while the sink keeps up, also kept in memory;
    once memory refuses one, the sink reads the log from that frame on until it has caught up."""

    def __init__(self, memory: StageBuffer, spool: DiskSpool, link_name: str, records_in, write_ahead=False):
        self.memory = memory
        self.spool = spool
        self.link_name = link_name
        self.records_in_item = records_in
        self.write_ahead = write_ahead
        self._lock = threading.Lock()
        self._closed = False
        self._unsettled = 0
        self.frames_spooled = 0
        self.frames_unspooled = 0
        self.frames_unlogged = 0
        self.records_dropped = 0
        self.bytes_dropped = 0
        # As a write-ahead log: where the sink reads the log from while memory does not hold the next frame, and
        # the newest log position handed to the sink.
        self._log_cursor = spool.first_unreleased() if write_ahead else None
        self._handed_out: LogPosition | None = None
        self._skipped_after = None  # (the position handed out before a trailing corrupt entry, the entry's)
        self._spooling = spool.frames > 0
        self._reported_full = False
        self._reported_unlogged = False
        if self._spooling:
            log.warning(f"link {link_name}: {spool.frames} frames left in the spool at {spool.directory} are "
                        "delivered first", extra={"fields": {"link": link_name, "frames": spool.frames}})

    @property
    def capacity_bytes(self) -> int:
        return self.memory.capacity_bytes

    def put_many(self, frames) -> int:
        with self._lock:
            if self.write_ahead:
                return self._log_many(frames)
            start = 0 if self.spool.frames else self.memory.put_many(frames, timeout=0)
            accepted = start + self._append_or_drop(frames[start:])
            if accepted > start:
                self._announce(True)
            return accepted

    def _append(self, frame) -> tuple[LogPosition | None, str | None]:
        """Appends a frame to the spool: its position, or None and why (full, or it cannot be written)."""
        if not self.spool.has_room(len(frame)):
            return None, "is full"
        try:
            position = self.spool.append(frame, frame.frame_id)
        except OSError as error:
            return None, f"cannot be written ({error.strerror or error})"
        self.frames_spooled += 1
        return position, None

    def _append_or_drop(self, frames) -> int:
        """Appends frames to the spool, dropping (counted) those it cannot take; returns how many it took."""
        taken = 0
        for frame in frames:
            position, why = self._append(frame)
            if position is None:
                self._drop(frame, why)
            else:
                taken += 1
        return taken

    def _log_many(self, frames) -> int:
        """Every frame goes to the log first, then to memory unless the sink is reading the log. A frame the log
        cannot take still goes to memory when it can, unlogged: delivered, unless the egress dies first."""
        if self._log_cursor is not None:
            return self._append_or_drop(frames)
        why = None
        for frame in frames:
            frame.log_position, reason = self._append(frame)
            why = reason or why
        accepted = self.memory.put_many(frames, timeout=0)
        for frame in frames[:accepted] if why else ():
            if frame.log_position is None:
                self._unlogged(why)
        for frame in frames[accepted:]:
            if frame.log_position is None:
                self._drop(frame, why)
            elif self._log_cursor is None:
                self._log_cursor = frame.log_position
                self._announce(True)
        return accepted + sum(frame.log_position is not None for frame in frames[accepted:])

    def _unlogged(self, why: str) -> None:
        self.frames_unlogged += 1
        if not self._reported_unlogged:
            self._reported_unlogged = True
            log.error(f"link {self.link_name}: write-ahead log at {self.spool.directory} {why} (its limit is "
                      f"{self.spool.max_bytes} bytes); frames go to the sink from memory only, and are lost if the "
                      "egress dies before they are delivered (spool_frames_unlogged)",
                      extra={"fields": {"link": self.link_name, "max_bytes": self.spool.max_bytes}})

    def _drop(self, frame, why: str) -> None:
        self.records_dropped += self.records_in_item(frame)
        self.bytes_dropped += len(frame)
        if not self._reported_full:
            self._reported_full = True
            log.error(f"link {self.link_name}: spool at {self.spool.directory} {why} (its limit is "
                      f"{self.spool.max_bytes} bytes); dropping the newest frames until it drains "
                      "(spool_records_dropped); their records are reported missing",
                      extra={"fields": {"link": self.link_name, "max_bytes": self.spool.max_bytes}})

    def _announce(self, spooling: bool) -> None:
        if spooling == self._spooling:
            return
        self._spooling = spooling
        fields = {"link": self.link_name, "spool": str(self.spool.directory)}
        if spooling:
            log.warning(f"link {self.link_name}: the sink is not keeping up; spooling frames to "
                        f"{self.spool.directory}", extra={"fields": fields})
        else:
            self._reported_full = self._reported_unlogged = False
            log.warning(f"link {self.link_name}: spool drained; frames go straight to the sink again",
                        extra={"fields": fields})

    def get_many(self, max_bytes: int, timeout: float) -> list:
        """Memory first (it holds only frames older than the spool's), then the spool; once closed, memory
        only: what is left in the spool stays there for the next start."""
        if self.write_ahead:
            return self._get_logged(max_bytes, timeout)
        frames = self.memory.get_many(max_bytes, 0 if self.spool.frames and not self._closed else timeout)
        if frames or self._closed:
            return frames
        with self._lock:
            frames = self.spool.read(max_bytes)
            self._unsettled += len(frames)
            self.frames_unspooled += len(frames)
            return frames

    def _get_logged(self, max_bytes: int, timeout: float) -> list:
        """Memory and the log are looked at under the lock that put_many() holds, so a frame memory refused meanwhile
        cannot be read from the log before the older frames still in memory."""
        with self._lock:
            frames = self.memory.get_many(max_bytes, 0)
            if not frames and self._log_cursor is not None and not self._closed:
                frames, self._log_cursor, skipped = self.spool.read_at(self._log_cursor, max_bytes)
                self.frames_unspooled += len(frames)
                if skipped is not None:
                    self._skipped_after = (frames[-1].log_position if frames else self._handed_out, skipped)
                if self._log_cursor is None:
                    self._announce(False)
            reading = self._log_cursor is not None
        if not frames and not reading:
            # Waiting on memory alone: while the log is not being read, new frames go to memory first.
            frames = self.memory.get_many(max_bytes, timeout)
        self._hand_out(frames)
        return frames

    def _hand_out(self, frames: list) -> None:
        if self.write_ahead:
            for frame in reversed(frames):
                if frame.log_position is not None:
                    self._handed_out = frame.log_position
                    break

    def settle(self, delivered=EVERYTHING) -> None:
        """The sink has delivered what it took, or as a write-ahead log, every frame up to the one with log
        position `delivered` (None: nothing new): the spool may forget it."""
        with self._lock:
            if self.write_ahead:
                position = self._handed_out if delivered is EVERYTHING else delivered
                if position is not None:
                    self.spool.release(position)
                if self._skipped_after is not None and position == self._skipped_after[0]:
                    self.spool.release(self._skipped_after[1])  # a corrupt entry after the last frame delivered
                    self._skipped_after = None
                if not self.spool.frames and self._log_cursor is not None:
                    self._log_cursor = None  # all released, so all read: its files are gone
                    self._announce(False)
            elif self._unsettled:
                self._unsettled = 0
                self.spool.settle()
                if not self.spool.frames:
                    self._announce(False)

    def close(self) -> None:
        self._closed = True
        self.memory.close()

    def release(self) -> None:
        """After the sink stopped (or its stop timed out): frames still in memory go to the spool, so a
        destination that is down at shutdown loses nothing. A write-ahead log holds them already (unless it
        could not take them); it stays open for a last settle() once the sink has closed."""
        left = self.memory.get_many(1 << 62, 0)
        with self._lock:
            if self.write_ahead:
                for frame in left:
                    if frame.log_position is None:
                        self._drop(frame, "could not take it")
                return
            kept, kept_bytes = [], 0
            for frame in left:
                if self.spool.has_room(kept_bytes + len(frame)):
                    kept.append(frame)
                    kept_bytes += ENTRY.size + len(frame)
                else:
                    self._drop(frame, "is full")
            try:
                self.spool.save_before_stop(kept)
                self.frames_spooled += len(kept)
            except OSError as error:
                for frame in kept:
                    self._drop(frame, f"cannot be written ({error.strerror or error})")
                self.spool.close()
        if left:
            log.warning(f"link {self.link_name}: {len(left)} frames not yet delivered were saved to the spool; "
                        "they are delivered first at the next start", extra={"fields": {"link": self.link_name}})

    def finish(self) -> None:
        """Closes the spool's files; what it holds stays for the next start."""
        with self._lock:
            self.spool.close()

    @property
    def drained(self) -> bool:
        return self.memory.drained

    def counters(self) -> dict:
        counters = self.memory.counters()
        with self._lock:
            counters.update({
                "spool_frames_in": self.frames_spooled, "spool_frames_out": self.frames_unspooled,
                "spool_frames": self.spool.frames, "spool_bytes": self.spool.disk_bytes,
                "spool_records_dropped": self.records_dropped, "spool_bytes_dropped": self.bytes_dropped,
                "spool_frames_corrupt": self.spool.frames_corrupt, "spool_frames_unlogged": self.frames_unlogged,
            })
        return counters
