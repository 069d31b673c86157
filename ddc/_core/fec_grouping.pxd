# FEC grouping (fec_grouping.pyx says why): how a frame's data datagrams are dealt into Reed-Solomon blocks and
# groups, the parity each block gets, and the parity rows being accumulated. The sender composes it; tests drive
# it without a socket through FecGrouping.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

from ddc._core.fec cimport MAX_DATA_SYMBOLS
from ddc._core.wire cimport HEADER_BYTES, SYMBOL_PREFIX_BYTES, Header

cdef enum:
    MAX_INTERLEAVE = 64
    MIN_CONTROL_PARITY = 3
    MAX_CONTROL_PARITY = 63  # a control datagram and its parity leave in one of the sender's batches
    MAX_LOSS_BURST = MAX_CONTROL_PARITY // 2
    SYMBOL_HEAD_SIZE = SYMBOL_PREFIX_BYTES + HEADER_BYTES  # a data symbol's [u16 length][header]

cdef struct Grouping:
    # the configuration; data == 0: no FEC
    uint32_t data
    uint32_t parity
    uint32_t interleave
    uint32_t loss_burst
    uint8_t parity_by_size[MAX_DATA_SYMBOLS + 1]
    uint32_t control_parity_count
    size_t symbol_capacity
    uint8_t* parity_buffers
    # the frame being dealt
    uint32_t blocks_left
    uint32_t groups_left
    # the group being built (size 0: none)
    uint32_t next_block
    uint32_t size
    uint32_t position
    uint32_t blocks
    uint32_t base
    uint32_t parity_rows  # the most parity any of its blocks has
    uint32_t block_data[MAX_INTERLEAVE]
    uint32_t block_parity[MAX_INTERLEAVE]
    uint32_t block_parity_first[MAX_INTERLEAVE]
    uint32_t block_share[MAX_INTERLEAVE]
    uint32_t block_symbol_length[MAX_INTERLEAVE]

cdef int check_grouping(int data, int parity, int interleave, int loss_burst) except -1
cdef int configure_grouping(Grouping* grouping, int data, int parity, int interleave, int loss_burst,
                            size_t symbol_capacity) except -1
cdef void release_grouping(Grouping* grouping) noexcept nogil
cdef void begin_frame(Grouping* grouping, uint32_t count) noexcept nogil
cdef void place_data(Grouping* grouping, uint32_t remaining, Header* header) noexcept nogil
cdef uint32_t control_block(Grouping* grouping) noexcept nogil
cdef bint advance_group(Grouping* grouping) noexcept nogil
cdef bint next_parity(Grouping* grouping, uint32_t* step, uint32_t* block, uint32_t* row) noexcept nogil
cdef uint8_t* parity_symbol(const Grouping* grouping, uint32_t block, uint32_t row) noexcept nogil
cdef void absorb_block(Grouping* grouping, uint32_t block, const uint8_t** heads, const uint8_t** payloads,
                       const size_t* lengths, const uint16_t* indexes, uint32_t count) noexcept nogil
