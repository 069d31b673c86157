"""Kafka record metadata: everything about a record but its value, in one record-batch metadata field.

The transport carries (metadata, value) pairs and never looks inside; this is the
Kafka handlers' metadata. It keeps what Kafka distinguishes and a copy loop
usually loses: a null key apart from an empty one, a null value (tombstone) apart
from an empty one, header order, duplicate header names and null header values,
the timestamp type. It also carries the source coordinates and the offset of
the record the consumer saw before this one in its partition, which lets the
egress tell offsets that never existed (compaction, transaction markers) from
records lost on the way, and where the group's stream of the partition starts,
so that an egress whose destination holds nothing of a partition yet can still
say what it lacks. The assignment byte changes each time the ingress is given the
partition by its consumer group: another ingress may have sent part of it in
between, through another egress, so the egress reads the destination again
before trusting what it knows of the partition. A placeholder (kind SKIPPED or FILTERED) stands for a
record the ingress did not send, so that the egress counts it instead of
reporting it missing. A POSITION says every record of the partition up to its
offset has been sent: without it, records lost at the end of a stream would go
unnoticed until the partition's next record. Written in Cython because it runs
once per record.

Layout (big-endian): u8 kind, u8 flags (bit 0 key present, bit 1 value present),
u8 timestamp type, u8 assignment (0: unknown), i32 partition, i64 offset, i64 previous offset
(-1: unknown), i64 timestamp (ms), i64 stream start (the first offset of the
partition this consumer group replicates; -1: unknown), u16 topic length, topic (UTF-8), u32 key
length, key, u32 header count, then per header u16 name length, name (UTF-8),
u32 value length (0xFFFFFFFF: null), value.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

from functools import partial

from ddc._core.byteorder cimport get16, get32, get64, put16, put32, put64


SOURCE_TOPIC_HEADER = "sourceTopic"
SOURCE_PARTITION_HEADER = "sourcePartition"
SOURCE_OFFSET_HEADER = "sourceOffset"

RECORD = 0
SKIPPED = 1
FILTERED = 2
POSITION = 3
KINDS = (RECORD, SKIPPED, FILTERED, POSITION)
UNKNOWN_OFFSET = -1

cdef enum:
    FIXED_BYTES = 40
    KEY_PRESENT = 1
    VALUE_PRESENT = 2
    NULL_LENGTH = 0xFFFFFFFF


def pack(uint8_t kind, str topic, int32_t partition, int64_t offset, int64_t previous_offset,
         int64_t stream_start, uint8_t timestamp_type, int64_t timestamp, key, headers, bint value_present,
         uint8_t assignment=0):
    """Metadata for one record; key is bytes or None, headers a list of (str, bytes | None) or None."""
    return pack_encoded(kind, topic.encode("utf-8"), partition, offset, previous_offset, stream_start,
                        timestamp_type, timestamp, key, headers, value_present, assignment)


cdef bytes pack_encoded(uint8_t kind, bytes topic_bytes, int32_t partition, int64_t offset, int64_t previous_offset,
                        int64_t stream_start, uint8_t timestamp_type, int64_t timestamp, key, headers,
                        bint value_present, uint8_t assignment):
    cdef bytes key_bytes = key if key is not None else b""
    cdef list encoded_headers = []
    cdef Py_ssize_t total, position
    cdef char* out
    cdef bytes name_bytes, header_value
    if len(topic_bytes) > 0xFFFF:
        raise ValueError(f"topic name of {len(topic_bytes)} bytes is longer than Kafka allows")
    total = FIXED_BYTES + 2 + len(topic_bytes) + 4 + len(key_bytes) + 4
    if headers:
        for name, value in headers:
            name_bytes = name.encode("utf-8") if isinstance(name, str) else bytes(name)
            if len(name_bytes) > 0xFFFF:
                raise ValueError(f"header name of {len(name_bytes)} bytes is too long")
            header_value = None if value is None else (value if isinstance(value, bytes) else str(value).encode())
            encoded_headers.append((name_bytes, header_value))
            total += 2 + len(name_bytes) + 4 + (0 if header_value is None else len(header_value))
    result = PyBytes_FromStringAndSize(NULL, total)
    out = PyBytes_AS_STRING(result)
    out[0] = kind
    out[1] = (KEY_PRESENT if key is not None else 0) | (VALUE_PRESENT if value_present else 0)
    out[2] = timestamp_type
    out[3] = assignment
    put32(<uint8_t*>out + 4, <uint32_t>partition)
    put64(<uint8_t*>out + 8, <uint64_t>offset)
    put64(<uint8_t*>out + 16, <uint64_t>previous_offset)
    put64(<uint8_t*>out + 24, <uint64_t>timestamp)
    put64(<uint8_t*>out + 32, <uint64_t>stream_start)
    position = FIXED_BYTES
    put16(<uint8_t*>out + position, <uint16_t>len(topic_bytes))
    memcpy(out + position + 2, PyBytes_AS_STRING(topic_bytes), len(topic_bytes))
    position += 2 + len(topic_bytes)
    put32(<uint8_t*>out + position, <uint32_t>len(key_bytes))
    memcpy(out + position + 4, PyBytes_AS_STRING(key_bytes), len(key_bytes))
    position += 4 + len(key_bytes)
    put32(<uint8_t*>out + position, <uint32_t>len(encoded_headers))
    position += 4
    for name_bytes, header_value in encoded_headers:
        put16(<uint8_t*>out + position, <uint16_t>len(name_bytes))
        memcpy(out + position + 2, PyBytes_AS_STRING(name_bytes), len(name_bytes))
        position += 2 + len(name_bytes)
        if header_value is None:
            put32(<uint8_t*>out + position, NULL_LENGTH)
            position += 4
        else:
            put32(<uint8_t*>out + position, <uint32_t>len(header_value))
            memcpy(out + position + 4, PyBytes_AS_STRING(header_value), len(header_value))
            position += 4 + len(header_value)
    return result


cdef int malformed(Py_ssize_t length, str what) except -1:
    raise ValueError(f"Kafka metadata of {length} bytes ends inside its {what}")


cdef inline bint short(Py_ssize_t position, uint64_t count, Py_ssize_t length) noexcept nogil:
    return <uint64_t>position + count > <uint64_t>length


cdef tuple unpack_raw(const uint8_t* data, Py_ssize_t length, object value, bint with_value):
    cdef Py_ssize_t position
    cdef uint32_t count, index, value_length
    cdef uint16_t name_length
    cdef list headers = []
    if length < FIXED_BYTES + 10:
        raise ValueError(f"Kafka metadata of {length} bytes is shorter than its fixed part")
    if data[0] > POSITION:
        raise ValueError(f"Kafka metadata has unknown kind {data[0]}")
    position = FIXED_BYTES
    name_length = get16(data + position)
    if short(position + 2, name_length, length):
        malformed(length, "topic")
    topic = PyUnicode_DecodeUTF8(<const char*>data + position + 2, name_length, NULL)
    position += 2 + name_length
    if short(position, 4, length):
        malformed(length, "key length")
    value_length = get32(data + position)
    if short(position + 4, value_length, length):
        malformed(length, "key")
    key = PyBytes_FromStringAndSize(<const char*>data + position + 4, value_length) if data[1] & KEY_PRESENT else None
    position += 4 + value_length
    if short(position, 4, length):
        malformed(length, "header count")
    count = get32(data + position)
    position += 4
    if count > <uint32_t>((length - position) // 6):
        raise ValueError(f"Kafka metadata announces {count} headers in {length - position} bytes")
    for index in range(count):
        if short(position, 2, length):
            malformed(length, "header name length")
        name_length = get16(data + position)
        if short(position + 2, name_length + 4, length):
            malformed(length, "header name")
        name = PyUnicode_DecodeUTF8(<const char*>data + position + 2, name_length, NULL)
        position += 2 + name_length
        value_length = get32(data + position)
        position += 4
        if value_length == NULL_LENGTH:
            headers.append((name, None))
            continue
        if short(position, value_length, length):
            malformed(length, "header value")
        headers.append((name, PyBytes_FromStringAndSize(<const char*>data + position, value_length)))
        position += value_length
    if position != length:
        raise ValueError(f"Kafka metadata has {length - position} trailing bytes")
    if with_value:
        return (data[0], topic, <int32_t>get32(data + 4), <int64_t>get64(data + 8), <int64_t>get64(data + 16),
                <int64_t>get64(data + 32), data[2], <int64_t>get64(data + 24), key, headers,
                (data[1] & VALUE_PRESENT) != 0, data[3], value)
    return (data[0], topic, <int32_t>get32(data + 4), <int64_t>get64(data + 8), <int64_t>get64(data + 16),
            <int64_t>get64(data + 32), data[2], <int64_t>get64(data + 24), key, headers,
            (data[1] & VALUE_PRESENT) != 0, data[3])


def unpack(metadata):
    """(kind, topic, partition, offset, previous_offset, stream_start, timestamp_type, timestamp, key,
    headers, value_present, assignment); ValueError for anything malformed."""
    cdef const uint8_t[:] view
    if isinstance(metadata, bytes):
        return unpack_raw(<const uint8_t*>PyBytes_AS_STRING(metadata), PyBytes_GET_SIZE(metadata), None, False)
    view = memoryview(metadata).cast("B")
    if len(view) == 0:
        raise ValueError("Kafka metadata of 0 bytes is shorter than its fixed part")
    return unpack_raw(&view[0], len(view), None, False)


def coordinates(metadata):
    """(topic, partition, offset) without decoding keys and headers, for log lines."""
    cdef const uint8_t[:] view
    cdef Py_ssize_t length = len(metadata)
    cdef uint16_t name_length
    if length < FIXED_BYTES + 2:
        raise ValueError(f"Kafka metadata of {length} bytes is shorter than its fixed part")
    view = memoryview(metadata).cast("B")
    name_length = get16(&view[FIXED_BYTES])
    if short(FIXED_BYTES + 2, name_length, length):
        malformed(length, "topic")
    topic = bytes(view[FIXED_BYTES + 2:FIXED_BYTES + 2 + name_length]).decode("utf-8")
    return topic, <int32_t>get32(&view[4]), <int64_t>get64(&view[8])


def pack_messages(messages, dict previous_offsets, dict starts, dict assignments, dict next_offsets,
                  Py_ssize_t max_record_size):
    """Records for a batch of consumed messages, in one compiled loop (the ingress's per-record work).

    `messages` are consumer messages (topic(), partition(), offset(), key(), value(), headers(),
    timestamp(), error()). Updates previous_offsets, starts and next_offsets per (topic, partition);
    assignments gives each partition's assignment byte.
    Returns (records, errors, skipped): errors are the messages' error objects, skipped the
    (topic, partition, offset, size) of records over max_record_size, sent as SKIPPED placeholders."""
    cdef list records = []
    cdef list errors = []
    cdef list skipped = []
    cdef dict encoded_topics = {}
    cdef Py_ssize_t size
    cdef int64_t offset, previous
    cdef uint8_t kind
    for message in messages:
        error = message.error()
        if error is not None:
            errors.append(error)
            continue
        topic = message.topic()
        partition = message.partition()
        offset = message.offset()
        coordinate = (topic, partition)
        previous = previous_offsets.get(coordinate, UNKNOWN_OFFSET)
        previous_offsets[coordinate] = offset
        start = starts.get(coordinate)
        if start is None:
            start = offset
            starts[coordinate] = start
        next_offsets[coordinate] = offset + 1
        key = message.key()
        value = message.value()
        headers = message.headers()
        size = (len(key) if key is not None else 0) + (len(value) if value is not None else 0)
        if headers:
            for name, data in headers:
                size += len(name) + (len(data) if data is not None else 0)
        timestamp_type, timestamp = message.timestamp()
        kind = RECORD
        if size > max_record_size:
            kind = SKIPPED
            skipped.append((topic, partition, offset, size))
            key = headers = value = None
        topic_bytes = encoded_topics.get(topic)
        if topic_bytes is None:
            topic_bytes = encoded_topics[topic] = topic.encode("utf-8")
        records.append((pack_encoded(kind, topic_bytes, partition, offset, previous, start, timestamp_type,
                                     timestamp, key, headers, value is not None, assignments.get(coordinate, 0)),
                        value if value is not None else b""))
    return records, errors, skipped


def unpack_records(records):
    """unpack() applied to a batch's (metadata, value) records in one compiled loop: a list of
    (kind, topic, partition, offset, previous_offset, stream_start, timestamp_type, timestamp, key, headers,
    value_present, assignment, value), and the number of records whose metadata was malformed (left out)."""
    cdef list unpacked = []
    cdef Py_ssize_t refused = 0
    cdef bytes metadata
    for metadata, value in records:
        try:
            unpacked.append(unpack_raw(<const uint8_t*>PyBytes_AS_STRING(metadata), PyBytes_GET_SIZE(metadata),
                                       value, True))
        except ValueError:
            refused += 1
    return unpacked, refused


def write_records(list records, dict routes, dict assignments, route_for, admit_out_of_order, produce, failed,
                  undeliverable, wait_for_room, uint8_t timestamp_create):
    """The egress's per-record loop, compiled: unpack, route, the in-order fast path, the source headers, produce.

    Everything that is not the next record of its partition, or comes with an assignment byte other than the
    one in assignments for its partition, goes to admit_out_of_order(route, kind, offset, previous, start,
    assignment) -> bool. Routes are (source topic, source partition, target, target partition, ledger,
    topic bytes, partition bytes); route_for(topic, partition) makes a missing one. produce is the producer's
    produce(); failed(topic, partition, offset, error, message) is bound per record as its delivery callback;
    undeliverable(topic, partition, offset, reason) is called when produce() refuses a record; wait_for_room()
    when the producer's queue is full. Returns (records produced, records with malformed metadata)."""
    cdef Py_ssize_t produced = 0, refused = 0
    cdef bytes metadata
    cdef tuple fields
    cdef uint8_t kind
    cdef int64_t offset, previous, timestamp
    for metadata, value in records:
        try:
            fields = unpack_raw(<const uint8_t*>PyBytes_AS_STRING(metadata), PyBytes_GET_SIZE(metadata), value, True)
        except ValueError:
            refused += 1
            continue
        kind = fields[0]
        topic = fields[1]
        partition = fields[2]
        offset = fields[3]
        previous = fields[4]
        coordinate = (topic, partition)
        route = routes.get(coordinate)
        if route is None:
            route = route_for(topic, partition)
        ledger = route[4]
        high = ledger.high
        assignment = fields[11]
        if kind == RECORD and high is not None and previous <= high and high < offset and (
                assignment == 0 or assignments.get(coordinate) == assignment):
            ledger.high = offset
        elif not admit_out_of_order(route, kind, offset, previous, fields[5], assignment):
            continue
        headers = fields[9]
        headers.append((SOURCE_TOPIC_HEADER, route[5]))
        headers.append((SOURCE_PARTITION_HEADER, route[6]))
        headers.append((SOURCE_OFFSET_HEADER, str(offset).encode()))
        timestamp = fields[7]
        if fields[6] != timestamp_create or timestamp < 0:
            timestamp = 0
        while True:
            try:
                produce(route[2], value if fields[10] else None, fields[8], partition=route[3], headers=headers,
                        on_delivery=partial(failed, topic, partition, offset), timestamp=timestamp)
            except BufferError:
                wait_for_room()
                continue
            except Exception as error:
                undeliverable(topic, partition, offset, str(error))
            else:
                produced += 1
            break
    return produced, refused
