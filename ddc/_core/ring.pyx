"""The ingress's record ring: source → transport, each record stored once, already in its batch layout.

Entries are records exactly as a batch carries them (records.pyx: u32 metadata
length, u32 value length, metadata, value), one after another in one block of
memory. A run of entries is therefore a batch body: the transport writes a
16-byte batch header and sends header and run as they lie, and no record is
copied between the source and the socket. A UDP source receives straight into
the ring (put_entries, from ddc/handlers/udp/datagrams.pyx: no Python object
per datagram) and a file source reads into it in place (reserve/commit).

One producer (the source thread) and one consumer (the transport thread). The
producer copies outside the lock into space only it owns; the lock guards the
positions alone, so it is held for a few integer updates per group of
records, and both sides sleep on condition variables with the GIL released:
no spinning when idle, a prompt wake-up when a record or room arrives.

An entry never wraps: one that does not fit before the end starts again at the
beginning and the tail is skipped (counted as used until the consumer passes
it). Policy when full: `block` waits for room (back-pressure, for sources
that keep data at rest), `drop` refuses the newest record and counts it (for
live sources). An entry larger than the whole ring is always refused and
counted, so `block` can never wait forever.

Written by hand because no library offers an SPSC ring whose entries are laid
out as DDC's wire batches; that layout is what lets the sender skip a copy.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_FillInfo, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy

from ddc._core.byteorder cimport get32, put32
from ddc._core.posix cimport (CLOCK_MONOTONIC, CLOCK_REALTIME, clock_ns, pthread_cond_broadcast, pthread_cond_destroy,
                              pthread_cond_init, pthread_cond_signal, pthread_cond_t, pthread_cond_timedwait,
                              pthread_cond_wait, pthread_condattr_init, pthread_condattr_setclock,
                              pthread_condattr_t, pthread_mutex_destroy, pthread_mutex_init, pthread_mutex_lock,
                              pthread_mutex_unlock, timespec, timespec_of)


cdef inline size_t entry_size(const Entry* entry) noexcept nogil:
    return OVERHEAD_BYTES + entry.metadata_length + entry.value_length


cdef int64_t deadline_after(object seconds) except? -2:
    """-1 is no deadline (wait as long as it takes)."""
    if seconds is None:
        return -1
    return clock_ns(CLOCK_MONOTONIC) + <int64_t>(max(<double>seconds, 0.0) * 1e9)


@cython.final
cdef class RecordRing:
    def __cinit__(self, Py_ssize_t capacity_bytes, str when_full):
        cdef pthread_condattr_t attributes
        if when_full not in ("block", "drop"):
            raise ValueError(f"when_full must be 'block' or 'drop', not {when_full!r}")
        if capacity_bytes < 1024:
            raise ValueError(f"a record ring of {capacity_bytes} bytes is too small; give it at least 1 KiB")
        self.memory = <uint8_t*>malloc(capacity_bytes)
        if self.memory == NULL:
            raise MemoryError(f"cannot allocate a record ring of {capacity_bytes} bytes")
        self.capacity_bytes = capacity_bytes
        self.when_full = when_full
        self.block = when_full == "block"
        pthread_mutex_init(&self.lock, NULL)
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(&self.readable, &attributes)
        pthread_cond_init(&self.writable, &attributes)

    def __dealloc__(self):
        free(self.memory)
        pthread_cond_destroy(&self.readable)
        pthread_cond_destroy(&self.writable)
        pthread_mutex_destroy(&self.lock)

    def __getbuffer__(self, Py_buffer* buffer, int flags):
        PyBuffer_FillInfo(buffer, self, self.memory, self.capacity_bytes, 0, flags)

    # ---- under the lock ----

    cdef Wait wait_on(self, pthread_cond_t* condition, int64_t deadline_ns) noexcept nogil:
        cdef timespec at
        if self.closed:
            return CLOSED
        if deadline_ns < 0:
            pthread_cond_wait(condition, &self.lock)
        else:
            if clock_ns(CLOCK_MONOTONIC) >= deadline_ns:
                return TIMED_OUT
            at = timespec_of(deadline_ns)
            pthread_cond_timedwait(condition, &self.lock, &at)
        return CLOSED if self.closed else READY

    cdef Py_ssize_t place(self, size_t size) noexcept nogil:
        """Where an entry of size bytes can be written now (wrapping if it must), or -1 if there is no room."""
        if self.used == 0:
            self.read_at = self.write_at = 0
            self.wrapped = False
        if self.wrapped:
            return self.write_at if self.write_at + size <= self.read_at else -1
        if self.write_at + size <= <size_t>self.capacity_bytes:
            return self.write_at
        if size <= self.read_at:
            self.used += self.capacity_bytes - self.write_at
            self.wrap_at = self.write_at
            self.write_at = 0
            self.wrapped = True
            return 0
        return -1

    cdef size_t room_end(self) noexcept nogil:
        """How far entries placed from the write position may run: the end of the free space it lies in."""
        return self.read_at if self.wrapped else self.capacity_bytes

    cdef void publish(self, size_t end, uint64_t entries) noexcept nogil:
        self.used += end - self.write_at
        self.write_at = end
        self.items_in += entries
        if self.used > self.peak_bytes:
            self.peak_bytes = self.used
        if self.consumer_waiting and (self.wrapped or self.write_at - self.read_at >= self.consumer_wants):
            pthread_cond_signal(&self.readable)

    cdef void count_drop(self, size_t size) noexcept nogil:
        self.full_events += 1
        self.records_dropped += 1
        self.bytes_dropped += size

    cdef Py_ssize_t make_room(self, size_t size, int64_t deadline_ns) noexcept nogil:
        """place(), waiting for room under `block`; -1 counts the entry dropped, -2 is closed or timed out."""
        cdef Py_ssize_t position = self.place(size)
        cdef Wait waited
        if position >= 0:
            return position
        if size > <size_t>self.capacity_bytes or not self.block:
            self.count_drop(size)
            return -1
        self.full_events += 1
        while position < 0:
            self.producer_waiting = True
            if self.consumer_waiting:
                pthread_cond_signal(&self.readable)  # a lingering consumer takes what there is
            waited = self.wait_on(&self.writable, deadline_ns)
            self.producer_waiting = False
            if waited != READY:
                return -2
            position = self.place(size)
        return position

    # ---- producer ----

    def put_many(self, records, timeout=None):
        """Copies (metadata, value) records in, in order; returns how many were accepted. Dropped records are
        counted; with `block`, a timeout or close stops early and the accepted records are then a prefix."""
        cdef Py_ssize_t count = len(records), index = 0, accepted
        cdef Py_buffer* views
        cdef Entry* entries
        cdef int64_t deadline_ns = deadline_after(timeout)
        if count == 0:
            return 0
        views = <Py_buffer*>calloc(2 * count, sizeof(Py_buffer))
        entries = <Entry*>malloc(count * sizeof(Entry))
        if views == NULL or entries == NULL:
            free(views)
            free(entries)
            raise MemoryError(f"cannot stage {count} records")
        try:
            for metadata, value in records:
                PyObject_GetBuffer(metadata, &views[2 * index], PyBUF_SIMPLE)
                PyObject_GetBuffer(value, &views[2 * index + 1], PyBUF_SIMPLE)
                entries[index].metadata = <const uint8_t*>views[2 * index].buf
                entries[index].metadata_length = views[2 * index].len
                entries[index].value = <const uint8_t*>views[2 * index + 1].buf
                entries[index].value_length = views[2 * index + 1].len
                index += 1
            with nogil:
                accepted = self.put_entries(entries, count, deadline_ns)
        finally:
            for index in range(2 * count):
                PyBuffer_Release(&views[index])  # a no-op for the ones never acquired (calloc left them empty)
            free(views)
            free(entries)
        return accepted

    cdef Py_ssize_t put_entries(self, Entry* entries, Py_ssize_t count, int64_t deadline_ns) noexcept nogil:
        """The producer's one way in: places as many entries as lie together per lock, copies them outside it,
        then publishes them at once. Returns how many were accepted."""
        cdef Py_ssize_t index = 0, first, accepted = 0
        cdef Py_ssize_t position
        cdef size_t end, limit
        while index < count:
            pthread_mutex_lock(&self.lock)
            position = self.make_room(entry_size(&entries[index]), deadline_ns)
            if position == -2:
                pthread_mutex_unlock(&self.lock)
                break
            if position == -1:
                pthread_mutex_unlock(&self.lock)
                index += 1
                continue
            first = index
            end = position + entry_size(&entries[index])
            limit = self.room_end()
            index += 1
            while index < count and end + entry_size(&entries[index]) <= limit:
                end += entry_size(&entries[index])
                index += 1
            pthread_mutex_unlock(&self.lock)
            self.copy_in(entries + first, index - first, position)
            pthread_mutex_lock(&self.lock)
            self.publish(end, index - first)
            pthread_mutex_unlock(&self.lock)
            accepted += index - first
        return accepted

    cdef void copy_in(self, const Entry* entries, Py_ssize_t count, size_t position) noexcept nogil:
        cdef Py_ssize_t index
        cdef uint8_t* out = self.memory + position
        for index in range(count):
            put32(out, <uint32_t>entries[index].metadata_length)
            put32(out + 4, <uint32_t>entries[index].value_length)
            out += OVERHEAD_BYTES
            memcpy(out, entries[index].metadata, entries[index].metadata_length)
            out += entries[index].metadata_length
            memcpy(out, entries[index].value, entries[index].value_length)
            out += entries[index].value_length

    def reserve(self, bytes metadata, Py_ssize_t value_bytes, timeout=None):
        """Room for one record whose value the caller writes in place (a file read straight into the ring): a
        writable memoryview of value_bytes (less if the ring is smaller), to be followed by commit(). None if
        there is no room: with `drop` at once (nothing is counted yet), with `block` after timeout or close."""
        cdef size_t size
        cdef Py_ssize_t position
        cdef int64_t deadline_ns = deadline_after(timeout)
        cdef Py_ssize_t metadata_bytes = len(metadata)
        value_bytes = min(value_bytes, self.capacity_bytes - OVERHEAD_BYTES - metadata_bytes)
        if value_bytes < 0:
            raise ValueError(f"metadata of {metadata_bytes} bytes does not fit a {self.capacity_bytes}-byte ring")
        size = OVERHEAD_BYTES + metadata_bytes + value_bytes
        with nogil:
            pthread_mutex_lock(&self.lock)
            position = self.make_room(size, deadline_ns) if self.block else self.place(size)
            pthread_mutex_unlock(&self.lock)
        if position < 0:
            return None
        self.reserved_at = position
        self.reserved_metadata = metadata_bytes
        self.reserved_value = value_bytes
        put32(self.memory + position, <uint32_t>metadata_bytes)
        memcpy(self.memory + position + OVERHEAD_BYTES, <const char*>metadata, metadata_bytes)
        start = position + OVERHEAD_BYTES + metadata_bytes
        return memoryview(self)[start:start + value_bytes]

    def commit(self, Py_ssize_t value_bytes):
        """Publishes the reserved record with the first value_bytes of its value; 0 abandons it."""
        if value_bytes < 0 or <size_t>value_bytes > self.reserved_value:
            raise ValueError(f"commit of {value_bytes} bytes, but {self.reserved_value} were reserved")
        if value_bytes == 0:
            return
        put32(self.memory + self.reserved_at + 4, <uint32_t>value_bytes)
        with nogil:
            pthread_mutex_lock(&self.lock)
            self.publish(self.reserved_at + OVERHEAD_BYTES + self.reserved_metadata + value_bytes, 1)
            pthread_mutex_unlock(&self.lock)

    def count_dropped(self, Py_ssize_t records, Py_ssize_t size):
        """Records a producer refused itself (a read it could not place), counted with the ring's own drops."""
        with nogil:
            pthread_mutex_lock(&self.lock)
            self.full_events += records
            self.records_dropped += records
            self.bytes_dropped += size
            pthread_mutex_unlock(&self.lock)

    def close(self):
        """No more records will be added; the consumer takes what is left, a waiting producer gives up."""
        with nogil:
            pthread_mutex_lock(&self.lock)
            self.closed = True
            pthread_cond_broadcast(&self.readable)
            pthread_cond_broadcast(&self.writable)
            pthread_mutex_unlock(&self.lock)

    def flush(self):
        """The producer puts nothing more for now (a Kafka producer waits for its answer): what the ring holds is
        taken at once, without waiting for linger."""
        with nogil:
            pthread_mutex_lock(&self.lock)
            self.flushing = True
            if self.consumer_waiting:
                pthread_cond_signal(&self.readable)
            pthread_mutex_unlock(&self.lock)

    # ---- consumer ----

    def take(self, Py_ssize_t max_bytes, timeout, linger=0.0):
        """A run of whole records lying together, at most max_bytes (or one larger record alone), read in place:
        (read-only memoryview, record count, ns since the epoch when the first was seen), or None if none came
        within timeout or the ring is closed and empty. Once records are there, waits up to linger for max_bytes
        of them. The view is valid until free_taken(), which must come before the next take()."""
        cdef int64_t deadline_ns = deadline_after(timeout)
        cdef int64_t linger_ns = <int64_t>(max(<double>linger, 0.0) * 1e9), full_ns
        cdef int64_t seen_ns = 0
        cdef size_t start, length = 0, end
        cdef uint64_t count = 0
        cdef Wait waited = READY
        if self.taken_bytes:
            raise RuntimeError("take() before free_taken() of the previous run")
        with nogil:
            pthread_mutex_lock(&self.lock)
            self.consumer_wants = 1
            while self.data_end() == self.read_at and waited == READY:
                self.consumer_waiting = True
                waited = self.wait_on(&self.readable, deadline_ns)
                self.consumer_waiting = False
            if self.data_end() != self.read_at:
                seen_ns = clock_ns(CLOCK_REALTIME)
                full_ns = clock_ns(CLOCK_MONOTONIC) + linger_ns
                self.consumer_wants = max_bytes
                while (linger_ns and self.data_end() - self.read_at < <size_t>max_bytes and not self.closed
                       and not self.producer_waiting and not self.flushing
                       and not (self.wrapped and self.data_end() == self.wrap_at)):
                    self.consumer_waiting = True
                    waited = self.wait_on(&self.readable, full_ns)
                    self.consumer_waiting = False
                    if waited != READY:
                        break
                start = self.read_at
                end = self.data_end()
                length, count = self.whole_records(start, end, max_bytes)
                self.taken_bytes = length
                self.taken_count = count
                self.flushing = False
            pthread_mutex_unlock(&self.lock)
        if count == 0:
            return None
        return memoryview(self)[start:start + length].toreadonly(), count, seen_ns

    cdef size_t data_end(self) noexcept nogil:
        """End of the data that lies together from read_at, stepping over a skipped tail."""
        if self.wrapped and self.read_at == self.wrap_at:
            self.used -= self.capacity_bytes - self.wrap_at
            self.read_at = 0
            self.wrapped = False
        return self.wrap_at if self.wrapped else self.write_at

    cdef (size_t, uint64_t) whole_records(self, size_t start, size_t end, size_t max_bytes) noexcept nogil:
        cdef size_t position = start, size
        cdef uint64_t count = 0
        while position < end:
            size = OVERHEAD_BYTES + <size_t>get32(self.memory + position) + get32(self.memory + position + 4)
            if count and position - start + size > max_bytes:
                break
            position += size
            count += 1
        return position - start, count

    def free_taken(self):
        """The run from take() is sent: its room goes back to the producer."""
        with nogil:
            pthread_mutex_lock(&self.lock)
            self.read_at += self.taken_bytes
            self.used -= self.taken_bytes
            self.items_out += self.taken_count
            self.taken_bytes = self.taken_count = 0
            self.data_end()
            if self.producer_waiting:
                pthread_cond_signal(&self.writable)
            pthread_mutex_unlock(&self.lock)

    @property
    def drained(self):
        """Closed, and everything put in has been taken and freed."""
        cdef bint empty
        with nogil:
            pthread_mutex_lock(&self.lock)
            empty = self.closed and self.used - (self.capacity_bytes - self.wrap_at if self.wrapped else 0) == 0
            pthread_mutex_unlock(&self.lock)
        return empty

    def counters(self):
        return buffer_counters(self.items_in, self.items_out, self.records_dropped, self.bytes_dropped,
                               self.full_events, self.used, self.peak_bytes)


def buffer_counters(items_in, items_out, records_dropped, bytes_dropped, full_events, bytes_held, peak_bytes):
    """A stage buffer's counters by their metric names (docs/metrics.md), the same for the ring and the
    egress's frame buffer (ddc/stage_buffer.py)."""
    return {
        "buffer_items_in": items_in,
        "buffer_items_out": items_out,
        "buffer_records_dropped": records_dropped,
        "buffer_bytes_dropped": bytes_dropped,
        "buffer_full_events": full_events,
        "buffer_bytes": bytes_held,
        "buffer_peak_bytes": peak_bytes,
    }
