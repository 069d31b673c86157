"""The spool's files: frames appended to segment files with a length, frame id and CRC-32 each, read back in
order, released and deleted a whole segment at a time; ddc/spool/__init__.py says how the egress uses them."""

import errno
import logging
import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

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
