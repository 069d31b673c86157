# The Kafka handler's compiled codec (codec.pyx): the record metadata layout, and the egress's per-record loop
# with the typed route and sink context it runs on.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

from ddc._core.byteorder cimport put16, put32, put64

cpdef enum:
    # record kinds
    RECORD = 0
    SKIPPED = 1
    FILTERED = 2
    POSITION = 3

cpdef enum:
    FIXED_BYTES = 40
    KEY_PRESENT = 1
    VALUE_PRESENT = 2
    TOPIC_ID_PRESENT = 4
    TOPIC_ID_BYTES = 16

cdef enum:
    NULL_LENGTH = 0xFFFFFFFF  # a header value's length when it is null (not a Python int here: it is u32)


cdef inline Py_ssize_t write_head(char* out, uint8_t kind, uint8_t flags, uint8_t timestamp_type, uint8_t assignment,
                                  int32_t partition, int64_t offset, int64_t previous_offset, int64_t timestamp,
                                  int64_t stream_start, const char* topic, Py_ssize_t topic_length,
                                  const char* topic_id) noexcept nogil:
    """Writes a record's metadata up to its key: the fixed fields, the topic and its id (NULL: none, and flags
    without TOPIC_ID_PRESENT); returns where the key's length goes. The one writer of this layout (codec.pyx's
    pack and the Kafka listener's batches.pyx)."""
    cdef Py_ssize_t position = FIXED_BYTES
    out[0] = kind
    out[1] = flags | (TOPIC_ID_PRESENT if topic_id != NULL else 0)
    out[2] = timestamp_type
    out[3] = assignment
    put32(<uint8_t*>out + 4, <uint32_t>partition)
    put64(<uint8_t*>out + 8, <uint64_t>offset)
    put64(<uint8_t*>out + 16, <uint64_t>previous_offset)
    put64(<uint8_t*>out + 24, <uint64_t>timestamp)
    put64(<uint8_t*>out + 32, <uint64_t>stream_start)
    put16(<uint8_t*>out + position, <uint16_t>topic_length)
    memcpy(out + position + 2, topic, topic_length)
    position += 2 + topic_length
    if topic_id != NULL:
        memcpy(out + position, topic_id, TOPIC_ID_BYTES)
        position += TOPIC_ID_BYTES
    return position


cdef class Route:
    cdef readonly str source_topic
    cdef readonly object source_partition
    cdef readonly str target
    cdef readonly int32_t target_partition
    cdef readonly object ledger
    cdef readonly bytes topic_bytes
    cdef readonly bytes partition_bytes
    cdef readonly int32_t partitions
    cdef readonly bytes topic_id
    cdef readonly tuple topic_id_header


cdef class PendingFrame:
    cdef readonly object position
    cdef public Py_ssize_t outstanding


cdef class RecordWriter:
    cdef dict assignments
    cdef object route_for
    cdef object admit_out_of_order
    cdef object produce
    cdef object failed
    cdef object undeliverable
    cdef object wait_for_room
    cdef uint8_t timestamp_create


cdef class DeliveryReport:
    cdef object failed
    cdef Route route
    cdef int64_t offset
    cdef PendingFrame frame
    cdef object delivered
