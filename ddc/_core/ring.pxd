# The ingress's record ring (ring.pyx): what a compiled source needs to put records in without Python objects.
from libc.stdint cimport int64_t, uint8_t, uint64_t

from ddc._core.posix cimport pthread_cond_t, pthread_mutex_t

cdef enum:
    OVERHEAD_BYTES = 8  # as in records.pyx: u32 metadata length, u32 value length

cdef struct Entry:
    const uint8_t* metadata
    size_t metadata_length
    const uint8_t* value
    size_t value_length

cdef enum Wait:
    READY = 0
    TIMED_OUT = 1
    CLOSED = 2


cdef class RecordRing:
    cdef uint8_t* memory
    cdef readonly Py_ssize_t capacity_bytes
    cdef readonly str when_full
    cdef bint block
    cdef pthread_mutex_t lock
    cdef pthread_cond_t readable
    cdef pthread_cond_t writable
    # Guarded by lock. Data is [read_at, write_at), or when wrapped [read_at, wrap_at) then [0, write_at).
    cdef size_t read_at, write_at, wrap_at, used
    cdef bint wrapped, closed, consumer_waiting, producer_waiting
    cdef bint flushing  # the producer has nothing more coming soon: the consumer lingers no longer
    cdef size_t consumer_wants  # bytes lying together that make a waiting consumer worth waking
    cdef size_t taken_bytes, taken_count
    cdef readonly uint64_t items_in, items_out, records_dropped, bytes_dropped, full_events, peak_bytes
    # The producer's reservation (reserve → commit), touched by the producer only.
    cdef size_t reserved_at, reserved_metadata, reserved_value

    cdef Wait wait_on(self, pthread_cond_t* condition, int64_t deadline_ns) noexcept nogil
    cdef Py_ssize_t place(self, size_t size) noexcept nogil
    cdef size_t room_end(self) noexcept nogil
    cdef void publish(self, size_t end, uint64_t entries) noexcept nogil
    cdef void count_drop(self, size_t size) noexcept nogil
    cdef Py_ssize_t make_room(self, size_t size, int64_t deadline_ns) noexcept nogil
    cdef Py_ssize_t put_entries(self, Entry* entries, Py_ssize_t count, int64_t deadline_ns) noexcept nogil
    cdef void copy_in(self, const Entry* entries, Py_ssize_t count, size_t position) noexcept nogil
    cdef size_t data_end(self) noexcept nogil
    cdef (size_t, uint64_t) whole_records(self, size_t start, size_t end, size_t max_bytes) noexcept nogil
