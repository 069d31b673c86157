# Reassembly (reassembly.pyx says why): a session's frames in a fixed table of slots, within a byte budget.
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from ddc._core.wire cimport Header

cdef enum SlotState:
    SLOT_EMPTY = 0
    SLOT_PARTIAL = 1
    SLOT_DONE = 2

cdef struct Slot:
    uint64_t frame_id
    SlotState state
    uint32_t fragment_count
    uint32_t fragments_received
    uint32_t frame_length
    uint32_t chunk
    uint8_t* bitmap
    uint8_t* data
    int64_t first_seen_ns

cdef enum Placement:
    PLACED = 0     # kept; the frame waits for more
    COMPLETED = 1  # kept, and the frame is whole: its bytes are the caller's now
    OVERSIZED = 2  # larger than max_frame_bytes, or no memory for it
    LATE = 3       # for a frame already completed, discarded, or too far behind (counted in late_fragments)
    MALFORMED = 4  # disagrees with its frame's length or fragment count
    DUPLICATE = 5  # that fragment is already in

cdef struct FrameTable:
    Slot* slots
    uint32_t capacity  # max_frames_in_flight
    uint32_t max_frame_bytes
    uint64_t max_bytes_in_flight
    uint32_t frames_in_flight
    uint64_t bytes_in_flight
    uint64_t peak_bytes_in_flight
    # this session's frame ids, for frames lost
    bint started
    uint64_t highest_frame_id
    uint64_t lowest_frame_id
    uint64_t completed
    # since the table was opened
    uint64_t evicted
    uint64_t timed_out
    uint64_t abandoned
    uint64_t fragments_missing
    uint64_t late_fragments

cdef int open_table(FrameTable* table, uint32_t capacity, uint32_t max_frame_bytes,
                    uint64_t max_bytes_in_flight) except -1
cdef void close_table(FrameTable* table) noexcept nogil
cdef Placement place_fragment(FrameTable* table, const Header* h, const uint8_t* payload, int64_t now,
                              uint8_t** completed) noexcept nogil
cdef uint8_t* unfilled_fragment(FrameTable* table, const Header* h) noexcept nogil
cdef void abandon_partials(FrameTable* table) noexcept nogil
cdef void restart_table(FrameTable* table) noexcept nogil
cdef void expire_frames(FrameTable* table, int64_t now, int64_t timeout_ns, bint everything) noexcept nogil
cdef uint64_t frames_lost(const FrameTable* table) noexcept nogil
