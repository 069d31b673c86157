"""The receiver's FEC block store: the open blocks of a session and copies of the symbols each has received.

A block is kept by its number in a fixed table of FEC_BLOCKS places; a newer block takes an older one's place,
and a datagram for a block older than the one in its place, or disagreeing with its block about the data count
or the key epoch, is not kept. Symbols are copied into buffers from a small pool of spares, and all the
symbols kept stay within a byte budget: a symbol that would exceed it closes the oldest other open block first,
and is refused when there is none. A block closed while it still misses data (its parity could not make up for
it) is counted unrecoverable. Hostile datagrams shape everything here (crafted FEC datagrams once corrupted the
heap, issue #20), so every length is checked where it is used.
"""

from libc.stdint cimport int32_t, uint16_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy

from ddc._core.byteorder cimport put16
from ddc._core.wire cimport SYMBOL_PREFIX_BYTES


cdef int open_store(BlockStore* store, uint64_t max_bytes) except -1:
    store.blocks = <FecBlock*>calloc(FEC_BLOCKS, sizeof(FecBlock))
    if store.blocks == NULL:
        raise MemoryError("cannot allocate the FEC block table")
    store.max_bytes = max_bytes
    return 0


cdef void close_store(BlockStore* store) noexcept nogil:
    cdef uint32_t i
    cdef SpareSymbol* spare
    if store.blocks != NULL:
        for i in range(FEC_BLOCKS):
            free_symbols(store, &store.blocks[i])
        free(store.blocks)
        store.blocks = NULL
    while store.spares != NULL:
        spare = store.spares
        store.spares = spare.next
        free(spare)
    store.spare_bytes = 0


cdef void empty_store(BlockStore* store) noexcept nogil:
    """Closes every block and frees its place (a new session)."""
    cdef uint32_t i
    for i in range(FEC_BLOCKS):
        close_block(store, &store.blocks[i])
        store.blocks[i].state = BLOCK_EMPTY


cdef void expire_blocks(BlockStore* store, int64_t now, int64_t timeout_ns, bint everything) noexcept nogil:
    """Closes the open blocks older than timeout_ns (all of them with everything)."""
    cdef uint32_t i
    for i in range(FEC_BLOCKS):
        if store.blocks[i].state == BLOCK_OPEN and (everything or now - store.blocks[i].first_seen_ns >= timeout_ns):
            close_block(store, &store.blocks[i])


cdef uint8_t* take_symbol_buffer(BlockStore* store, size_t size) noexcept nogil:
    """A buffer for a kept symbol: a spare one when it fits (at most twice the size), else a new one. A
    block's symbols are mostly one size and are all given back when it closes, so in a steady stream every
    buffer is reused, instead of a malloc, a free and fresh pages for each datagram. The budget is charged
    the buffer's capacity (symbol_capacity), so small symbols in large spares cannot hide memory."""
    cdef SpareSymbol* spare = store.spares
    if spare != NULL:
        store.spares = spare.next
        store.spare_bytes -= spare.capacity
        if size <= spare.capacity <= 2 * size:
            return <uint8_t*>spare + SPARE_SYMBOL_HEAD
        free(spare)
    spare = <SpareSymbol*>malloc(SPARE_SYMBOL_HEAD + size)
    if spare == NULL:
        return NULL
    spare.capacity = size
    return <uint8_t*>spare + SPARE_SYMBOL_HEAD


cdef inline size_t symbol_capacity(uint8_t* symbol) noexcept nogil:
    return (<SpareSymbol*>(symbol - SPARE_SYMBOL_HEAD)).capacity


cdef void give_symbol_buffer(BlockStore* store, uint8_t* symbol) noexcept nogil:
    """Keeps a symbol's buffer for reuse, up to MAX_SPARE_SYMBOL_BYTES of them."""
    cdef SpareSymbol* spare = <SpareSymbol*>(symbol - SPARE_SYMBOL_HEAD)
    if store.spare_bytes + spare.capacity > MAX_SPARE_SYMBOL_BYTES:
        free(spare)
        return
    spare.next = store.spares
    store.spares = spare
    store.spare_bytes += spare.capacity


cdef void free_symbols(BlockStore* store, FecBlock* block) noexcept nogil:
    cdef uint32_t i
    for i in range(FEC_SYMBOLS):
        if block.symbols[i] != NULL:
            store.bytes_in_flight -= symbol_capacity(block.symbols[i])
            give_symbol_buffer(store, block.symbols[i])
            block.symbols[i] = NULL


cdef void close_block(BlockStore* store, FecBlock* block) noexcept nogil:
    """Ends a block; one that still misses data after all its parity had its chance is unrecoverable."""
    if block.state == BLOCK_OPEN and block.data_received < block.data_count:
        store.unrecoverable += 1
    free_symbols(store, block)
    block.state = BLOCK_DONE

cdef FecBlock* open_block(BlockStore* store, const Header* h, int64_t now) noexcept nogil:
    """The block a datagram belongs to, opened if new; NULL when a newer block holds its place or
    the datagram disagrees with its block about the data count."""
    cdef FecBlock* block = &store.blocks[h.fec_block % FEC_BLOCKS]
    if block.state != BLOCK_EMPTY and block.block_id != h.fec_block:
        if <int32_t>(h.fec_block - block.block_id) < 0:
            return NULL
        close_block(store, block)
        block.state = BLOCK_EMPTY
    if block.state == BLOCK_EMPTY:
        block.state = BLOCK_OPEN
        block.block_id = h.fec_block
        block.session_id = h.session_id
        block.data_count = h.fec_count
        block.data_received = 0
        block.parity_received = 0
        block.parity_length = 0
        block.first_seen_ns = now
    elif block.data_count != h.fec_count or block.session_id != h.session_id:
        return NULL
    return block


cdef bint keep_symbol(BlockStore* store, FecBlock* block, uint32_t index, const uint8_t* data, size_t length,
                      bint prefixed) noexcept nogil:
    """Copies a symbol into the block (a data datagram behind its u16 length prefix), within the budget."""
    cdef size_t size = length + (SYMBOL_PREFIX_BYTES if prefixed else 0)
    cdef uint8_t* copy = take_symbol_buffer(store, size)
    cdef uint32_t i
    cdef FecBlock* oldest
    if copy == NULL:
        return False
    while store.bytes_in_flight + symbol_capacity(copy) > store.max_bytes:
        oldest = NULL
        for i in range(FEC_BLOCKS):
            if (store.blocks[i].state == BLOCK_OPEN and &store.blocks[i] != block
                    and (oldest == NULL or store.blocks[i].first_seen_ns < oldest.first_seen_ns)):
                oldest = &store.blocks[i]
        if oldest == NULL:
            give_symbol_buffer(store, copy)
            return False
        close_block(store, oldest)
    if prefixed:
        put16(copy, <uint16_t>length)
    memcpy(copy + (SYMBOL_PREFIX_BYTES if prefixed else 0), data, length)
    block.symbols[index] = copy
    block.lengths[index] = size
    store.bytes_in_flight += symbol_capacity(copy)
    return True
