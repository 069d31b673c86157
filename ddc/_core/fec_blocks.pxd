# The receiver's FEC block store (fec_blocks.pyx says why): open blocks and the symbols they keep, in a byte budget.
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from ddc._core.fec cimport MAX_DATA_SYMBOLS, MAX_PARITY_SYMBOLS
from ddc._core.wire cimport Header

cdef enum:
    FEC_BLOCKS = 256
    FEC_SYMBOLS = MAX_DATA_SYMBOLS + MAX_PARITY_SYMBOLS
    SPARE_SYMBOL_HEAD = 16
    MAX_SPARE_SYMBOL_BYTES = 8 * 1024 * 1024

cdef enum BlockState:
    BLOCK_EMPTY = 0
    BLOCK_OPEN = 1
    BLOCK_DONE = 2

cdef struct FecBlock:
    uint32_t block_id
    uint64_t session_id  # the key epoch its datagrams were sealed in
    BlockState state
    uint32_t data_count
    uint32_t data_received
    uint32_t parity_received
    uint32_t parity_length
    int64_t first_seen_ns
    uint8_t* symbols[FEC_SYMBOLS]
    size_t lengths[FEC_SYMBOLS]

cdef struct SpareSymbol:
    SpareSymbol* next
    size_t capacity

cdef struct BlockStore:
    FecBlock* blocks
    SpareSymbol* spares
    size_t spare_bytes
    uint64_t max_bytes
    uint64_t bytes_in_flight
    uint64_t unrecoverable  # blocks closed while still missing data

cdef int open_store(BlockStore* store, uint64_t max_bytes) except -1
cdef void close_store(BlockStore* store) noexcept nogil
cdef void close_block(BlockStore* store, FecBlock* block) noexcept nogil
cdef void empty_store(BlockStore* store) noexcept nogil
cdef void expire_blocks(BlockStore* store, int64_t now, int64_t timeout_ns, bint everything) noexcept nogil
cdef FecBlock* open_block(BlockStore* store, const Header* h, int64_t now) noexcept nogil
cdef bint keep_symbol(BlockStore* store, FecBlock* block, uint32_t index, const uint8_t* data, size_t length,
                      bint prefixed) noexcept nogil
