"""The egress's bounded buffer between its stages: transport → sink, holding whole received frames.

Bounded in bytes, with a per-link policy when full: `block` makes the producer
wait (back-pressure, right for sources that keep data at rest, such as Kafka),
`drop` refuses the newest items and counts them (right for live UDP sources,
which cannot be paused). Consumers take items in batches so locking is paid per
batch, not per item. Items are whole frames, handed over by reference (the
receiver reassembled each in its own buffer, the sink thread decodes it, so the
receive thread only drains the socket); `size_of` and `records_in` say how big
an item is and how many records it holds. The ingress stores records in
ddc/_core/ring.pyx instead, laid out as the wire batch they become.
"""

import collections
import threading
import time
from typing import Protocol, runtime_checkable

from ddc._core.ring import buffer_counters

EVERYTHING = object()  # settle(): everything the consumer took is delivered


@runtime_checkable
class FrameBuffer(Protocol):
    """What the egress's stages ask of the buffer between them: StageBuffer below, or SpooledBuffer
    (ddc/spool/) with a disk spool behind it. Either may stand in for the other."""

    capacity_bytes: int

    def put_many(self, frames: list) -> int:
        """Takes frames in order; returns how many it took (the rest are counted dropped, or it waited)."""

    def get_many(self, max_bytes: int, timeout: float) -> list:
        """Up to max_bytes of frames in order (at least one if any), waiting at most timeout for the first."""

    def close(self) -> None: ...

    def settle(self, delivered=EVERYTHING) -> None: ...

    def release(self) -> None: ...

    def finish(self) -> None: ...

    @property
    def drained(self) -> bool: ...

    def counters(self) -> dict: ...


class StageBuffer:
    def __init__(self, capacity_bytes: int, when_full: str, size_of=len, records_in=lambda item: 1):
        if when_full not in ("block", "drop"):
            raise ValueError(f"when_full must be 'block' or 'drop', not {when_full!r}")
        self.capacity_bytes = capacity_bytes
        self.when_full = when_full
        self.size_of = size_of
        self.records_in_item = records_in
        self._items = collections.deque()
        self._sizes = collections.deque()  # kept beside the items: a size is computed once, on the way in
        self._bytes = 0
        self._closed = False
        self._lock = threading.Lock()
        self._readable = threading.Condition(self._lock)
        self._writable = threading.Condition(self._lock)
        self.items_in = 0
        self.items_out = 0
        self.records_dropped = 0
        self.bytes_dropped = 0
        self.full_events = 0
        self.peak_bytes = 0

    def _has_room(self, size: int) -> bool:
        return self._bytes + size <= self.capacity_bytes or not self._items

    def put_many(self, frames: list, timeout: float | None = None) -> int:
        """Adds frames in order; returns how many were accepted (the rest were dropped, the buffer closed, or
        with `block`, the timeout passed first: then the accepted frames are always a prefix)."""
        sizes = list(map(self.size_of, frames))
        total = sum(sizes)
        with self._lock:
            if not self._closed and self._bytes + total <= self.capacity_bytes:
                # The common case, with room for all: one step for the whole batch, nothing per item.
                self._items.extend(frames)
                self._sizes.extend(sizes)
                self._bytes += total
                return self._accepted(len(frames))
            return self._put_each(frames, sizes, timeout)

    def _put_each(self, items: list, sizes: list, timeout: float | None) -> int:
        accepted = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        for item, size in zip(items, sizes):
            if not self._has_room(size):
                self.full_events += 1
                if self.when_full == "drop":
                    self.records_dropped += self.records_in_item(item)
                    self.bytes_dropped += size
                    continue
                while not self._closed and not self._has_room(size):
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    self._writable.wait(remaining)
            if self._closed or not self._has_room(size):
                break
            self._items.append(item)
            self._sizes.append(size)
            self._bytes += size
            accepted += 1
        return self._accepted(accepted)

    def _accepted(self, count: int) -> int:
        self.items_in += count
        self.peak_bytes = max(self.peak_bytes, self._bytes)
        if count:
            self._readable.notify()
        return count

    def get_many(self, max_bytes: int, timeout: float) -> list:
        """Up to max_bytes of items (at least one if any is waiting); [] after timeout or once closed and empty."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self._items and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._readable.wait(remaining)
            taken = []
            taken_bytes = 0
            items, sizes = self._items, self._sizes
            while items:
                size = sizes[0]
                if taken and taken_bytes + size > max_bytes:
                    break
                taken.append(items.popleft())
                sizes.popleft()
                taken_bytes += size
            self._bytes -= taken_bytes
            self.items_out += len(taken)
            if taken:
                self._writable.notify_all()
            return taken

    def close(self) -> None:
        """No more items will be added; consumers drain what is left."""
        with self._lock:
            self._closed = True
            self._readable.notify_all()
            self._writable.notify_all()

    def settle(self, delivered=EVERYTHING) -> None:
        """The consumer has delivered what it took (or up to a frame); only the disk spool (ddc/spool/) keeps a
        position."""

    def release(self) -> None:
        """The consumer has stopped; only the disk spool keeps what is left."""

    def finish(self) -> None:
        """The link has stopped; only the disk spool has files to close."""

    @property
    def drained(self) -> bool:
        with self._lock:
            return self._closed and not self._items

    def counters(self) -> dict:
        with self._lock:
            return buffer_counters(self.items_in, self.items_out, self.records_dropped, self.bytes_dropped,
                                   self.full_events, self._bytes, self.peak_bytes)
