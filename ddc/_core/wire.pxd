from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cpdef enum:
    HEADER_BYTES = 56
    MAX_DATAGRAM_BYTES = 65507
    MAX_PAYLOAD_BYTES = 65451
    MAGIC = 0xDD1C
    PROTOCOL_VERSION = 2
    TYPE_DATA = 1
    TYPE_HEARTBEAT = 2
    TYPE_SHUTDOWN = 3
    TYPE_PARITY = 4
    FLAG_AUTH_TAG = 1
    TAG_BYTES = 16
    # byte offsets of fields the sender refreshes in a heartbeat payload (u16 count, then u64s)
    PEER_OFFSET_DATAGRAMS_SENT = 2 + 8 * 2
    PEER_OFFSET_FRAMES_SENT = 2 + 8 * 3
    PEER_OFFSET_BYTES_SENT = 2 + 8 * 5
    MAX_CONTROL_PAYLOAD = 512
    # an FEC data symbol is [u16 datagram length][datagram], zero-padded to the block's parity length
    SYMBOL_PREFIX_BYTES = 2

cdef extern from *:
    """
    #define DDC_PARITY_SEQUENCE_BIT (1ULL << 63)
    """
    # Parity datagrams number themselves from here: their own nonce space, outside the data sequence.
    const uint64_t PARITY_SEQUENCE_BIT "DDC_PARITY_SEQUENCE_BIT"

cdef struct Header:
    uint8_t version
    uint8_t type
    uint8_t flags
    uint8_t key_id
    uint16_t payload_length
    uint16_t content_length
    uint32_t checksum
    uint32_t fec_block
    uint64_t session_id
    uint64_t sequence
    uint64_t frame_id
    uint32_t fragment_index
    uint32_t fragment_count
    uint32_t frame_length
    uint16_t fec_index
    uint16_t fec_count

cdef enum ParseResult:
    PARSE_OK = 0
    PARSE_TRUNCATED = 1
    PARSE_BAD_MAGIC = 2
    PARSE_UNKNOWN_VERSION = 3
    PARSE_BAD_CHECKSUM = 4
    PARSE_MALFORMED = 5
    PARSE_UNKNOWN_TYPE = 6

cdef void write_header(uint8_t* out, const Header* header) noexcept nogil
cdef void seal(uint8_t* datagram_header, const uint8_t* payload, size_t payload_length) noexcept nogil
cdef ParseResult parse_header(const uint8_t* data, size_t length, Header* header,
                              bint sealed_unchecked=*) noexcept nogil
cdef bint checksum_matches(const uint8_t* data, size_t length) noexcept nogil
cdef uint32_t fragment_chunk(uint32_t frame_length, uint32_t fragment_count) noexcept nogil
cdef uint32_t fragment_count_for(uint32_t frame_length, uint32_t payload_capacity) noexcept nogil
cpdef uint32_t datagram_overhead(bint sealed, bint protected) noexcept nogil
