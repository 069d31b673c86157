# The Kafka handler's compiled codec (codec.pyx): the record metadata layout, and the egress's per-record loop
# with the typed route and sink context it runs on.
from libc.stdint cimport int32_t, int64_t, uint8_t

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
