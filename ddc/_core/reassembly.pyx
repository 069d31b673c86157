"""Reassembly: a session's frames rebuilt from their fragments, in a fixed table of slots and a byte budget.

A frame takes the slot of its id modulo the table's capacity (`max_frames_in_flight`). A fragment for a frame
older than the one in its slot, or more than a table's length behind the newest, is late: its frame was
completed or discarded already. A newer frame evicts an older partial one from its slot; a frame that would
pass the byte budget evicts the oldest partial frames first; partial frames older than the timeout are
discarded. Whatever a discarded frame missed is counted (fragments_missing), and frames lost are the frame
ids between the lowest and the highest seen that were never completed. Every length a hostile datagram
brings is checked against the frame it claims before a byte is written.
"""

from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy

from ddc._core.wire cimport TYPE_DATA, fragment_chunk


cdef int open_table(FrameTable* table, uint32_t capacity, uint32_t max_frame_bytes,
                    uint64_t max_bytes_in_flight) except -1:
    if capacity < 1:
        raise ValueError("max_frames_in_flight must be at least 1")
    if max_bytes_in_flight < max_frame_bytes:
        raise ValueError(
            f"max_bytes_in_flight ({max_bytes_in_flight}) must be at least max_frame_bytes ({max_frame_bytes})")
    table.slots = <Slot*>calloc(capacity, sizeof(Slot))
    if table.slots == NULL:
        raise MemoryError(f"cannot allocate {capacity} reassembly slots")
    table.capacity = capacity
    table.max_frame_bytes = max_frame_bytes
    table.max_bytes_in_flight = max_bytes_in_flight
    return 0


cdef void close_table(FrameTable* table) noexcept nogil:
    cdef uint32_t i
    if table.slots == NULL:
        return
    for i in range(table.capacity):
        free(table.slots[i].data)
        free(table.slots[i].bitmap)
    free(table.slots)
    table.slots = NULL


cdef void release_slot(FrameTable* table, Slot* slot, SlotState new_state) noexcept nogil:
    if slot.state == SLOT_PARTIAL:
        table.frames_in_flight -= 1
        table.bytes_in_flight -= slot.frame_length
    free(slot.data)
    free(slot.bitmap)
    slot.data = NULL
    slot.bitmap = NULL
    slot.state = new_state


cdef void discard_partial(FrameTable* table, Slot* slot, uint64_t* reason) noexcept nogil:
    reason[0] += 1
    table.fragments_missing += slot.fragment_count - slot.fragments_received
    release_slot(table, slot, SLOT_DONE)


cdef bint evict_oldest_partial(FrameTable* table) noexcept nogil:
    cdef uint32_t i
    cdef Slot* oldest = NULL
    for i in range(table.capacity):
        if table.slots[i].state == SLOT_PARTIAL and (oldest == NULL or table.slots[i].frame_id < oldest.frame_id):
            oldest = &table.slots[i]
    if oldest == NULL:
        return False
    discard_partial(table, oldest, &table.evicted)
    return True


cdef Placement refuse_late(FrameTable* table, uint64_t frame_id) noexcept nogil:
    # A late fragment proves its frame was sent; if the frame never started it must still count as lost.
    table.late_fragments += 1
    if frame_id < table.lowest_frame_id:
        table.lowest_frame_id = frame_id
    return LATE


cdef Placement place_fragment(FrameTable* table, const Header* h, const uint8_t* payload, int64_t now,
                              uint8_t** completed) noexcept nogil:
    """Keeps a fragment of the live session (its content_length bytes at payload, unless it was unsealed in
    place already); when it completes its frame, completed points at the frame's bytes, which the caller owns
    from then on (free() them)."""
    cdef uint64_t frame_id = h.frame_id
    cdef Slot* slot
    cdef uint32_t index = h.fragment_index
    if h.frame_length > table.max_frame_bytes:
        return OVERSIZED
    if table.started and frame_id + table.capacity <= table.highest_frame_id:
        return refuse_late(table, frame_id)
    slot = &table.slots[frame_id % table.capacity]
    if slot.state != SLOT_EMPTY and slot.frame_id != frame_id:
        if slot.frame_id > frame_id:
            return refuse_late(table, frame_id)
        if slot.state == SLOT_PARTIAL:
            discard_partial(table, slot, &table.evicted)
        slot.state = SLOT_EMPTY
    if slot.state == SLOT_DONE:
        return refuse_late(table, frame_id)
    if slot.state == SLOT_EMPTY:
        while table.bytes_in_flight + h.frame_length > table.max_bytes_in_flight:
            if not evict_oldest_partial(table):
                break
        slot.data = <uint8_t*>malloc(h.frame_length if h.frame_length else 1)
        slot.bitmap = <uint8_t*>calloc((h.fragment_count + 7) // 8, 1)
        if slot.data == NULL or slot.bitmap == NULL:
            free(slot.data)
            free(slot.bitmap)
            slot.data = NULL
            slot.bitmap = NULL
            return OVERSIZED
        slot.frame_id = frame_id
        slot.state = SLOT_PARTIAL
        slot.fragment_count = h.fragment_count
        slot.fragments_received = 0
        slot.frame_length = h.frame_length
        slot.chunk = fragment_chunk(h.frame_length, h.fragment_count)
        slot.first_seen_ns = now
        table.frames_in_flight += 1
        table.bytes_in_flight += h.frame_length
        if table.bytes_in_flight > table.peak_bytes_in_flight:
            table.peak_bytes_in_flight = table.bytes_in_flight
        if not table.started:
            table.started = True
            table.highest_frame_id = frame_id
            table.lowest_frame_id = frame_id
        elif frame_id > table.highest_frame_id:
            table.highest_frame_id = frame_id
        elif frame_id < table.lowest_frame_id:
            table.lowest_frame_id = frame_id
    elif slot.frame_length != h.frame_length or slot.fragment_count != h.fragment_count:
        return MALFORMED
    if slot.bitmap[index >> 3] & (1 << (index & 7)):
        return DUPLICATE
    slot.bitmap[index >> 3] |= 1 << (index & 7)
    if payload != slot.data + <uint64_t>index * slot.chunk:  # not unsealed in place
        memcpy(slot.data + <uint64_t>index * slot.chunk, payload, h.content_length)
    slot.fragments_received += 1
    if slot.fragments_received < slot.fragment_count:
        return PLACED
    completed[0] = slot.data
    slot.data = NULL
    release_slot(table, slot, SLOT_DONE)
    table.completed += 1
    return COMPLETED


cdef uint8_t* unfilled_fragment(FrameTable* table, const Header* h) noexcept nogil:
    """Where a data datagram goes in a frame already started, if that place is not filled yet; else NULL. The
    caller checks that the datagram is of the live session. Unsealing straight there saves a copy: a datagram
    that then fails its tag leaves bytes only where nothing was received, and the place counts as filled only
    once an authentic fragment is placed."""
    cdef Slot* slot
    cdef uint32_t index = h.fragment_index
    if h.type != TYPE_DATA:
        return NULL
    slot = &table.slots[h.frame_id % table.capacity]
    if (slot.state != SLOT_PARTIAL or slot.frame_id != h.frame_id or slot.frame_length != h.frame_length
            or slot.fragment_count != h.fragment_count or slot.bitmap[index >> 3] & (1 << (index & 7))):
        return NULL
    return slot.data + <uint64_t>index * slot.chunk


cdef void abandon_partials(FrameTable* table) noexcept nogil:
    """The session ended (another replaced it): its partial frames are discarded as abandoned."""
    cdef uint32_t i
    for i in range(table.capacity):
        if table.slots[i].state == SLOT_PARTIAL:
            discard_partial(table, &table.slots[i], &table.abandoned)


cdef void restart_table(FrameTable* table) noexcept nogil:
    """Every slot free and the frame ids forgotten, for a new session (abandon_partials() first)."""
    cdef uint32_t i
    for i in range(table.capacity):
        table.slots[i].state = SLOT_EMPTY
    table.started = False
    table.highest_frame_id = 0
    table.lowest_frame_id = 0
    table.completed = 0


cdef void expire_frames(FrameTable* table, int64_t now, int64_t timeout_ns, bint everything) noexcept nogil:
    cdef uint32_t i
    for i in range(table.capacity):
        if table.slots[i].state == SLOT_PARTIAL and (
                everything or now - table.slots[i].first_seen_ns >= timeout_ns):
            discard_partial(table, &table.slots[i], &table.timed_out)


cdef uint64_t frames_lost(const FrameTable* table) noexcept nogil:
    """This session's frame ids between the lowest and the highest seen that were neither completed nor are
    still being reassembled."""
    if not table.started:
        return 0
    return table.highest_frame_id - table.lowest_frame_id + 1 - table.completed - table.frames_in_flight
