"""RecordBatch v2, as Kafka producers send it, read into the Kafka handler's record metadata.

The listener's per-record work, so compiled: each record of a batch becomes the
(metadata, value) pair a Kafka source would have made of it after consuming it
from a broker (ddc/handlers/kafka/codec.pyx has the layout), so the egress cannot
tell the two apart. Hand-written because no library reads a batch to the record
level without a Python object per field: kio leaves `records` as bytes, and
kafka-python's reader is pure Python. Decompression is not here: a batch's
records are one compressed block, which the listener inflates with cramjam.

Records are packed for the link's ring as they are (PackedRecords): their metadata
in one block, their values where they lie. A batch is checked whole before any of
its records is packed: its CRC-32C, every record's length and offset delta, header
names as UTF-8 (Kafka's are strings), and record sizes against max_record_size. A
batch that fails is refused whole, with the error code Kafka gives
(BatchError.code), as a broker would.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from ddc._core.byteorder cimport get16, get32, get64, put16, put32
from ddc._core.posix cimport monotonic_ns
from ddc._core.ring cimport Entry, RecordRing
from ddc.handlers.kafka.codec cimport (FIXED_BYTES, KEY_PRESENT, NULL_LENGTH, RECORD, TOPIC_ID_BYTES,
                                       VALUE_PRESENT, write_head)

cdef extern from "crc32c.h" nogil:
    void ddc_crc32c_init()
    uint32_t ddc_crc32c_update(uint32_t crc, const uint8_t* data, size_t length)

cdef extern from "Python.h":
    object PyUnicode_DecodeUTF8(const char* text, Py_ssize_t size, const char* errors)

ddc_crc32c_init()

TIMESTAMP_CREATE_TIME = 1        # confluent_kafka's TIMESTAMP_CREATE_TIME, as the Kafka source packs it
TIMESTAMP_LOG_APPEND_TIME = 2


class BatchError(ValueError):
    """A batch refused whole; code is the Kafka error code for the partition's answer."""

    def __init__(self, code: int, text: str):
        super().__init__(text)
        self.code = code


cdef inline bint read_varlong(const uint8_t* data, Py_ssize_t end, Py_ssize_t* position, int64_t* out) noexcept nogil:
    """A zig-zag varint of at most 10 bytes; False if it runs past end or is longer."""
    cdef uint64_t raw = 0
    cdef int shift = 0
    cdef uint8_t byte
    while True:
        if position[0] >= end or shift > 63:
            return False
        byte = data[position[0]]
        position[0] += 1
        raw |= <uint64_t>(byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    out[0] = <int64_t>(raw >> 1) ^ -<int64_t>(raw & 1)
    return True


cdef inline bint read_length(const uint8_t* data, Py_ssize_t end, Py_ssize_t* position, int64_t* length,
                             bint may_be_null) noexcept nogil:
    """A length and the bytes it announces must fit before end; -1 (null) only where allowed."""
    if not read_varlong(data, end, position, length):
        return False
    if length[0] == -1 and may_be_null:
        return True
    return 0 <= length[0] <= end - position[0]


def read_batches(data) -> list:
    """The batches of one partition's `records` field, in order, as tuples (start, end, attributes,
    last_offset_delta, base_timestamp, max_timestamp, producer_id, producer_epoch, base_sequence, record_count),
    start and end framing the whole batch in data. Raises BatchError when one is truncated, not v2, or fails
    its CRC."""
    cdef Py_buffer view
    cdef const uint8_t* bytes_
    cdef Py_ssize_t length, position = 0, end
    cdef int64_t batch_length
    cdef uint32_t crc
    cdef list batches = []
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        bytes_ = <const uint8_t*>view.buf
        length = view.len
        while position < length:
            if length - position < BATCH_HEADER_BYTES:
                raise BatchError(BATCH_CORRUPT, f"a record batch is cut short: {length - position} bytes left, "
                                                f"a batch header has {BATCH_HEADER_BYTES}")
            batch_length = <int32_t>get32(bytes_ + position + 8)
            end = position + LENGTH_FIELD_END + batch_length
            if batch_length < BATCH_HEADER_BYTES - LENGTH_FIELD_END or end > length:
                raise BatchError(BATCH_CORRUPT, f"a record batch claims {batch_length} bytes; "
                                                f"{length - position - LENGTH_FIELD_END} are there")
            if bytes_[position + 16] != MAGIC_V2:
                raise BatchError(BATCH_INVALID, f"record batch magic {bytes_[position + 16]}: only v2 (Kafka 0.11 "
                                                "and later clients) is taken")
            with nogil:
                crc = ddc_crc32c_update(0, bytes_ + position + CRC_COVERS_FROM, end - position - CRC_COVERS_FROM)
            if crc != get32(bytes_ + position + 17):
                raise BatchError(BATCH_CORRUPT, f"record batch CRC-32C {get32(bytes_ + position + 17):08x} does "
                                                f"not match its content ({crc:08x})")
            batches.append((position, end, get16(bytes_ + position + 21), <int32_t>get32(bytes_ + position + 23),
                            <int64_t>get64(bytes_ + position + 27), <int64_t>get64(bytes_ + position + 35),
                            <int64_t>get64(bytes_ + position + 43), <int16_t>get16(bytes_ + position + 51),
                            <int32_t>get32(bytes_ + position + 53), <int32_t>get32(bytes_ + position + 57)))
            position = end
    finally:
        PyBuffer_Release(&view)
    return batches


cdef enum:
    MIN_RECORD_BYTES = 7  # length, attributes, timestamp and offset deltas, key and value lengths, header count


cdef struct Located:
    int64_t timestamp_delta
    Py_ssize_t key            # -1: null
    int64_t key_length
    Py_ssize_t value          # -1: null
    int64_t value_length
    Py_ssize_t headers
    int64_t header_count
    Py_ssize_t end
    Py_ssize_t metadata_bytes  # the headers' share of the metadata
    Py_ssize_t content_bytes   # key, value and headers as the metadata holds them: what max_record_size limits
    bint invalid               # the problem found is a refused value, not broken framing


cdef str locate_record(const uint8_t* data, Py_ssize_t end, Py_ssize_t* position, int64_t index, Located* record):
    """Finds one record's fields; returns what is wrong with it, or None."""
    cdef int64_t length, ignored, header_length, value_length
    cdef Py_ssize_t record_end
    cdef int64_t header
    record.invalid = False
    if not read_length(data, end, position, &length, False):
        return "a record's length runs past the batch"
    record_end = position[0] + length
    position[0] += 1  # attributes: unused in v2
    if (position[0] > record_end or not read_varlong(data, record_end, position, &record.timestamp_delta)
            or not read_varlong(data, record_end, position, &ignored)):
        return "a record is cut short"
    if ignored != index:
        record.invalid = True
        return f"record {index} has offset delta {ignored}"
    if not read_length(data, record_end, position, &record.key_length, True):
        return "a record's key runs past the record"
    record.key = -1 if record.key_length < 0 else position[0]
    position[0] += max(record.key_length, 0)
    if not read_length(data, record_end, position, &record.value_length, True):
        return "a record's value runs past the record"
    record.value = -1 if record.value_length < 0 else position[0]
    position[0] += max(record.value_length, 0)
    if not read_varlong(data, record_end, position, &record.header_count) or record.header_count < 0:
        return "a record's header count is malformed"
    record.headers = position[0]
    record.metadata_bytes = 0
    record.content_bytes = max(record.key_length, 0) + max(record.value_length, 0)
    for header in range(record.header_count):
        if not read_length(data, record_end, position, &header_length, False):
            return "a header name runs past the record"
        if header_length > 0xFFFF or not is_utf8(data + position[0], header_length):
            record.invalid = True
            return f"a header name of {header_length} bytes, over 65535 or not UTF-8"
        position[0] += header_length
        if not read_length(data, record_end, position, &value_length, True):
            return "a header value runs past the record"
        position[0] += max(value_length, 0)
        # Counted as the metadata holds them (6 bytes of lengths each): a header of 2 bytes on the wire, an empty
        # name and a null value, would otherwise let a record of a million of them fill the link's ring unchecked.
        record.metadata_bytes += 2 + header_length + 4 + max(value_length, 0)
        record.content_bytes += 2 + header_length + 4 + max(value_length, 0)
    if position[0] != record_end:
        return f"a record has {record_end - position[0]} bytes beyond its fields"
    record.end = record_end
    return None


cdef bint is_utf8(const uint8_t* text, Py_ssize_t length):
    cdef Py_ssize_t index
    for index in range(length):
        if text[index] & 0x80:
            try:
                PyUnicode_DecodeUTF8(<const char*>text, length, "strict")
            except UnicodeDecodeError:
                return False
            return True
    return True


cdef class PackedRecords:
    """One batch's records as the link's ring takes them: every record's metadata in one block, its value left
    where it lies in the (decompressed) batch, and an entry per record pointing at both; no Python object per
    record. The pump thread puts them with put_into(), in as many calls as the ring's room allows."""

    cdef bytes metadata
    cdef Py_buffer payload
    cdef bint holds_payload
    cdef Entry* entries
    cdef readonly Py_ssize_t count
    cdef readonly Py_ssize_t size
    cdef Py_ssize_t put

    def __dealloc__(self):
        free(self.entries)
        if self.holds_payload:
            PyBuffer_Release(&self.payload)

    def __len__(self):
        return self.count

    @property
    def left(self) -> int:
        """Records not yet in the ring."""
        return self.count - self.put

    def put_into(self, RecordRing ring, double timeout):
        """Puts what the ring has room for within timeout seconds; True once every record is in."""
        cdef int64_t deadline = monotonic_ns() + <int64_t>(timeout * 1e9)
        with nogil:
            self.put += ring.put_entries(self.entries + self.put, self.count - self.put, deadline)
        return self.put == self.count

    def records(self) -> list:
        """(metadata, value) pairs, as a Python-made source gives them (tests, and filters when a link has them)."""
        return [(PyBytes_FromStringAndSize(<const char*>self.entries[index].metadata,
                                           self.entries[index].metadata_length),
                 PyBytes_FromStringAndSize(<const char*>self.entries[index].value, self.entries[index].value_length))
                for index in range(self.count)]


def pack_records(payload, int32_t record_count, bytes topic_bytes, int32_t partition, int64_t first_offset,
                 int64_t previous_offset, int64_t stream_start, uint16_t attributes, int64_t base_timestamp,
                 int64_t max_timestamp, uint8_t assignment, bytes topic_id, Py_ssize_t max_record_size):
    """The records of one batch's (decompressed) records, numbered from first_offset; the first carries
    previous_offset, each later one the offset before it. Raises BatchError, having made nothing, when the
    records do not add up to record_count, break the format, or one is over max_record_size."""
    cdef PackedRecords packed = PackedRecords.__new__(PackedRecords)
    cdef Located* located = NULL
    cdef const uint8_t* data
    cdef Py_ssize_t end, position = 0, total = 0, fixed, at, header_position
    cdef int64_t index, header, timestamp, name_length = 0, value_length = 0
    cdef str problem
    cdef char* out
    cdef Located* record
    cdef uint8_t timestamp_type = TIMESTAMP_LOG_APPEND_TIME if attributes & LOG_APPEND_TIME else TIMESTAMP_CREATE_TIME
    cdef Py_ssize_t id_length = 0 if topic_id is None else TOPIC_ID_BYTES
    if topic_id is not None and len(topic_id) != TOPIC_ID_BYTES:
        raise ValueError(f"a topic id has {TOPIC_ID_BYTES} bytes, not {len(topic_id)}")
    if record_count <= 0:
        raise BatchError(BATCH_INVALID, f"a record batch with {record_count} records")
    PyObject_GetBuffer(payload, &packed.payload, PyBUF_SIMPLE)
    packed.holds_payload = True
    data = <const uint8_t*>packed.payload.buf
    end = packed.payload.len
    if record_count > end // MIN_RECORD_BYTES:
        raise BatchError(BATCH_CORRUPT, f"{record_count} records cannot fit in {end} bytes")
    fixed = FIXED_BYTES + 2 + len(topic_bytes) + id_length + 4 + 4
    located = <Located*>malloc(record_count * sizeof(Located))
    packed.entries = <Entry*>malloc(record_count * sizeof(Entry))
    if located == NULL or packed.entries == NULL:
        free(located)
        raise MemoryError(f"cannot place {record_count} records")
    try:
        for index in range(record_count):
            problem = locate_record(data, end, &position, index, &located[index])
            if problem is not None:
                raise BatchError(BATCH_INVALID if located[index].invalid else BATCH_CORRUPT, problem)
            if located[index].content_bytes > max_record_size:
                raise BatchError(BATCH_TOO_LARGE, f"a record of {located[index].content_bytes} bytes is larger "
                                                  f"than max_record_size ({max_record_size})")
            total += fixed + max(located[index].key_length, 0) + located[index].metadata_bytes
        if position != end:
            raise BatchError(BATCH_CORRUPT, f"{end - position} bytes follow the batch's {record_count} records")
        packed.metadata = PyBytes_FromStringAndSize(NULL, total)
        out = PyBytes_AS_STRING(packed.metadata)
        packed.size = total + end
        for index in range(record_count):
            record = &located[index]
            timestamp = max_timestamp if timestamp_type == TIMESTAMP_LOG_APPEND_TIME \
                else base_timestamp + record.timestamp_delta
            packed.entries[index].metadata = <const uint8_t*>out
            at = write_head(out, RECORD, (KEY_PRESENT if record.key >= 0 else 0)
                            | (VALUE_PRESENT if record.value >= 0 else 0), timestamp_type, assignment, partition,
                            first_offset + index, previous_offset if index == 0 else first_offset + index - 1,
                            timestamp, stream_start, PyBytes_AS_STRING(topic_bytes), len(topic_bytes),
                            PyBytes_AS_STRING(topic_id) if id_length else NULL)
            put32(<uint8_t*>out + at, <uint32_t>max(record.key_length, 0))
            if record.key >= 0:
                memcpy(out + at + 4, data + record.key, record.key_length)
            at += 4 + max(record.key_length, 0)
            put32(<uint8_t*>out + at, <uint32_t>record.header_count)
            at += 4
            header_position = record.headers
            for header in range(record.header_count):
                read_varlong(data, record.end, &header_position, &name_length)
                put16(<uint8_t*>out + at, <uint16_t>name_length)
                memcpy(out + at + 2, data + header_position, name_length)
                at += 2 + name_length
                header_position += name_length
                read_varlong(data, record.end, &header_position, &value_length)
                if value_length < 0:
                    put32(<uint8_t*>out + at, NULL_LENGTH)
                    at += 4
                else:
                    put32(<uint8_t*>out + at, <uint32_t>value_length)
                    memcpy(out + at + 4, data + header_position, value_length)
                    at += 4 + value_length
                    header_position += value_length
            packed.entries[index].metadata_length = at
            packed.entries[index].value = data + record.value if record.value >= 0 else data
            packed.entries[index].value_length = max(record.value_length, 0)
            out += at
        packed.count = record_count
    finally:
        free(located)
    return packed
