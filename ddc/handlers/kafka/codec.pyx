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
before trusting what it knows of the partition. The source topic's id (Kafka's
16-byte topic UUID, where the broker has one) tells incarnations of a topic
apart: a topic deleted and created again, or a source cluster rebuilt, starts its
offsets again, and the egress must deliver those records, not drop them as
duplicates of the old topic's. A placeholder (kind SKIPPED or FILTERED) stands for a
record the ingress did not send, so that the egress counts it instead of
reporting it missing. A POSITION says every record of the partition up to its
offset has been sent: without it, records lost at the end of a stream would go
unnoticed until the partition's next record. Written in Cython because it runs
once per record.

Layout (big-endian): u8 kind, u8 flags (bit 0 key present, bit 1 value present, bit 2 topic id present),
u8 timestamp type, u8 assignment (0: unknown), i32 partition, i64 offset, i64 previous offset
(-1: unknown), i64 timestamp (ms), i64 stream start (the first offset of the
partition this consumer group replicates; -1: unknown), u16 topic length, topic (UTF-8), the
topic id (16 bytes, with flag bit 2), u32 key length, key, u32 header count, then per header u16 name length, name (UTF-8),
u32 value length (0xFFFFFFFF: null), value.

One module, over 400 lines: the layout (pack, locate) and the per-record loops that
walk it in place (pack_messages on the ingress, RecordWriter on the egress) belong
together; apart, every record's locate() would be a call across modules instead of
C inlined into the loop.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from ddc._core.byteorder cimport get16, get32, get64, put16, put32

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL


SOURCE_TOPIC_HEADER = "sourceTopic"
SOURCE_PARTITION_HEADER = "sourcePartition"
SOURCE_OFFSET_HEADER = "sourceOffset"
SOURCE_TOPIC_ID_HEADER = "sourceTopicId"

KINDS = (RECORD, SKIPPED, FILTERED, POSITION)
UNKNOWN_OFFSET = -1


def pack(uint8_t kind, str topic, int32_t partition, int64_t offset, int64_t previous_offset,
         int64_t stream_start, uint8_t timestamp_type, int64_t timestamp, key, headers, bint value_present,
         uint8_t assignment=0, bytes topic_id=None):
    """Metadata for one record; key is bytes or None, headers a list of (str, bytes | None) or None, topic_id
    the topic's 16-byte id or None."""
    return pack_encoded(kind, topic.encode("utf-8"), partition, offset, previous_offset, stream_start,
                        timestamp_type, timestamp, key, headers, value_present, assignment, topic_id)


cdef bint plain_headers(list headers):
    """Whether every header is (str, bytes | None), as a consumer gives them: those are written as they are,
    without first making a normalized list of them."""
    for header in headers:
        if type(header) is not tuple or len(<tuple>header) != 2 or type((<tuple>header)[0]) is not str:
            return False
        value = (<tuple>header)[1]
        if value is not None and type(value) is not bytes:
            return False
    return True


cdef list normalized_headers(headers):
    """Any header form pack() accepts, as (bytes, bytes | None)."""
    cdef list normalized = []
    for name, value in headers:
        normalized.append((name.encode("utf-8") if isinstance(name, str) else bytes(name),
                           None if value is None else (value if isinstance(value, bytes) else str(value).encode())))
    return normalized


cdef inline const char* header_name(object name, Py_ssize_t* length) except NULL:
    cdef const char* text
    if type(name) is str:
        text = PyUnicode_AsUTF8AndSize(name, length)
    else:
        text = PyBytes_AS_STRING(name)
        length[0] = PyBytes_GET_SIZE(name)
    if length[0] > 0xFFFF:
        raise ValueError(f"header name of {length[0]} bytes is too long")
    return text


cdef bytes pack_encoded(uint8_t kind, bytes topic_bytes, int32_t partition, int64_t offset, int64_t previous_offset,
                        int64_t stream_start, uint8_t timestamp_type, int64_t timestamp, key, headers,
                        bint value_present, uint8_t assignment, bytes topic_id):
    cdef bytes key_bytes = key if key is not None else b""
    cdef Py_ssize_t id_length = 0 if topic_id is None else TOPIC_ID_BYTES
    cdef list header_list
    cdef Py_ssize_t total, position, name_length
    cdef const char* name_text
    cdef char* out
    if len(topic_bytes) > 0xFFFF:
        raise ValueError(f"topic name of {len(topic_bytes)} bytes is longer than Kafka allows")
    if topic_id is not None and len(topic_id) != TOPIC_ID_BYTES:
        raise ValueError(f"a topic id has {TOPIC_ID_BYTES} bytes, not {len(topic_id)}")
    if not headers:
        header_list = []
    elif type(headers) is list and plain_headers(<list>headers):
        header_list = <list>headers
    else:
        header_list = normalized_headers(headers)
    total = FIXED_BYTES + 2 + len(topic_bytes) + id_length + 4 + len(key_bytes) + 4
    for name, header_value in header_list:
        header_name(name, &name_length)
        total += 2 + name_length + 4 + (0 if header_value is None else PyBytes_GET_SIZE(header_value))
    result = PyBytes_FromStringAndSize(NULL, total)
    out = PyBytes_AS_STRING(result)
    position = write_head(out, kind, (KEY_PRESENT if key is not None else 0) | (VALUE_PRESENT if value_present else 0),
                          timestamp_type, assignment, partition, offset, previous_offset, timestamp, stream_start,
                          PyBytes_AS_STRING(topic_bytes), len(topic_bytes),
                          PyBytes_AS_STRING(topic_id) if id_length else NULL)
    put32(<uint8_t*>out + position, <uint32_t>len(key_bytes))
    memcpy(out + position + 4, PyBytes_AS_STRING(key_bytes), len(key_bytes))
    position += 4 + len(key_bytes)
    put32(<uint8_t*>out + position, <uint32_t>len(header_list))
    position += 4
    for name, header_value in header_list:
        name_text = header_name(name, &name_length)
        put16(<uint8_t*>out + position, <uint16_t>name_length)
        memcpy(out + position + 2, name_text, name_length)
        position += 2 + name_length
        if header_value is None:
            put32(<uint8_t*>out + position, NULL_LENGTH)
            position += 4
        else:
            put32(<uint8_t*>out + position, <uint32_t>PyBytes_GET_SIZE(header_value))
            memcpy(out + position + 4, PyBytes_AS_STRING(header_value), PyBytes_GET_SIZE(header_value))
            position += 4 + PyBytes_GET_SIZE(header_value)
    return result


cdef enum Malformation:
    WELL_FORMED
    SHORTER_THAN_FIXED_PART
    UNKNOWN_KIND
    INSIDE_TOPIC
    INSIDE_TOPIC_ID
    UNKNOWN_FLAGS
    INSIDE_KEY_LENGTH
    INSIDE_KEY
    INSIDE_HEADER_COUNT
    TOO_MANY_HEADERS
    INSIDE_HEADER_NAME_LENGTH
    INSIDE_HEADER_NAME
    INSIDE_HEADER_VALUE
    TRAILING_BYTES


cdef struct Layout:
    # Where the variable parts of one metadata field are, found once without creating an object.
    Py_ssize_t topic_at
    uint16_t topic_length
    Py_ssize_t topic_id_at  # 0: no topic id
    Py_ssize_t key_at
    uint32_t key_length
    Py_ssize_t headers_at
    uint32_t header_count
    Py_ssize_t stopped_at


cdef inline bint short(Py_ssize_t position, uint64_t count, Py_ssize_t length) noexcept nogil:
    return <uint64_t>position + count > <uint64_t>length


cdef Malformation locate(const uint8_t* data, Py_ssize_t length, Layout* layout) noexcept nogil:
    cdef Py_ssize_t position
    cdef uint32_t index, value_length
    cdef uint16_t name_length
    layout.stopped_at = 0
    if length < FIXED_BYTES + 10:
        return SHORTER_THAN_FIXED_PART
    if data[0] > POSITION:
        return UNKNOWN_KIND
    if data[1] & ~(KEY_PRESENT | VALUE_PRESENT | TOPIC_ID_PRESENT):
        return UNKNOWN_FLAGS
    position = FIXED_BYTES
    layout.topic_length = get16(data + position)
    layout.topic_at = position + 2
    if short(position + 2, layout.topic_length, length):
        return INSIDE_TOPIC
    position += 2 + layout.topic_length
    layout.topic_id_at = 0
    if data[1] & TOPIC_ID_PRESENT:
        if short(position, TOPIC_ID_BYTES, length):
            return INSIDE_TOPIC_ID
        layout.topic_id_at = position
        position += TOPIC_ID_BYTES
    if short(position, 4, length):
        return INSIDE_KEY_LENGTH
    layout.key_length = get32(data + position)
    layout.key_at = position + 4
    if short(position + 4, layout.key_length, length):
        return INSIDE_KEY
    position += 4 + layout.key_length
    if short(position, 4, length):
        return INSIDE_HEADER_COUNT
    layout.header_count = get32(data + position)
    position += 4
    layout.headers_at = position
    layout.stopped_at = position
    if layout.header_count > <uint32_t>((length - position) // 6):
        return TOO_MANY_HEADERS
    for index in range(layout.header_count):
        if short(position, 2, length):
            return INSIDE_HEADER_NAME_LENGTH
        name_length = get16(data + position)
        if short(position + 2, name_length + 4, length):
            return INSIDE_HEADER_NAME
        position += 2 + name_length
        value_length = get32(data + position)
        position += 4
        if value_length != NULL_LENGTH:
            if short(position, value_length, length):
                return INSIDE_HEADER_VALUE
            position += value_length
    layout.stopped_at = position
    if position != length:
        return TRAILING_BYTES
    return WELL_FORMED


cdef int refuse(Malformation malformation, const uint8_t* data, Py_ssize_t length, Layout* layout) except -1:
    if malformation == SHORTER_THAN_FIXED_PART:
        raise ValueError(f"Kafka metadata of {length} bytes is shorter than its fixed part")
    if malformation == UNKNOWN_KIND:
        raise ValueError(f"Kafka metadata has unknown kind {data[0]}")
    if malformation == UNKNOWN_FLAGS:
        raise ValueError(f"Kafka metadata has unknown flags {data[1]:#04x}")
    if malformation == TOO_MANY_HEADERS:
        raise ValueError(f"Kafka metadata announces {layout.header_count} headers in "
                         f"{length - layout.stopped_at} bytes")
    if malformation == TRAILING_BYTES:
        raise ValueError(f"Kafka metadata has {length - layout.stopped_at} trailing bytes")
    part = {INSIDE_TOPIC: "topic", INSIDE_TOPIC_ID: "topic id", INSIDE_KEY_LENGTH: "key length", INSIDE_KEY: "key",
            INSIDE_HEADER_COUNT: "header count", INSIDE_HEADER_NAME_LENGTH: "header name length",
            INSIDE_HEADER_NAME: "header name", INSIDE_HEADER_VALUE: "header value"}[malformation]
    raise ValueError(f"Kafka metadata of {length} bytes ends inside its {part}")


cdef list located_headers(const uint8_t* data, Layout* layout):
    """The headers of well-formed metadata (locate() has checked every length) as (str, bytes | None)."""
    cdef list headers = []
    cdef Py_ssize_t position = layout.headers_at
    cdef uint32_t index, value_length
    cdef uint16_t name_length
    for index in range(layout.header_count):
        name_length = get16(data + position)
        name = PyUnicode_DecodeUTF8(<const char*>data + position + 2, name_length, NULL)
        position += 2 + name_length
        value_length = get32(data + position)
        position += 4
        if value_length == NULL_LENGTH:
            headers.append((name, None))
        else:
            headers.append((name, PyBytes_FromStringAndSize(<const char*>data + position, value_length)))
            position += value_length
    return headers


cdef tuple unpack_raw(const uint8_t* data, Py_ssize_t length, object value, bint with_value):
    cdef Layout layout
    cdef Malformation malformation = locate(data, length, &layout)
    if malformation != WELL_FORMED:
        refuse(malformation, data, length, &layout)
    topic = PyUnicode_DecodeUTF8(<const char*>data + layout.topic_at, layout.topic_length, NULL)
    key = (PyBytes_FromStringAndSize(<const char*>data + layout.key_at, layout.key_length)
           if data[1] & KEY_PRESENT else None)
    headers = located_headers(data, &layout)
    topic_id = (PyBytes_FromStringAndSize(<const char*>data + layout.topic_id_at, TOPIC_ID_BYTES)
                if layout.topic_id_at else None)
    if with_value:
        return (data[0], topic, <int32_t>get32(data + 4), <int64_t>get64(data + 8), <int64_t>get64(data + 16),
                <int64_t>get64(data + 32), data[2], <int64_t>get64(data + 24), key, headers,
                (data[1] & VALUE_PRESENT) != 0, data[3], topic_id, value)
    return (data[0], topic, <int32_t>get32(data + 4), <int64_t>get64(data + 8), <int64_t>get64(data + 16),
            <int64_t>get64(data + 32), data[2], <int64_t>get64(data + 24), key, headers,
            (data[1] & VALUE_PRESENT) != 0, data[3], topic_id)


def unpack(metadata):
    """(kind, topic, partition, offset, previous_offset, stream_start, timestamp_type, timestamp, key,
    headers, value_present, assignment, topic_id); ValueError for anything malformed."""
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
        raise ValueError(f"Kafka metadata of {length} bytes ends inside its topic")
    topic = bytes(view[FIXED_BYTES + 2:FIXED_BYTES + 2 + name_length]).decode("utf-8")
    return topic, <int32_t>get32(&view[4]), <int64_t>get64(&view[8])


def pack_messages(messages, dict previous_offsets, dict starts, dict assignments, dict next_offsets,
                  Py_ssize_t max_record_size, dict topic_ids=None, bint first_may_go_back=False):
    """Records for a batch of consumed messages, in one compiled loop (the ingress's per-record work).

    `messages` are consumer messages (topic(), partition(), offset(), key(), value(), headers(),
    timestamp(), error()). Updates previous_offsets, starts and next_offsets per (topic, partition);
    assignments gives each partition's assignment byte, topic_ids the topic id its records carry (16 bytes;
    absent or None: none).
    Stops before a message whose offset is not above the previous one of its partition (but the first with
    first_may_go_back): its topic may have been created again, and the caller asks for its id before the
    records of the new topic go out under the old one's.
    Returns (records, errors, skipped, handled): errors are the messages' error objects, skipped the
    (topic, partition, offset, size) of records over max_record_size, sent as SKIPPED placeholders, handled
    how many messages were read (all of them unless it stopped)."""
    cdef list records = []
    cdef list errors = []
    cdef list skipped = []
    cdef Py_ssize_t size
    cdef int64_t offset, previous = UNKNOWN_OFFSET
    cdef uint8_t kind, assignment = 0
    cdef str topic, run_topic = None
    cdef object partition, run_partition = None, run = None, start = None
    cdef bytes topic_bytes = None, topic_id = None
    cdef Py_ssize_t handled = -1
    # Messages of one partition come in runs: its dictionaries are read when a run starts and written when it ends.
    for message in messages:
        handled += 1
        error = message.error()
        if error is not None:
            errors.append(error)
            continue
        topic = message.topic()
        partition = message.partition()
        offset = message.offset()
        if run is None or partition != run_partition or topic != run_topic:
            if run is not None:
                previous_offsets[run] = previous
                next_offsets[run] = previous + 1
            run = (topic, partition)
            run_topic, run_partition = topic, partition
            previous = previous_offsets.get(run, UNKNOWN_OFFSET)
            start = starts.get(run)
            if start is None:
                start = starts[run] = offset
            topic_bytes = topic.encode("utf-8")
            topic_id = topic_ids.get(run) if topic_ids else None
            assignment = assignments.get(run, 0)
        if offset <= previous and (handled > 0 or not first_may_go_back):
            handled -= 1
            break
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
        records.append((pack_encoded(kind, topic_bytes, partition, offset, previous, start, timestamp_type,
                                     timestamp, key, headers, value is not None, assignment, topic_id),
                        value if value is not None else b""))
        previous = offset
    if run is not None:
        previous_offsets[run] = previous
        next_offsets[run] = previous + 1
    return records, errors, skipped, handled + 1


def unpack_records(records):
    """unpack() applied to a batch's (metadata, value) records in one compiled loop: a list of
    (kind, topic, partition, offset, previous_offset, stream_start, timestamp_type, timestamp, key, headers,
    value_present, assignment, topic_id, value), and the number of records whose metadata was malformed (left out)."""
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


cdef bytes decimal(int64_t number):
    """str(number).encode() without the str."""
    cdef char text[24]
    cdef int position = 24
    cdef uint64_t magnitude = <uint64_t>number if number >= 0 else <uint64_t>0 - <uint64_t>number
    while True:
        position -= 1
        text[position] = <char>(48 + magnitude % 10)
        magnitude //= 10
        if magnitude == 0:
            break
    if number < 0:
        position -= 1
        text[position] = 45
    return PyBytes_FromStringAndSize(text + position, 24 - position)


cdef class Route:
    """Where the records of one source partition (of one incarnation of its topic) go, worked out once by the sink
    (KafkaSink._route): the per-record loop only reads it. target_partition -1 with partitions > 0: each record
    goes to the partition its key hashes to (murmur2), over that many."""

    def __init__(self, str source_topic, source_partition, str target, int32_t target_partition, ledger,
                 int32_t partitions=0, bytes topic_id=None, str topic_id_text=None):
        self.source_topic = source_topic
        self.source_partition = source_partition
        self.target = target
        self.target_partition = target_partition
        self.ledger = ledger
        self.topic_bytes = source_topic.encode("utf-8")
        self.partition_bytes = str(source_partition).encode()
        self.partitions = partitions
        self.topic_id = topic_id
        self.topic_id_header = (SOURCE_TOPIC_ID_HEADER, topic_id_text.encode()) if topic_id_text else None

    def __repr__(self):
        return (f"Route({self.source_topic!r}[{self.source_partition}] -> {self.target!r}"
                f"[{self.target_partition}], topic id {self.topic_id!r})")


cdef class PendingFrame:
    """A frame the sink has produced records of: how many of them librdkafka has not yet reported on. The egress
    keeps the frame in its write-ahead log (ddc/spool/) until this is zero for it and every frame before it."""

    def __init__(self, position):
        self.position = position
        self.outstanding = 0


cdef uint32_t murmur2(const uint8_t* data, Py_ssize_t length) noexcept nogil:
    """Kafka's murmur2 (the Java client's Utils.murmur2, librdkafka's rd_murmur2), so that keys land where a Java
    producer or librdkafka's murmur2 partitioner puts them."""
    cdef uint32_t m = 0x5bd1e995
    cdef uint32_t h = (<uint32_t>0x9747b28c) ^ <uint32_t>length
    cdef uint32_t k
    cdef Py_ssize_t i, tail = length & ~3
    for i in range(0, tail, 4):
        k = data[i] | (<uint32_t>data[i + 1] << 8) | (<uint32_t>data[i + 2] << 16) | (<uint32_t>data[i + 3] << 24)
        k *= m
        k ^= k >> 24
        k *= m
        h *= m
        h ^= k
    if length & 3 == 3:
        h ^= <uint32_t>data[tail + 2] << 16
    if length & 3 >= 2:
        h ^= <uint32_t>data[tail + 1] << 8
    if length & 3 >= 1:
        h ^= data[tail]
        h *= m
    h ^= h >> 13
    h *= m
    h ^= h >> 15
    return h


cdef inline int32_t hashed_partition(const uint8_t* key, Py_ssize_t length, bint has_key, int64_t offset,
                                     int32_t partitions) noexcept nogil:
    """A keyed record's partition by murmur2, as Kafka's clients choose it; a record without a key goes by its
    source offset, so that a resent record lands where it went the first time (librdkafka would pick at random)."""
    if has_key:
        return <int32_t>((murmur2(key, length) & 0x7fffffff) % <uint32_t>partitions)
    return <int32_t>(<uint64_t>offset % <uint64_t>partitions)


def key_partition(key, int64_t offset, int32_t partitions) -> int:
    """hashed_partition() for Python (tests): key is bytes or None."""
    if partitions <= 0:
        raise ValueError(f"a topic has at least one partition, not {partitions}")
    if key is None:
        return hashed_partition(NULL, 0, False, offset, partitions)
    return hashed_partition(<const uint8_t*>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key), True, offset, partitions)


@cython.freelist(1024)
cdef class DeliveryReport:
    """One record's delivery callback: failed(route, offset, error, message) with the record's route and source
    offset when delivery fails, delivered() when it succeeds and one was given (a repair's report, which
    must not close its range before the record is in), and the record's frame counted down when one is tracked
    (then every delivery is reported, not only failures). librdkafka gives a failed record back without its headers, so its coordinates
    must travel beside it. One small object from a free list costs less than a functools.partial with its
    argument tuple."""

    def __call__(self, error, message):
        if self.frame is not None:
            self.frame.outstanding -= 1
        if error is not None:
            self.failed(self.route, self.offset, error, message)
        elif self.delivered is not None:
            self.delivered()


cdef DeliveryReport delivery_report(object failed, Route route, int64_t offset, PendingFrame frame,
                                    object delivered):
    cdef DeliveryReport callback = DeliveryReport.__new__(DeliveryReport)
    callback.failed = failed
    callback.route = route
    callback.offset = offset
    callback.frame = frame
    callback.delivered = delivered
    return callback


cdef class RecordWriter:
    """The egress's per-record loop, compiled: unpack, route, the in-order fast path, the source headers, produce.

    Built once per sink with the sink's hooks, named (the asyncpg way: the state machine here, the I/O in the
    sink): route_for(topic, partition, topic id) makes the Route of a partition not in the routes given to
    write() (topic id: 16 bytes or None); admit_out_of_order(route, kind, offset, previous, start, assignment,
    target partition) judges everything that is not the next record of its partition, or comes with an
    assignment byte other than the one in assignments for its partition, and returns whether to write the
    record: False, True, or a callable to call once the record is delivered; produce is the producer's produce(),
    called with positional arguments (topic, value, key, partition, callback, on_delivery, timestamp, headers);
    failed(route, offset, error, message) is a record's failed delivery, through a DeliveryReport;
    undeliverable(route, offset, reason) a record produce() refused; wait_for_room() is called while the
    producer's queue is full. A route whose target partition is -1 with partitions to hash over puts each
    record in the partition of hashed_partition() and notes it in the ledger's `highs`, per destination
    partition: the records of one source partition are then spread over several destination partitions, each in
    order."""

    def __init__(self, dict assignments, route_for, admit_out_of_order, produce, failed, undeliverable,
                 wait_for_room, uint8_t timestamp_create):
        self.assignments = assignments
        self.route_for = route_for
        self.admit_out_of_order = admit_out_of_order
        self.produce = produce
        self.failed = failed
        self.undeliverable = undeliverable
        self.wait_for_room = wait_for_room
        self.timestamp_create = timestamp_create

    def write(self, list records, dict routes, PendingFrame frame=None):
        """Writes a batch's (metadata, value) records, routes keyed by (topic, partition, topic id); counts each
        produced record up in frame's outstanding ones, when given (its DeliveryReport counts it down). Returns
        (records produced, records with malformed metadata).

        Records of one partition come in runs, so the route of the previous record is kept and compared with the
        raw topic bytes: neither the topic name nor the dictionary key is made again for each record."""
        cdef Py_ssize_t produced = 0, refused = 0
        cdef Layout layout
        cdef const uint8_t* data
        cdef Py_ssize_t length
        cdef uint8_t kind, assignment
        cdef int32_t partition, cached_partition = 0, target_partition
        cdef bint hashed
        cdef int64_t offset, previous, timestamp
        cdef bytes metadata, cached_topic = None, cached_topic_id = None
        cdef Route route, cached = None
        cdef list headers
        cdef object cached_assignment = None
        cdef object admitted, delivered
        for metadata, value in records:
            data = <const uint8_t*>PyBytes_AS_STRING(metadata)
            length = PyBytes_GET_SIZE(metadata)
            if locate(data, length, &layout) != WELL_FORMED:
                refused += 1
                continue
            kind = data[0]
            assignment = data[3]
            partition = <int32_t>get32(data + 4)
            offset = <int64_t>get64(data + 8)
            previous = <int64_t>get64(data + 16)
            try:
                headers = located_headers(data, &layout)
                if cached is None or partition != cached_partition or layout.topic_length != len(cached_topic) or (
                        memcmp(data + layout.topic_at, PyBytes_AS_STRING(cached_topic), layout.topic_length) != 0) or (
                        (layout.topic_id_at == 0) != (cached_topic_id is None)) or (layout.topic_id_at and memcmp(
                        data + layout.topic_id_at, PyBytes_AS_STRING(cached_topic_id), TOPIC_ID_BYTES) != 0):
                    topic = PyUnicode_DecodeUTF8(<const char*>data + layout.topic_at, layout.topic_length, NULL)
                else:
                    topic = None
            except ValueError:  # names that are not UTF-8
                refused += 1
                continue
            if topic is not None:
                topic_id = (PyBytes_FromStringAndSize(<const char*>data + layout.topic_id_at, TOPIC_ID_BYTES)
                            if layout.topic_id_at else None)
                coordinate = (topic, partition, topic_id)
                cached = routes.get(coordinate)
                if cached is None:
                    cached = self.route_for(topic, partition, topic_id)
                cached_topic, cached_topic_id, cached_partition = cached.topic_bytes, topic_id, partition
                cached_assignment = self.assignments.get(coordinate[:2])
            route = cached
            ledger = route.ledger
            high = ledger.high
            target_partition = route.target_partition
            hashed = target_partition == -1 and route.partitions > 0
            if hashed:
                target_partition = hashed_partition(data + layout.key_at, layout.key_length,
                                                    (data[1] & KEY_PRESENT) != 0, offset, route.partitions)
            delivered = None
            if kind == RECORD and high is not None and previous <= high and high < offset and (
                    assignment == 0 or cached_assignment == assignment):
                if hashed:
                    ledger.deliver_spread(offset, target_partition, route.partitions)
                else:
                    ledger.high = offset
            else:
                cached = None  # the slow path may change the partition's assignment
                admitted = self.admit_out_of_order(route, kind, offset, previous, <int64_t>get64(data + 32),
                                                   assignment, target_partition)
                if not admitted:
                    continue
                if admitted is not True:
                    delivered = admitted
            headers.append((SOURCE_TOPIC_HEADER, route.topic_bytes))
            headers.append((SOURCE_PARTITION_HEADER, route.partition_bytes))
            headers.append((SOURCE_OFFSET_HEADER, decimal(offset)))
            if route.topic_id_header is not None:
                headers.append(route.topic_id_header)
            timestamp = <int64_t>get64(data + 24)
            if data[2] != self.timestamp_create or timestamp < 0:
                timestamp = 0
            key = (PyBytes_FromStringAndSize(<const char*>data + layout.key_at, layout.key_length)
                   if data[1] & KEY_PRESENT else None)
            while True:
                try:
                    self.produce(route.target, value if data[1] & VALUE_PRESENT else None, key, target_partition,
                                 delivery_report(self.failed, route, offset, frame, delivered), None, timestamp,
                                 headers)
                except BufferError:
                    self.wait_for_room()
                    continue
                except Exception as error:
                    self.undeliverable(route, offset, str(error))
                else:
                    produced += 1
                    if frame is not None:
                        frame.outstanding += 1
                break
        return produced, refused
