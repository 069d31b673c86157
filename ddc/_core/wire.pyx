"""DDC wire protocol v2: the 56-byte datagram header, its checksum and its validation.

The layout is specified in docs/protocol.md. Parsing runs without the GIL on every
received datagram, so it only reads fixed offsets and never allocates. The Python
functions at the end exist for tests, tools and the heartbeat payload, which is
sent about once a second and is not on the hot path.
"""

import struct

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from ddc._core.byteorder cimport get16, get32, get64, put16, put32, put64
from ddc._core.fec cimport MAX_DATA_SYMBOLS, MAX_PARITY_SYMBOLS



cdef extern from "crc32c.h" nogil:
    void ddc_crc32c_init()
    uint32_t ddc_crc32c_update(uint32_t crc, const uint8_t* data, size_t length)
    uint32_t ddc_crc32c_slice8(uint32_t crc, const uint8_t* data, size_t length)
    const char* ddc_crc32c_name

ddc_crc32c_init()

cdef enum:
    CHECKSUM_OFFSET = 8


cdef uint32_t fragment_count_for(uint32_t frame_length, uint32_t payload_capacity) noexcept nogil:
    if frame_length == 0:
        return 1
    return <uint32_t>((<uint64_t>frame_length + payload_capacity - 1) // payload_capacity)


cdef uint32_t fragment_chunk(uint32_t frame_length, uint32_t fragment_count) noexcept nogil:
    # Every fragment but the last carries exactly this many bytes, so a receiver
    # can place any fragment without knowing the sender's datagram size.
    return <uint32_t>((<uint64_t>frame_length + fragment_count - 1) // fragment_count)


cdef void write_header(uint8_t* out, const Header* h) noexcept nogil:
    put16(out, MAGIC)
    out[2] = PROTOCOL_VERSION
    out[3] = h.type
    out[4] = h.flags
    out[5] = h.key_id
    put16(out + 6, h.payload_length)
    put32(out + CHECKSUM_OFFSET, 0)
    put32(out + 12, h.fec_block)
    put64(out + 16, h.session_id)
    put64(out + 24, h.sequence)
    put64(out + 32, h.frame_id)
    put32(out + 40, h.fragment_index)
    put32(out + 44, h.fragment_count)
    put32(out + 48, h.frame_length)
    put16(out + 52, h.fec_index)
    put16(out + 54, h.fec_count)


cdef void seal(uint8_t* datagram_header, const uint8_t* payload, size_t payload_length) noexcept nogil:
    cdef uint32_t crc
    put32(datagram_header + CHECKSUM_OFFSET, 0)
    crc = ddc_crc32c_update(0, datagram_header, HEADER_BYTES)
    crc = ddc_crc32c_update(crc, payload, payload_length)
    put32(datagram_header + CHECKSUM_OFFSET, crc)


cdef bint checksum_matches(const uint8_t* data, size_t length) noexcept nogil:
    """Whether a datagram of at least HEADER_BYTES bytes carries the CRC-32C of its header and payload."""
    cdef uint8_t scratch[HEADER_BYTES]
    cdef uint32_t crc
    memcpy(scratch, data, HEADER_BYTES)
    memset(scratch + CHECKSUM_OFFSET, 0, 4)
    crc = ddc_crc32c_update(0, scratch, HEADER_BYTES)
    crc = ddc_crc32c_update(crc, data + HEADER_BYTES, length - HEADER_BYTES)
    return crc == get32(data + CHECKSUM_OFFSET)


cdef ParseResult parse_header(const uint8_t* data, size_t length, Header* h, bint sealed_unchecked=False) noexcept nogil:
    """Validates a datagram's header. With sealed_unchecked, a sealed datagram's checksum is not verified: a
    receiver holding its keys authenticates every byte anyway, and verifies the checksum only to name the
    reason when a datagram fails."""
    cdef uint32_t chunk, offset, expected
    if length < HEADER_BYTES:
        return PARSE_TRUNCATED
    if get16(data) != MAGIC:
        return PARSE_BAD_MAGIC
    h.version = data[2]
    if h.version != PROTOCOL_VERSION:
        return PARSE_UNKNOWN_VERSION
    h.type = data[3]
    h.flags = data[4]
    h.key_id = data[5]
    h.payload_length = get16(data + 6)
    if <size_t>h.payload_length + HEADER_BYTES > length:
        return PARSE_TRUNCATED
    if <size_t>h.payload_length + HEADER_BYTES < length:
        return PARSE_MALFORMED
    h.checksum = get32(data + CHECKSUM_OFFSET)
    if not (sealed_unchecked and h.flags & FLAG_AUTH_TAG) and not checksum_matches(data, length):
        return PARSE_BAD_CHECKSUM
    h.fec_block = get32(data + 12)
    h.session_id = get64(data + 16)
    h.sequence = get64(data + 24)
    h.frame_id = get64(data + 32)
    h.fragment_index = get32(data + 40)
    h.fragment_count = get32(data + 44)
    h.frame_length = get32(data + 48)
    h.fec_index = get16(data + 52)
    h.fec_count = get16(data + 54)
    h.content_length = h.payload_length
    if h.flags & FLAG_AUTH_TAG:
        if h.payload_length < TAG_BYTES:
            return PARSE_MALFORMED
        h.content_length = h.payload_length - TAG_BYTES
    if h.type < TYPE_DATA or h.type > TYPE_PARITY:
        return PARSE_UNKNOWN_TYPE
    if h.fec_count:
        if h.fec_count > MAX_DATA_SYMBOLS:
            return PARSE_MALFORMED
        if h.type == TYPE_PARITY:
            if h.fec_index < h.fec_count or h.fec_index - h.fec_count >= MAX_PARITY_SYMBOLS:
                return PARSE_MALFORMED
        elif h.fec_index >= h.fec_count:
            return PARSE_MALFORMED
    if (h.sequence & PARITY_SEQUENCE_BIT) != (PARITY_SEQUENCE_BIT if h.type == TYPE_PARITY else 0):
        return PARSE_MALFORMED
    if h.type == TYPE_PARITY:
        if h.fec_count == 0 or h.content_length < SYMBOL_PREFIX_BYTES + HEADER_BYTES:
            return PARSE_MALFORMED
        return PARSE_OK
    if h.type == TYPE_DATA:
        if h.fragment_count == 0 or h.fragment_index >= h.fragment_count:
            return PARSE_MALFORMED
        if h.frame_length == 0:
            return PARSE_OK if (h.fragment_count == 1 and h.content_length == 0) else PARSE_MALFORMED
        if h.fragment_count > h.frame_length:
            return PARSE_MALFORMED
        chunk = fragment_chunk(h.frame_length, h.fragment_count)
        if <uint64_t>(h.fragment_count - 1) * chunk >= h.frame_length:
            return PARSE_MALFORMED
        offset = h.fragment_index * chunk
        expected = chunk if h.frame_length - offset > chunk else h.frame_length - offset
        if h.content_length != expected:
            return PARSE_MALFORMED
        return PARSE_OK
    if h.type == TYPE_HEARTBEAT or h.type == TYPE_SHUTDOWN:
        return PARSE_OK
    return PARSE_UNKNOWN_TYPE


cpdef uint32_t datagram_overhead(bint sealed, bint protected) noexcept nogil:
    """Bytes of a datagram that carry no frame: the header and, sealed, the tag; with FEC also a data symbol's
    prefix, header and tag, so that a parity datagram (whose payload is a whole symbol) fits too."""
    cdef uint32_t per_datagram = HEADER_BYTES + (TAG_BYTES if sealed else 0)
    return per_datagram + (SYMBOL_PREFIX_BYTES + per_datagram if protected else 0)


# ---- Python-facing helpers (tests, tools, control datagrams) ----

PARITY_SEQUENCE = PARITY_SEQUENCE_BIT

PARSE_ERRORS = {
    PARSE_TRUNCATED: "truncated",
    PARSE_BAD_MAGIC: "bad_magic",
    PARSE_UNKNOWN_VERSION: "unknown_version",
    PARSE_BAD_CHECKSUM: "bad_checksum",
    PARSE_MALFORMED: "malformed",
    PARSE_UNKNOWN_TYPE: "unknown_type",
}

# Heartbeat and shutdown payload: a u16 field count, then that many u64 values in
# this order. Receivers read the fields they know and ignore the rest, so later
# versions may append fields without breaking older egresses.
PEER_COUNTER_FIELDS = (
    "heartbeat_interval_ms",
    "uptime_ms",
    "datagrams_sent",
    "frames_sent",
    "records_sent",
    "bytes_sent",
    "records_dropped",
    "source_healthy",
    "buffer_fill_permille",
)


assert PEER_COUNTER_FIELDS.index("datagrams_sent") * 8 + 2 == PEER_OFFSET_DATAGRAMS_SENT
assert PEER_COUNTER_FIELDS.index("frames_sent") * 8 + 2 == PEER_OFFSET_FRAMES_SENT
assert PEER_COUNTER_FIELDS.index("bytes_sent") * 8 + 2 == PEER_OFFSET_BYTES_SENT


def encode_peer_counters(counters):
    values = [int(counters.get(name, 0)) & 0xFFFFFFFFFFFFFFFF for name in PEER_COUNTER_FIELDS]
    return struct.pack(f">H{len(values)}Q", len(values), *values)


def decode_peer_counters(payload):
    payload = bytes(payload)
    if len(payload) < 2:
        raise ValueError(f"peer counter payload of {len(payload)} bytes is shorter than its 2-byte field count")
    (count,) = struct.unpack_from(">H", payload)
    if len(payload) < 2 + 8 * count:
        raise ValueError(f"peer counter payload announces {count} fields but holds {len(payload)} bytes")
    values = struct.unpack_from(f">{count}Q", payload, 2)
    return dict(zip(PEER_COUNTER_FIELDS, values))


def encode_datagram(int type, uint64_t session_id, uint64_t sequence, payload=b"", *,
                    uint64_t frame_id=0, uint32_t fragment_index=0, uint32_t fragment_count=1,
                    frame_length=None, int version=PROTOCOL_VERSION, int flags=0, int key_id=0,
                    uint32_t fec_block=0, uint16_t fec_index=0, uint16_t fec_count=0):
    """Builds one sealed datagram. For tests and tools; the sender builds its own in C."""
    cdef Header h
    cdef const uint8_t[:] view = memoryview(bytes(payload)).cast("B")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes exceeds the maximum of {MAX_PAYLOAD_BYTES}")
    memset(&h, 0, sizeof(h))
    h.type = type
    h.flags = flags
    h.key_id = key_id
    h.payload_length = len(payload)
    h.session_id = session_id
    h.sequence = sequence
    h.frame_id = frame_id
    h.fragment_index = fragment_index
    h.fragment_count = fragment_count
    h.frame_length = len(payload) if frame_length is None else frame_length
    h.fec_block = fec_block
    h.fec_index = fec_index
    h.fec_count = fec_count
    out = bytearray(HEADER_BYTES + len(payload))
    cdef uint8_t[:] out_view = out
    write_header(&out_view[0], &h)
    out[HEADER_BYTES:] = payload
    seal(&out_view[0], &out_view[HEADER_BYTES] if len(payload) else NULL, len(payload))
    out[2] = version
    return bytes(out)


def decode_datagram(data):
    """Parses one datagram into a dict, or raises ValueError naming the drop reason."""
    cdef Header h
    cdef bytes raw = bytes(data)
    cdef ParseResult result
    if len(raw) == 0:
        raise ValueError("truncated")
    result = parse_header(<const uint8_t*><char*>raw, len(raw), &h)
    if result != PARSE_OK:
        raise ValueError(PARSE_ERRORS[result])
    return {
        "type": h.type, "flags": h.flags, "key_id": h.key_id,
        "session_id": h.session_id, "sequence": h.sequence, "frame_id": h.frame_id,
        "fragment_index": h.fragment_index, "fragment_count": h.fragment_count,
        "frame_length": h.frame_length, "payload": raw[HEADER_BYTES:],
        "fec_block": h.fec_block, "fec_index": h.fec_index, "fec_count": h.fec_count,
    }


def checksum(data, bint portable=False):
    """CRC-32C of a buffer, with the implementation chosen for this CPU (or slice-by-8 when portable)."""
    cdef const uint8_t[:] view = memoryview(bytes(data)).cast("B")
    cdef const uint8_t* start = &view[0] if len(view) else NULL
    if portable:
        return ddc_crc32c_slice8(0, start, len(view))
    return ddc_crc32c_update(0, start, len(view))


def checksum_implementation():
    """Which CRC-32C implementation this CPU uses: "sse4.2", "armv8-crc" or "slice-by-8"."""
    return ddc_crc32c_name.decode()
