# The record batch layout, shared with the modules that walk a batch in C (ddc/_core/datagram_out.pyx).
from libc.stdint cimport uint8_t, uint32_t

from ddc._core.byteorder cimport get32

cpdef enum:
    FORMAT = 1
    BATCH_HEADER_BYTES = 16
    OVERHEAD_BYTES = 8

cdef uint32_t checked_batch(const uint8_t* data, Py_ssize_t length) except? 0xFFFFFFFF


cdef inline const uint8_t* next_value(const uint8_t* data, Py_ssize_t* position,
                                      uint32_t* value_length) noexcept nogil:
    """The value of the record at position in a batch checked_batch() accepted; moves position past it."""
    cdef uint32_t metadata_length = get32(data + position[0])
    cdef const uint8_t* value = data + position[0] + OVERHEAD_BYTES + metadata_length
    value_length[0] = get32(data + position[0] + 4)
    position[0] += OVERHEAD_BYTES + metadata_length + value_length[0]
    return value
