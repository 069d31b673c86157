"""Record batches: many records packed into one frame.

A frame carries a batch; a record is an opaque (metadata, value) pair. The
transport never looks inside metadata: each handler defines its own (the UDP
source stores the sender's address, the Kafka source will store key, headers and
source coordinates), so new handlers need no protocol change.

Layout (big-endian): u8 format (1), 3 reserved bytes, u32 record count, u64 time
the batch's first record was taken in (nanoseconds since the Unix epoch, 0 if
unknown), then per record u32 metadata length, u32 value length, metadata, value.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from ddc._core.byteorder cimport get32, get64, put32, put64

BATCH_FORMAT = FORMAT
RECORD_OVERHEAD_BYTES = OVERHEAD_BYTES


def record_size(record):
    """What one (metadata, value) record adds to a batch: the stage buffers count records in these bytes."""
    metadata, value = record
    return OVERHEAD_BYTES + len(metadata) + len(value)


def encoded_size(records):
    """Bytes a batch of these records takes on the wire."""
    cdef uint64_t total = BATCH_HEADER_BYTES
    for metadata, value in records:
        total += OVERHEAD_BYTES + len(metadata) + len(value)
    return total


cdef inline void write_header(uint8_t* out, uint32_t count, uint64_t taken_in_ns) noexcept:
    out[0] = FORMAT
    out[1] = 0
    out[2] = 0
    out[3] = 0
    put32(out + 4, count)
    put64(out + 8, taken_in_ns)


def batch_header(uint32_t count, uint64_t taken_in_ns=0):
    """The 16 bytes that make a run of encoded records (a record ring's take()) a batch."""
    result = PyBytes_FromStringAndSize(NULL, BATCH_HEADER_BYTES)
    write_header(<uint8_t*>PyBytes_AS_STRING(result), count, taken_in_ns)
    return result


def encode_batch(records, uint64_t taken_in_ns=0):
    """Packs a sequence of (metadata: bytes, value: bytes) into one batch."""
    cdef uint64_t total = encoded_size(records)
    cdef Py_ssize_t count = len(records)
    cdef bytes meta, value
    cdef char* out
    cdef Py_ssize_t position = BATCH_HEADER_BYTES
    if total > 0xFFFFFFFF or count > 0xFFFFFFFF:
        raise ValueError(f"a batch of {count} records and {total} bytes exceeds the 4 GiB frame limit")
    result = PyBytes_FromStringAndSize(NULL, total)
    out = PyBytes_AS_STRING(result)
    write_header(<uint8_t*>out, count, taken_in_ns)
    for meta, value in records:
        put32(<uint8_t*>out + position, <uint32_t>len(meta))
        put32(<uint8_t*>out + position + 4, <uint32_t>len(value))
        position += OVERHEAD_BYTES
        memcpy(out + position, PyBytes_AS_STRING(meta), len(meta))
        position += len(meta)
        memcpy(out + position, PyBytes_AS_STRING(value), len(value))
        position += len(value)
    return result


def batch_record_count(frame):
    """How many records a batch announces, read from its header without decoding it."""
    cdef const uint8_t[:] view
    if len(frame) < BATCH_HEADER_BYTES:
        return 0
    view = memoryview(frame).cast("B")
    return get32(&view[4])


def batch_taken_in_ns(frame):
    """The batch's taken-in time (ns since the epoch; 0 if the sender did not set it)."""
    cdef const uint8_t[:] view
    if len(frame) < BATCH_HEADER_BYTES:
        raise ValueError(f"batch of {len(frame)} bytes is shorter than its {BATCH_HEADER_BYTES}-byte header")
    view = memoryview(frame).cast("B")
    return get64(&view[8])


def decode_batch(frame, bint value_views=False):
    """Unpacks a batch into a list of (metadata, value); ValueError if it is not a valid batch.

    With value_views, each value is a read-only memoryview into the frame instead of a copy: for a sink that
    only writes values out (a file), a copy of every byte spared. The views keep the frame alive."""
    cdef const uint8_t[:] view
    frame_view = memoryview(frame).cast("B")
    view = frame_view
    count = checked_batch(&view[0] if len(frame_view) else NULL, len(frame_view))
    return decode_body(frame_view, BATCH_HEADER_BYTES, count, value_views)


def decode_records(body, uint32_t count):
    """Unpacks count records laid out one after another with no batch header (a record ring's take())."""
    cdef const uint8_t[:] view
    body_view = memoryview(body).cast("B")
    view = body_view
    check_records(&view[0] if len(body_view) else NULL, len(body_view), 0, count)
    return decode_body(body_view, 0, count, False)


cdef uint32_t checked_batch(const uint8_t* data, Py_ssize_t length) except? 0xFFFFFFFF:
    """The record count of a whole, well-formed batch; ValueError naming the first fault otherwise."""
    cdef uint32_t count
    if length < BATCH_HEADER_BYTES:
        raise ValueError(f"batch of {length} bytes is shorter than its {BATCH_HEADER_BYTES}-byte header")
    if data[0] != FORMAT:
        raise ValueError(f"unknown batch format {data[0]} (this build reads format {FORMAT})")
    count = get32(data + 4)
    check_records(data, length, BATCH_HEADER_BYTES, count)
    return count


cdef void check_records(const uint8_t* data, Py_ssize_t length, Py_ssize_t position, uint32_t count) except *:
    """That count records from position fill the rest of data exactly, each within it."""
    cdef uint32_t index, meta_length, value_length
    if count > (length - position) // OVERHEAD_BYTES:
        raise ValueError(f"batch announces {count} records but holds only {length} bytes")
    for index in range(count):
        if position + OVERHEAD_BYTES > length:
            raise ValueError(f"record {index} of {count} starts past the end of the {length}-byte batch")
        meta_length = get32(data + position)
        value_length = get32(data + position + 4)
        position += OVERHEAD_BYTES
        if <uint64_t>position + meta_length + value_length > <uint64_t>length:
            raise ValueError(f"record {index} of {count} runs past the end of the {length}-byte batch")
        position += meta_length + value_length
    if position != length:
        raise ValueError(f"batch has {length - position} trailing bytes after its {count} records")


cdef list decode_body(frame_view, Py_ssize_t position, uint32_t count, bint value_views):
    """The records of a checked batch or body, as (metadata, value) pairs."""
    cdef const uint8_t[:] view = frame_view
    cdef const char* data = <const char*>&view[0] if len(frame_view) else NULL
    cdef uint32_t index, meta_length, value_length
    records = []
    for index in range(count):
        meta_length = get32(<const uint8_t*>data + position)
        value_length = get32(<const uint8_t*>data + position + 4)
        position += OVERHEAD_BYTES
        records.append((
            PyBytes_FromStringAndSize(data + position, meta_length),
            frame_view[position + meta_length:position + meta_length + value_length] if value_views
            else PyBytes_FromStringAndSize(data + position + meta_length, value_length),
        ))
        position += meta_length + value_length
    return records
