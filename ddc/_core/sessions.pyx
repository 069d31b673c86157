"""Sessions: which sender session the receiver follows, and what may replace it.

A sender session is its id: the sender's start time in seconds in the high half (an ingress with a state
directory makes ids grow even if its clock goes back), random bits in the low half. A new session id (a
restarted sender) replaces the live one, whose partial frames the receiver then abandons; late datagrams of a
recent old session are stale rather than starting it again. With keys, sessions are ordered: only an
authenticated session with a larger id replaces the live one (or, before any, the newest one an earlier run of
this egress saw, its floor), so a recorded datagram of an older session never comes back, however long the
live one is silent. Without keys anything can be forged anyway, and an older session may take over once the
live one has been silent for the takeover time (a sender whose clock went back).

A rekeying sender changes only the high half of its id (a new key epoch) and goes on with its sequence numbers,
frame ids and FEC blocks: the session is the same, so the receiver keeps every window and frame across it, and
still accepts the epoch it replaced while that epoch's datagrams are in flight. After a restart, the floor says
up to which sequence and parity number the session was delivered: those are replays now.

Kept apart from the receiver so that these rules, the ones a forged or replayed datagram aims at, can be
driven and checked alone (SessionJudge below).
"""

from libc.string cimport memset


cdef inline bint same_session(uint64_t epoch, uint64_t other) noexcept nogil:
    """Whether two session ids are key epochs of one session: a rekey keeps the low half."""
    return (epoch & <uint64_t>0xFFFFFFFF) == (other & <uint64_t>0xFFFFFFFF)


cdef bint is_retired(const Sessions* sessions, uint64_t session_id) noexcept nogil:
    cdef int i
    cdef int known = min(sessions.retired_count, RETIRED_SESSIONS)
    for i in range(known):
        if sessions.retired[i] == session_id:
            return True
    return False


cdef bint replaces(const Sessions* sessions, uint64_t session_id, int64_t now) noexcept nogil:
    if sessions.authenticated:
        if sessions.live:
            return session_id > sessions.session_id
        return not sessions.has_floor or session_id >= sessions.floor_session_id
    if not sessions.live:
        return True
    if is_retired(sessions, session_id):
        return False
    if (session_id >> 32) < (sessions.session_id >> 32) and now - sessions.last_heard_ns < sessions.takeover_ns:
        return False
    return True


cdef Verdict judge_session(Sessions* sessions, uint64_t session_id, int64_t now) noexcept nogil:
    """What a datagram of session_id (authentic, if the receiver has keys) means for the live session. A rekey
    takes effect here; a new session only once the caller has called begin_session()."""
    if sessions.live and session_id == sessions.session_id:
        return VERDICT_LIVE
    if sessions.live and sessions.authenticated:
        if sessions.has_previous_epoch and session_id == sessions.previous_epoch_id:
            return VERDICT_LIVE
        if session_id > sessions.session_id and same_session(session_id, sessions.session_id):
            sessions.has_previous_epoch = True
            sessions.previous_epoch_id = sessions.session_id
            sessions.session_id = session_id
            return VERDICT_REKEYED
    return VERDICT_STARTED if replaces(sessions, session_id, now) else VERDICT_STALE


cdef void begin_session(Sessions* sessions, uint64_t session_id) noexcept nogil:
    """session_id is the live session now; the one it replaced is retired."""
    if sessions.live:
        sessions.retired[sessions.retired_count % RETIRED_SESSIONS] = sessions.session_id
        sessions.retired_count += 1
    sessions.live = True
    sessions.session_id = session_id
    sessions.first_epoch_id = session_id
    sessions.has_previous_epoch = False
    sessions.parity_seen = False
    sessions.resuming_floor = sessions.has_floor and (session_id == sessions.floor_session_id or (
        same_session(session_id, sessions.floor_session_id) and session_id > sessions.floor_session_id))
    if sessions.resuming_floor and session_id != sessions.floor_session_id:
        sessions.has_previous_epoch = True  # the floor's datagrams may still be in flight across the rekey
        sessions.previous_epoch_id = sessions.floor_session_id


cdef bint below_floor_sequence(const Sessions* sessions, uint64_t sequence) noexcept nogil:
    """Delivered before this egress restarted, or a replay of it."""
    return sessions.resuming_floor and sessions.floor_has_sequence and sequence <= sessions.floor_sequence


cdef bint below_floor_parity(const Sessions* sessions, uint64_t parity_number) noexcept nogil:
    return sessions.resuming_floor and sessions.floor_has_parity and parity_number <= sessions.floor_parity


cdef void note_parity(Sessions* sessions, uint64_t parity_number) noexcept nogil:
    if not sessions.parity_seen or parity_number > sessions.highest_parity:
        sessions.parity_seen = True
        sessions.highest_parity = parity_number


VERDICTS = {VERDICT_LIVE: "live", VERDICT_REKEYED: "rekeyed", VERDICT_STARTED: "started", VERDICT_STALE: "stale"}


cdef class SessionJudge:
    """The session rules alone, for tests and tools: judge() says what a datagram of a session means, and a
    "started" verdict makes that session the live one, as the receiver does."""
    cdef Sessions sessions

    def __init__(self, bint authenticated, double takeover_seconds=10.0, floor=None):
        memset(&self.sessions, 0, sizeof(Sessions))
        self.sessions.authenticated = authenticated
        self.sessions.takeover_ns = <int64_t>(takeover_seconds * 1e9)
        if floor is not None:
            self.sessions.has_floor = True
            self.sessions.floor_session_id = floor

    def judge(self, uint64_t session_id, int64_t now_ns, bint heard=True):
        """The verdict on an (authentic, with keys) datagram of session_id at now_ns: "live", "rekeyed",
        "started" or "stale". heard: whether the receiver would count it as hearing the sender, if not stale:
        it does for data or control datagrams its sequence window takes, not for parity, duplicates or
        datagrams too old."""
        cdef Verdict verdict = judge_session(&self.sessions, session_id, now_ns)
        if verdict == VERDICT_STARTED:
            begin_session(&self.sessions, session_id)
        if verdict != VERDICT_STALE and heard:
            self.sessions.last_heard_ns = now_ns
        return VERDICTS[verdict]

    @property
    def live(self):
        """(live session id, the id it started with), or None before any."""
        return (self.sessions.session_id, self.sessions.first_epoch_id) if self.sessions.live else None
