# Sessions (sessions.pyx says why): which sender session a receiver follows, which session may replace it,
# key epochs across a rekey, and the floor an earlier run of the egress left. The receiver composes it; tests
# drive it without datagrams through SessionJudge.
from libc.stdint cimport int64_t, uint64_t

cdef enum:
    RETIRED_SESSIONS = 8

cdef enum Verdict:
    VERDICT_LIVE = 0       # of the live session (or of the key epoch a rekey just replaced, still in flight)
    VERDICT_REKEYED = 1    # a later key epoch of the live session: it is the live one now
    VERDICT_STARTED = 2    # a session that replaces the live one (or the first): the caller starts it afresh
    VERDICT_STALE = 3      # of a session that may not come back or take over

cdef struct Sessions:
    bint authenticated  # with keys: every datagram judged here was authentic
    bint live
    uint64_t session_id
    uint64_t first_epoch_id     # the session as it started: what its frames are labelled with across rekeys
    bint has_previous_epoch
    uint64_t previous_epoch_id  # the key epoch the last rekey replaced, whose datagrams may still arrive
    uint64_t retired[RETIRED_SESSIONS]
    int retired_count
    int64_t takeover_ns
    int64_t last_heard_ns
    # with keys: the newest session an earlier run of this egress authenticated, and its highest numbers
    bint has_floor
    uint64_t floor_session_id
    bint floor_has_sequence
    uint64_t floor_sequence
    bint floor_has_parity
    uint64_t floor_parity
    bint resuming_floor
    # the live session's highest parity number, for saved_session()
    bint parity_seen
    uint64_t highest_parity

cdef Verdict judge_session(Sessions* sessions, uint64_t session_id, int64_t now) noexcept nogil
cdef void begin_session(Sessions* sessions, uint64_t session_id) noexcept nogil
cdef bint below_floor_sequence(const Sessions* sessions, uint64_t sequence) noexcept nogil
cdef bint below_floor_parity(const Sessions* sessions, uint64_t parity_number) noexcept nogil
cdef void note_parity(Sessions* sessions, uint64_t parity_number) noexcept nogil
