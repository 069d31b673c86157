"""Byte streams (files, pipes, stdin/stdout): the simplest use of a diode, one stream across.

Each record carries its byte offset in the stream as its metadata (8 bytes,
big-endian), so the sink can write in order however frames arrive and can name
the exact byte range of anything that never arrived. A gap is never stitched
over silently: it is logged with its range and counted, and the stream goes on.
"""

import io
import logging
import os
import stat
import struct
import sys

from ddc.handlers.base import Sink, Source

log = logging.getLogger("ddc.handlers.stream")

OFFSET = struct.Struct(">Q")


def open_stream(path: str, mode: str, standard):
    """(stream, owned): the file at path, or the standard stream for "-" (never closed by us)."""
    if path == "-":
        return standard, False
    try:
        return open(path, mode), True
    except OSError as error:
        verb = "read source" if "r" in mode else "write sink"
        raise OSError(f"cannot {verb} file {path!r}: {error.strerror}") from None


class FileSource(Source):
    default_when_full = "block"  # a file waits on disk; nothing is lost by pausing it
    can_wait = True

    def open(self) -> None:
        self.stream, self.owns_stream = open_stream(self.config.path, "rb", sys.stdin.buffer)
        self.offset = 0
        self.chunks = 0
        self.finished = False

    def run(self, output, stopping) -> None:
        """Reads chunk_size bytes into each record in place in the ring (one copy, the kernel's): a pipe's
        short reads fill the same record until it is whole or the stream ends."""
        stream = self.stream.raw if isinstance(self.stream, io.BufferedReader) else self.stream
        chunk_size = self.config.chunk_size
        while not stopping.is_set():
            space = output.reserve(OFFSET.pack(self.offset), chunk_size)
            if space is None:  # the ring is full and its policy is drop: the chunk is read and counted lost
                chunk = stream.read(chunk_size)
                if not chunk:
                    break
                output.count_dropped(1, len(chunk))
                self._advance(len(chunk))
                continue
            filled = 0
            while filled < len(space) and not stopping.is_set():
                read = stream.readinto(space[filled:])
                if not read:
                    break
                filled += read
            output.commit(filled)
            if filled:
                self._advance(filled)
            if filled < len(space):
                break
        self.finished = not stopping.is_set()
        if self.finished:
            log.info(f"link {self.link_name}: read {self.offset} bytes from {self.config.path!r} to its end",
                     extra={"fields": {"link": self.link_name, "bytes": self.offset}})

    def _advance(self, length: int) -> None:
        self.offset += length
        self.chunks += 1

    @property
    def stops_link_at_end(self) -> bool:
        return self.config.stop_at_end

    def close(self) -> None:
        if self.owns_stream:
            self.stream.close()

    def coordinates(self, metadata: bytes) -> dict:
        return {"stream_offset": OFFSET.unpack(metadata)[0]} if len(metadata) == OFFSET.size else {}

    def progress(self) -> dict:
        """For the progress bar of `ddc run` on a terminal (ddc/transfer.py)."""
        try:
            status = os.fstat(self.stream.fileno())
            total = status.st_size if stat.S_ISREG(status.st_mode) else None
        except (OSError, ValueError):
            total = None
        return {"files": None, "bytes": self.offset, "bytes_total": total, "active": []}

    def counters(self) -> dict:
        return {"source_bytes_read": self.offset, "source_chunks_read": self.chunks}


class FileSink(Sink):
    takes_value_views = True

    def open(self) -> None:
        self.stream, self.owns_stream = open_stream(self.config.path, "wb", sys.stdout.buffer)
        self.next_offset = 0
        self.pending: dict[int, bytes] = {}
        self.pending_bytes = 0
        self.bytes_written = 0
        self.bytes_missing = 0
        self.gaps = 0
        self.records_malformed = 0

    @property
    def stops_after_sender_shutdown(self) -> bool:
        return self.config.stop_after_sender_shutdown

    def write(self, records) -> None:
        for metadata, value in records:
            if len(metadata) != OFFSET.size:
                self.records_malformed += 1
                log.error(f"link {self.link_name}: a record without a stream offset reached the file sink; "
                          "is the ingress source a file source?", extra={"fields": {"link": self.link_name}})
                continue
            (offset,) = OFFSET.unpack(metadata)
            if offset < self.next_offset:
                continue  # already written or already declared lost
            self.pending[offset] = value
            self.pending_bytes += len(value)
        self._write_ready()
        while self.pending_bytes > self.config.max_reorder_bytes:
            self._skip_gap()
            self._write_ready()

    def _write_ready(self) -> None:
        while self.next_offset in self.pending:
            value = self.pending.pop(self.next_offset)
            self.pending_bytes -= len(value)
            self.stream.write(value)
            self.next_offset += len(value)
            self.bytes_written += len(value)

    def _skip_gap(self) -> None:
        resume = min(self.pending)
        missing = resume - self.next_offset
        self.gaps += 1
        self.bytes_missing += missing
        log.error(f"link {self.link_name}: stream bytes {self.next_offset} to {resume - 1} never arrived; "
                  f"the output skips {missing} bytes there",
                  extra={"fields": {"link": self.link_name, "first_missing_offset": self.next_offset,
                                    "last_missing_offset": resume - 1, "bytes_missing": missing}})
        self.next_offset = resume

    def close(self) -> None:
        while self.pending:
            self._skip_gap()
            self._write_ready()
        self.stream.flush()
        if self.owns_stream:
            if stat.S_ISREG(os.fstat(self.stream.fileno()).st_mode):
                os.fsync(self.stream.fileno())  # a device or pipe has nothing to sync
            self.stream.close()

    def progress(self) -> dict:
        return {"files": None, "bytes": self.bytes_written, "active": []}

    def counters(self) -> dict:
        return {"sink_bytes_written": self.bytes_written, "sink_bytes_missing": self.bytes_missing,
                "sink_gaps": self.gaps, "sink_records_malformed": self.records_malformed}
