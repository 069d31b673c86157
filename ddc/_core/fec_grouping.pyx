"""FEC grouping: how the sender deals a frame's data datagrams into Reed-Solomon blocks, what parity each block
gets, and the parity rows that accumulate while the group leaves.

A frame's datagrams go in as few blocks of at most `data` datagrams as hold them, sized alike (never a full run
and a tail of a few), and the blocks in as few groups of at most `interleave` as hold them; each group is dealt
round-robin into its blocks, so a burst of consecutive losses is spread over them. Each block gets the parity
that makes it as strong as a full block at the code's rated loss (fec.parity_by_block_size): a small frame's
block gets a larger share, never a weak single parity datagram. With loss_burst set, a group's blocks all get
at least the parity with which each survives two bursts of that many consecutive losses anywhere in the group:
dealt over B blocks, a burst costs a block at most ceil(burst / B) + 1 datagrams (B > 1; the last round of data
can be short, so one gap is shorter than B), and a lone block the whole burst. The group's parity follows its
data row by row across the blocks, interleaved the same way. Blocks never span frames, so nothing waits for
traffic that may not come.

A control datagram (heartbeat, shutdown) is a block of its own with the parity copies a one-datagram block
gets (at least MIN_CONTROL_PARITY, and two bursts' worth with loss_burst): it carries no bulk, so protecting it
costs nothing, and an unprotected one lost on a lossy link would read as data lost.

Kept apart from the sender so that the dealing can be checked on its own (FecGrouping below) against the
property it promises, without sockets: the sender only stages what this unit decides.
"""

from libc.stdlib cimport free, malloc
from libc.string cimport memset

from ddc._core.fec cimport MAX_PARITY_SYMBOLS, coefficient, multiply_add_sources
from ddc._core.fec import parity_by_block_size
from ddc._core.wire cimport MAX_DATAGRAM_BYTES


cdef int check_grouping(int data, int parity, int interleave, int loss_burst) except -1:
    if not 1 <= data <= MAX_DATA_SYMBOLS or not 1 <= parity <= MAX_PARITY_SYMBOLS:
        raise ValueError(f"an FEC block has 1..{MAX_DATA_SYMBOLS} data and 1..{MAX_PARITY_SYMBOLS} parity "
                         f"datagrams, not {data} and {parity}")
    if not 1 <= interleave <= MAX_INTERLEAVE:
        raise ValueError(f"FEC interleave {interleave} is outside 1..{MAX_INTERLEAVE}")
    if not 0 <= loss_burst <= MAX_LOSS_BURST:
        raise ValueError(f"FEC loss burst {loss_burst} is outside 0..{MAX_LOSS_BURST}")
    return 0


cdef int configure_grouping(Grouping* grouping, int data, int parity, int interleave, int loss_burst,
                            size_t symbol_capacity) except -1:
    """Checks and takes the configuration; symbol_capacity 0 plans without parity buffers (FecGrouping)."""
    cdef uint8_t* buffers = NULL
    check_grouping(data, parity, interleave, loss_burst)
    sizes = parity_by_block_size(data, parity)
    if symbol_capacity:
        buffers = <uint8_t*>malloc(<size_t>interleave * max(parity, 2 * loss_burst + 2) * symbol_capacity)
        if buffers == NULL:
            raise MemoryError(f"cannot allocate FEC parity buffers for {interleave} blocks of {parity} parity")
    release_grouping(grouping)
    memset(grouping, 0, sizeof(Grouping))
    grouping.parity_buffers = buffers
    grouping.symbol_capacity = symbol_capacity
    for index in range(data + 1):
        grouping.parity_by_size[index] = sizes[index]
    grouping.control_parity_count = min(max(sizes[1], MIN_CONTROL_PARITY, 2 * loss_burst), MAX_CONTROL_PARITY)
    grouping.data = data
    grouping.parity = parity
    grouping.interleave = interleave
    grouping.loss_burst = loss_burst
    return 0


cdef void release_grouping(Grouping* grouping) noexcept nogil:
    free(grouping.parity_buffers)
    grouping.parity_buffers = NULL


cdef void begin_frame(Grouping* grouping, uint32_t count) noexcept nogil:
    """A frame of count data datagrams follows: as few blocks as hold them, in as few groups as hold those. (In 64
    bits: a frame of nearly 2^32 one-byte fragments would wrap the sum to no block at all, and a division by zero.)"""
    grouping.blocks_left = <uint32_t>((<uint64_t>count + grouping.data - 1) // grouping.data)
    grouping.groups_left = <uint32_t>((<uint64_t>grouping.blocks_left + grouping.interleave - 1) // grouping.interleave)


cdef void start_group(Grouping* grouping, uint32_t size, uint32_t blocks) noexcept nogil:
    """Deals the next size data datagrams round-robin into blocks blocks (at most data each)."""
    cdef uint32_t b, first = 0, least = 0
    if grouping.loss_burst:
        least = 2 * (grouping.loss_burst if blocks == 1 else (grouping.loss_burst + blocks - 1) // blocks + 1)
        least = max(least, grouping.parity_by_size[(size + blocks - 1) // blocks])
    grouping.parity_rows = 0
    for b in range(blocks):
        grouping.block_data[b] = (size - b + blocks - 1) // blocks
        grouping.block_parity[b] = max(grouping.parity_by_size[grouping.block_data[b]], least)
        grouping.block_share[b] = <uint32_t>((<uint64_t>grouping.block_data[b] * grouping.parity + grouping.data - 1)
                                             // grouping.data)
        grouping.block_parity_first[b] = first
        grouping.block_symbol_length[b] = 0
        grouping.parity_rows = max(grouping.parity_rows, grouping.block_parity[b])
        first += grouping.block_parity[b]
    if grouping.parity_buffers != NULL:
        memset(grouping.parity_buffers, 0, first * grouping.symbol_capacity)
    grouping.size = size
    grouping.position = 0
    grouping.blocks = blocks
    grouping.base = grouping.next_block
    grouping.next_block += blocks


cdef void place_data(Grouping* grouping, uint32_t remaining, Header* header) noexcept nogil:
    """Gives the frame's next data datagram (remaining: it and those after it) its block and index, opening
    the next group first if none is open."""
    cdef uint32_t blocks, block
    if grouping.size == 0:
        blocks = (grouping.blocks_left + grouping.groups_left - 1) // grouping.groups_left
        start_group(grouping, <uint32_t>((<uint64_t>remaining * blocks + grouping.blocks_left - 1)
                                         // grouping.blocks_left), blocks)
        grouping.blocks_left -= blocks
        grouping.groups_left -= 1
    block = grouping.position % grouping.blocks
    header.fec_block = grouping.base + block
    header.fec_index = <uint16_t>(grouping.position // grouping.blocks)
    header.fec_count = <uint16_t>grouping.block_data[block]


cdef uint32_t control_block(Grouping* grouping) noexcept nogil:
    """The block number of a control datagram, a block of its own (its parity: control_parity_count)."""
    grouping.next_block += 1
    return grouping.next_block - 1


cdef bint advance_group(Grouping* grouping) noexcept nogil:
    """After a data datagram is placed: whether that completed its group, whose parity is then due."""
    grouping.position += 1
    return grouping.position == grouping.size


cdef bint next_parity(Grouping* grouping, uint32_t* step, uint32_t* block, uint32_t* row) noexcept nogil:
    """The group's parity in sending order, row by row across its blocks: from step (0 for the first) sets block
    and row of the next parity datagram and moves step past it. False when every one has been given: the group
    is closed then (its parity buffers are still read until the batch holding them has left)."""
    while step[0] < grouping.parity_rows * grouping.blocks:
        block[0] = step[0] % grouping.blocks
        row[0] = step[0] // grouping.blocks
        step[0] += 1
        if row[0] < grouping.block_parity[block[0]]:
            return True
    grouping.size = 0
    return False


cdef uint8_t* parity_symbol(const Grouping* grouping, uint32_t block, uint32_t row) noexcept nogil:
    return grouping.parity_buffers + (grouping.block_parity_first[block] + row) * grouping.symbol_capacity


cdef void absorb_block(Grouping* grouping, uint32_t block, const uint8_t** heads, const uint8_t** payloads,
                       const size_t* lengths, const uint16_t* indexes, uint32_t count) noexcept nogil:
    """Adds count data symbols of one block to its parity rows at once (each row is read and written once for
    all of them, not once per datagram). A symbol is [u16 length][header] (heads, SYMBOL_HEAD_SIZE bytes) then
    its payload."""
    cdef uint32_t row, position, rows = grouping.block_parity[block]
    cdef size_t shortest = MAX_DATAGRAM_BYTES
    cdef const uint8_t* rest
    cdef uint8_t* targets[MAX_PARITY_SYMBOLS]
    cdef uint8_t factors[MAX_PARITY_SYMBOLS * MAX_DATA_SYMBOLS]
    cdef uint8_t column[MAX_PARITY_SYMBOLS]
    if count == 0:
        return
    for position in range(count):
        shortest = min(shortest, lengths[position])
    for row in range(rows):
        targets[row] = parity_symbol(grouping, block, row)
        for position in range(count):
            factors[row * count + position] = coefficient(row, indexes[position])
    multiply_add_sources(targets, 0, factors, rows, heads, count, SYMBOL_HEAD_SIZE)
    multiply_add_sources(targets, SYMBOL_HEAD_SIZE, factors, rows, payloads, count, shortest)
    for position in range(count):
        if lengths[position] > shortest:
            for row in range(rows):
                column[row] = factors[row * count + position]
            rest = payloads[position] + shortest
            multiply_add_sources(targets, SYMBOL_HEAD_SIZE + shortest, column, rows, &rest, 1,
                                 lengths[position] - shortest)
        if SYMBOL_HEAD_SIZE + lengths[position] > grouping.block_symbol_length[block]:
            grouping.block_symbol_length[block] = <uint32_t>(SYMBOL_HEAD_SIZE + lengths[position])


cdef class FecGrouping:
    """The dealing alone, for tests and tools: which block and index each datagram of a frame gets, and the
    parity each block gets, in the order the sender sends them."""
    cdef Grouping grouping

    def __init__(self, int data, int parity, int interleave=1, int loss_burst=0):
        configure_grouping(&self.grouping, data, parity, interleave, loss_burst, 0)

    def __dealloc__(self):
        release_grouping(&self.grouping)

    @property
    def control_parity(self):
        return self.grouping.control_parity_count

    def frame_shape(self, uint32_t count):
        """(blocks, groups) a frame of count data datagrams is dealt into, without dealing it."""
        if self.grouping.data == 0:
            raise ValueError("FecGrouping was not configured")
        begin_frame(&self.grouping, count)
        return self.grouping.blocks_left, self.grouping.groups_left

    def control(self):
        """A control datagram between frames: the number of its block, of one datagram and control_parity."""
        return control_block(&self.grouping)

    def deal(self, uint32_t count):
        """One frame of count data datagrams as the sender sends it: a list of (kind, block, index, block size,
        parity of the block), kind "data" or "parity"; blocks are numbered on from earlier frames."""
        cdef Header header
        cdef uint32_t index, step, block, row
        wire = []
        if count == 0:
            raise ValueError("a frame has at least one datagram")
        if self.grouping.data == 0:
            raise ValueError("FecGrouping was not configured")
        memset(&header, 0, sizeof(Header))
        begin_frame(&self.grouping, count)
        for index in range(count):
            place_data(&self.grouping, count - index, &header)
            block = header.fec_block - self.grouping.base
            wire.append(("data", header.fec_block, header.fec_index, header.fec_count,
                         self.grouping.block_parity[block]))
            if advance_group(&self.grouping):
                step = 0
                while next_parity(&self.grouping, &step, &block, &row):
                    wire.append(("parity", self.grouping.base + block, self.grouping.block_data[block] + row,
                                 self.grouping.block_data[block], self.grouping.block_parity[block]))
        return wire
