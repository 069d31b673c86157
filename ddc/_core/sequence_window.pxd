# A session's sequence window (sequence_window.pyx says why): inlined into the receiver, one datagram at a time.
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memset

cdef enum:
    SEQUENCE_WINDOW = 65536
    SEQUENCE_WORDS = SEQUENCE_WINDOW // 64

cdef enum Sighting:
    SEEN_IN_ORDER = 0  # new, and the highest yet (or the first)
    SEEN_LATE = 1      # new, but after a higher one: reordered, or announced lost and arriving after all
    SEEN_BEFORE = 2    # a duplicate
    SEEN_TOO_OLD = 3   # behind the window: cannot be told from a duplicate or a replay

cdef struct SequenceWindow:
    uint64_t bits[SEQUENCE_WORDS]
    uint64_t highest
    uint64_t lowest
    uint64_t distinct  # datagrams seen once
    uint64_t announced_first  # what a shutdown said was sent past the highest seen then
    uint64_t announced_last


cdef inline void reset_window(SequenceWindow* window) noexcept nogil:
    memset(window, 0, sizeof(SequenceWindow))
    window.announced_first = 1


cdef inline void forget_range(SequenceWindow* window, uint64_t first, uint64_t last) noexcept nogil:
    """Clears first..last (callers keep it within one window); stops at last even where last + 1 wraps."""
    cdef uint64_t s = first
    cdef uint32_t bit
    if first > last:
        return
    while True:
        bit = s % SEQUENCE_WINDOW
        window.bits[bit >> 6] &= ~(1ULL << (bit & 63))
        if s == last:
            return
        s += 1


cdef inline Sighting see_sequence(SequenceWindow* window, uint64_t sequence) noexcept nogil:
    cdef uint32_t bit
    cdef Sighting sighting = SEEN_IN_ORDER
    if window.distinct == 0:
        window.highest = sequence
        window.lowest = sequence
    elif sequence > window.highest:
        if sequence - window.highest >= SEQUENCE_WINDOW:
            memset(window.bits, 0, sizeof(window.bits))
        else:
            forget_range(window, window.highest + 1, sequence - 1)
        window.highest = sequence
    elif window.highest - sequence >= SEQUENCE_WINDOW:
        return SEEN_TOO_OLD
    else:
        bit = sequence % SEQUENCE_WINDOW
        if window.bits[bit >> 6] & (1ULL << (bit & 63)):
            return SEEN_BEFORE
        sighting = SEEN_LATE
        if sequence < window.lowest:
            window.lowest = sequence
    bit = sequence % SEQUENCE_WINDOW
    window.bits[bit >> 6] |= 1ULL << (bit & 63)
    window.distinct += 1
    return sighting


cdef inline bint was_announced(const SequenceWindow* window, uint64_t sequence) noexcept nogil:
    return window.announced_first <= sequence <= window.announced_last


cdef inline void reach_sequence(SequenceWindow* window, uint64_t last) noexcept nogil:
    """The sender says its session ended at sequence `last`: what is missing beyond the highest seen counts as
    lost (within one window, so a wild value cannot make a wild figure)."""
    if last <= window.highest or last - window.highest >= SEQUENCE_WINDOW:
        return
    window.announced_first = window.highest + 1
    window.announced_last = last
    forget_range(window, window.highest + 1, last)
    window.highest = last


cdef inline uint64_t datagrams_lost(const SequenceWindow* window) noexcept nogil:
    """Sequences between the lowest and the highest seen that never arrived."""
    if window.distinct == 0:
        return 0
    return window.highest - window.lowest + 1 - window.distinct
