"""The receiving half of a link: datagrams in, complete frames and exact counts out.

Everything a hostile or lossy network can do to a datagram stream is decided
here, without the GIL, and every datagram that is not used ends in exactly one
drop counter. State is bounded by construction:

- sequence tracking keeps a sliding 65 536-bit window (8 KiB) per session, so
  duplicates are recognised and loss is the gap between the highest sequence and
  the number of distinct datagrams seen;
- reassembly uses a fixed table of `max_frames_in_flight` slots indexed by
  frame id, plus a byte budget; a frame that does not fit evicts the oldest
  partial frame, and partial frames older than `frame_timeout` are discarded;
- forward error correction keeps copies of the datagrams of each open block
  in a fixed table of blocks, within a byte budget; as soon as a block has
  enough datagrams and parity, the missing datagrams are rebuilt into a work
  queue and, once the datagram that completed the block is done, go through
  the same validation (checksum, authentication, sequence) as any received
  datagram, so parity can rebuild nothing a sender did not send. A rebuilt
  datagram must be the data or control datagram its block lost (same session,
  block, index and count), never parity, so one rebuild can never start
  another: the work per received datagram is bounded, without recursion;
- completed frames wait for Python in a fixed list; a received datagram
  completes at most 1 + MAX_PARITY_SYMBOLS frames, and a batch stops early
  (the rest of it waits for the next call) once the list could not take
  another datagram's worst case or holds max_frame_bytes of frames;
- a new session id (a restarted sender) abandons the old session's partial
  frames and starts fresh; which session may replace the live one, key epochs
  across a rekey and the floor an earlier run left are the sessions unit's rules.

The units it composes live apart: datagram_io (recvmmsg), wire (parsing), aead
(unsealing), sessions, sequence_window, reassembly (the frame table), fec_blocks
and fec (the block store and the code). What stays here, over 400 lines, is the path
every datagram takes in one order (parse, authenticate, session, sequence,
reassembly, rebuild queue), which shares the session's state and the counters
every drop must end in.
"""

from cpython.buffer cimport PyBuffer_FillInfo
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

from ddc._core.aead cimport KEY_BYTES, SessionCipher
from ddc._core.byteorder cimport get16, get64, put16
from ddc._core.fec cimport MAX_DATA_SYMBOLS, MAX_PARITY_SYMBOLS, recover
from ddc._core.datagram_io cimport Inbox, close_inbox, open_inbox, receive_into, wait_readable
from ddc._core.fec_blocks cimport (BLOCK_OPEN, FEC_SYMBOLS, FecBlock, close_block, close_store, empty_store,
                                  expire_blocks, keep_symbol, open_block, open_store)
from ddc._core.posix cimport MSG_TRUNC, monotonic_ns
from ddc._core.reassembly cimport (COMPLETED, DUPLICATE, MALFORMED, OVERSIZED, PLACED, FrameTable, Placement,
                                  abandon_partials, close_table, expire_frames, frames_lost, open_table,
                                  place_fragment, restart_table, unfilled_fragment)
from ddc._core.sequence_window cimport (SEEN_BEFORE, SEEN_LATE, SEEN_TOO_OLD, Sighting, datagrams_lost,
                                       reach_sequence, reset_window, see_sequence, was_announced)
from ddc._core.sessions cimport (VERDICT_REKEYED, VERDICT_STALE, VERDICT_STARTED, Sessions, Verdict, begin_session,
                                 below_floor_parity, below_floor_sequence, judge_session, note_parity)
from ddc._core.wire cimport (FLAG_AUTH_TAG, HEADER_BYTES, MAX_DATAGRAM_BYTES, PARSE_BAD_CHECKSUM, PARSE_BAD_MAGIC, PARSE_MALFORMED,
                             PARITY_SEQUENCE_BIT, PEER_OFFSET_DATAGRAMS_SENT,
                             PARSE_OK, PARSE_TRUNCATED, PARSE_UNKNOWN_TYPE, PARSE_UNKNOWN_VERSION,
                             SYMBOL_PREFIX_BYTES, TYPE_DATA, TYPE_HEARTBEAT, TYPE_PARITY, TYPE_SHUTDOWN, Header,
                             ParseResult,
                             checksum_matches, fragment_chunk, parse_header)


GAUGE_NAMES = ("datagrams_lost", "frames_lost", "frames_in_flight", "bytes_in_flight", "peak_bytes_in_flight",
               "fec_bytes_in_flight", "highest_sequence")

COUNTER_NAMES = (
    "datagrams_received", "bytes_received", "datagrams_accepted", "datagrams_reordered",
    "dropped_truncated", "dropped_bad_magic", "dropped_unknown_version", "dropped_bad_checksum",
    "dropped_malformed", "dropped_unknown_type", "dropped_oversized_frame", "dropped_stale_session",
    "dropped_duplicate", "dropped_too_old", "dropped_late_fragment",
    "dropped_unauthenticated", "dropped_unknown_key", "dropped_forged", "dropped_inconsistent_rebuild",
    "frames_completed", "frames_timed_out", "frames_evicted", "frames_abandoned", "fragments_missing",
    "heartbeats_received", "shutdowns_received", "sessions_started", "events_dropped",
    "parity_received", "datagrams_recovered", "fec_blocks_recovered", "fec_blocks_unrecoverable", "sessions_rekeyed",
)


cdef class Frame:
    """A reassembled frame; owns its bytes and lends them through the buffer protocol."""
    def __dealloc__(self):
        free(self.data)

    def __len__(self):
        return self.length

    def __getbuffer__(self, Py_buffer* buffer, int flags):
        PyBuffer_FillInfo(buffer, self, self.data, self.length, 1, flags)

    def __releasebuffer__(self, Py_buffer* buffer):
        pass

    def __bytes__(self):
        return (<char*>self.data)[:self.length]

    def __repr__(self):
        return f"Frame(frame_id={self.frame_id}, length={self.length})"


cdef class LinkReceiver:
    """Sequence tracking and reassembly for one link; see the module docstring."""
    def __cinit__(self, uint32_t max_frame_bytes=64 * 1024 * 1024, uint32_t max_frames_in_flight=1024,
                  uint64_t max_bytes_in_flight=256 * 1024 * 1024, double frame_timeout_seconds=5.0,
                  double session_takeover_seconds=10.0, uint64_t max_fec_bytes_in_flight=64 * 1024 * 1024):
        cdef int i
        open_table(&self.frames, max_frames_in_flight, max_frame_bytes, max_bytes_in_flight)
        self.frame_timeout_ns = <int64_t>(frame_timeout_seconds * 1e9)
        self.sessions.takeover_ns = <int64_t>(session_takeover_seconds * 1e9)
        self.ready = <Ready*>calloc(READY_CAPACITY, sizeof(Ready))
        if self.ready == NULL:
            raise MemoryError()
        open_store(&self.fec, max_fec_bytes_in_flight)
        self.last_sweep_ns = monotonic_ns()

    def __dealloc__(self):
        cdef uint32_t i
        close_table(&self.frames)
        if self.ready != NULL:
            for i in range(self.ready_count):
                free(self.ready[i].data)
            free(self.ready)
        free(self.rebuilt)
        close_store(&self.fec)
        close_inbox(&self.inbox)
        free(self.plain)
        memset(self.master_keys, 0, sizeof(self.master_keys))

    # ---- state helpers (nogil) ----

    cdef void push_event(self, int kind, uint64_t previous, const uint8_t* payload, uint32_t length) noexcept nogil:
        cdef Event* event
        if self.event_count == MAX_EVENTS:
            self.counters_[EVENTS_DROPPED] += 1
            return
        event = &self.events[self.event_count]
        self.event_count += 1
        event.kind = kind
        event.session_id = self.sessions.session_id
        event.previous_session_id = previous
        if length > EVENT_PAYLOAD_BYTES:
            length = EVENT_PAYLOAD_BYTES
        event.payload_length = length
        if length:
            memcpy(event.payload, payload, length)

    cdef void start_session(self, uint64_t session_id) noexcept nogil:
        cdef uint64_t previous = self.sessions.session_id
        empty_store(&self.fec)
        if self.sessions.live:
            abandon_partials(&self.frames)
            self.earlier_sessions_datagrams_lost += self.session_datagrams_lost()
            self.earlier_sessions_frames_lost += self.session_frames_lost()
        restart_table(&self.frames)
        reset_window(&self.window)
        begin_session(&self.sessions, session_id)
        self.counters_[SESSIONS_STARTED] += 1
        self.push_event(SESSION_STARTED, previous, NULL, 0)

    cdef uint64_t session_datagrams_lost(self) noexcept nogil:
        return datagrams_lost(&self.window)

    cdef uint64_t session_frames_lost(self) noexcept nogil:
        return frames_lost(&self.frames)

    cdef bint track_sequence(self, uint64_t sequence, bint recovered) noexcept nogil:
        """Records a datagram's sequence; False when it is a duplicate or too old to judge."""
        cdef bint first = self.window.distinct == 0
        cdef Sighting sighting
        if below_floor_sequence(&self.sessions, sequence):
            self.counters_[DROPPED_TOO_OLD] += 1
            return False
        sighting = see_sequence(&self.window, sequence)
        if sighting == SEEN_TOO_OLD:
            self.counters_[DROPPED_TOO_OLD] += 1
            return False
        if sighting == SEEN_BEFORE:
            self.counters_[DROPPED_DUPLICATE] += 1
            return False
        if sighting == SEEN_LATE and not recovered and not was_announced(&self.window, sequence):
            self.counters_[DATAGRAMS_REORDERED] += 1
        if first and self.sessions.resuming_floor and self.sessions.floor_has_sequence:
            # what was sent while this egress was down is lost
            self.window.lowest = self.sessions.floor_sequence + 1
        return True

    cdef void accept_fragment(self, const Header* h, const uint8_t* payload, int64_t now) noexcept nogil:
        cdef uint8_t* completed = NULL
        cdef Ready* done
        cdef Placement placed = place_fragment(&self.frames, h, payload, now, &completed)
        if placed == OVERSIZED:
            self.counters_[DROPPED_OVERSIZED_FRAME] += 1
        elif placed == MALFORMED:
            self.counters_[DROPPED_MALFORMED] += 1
        elif placed == DUPLICATE:
            self.counters_[DROPPED_DUPLICATE] += 1
        elif placed == PLACED or placed == COMPLETED:
            self.counters_[DATAGRAMS_ACCEPTED] += 1
        if placed == COMPLETED:
            done = &self.ready[self.ready_count]
            self.ready_count += 1
            done.data = completed
            done.length = h.frame_length
            done.frame_id = h.frame_id
            done.session_id = self.sessions.first_epoch_id
            self.ready_bytes += h.frame_length
            self.counters_[FRAMES_COMPLETED] += 1

    # ---- forward error correction (nogil) ----

    cdef void take_data(self, const Header* h, const uint8_t* datagram, size_t length, int64_t now) noexcept nogil:
        """Keeps a data datagram for its block. Only a kept symbol counts as received: one the budget refused
        is missing, and parity may rebuild it later (the sequence window then drops the copy as a duplicate)."""
        cdef FecBlock* block = open_block(&self.fec, h, now)
        if block == NULL or block.state != BLOCK_OPEN or block.symbols[h.fec_index] != NULL:
            return
        if block.data_received + 1 == block.data_count:
            block.data_received += 1
            close_block(&self.fec, block)
            return
        if keep_symbol(&self.fec, block, h.fec_index, datagram, length, True):
            block.data_received += 1
            self.try_recover(block, now)

    cdef void take_parity(self, const Header* h, const uint8_t* payload, int64_t now) noexcept nogil:
        cdef FecBlock* block = open_block(&self.fec, h, now)
        if block != NULL and block.state == BLOCK_OPEN:
            if block.symbols[h.fec_index] != NULL:
                self.counters_[DROPPED_DUPLICATE] += 1
                return
            if block.parity_length and block.parity_length != h.content_length:
                self.counters_[DROPPED_MALFORMED] += 1
                return
        self.counters_[DATAGRAMS_ACCEPTED] += 1
        self.counters_[PARITY_RECEIVED] += 1
        if block == NULL or block.state != BLOCK_OPEN:
            return
        if keep_symbol(&self.fec, block, h.fec_index, payload, h.content_length, False):
            block.parity_length = h.content_length
            block.parity_received += 1
            self.try_recover(block, now)

    cdef void try_recover(self, FecBlock* block, int64_t now) noexcept nogil:
        """Rebuilds the block's missing datagrams once it holds as many symbols as it has data, into the work
        queue that accept() empties; the block closes first, so they are not kept again. What is missing is
        counted once, from the symbols themselves, and sizes both the buffer and what recover() may write."""
        cdef const uint8_t* data[MAX_DATA_SYMBOLS]
        cdef size_t lengths[MAX_DATA_SYMBOLS]
        cdef const uint8_t* parity[MAX_PARITY_SYMBOLS]
        cdef uint32_t rows[MAX_PARITY_SYMBOLS]
        cdef uint32_t i, parity_count = 0, missing = 0
        cdef size_t symbol_length = block.parity_length
        cdef uint8_t* rebuilt
        cdef Expected* expected
        if block.parity_received == 0 or block.data_received + block.parity_received < block.data_count:
            return
        if self.rebuilt != NULL:  # never: only a received datagram's block is rebuilt, and accept() empties the queue
            return
        for i in range(block.data_count):
            data[i] = block.symbols[i]
            lengths[i] = block.lengths[i]
            if data[i] == NULL:
                expected = &self.rebuilt_expected[missing]
                expected.session_id = block.session_id
                expected.fec_block = block.block_id
                expected.fec_index = <uint16_t>i
                expected.fec_count = <uint16_t>block.data_count
                missing += 1
        for i in range(block.data_count, FEC_SYMBOLS):
            if block.symbols[i] != NULL:
                parity[parity_count] = block.symbols[i]
                rows[parity_count] = i - block.data_count
                parity_count += 1
        if missing == 0 or missing > parity_count:
            return
        rebuilt = <uint8_t*>malloc(missing * symbol_length)
        if rebuilt == NULL:
            return
        if not recover(block.data_count, data, lengths, parity, rows, parity_count, symbol_length, rebuilt, missing):
            free(rebuilt)
            close_block(&self.fec, block)
            return
        block.data_received = block.data_count
        close_block(&self.fec, block)
        self.counters_[FEC_BLOCKS_RECOVERED] += 1
        self.rebuilt = rebuilt
        self.rebuilt_symbol_length = symbol_length
        self.rebuilt_count = missing

    cdef void accept_rebuilt(self, int64_t now) noexcept nogil:
        """Empties the work queue: each rebuilt datagram is validated like a received one, and must be the one
        its block lost. None of them can fill the queue again (parity is refused, and its block is closed)."""
        cdef uint8_t* rebuilt = self.rebuilt
        cdef uint32_t i, count = self.rebuilt_count
        cdef size_t symbol_length = self.rebuilt_symbol_length, datagram_length
        self.rebuilt = NULL
        self.rebuilt_count = 0
        for i in range(count):
            datagram_length = get16(rebuilt + i * symbol_length)
            if datagram_length + SYMBOL_PREFIX_BYTES > symbol_length:
                datagram_length = symbol_length - SYMBOL_PREFIX_BYTES
            self.process(rebuilt + i * symbol_length + SYMBOL_PREFIX_BYTES, datagram_length, now,
                         &self.rebuilt_expected[i])
        free(rebuilt)

    cdef uint8_t* live_unfilled_fragment(self, const Header* h) noexcept nogil:
        """Where a data datagram of the live session goes in a frame already started, if that place is not
        filled yet; else NULL. Decrypting straight there saves a copy: a datagram that then fails its tag
        leaves bytes only where nothing was received, and the place counts as filled only once an authentic
        fragment is accepted."""
        if not self.sessions.live or h.session_id != self.sessions.session_id:
            return NULL
        return unfilled_fragment(&self.frames, h)

    cdef bint unseal(self, const Header* h, const uint8_t* data, uint8_t* plain) noexcept nogil:
        """Authenticates and decrypts a sealed datagram's payload into plain."""
        cdef uint8_t associated[HEADER_BYTES]
        cdef const uint8_t* master_key
        cdef bint use_a
        memcpy(associated, data, HEADER_BYTES)
        memset(associated + 8, 0, 4)  # the checksum field, zero when sealed
        if self.cipher_a.holds(h.session_id, h.key_id):
            use_a = True
        elif self.cipher_b.holds(h.session_id, h.key_id):
            use_a = False
        else:
            # Rekey the cipher that does not hold the current session, so forgeries never evict it.
            use_a = self.sessions.live and self.cipher_b.holds(self.sessions.session_id, self.cipher_b.key_id)
            master_key = self.master_keys + h.key_id * KEY_BYTES
            if not (self.cipher_a.rekey(master_key, h.key_id, h.session_id) if use_a
                    else self.cipher_b.rekey(master_key, h.key_id, h.session_id)):
                return False
        if use_a:
            return self.cipher_a.unseal(associated, HEADER_BYTES, data + HEADER_BYTES, h.payload_length, h.sequence,
                                        plain)
        return self.cipher_b.unseal(associated, HEADER_BYTES, data + HEADER_BYTES, h.payload_length, h.sequence, plain)

    cdef int damaged_or(self, const uint8_t* data, size_t length, int reason) noexcept nogil:
        """The drop counter for a failed datagram: DROPPED_BAD_CHECKSUM if it is one whose checksum
        parse_header skipped (sealed, on a keyed receiver, with a consistent length) and the checksum fails,
        so link damage is counted as damage rather than as forgery; else reason."""
        if (self.sessions.authenticated and length >= HEADER_BYTES and data[4] & FLAG_AUTH_TAG
                and get16(data + 6) + HEADER_BYTES == length and not checksum_matches(data, length)):
            return DROPPED_BAD_CHECKSUM
        return reason

    cdef void accept(self, const uint8_t* data, size_t length, int64_t now) noexcept nogil:
        """One received datagram, then whatever it let FEC rebuild."""
        self.process(data, length, now, NULL)
        if self.rebuilt != NULL:
            self.accept_rebuilt(now)

    cdef void process(self, const uint8_t* data, size_t length, int64_t now, const Expected* expected) noexcept nogil:
        """A received datagram (expected NULL) or a rebuilt one (expected: the place its block lost)."""
        cdef Header h
        cdef ParseResult result
        cdef const uint8_t* payload = data + HEADER_BYTES
        cdef uint8_t* plain
        cdef uint64_t parity_number
        cdef bint recovered = expected != NULL
        cdef Verdict verdict
        if recovered:
            self.counters_[DATAGRAMS_RECOVERED] += 1
        else:
            self.counters_[DATAGRAMS_RECEIVED] += 1
            self.counters_[BYTES_RECEIVED] += length
        # With keys, a sealed datagram's tag covers every byte: its checksum is checked only to name a failure.
        result = parse_header(data, length, &h, self.sessions.authenticated)
        if result != PARSE_OK:
            if result == PARSE_TRUNCATED:
                self.counters_[DROPPED_TRUNCATED] += 1
            elif result == PARSE_BAD_MAGIC:
                self.counters_[DROPPED_BAD_MAGIC] += 1
            elif result == PARSE_UNKNOWN_VERSION:
                self.counters_[DROPPED_UNKNOWN_VERSION] += 1
            elif result == PARSE_BAD_CHECKSUM:
                self.counters_[DROPPED_BAD_CHECKSUM] += 1
            elif result == PARSE_UNKNOWN_TYPE:
                self.counters_[self.damaged_or(data, length, DROPPED_UNKNOWN_TYPE)] += 1
            else:
                self.counters_[self.damaged_or(data, length, DROPPED_MALFORMED)] += 1
            return
        if recovered and (h.type == TYPE_PARITY or h.session_id != expected.session_id
                          or h.fec_block != expected.fec_block or h.fec_index != expected.fec_index
                          or h.fec_count != expected.fec_count):
            self.counters_[DROPPED_INCONSISTENT_REBUILD] += 1
            return
        if h.flags & FLAG_AUTH_TAG:
            if not self.sessions.authenticated or not self.key_known[h.key_id]:
                self.counters_[self.damaged_or(data, length, DROPPED_UNKNOWN_KEY)] += 1
                return
            plain = self.live_unfilled_fragment(&h)
            if plain == NULL:
                plain = self.plain
            if not self.unseal(&h, data, plain):
                self.counters_[self.damaged_or(data, length, DROPPED_FORGED)] += 1
                return
            payload = plain
        elif self.sessions.authenticated:
            self.counters_[DROPPED_UNAUTHENTICATED] += 1
            return
        verdict = judge_session(&self.sessions, h.session_id, now)
        if verdict == VERDICT_STALE:
            self.counters_[DROPPED_STALE_SESSION] += 1
            return
        if verdict == VERDICT_STARTED:
            self.start_session(h.session_id)
        elif verdict == VERDICT_REKEYED:
            self.counters_[SESSIONS_REKEYED] += 1
            self.push_event(REKEYED, self.sessions.previous_epoch_id, NULL, 0)
        if h.type == TYPE_PARITY:
            # Parity has no sequence window to recognise a replay by, so it never counts as hearing the sender.
            # After a restart, parity the earlier run saw would only reopen blocks that can never complete.
            parity_number = h.sequence & ~PARITY_SEQUENCE_BIT
            if below_floor_parity(&self.sessions, parity_number):
                self.counters_[DROPPED_TOO_OLD] += 1
                return
            note_parity(&self.sessions, parity_number)
            self.take_parity(&h, payload, now)
            return
        if not self.track_sequence(h.sequence, recovered):
            return
        self.sessions.last_heard_ns = now
        if h.type == TYPE_DATA:
            self.accept_fragment(&h, payload, now)
        else:
            self.counters_[DATAGRAMS_ACCEPTED] += 1
            if h.type == TYPE_HEARTBEAT:
                self.counters_[HEARTBEATS_RECEIVED] += 1
                self.push_event(HEARTBEAT_RECEIVED, 0, payload, h.content_length)
            elif h.type == TYPE_SHUTDOWN:
                self.counters_[SHUTDOWNS_RECEIVED] += 1
                if h.content_length >= PEER_OFFSET_DATAGRAMS_SENT + 8:
                    reach_sequence(&self.window, get64(payload + PEER_OFFSET_DATAGRAMS_SENT) - 1)
                self.push_event(SHUTDOWN_RECEIVED, 0, payload, h.content_length)
        # A rebuilt datagram's block is already closed.
        if h.fec_count and not recovered:
            self.take_data(&h, data, length, now)

    cdef void sweep(self, int64_t now, bint everything) noexcept nogil:
        self.last_sweep_ns = now
        expire_blocks(&self.fec, now, self.frame_timeout_ns, everything)
        expire_frames(&self.frames, now, self.frame_timeout_ns, everything)

    # ---- hand-off to Python ----

    cdef list take_frames(self):
        cdef list frames = []
        cdef Frame frame
        cdef uint32_t i
        self.publish()
        for i in range(self.ready_count):
            frame = Frame.__new__(Frame)
            frame.data = self.ready[i].data
            frame.length = self.ready[i].length
            frame.frame_id = self.ready[i].frame_id
            frame.session_id = self.ready[i].session_id
            frames.append(frame)
        self.ready_count = 0
        self.ready_bytes = 0
        return frames

    cdef void publish(self) noexcept:
        """Copies the counters for counters(); called with the GIL, which counters() also holds."""
        self.counters_[FEC_BLOCKS_UNRECOVERABLE] = self.fec.unrecoverable
        self.counters_[FRAMES_EVICTED] = self.frames.evicted
        self.counters_[FRAMES_TIMED_OUT] = self.frames.timed_out
        self.counters_[FRAMES_ABANDONED] = self.frames.abandoned
        self.counters_[FRAGMENTS_MISSING] = self.frames.fragments_missing
        self.counters_[DROPPED_LATE_FRAGMENT] = self.frames.late_fragments
        memcpy(self.published, self.counters_, sizeof(self.counters_))
        self.published_gauges[GAUGE_DATAGRAMS_LOST] = (self.earlier_sessions_datagrams_lost
                                                       + self.session_datagrams_lost())
        self.published_gauges[GAUGE_FRAMES_LOST] = self.earlier_sessions_frames_lost + self.session_frames_lost()
        self.published_gauges[GAUGE_FRAMES_IN_FLIGHT] = self.frames.frames_in_flight
        self.published_gauges[GAUGE_BYTES_IN_FLIGHT] = self.frames.bytes_in_flight
        self.published_gauges[GAUGE_PEAK_BYTES_IN_FLIGHT] = self.frames.peak_bytes_in_flight
        self.published_gauges[GAUGE_FEC_BYTES_IN_FLIGHT] = self.fec.bytes_in_flight
        self.published_gauges[GAUGE_HIGHEST_SEQUENCE] = self.window.highest

    @property
    def max_frame_bytes(self):
        return self.frames.max_frame_bytes

    @property
    def max_frames_in_flight(self):
        return self.frames.capacity

    @property
    def max_bytes_in_flight(self):
        return self.frames.max_bytes_in_flight

    @property
    def frames_in_flight(self):
        return self.frames.frames_in_flight

    @property
    def bytes_in_flight(self):
        return self.frames.bytes_in_flight

    @property
    def peak_bytes_in_flight(self):
        return self.frames.peak_bytes_in_flight

    @property
    def session_frames_completed(self):
        """Frames this session completed (the egress resumes a session only after one)."""
        return self.frames.completed

    @property
    def max_fec_bytes(self):
        return self.fec.max_bytes

    @property
    def fec_bytes_in_flight(self):
        return self.fec.bytes_in_flight

    def take_events(self):
        """Session starts, heartbeats and shutdowns seen since the last call, oldest first.

        Each is (kind, session_id, previous_session_id, payload bytes)."""
        cdef int i
        events = []
        for i in range(self.event_count):
            events.append((self.events[i].kind, self.events[i].session_id, self.events[i].previous_session_id,
                           (<char*>self.events[i].payload)[:self.events[i].payload_length]))
        self.event_count = 0
        return events

    def add_key(self, bytes master_key, int key_id):
        """Accepts datagrams sealed with this key id from now on, and refuses any that are not sealed."""
        if len(master_key) != KEY_BYTES:
            raise ValueError(f"a key is {KEY_BYTES} bytes, not {len(master_key)}")
        if not 0 <= key_id <= 255:
            raise ValueError(f"key id {key_id} is outside 0..255")
        if self.cipher_a is None:
            self.cipher_a = SessionCipher(False)
            self.cipher_b = SessionCipher(False)
            self.plain = <uint8_t*>malloc(MAX_DATAGRAM_BYTES)
            if self.plain == NULL:
                raise MemoryError()
        memcpy(self.master_keys + key_id * KEY_BYTES, <const char*>master_key, KEY_BYTES)
        self.key_known[key_id] = True
        self.sessions.authenticated = True

    def restore_session(self, uint64_t session_id, highest_sequence=None, highest_parity=None):
        """What saved_session() returned in an earlier run of this egress. With keys, no older session is accepted;
        datagrams of this one up to highest_sequence, and parity up to highest_parity, are refused as too old
        (delivered then, or replays of them), and what it sent after them while this egress was down counts as
        lost."""
        cdef Sessions* sessions = &self.sessions
        if sessions.live:
            raise ValueError("restore_session() comes before the first datagram")
        sessions.has_floor = True
        sessions.floor_session_id = session_id
        sessions.floor_has_sequence = highest_sequence is not None
        sessions.floor_sequence = highest_sequence or 0
        sessions.floor_has_parity = highest_parity is not None
        sessions.floor_parity = highest_parity or 0

    @property
    def batch_pending(self):
        """Whether a receive() call stopped inside a batch, whose rest the next call accepts first."""
        return self.batch_next < self.batch_received

    def saved_session(self):
        """(newest session id, highest sequence and highest parity number seen of it, each None where there was
        none) for restore_session() after a restart; None before any session."""
        cdef const Sessions* sessions = &self.sessions
        if not sessions.live:
            if not sessions.has_floor:
                return None
            return (sessions.floor_session_id, sessions.floor_sequence if sessions.floor_has_sequence else None,
                    sessions.floor_parity if sessions.floor_has_parity else None)
        sequence = sessions.floor_sequence if sessions.resuming_floor and sessions.floor_has_sequence else None
        if self.window.distinct:
            sequence = self.window.highest if sequence is None else max(sequence, self.window.highest)
        parity = sessions.floor_parity if sessions.resuming_floor and sessions.floor_has_parity else None
        if sessions.parity_seen:
            parity = sessions.highest_parity if parity is None else max(parity, sessions.highest_parity)
        return sessions.session_id, sequence, parity

    @property
    def has_session(self):
        return self.sessions.live

    @property
    def session_id(self):
        """The live session's id (its key epoch's, with keys)."""
        return self.sessions.session_id

    @property
    def resuming_floor(self):
        """Whether the live session is the one an earlier run of this egress saved (restore_session())."""
        return self.sessions.resuming_floor

    @property
    def authenticated(self):
        return self.sessions.authenticated

    def feed(self, datagram, now_ns=None):
        """Processes one datagram given as bytes; returns the frames it completed."""
        cdef bytes raw = bytes(datagram)
        cdef int64_t now = monotonic_ns() if now_ns is None else now_ns
        self.accept(<const uint8_t*><const char*>raw, len(raw), now)
        return self.take_frames()

    def receive(self, int fd, int timeout_ms):
        """Waits up to timeout_ms for datagrams on fd, processes what arrived, returns completed frames.

        A call returns once it has frames; it stops inside a batch when the frames waiting could not take
        another datagram's worst case, or hold max_frame_bytes, and the next call goes on from there."""
        cdef int rounds = 0
        cdef int64_t now
        if self.inbox.slots == NULL:
            open_inbox(&self.inbox, BATCH_DATAGRAMS, RECEIVE_BUFFER_BYTES, RECEIVE_BUFFER_STRIDE, False)
        with nogil:
            if self.batch_next < self.batch_received:
                self.accept_batch(monotonic_ns())
            else:
                if wait_readable(fd, timeout_ms):
                    while rounds < 16 and self.ready_count == 0:
                        rounds += 1
                        self.batch_received = receive_into(&self.inbox, fd)
                        self.batch_next = 0
                        if self.batch_received <= 0:
                            self.batch_received = 0
                            break
                        self.accept_batch(monotonic_ns())
            now = monotonic_ns()
            if now - self.last_sweep_ns >= SWEEP_INTERVAL_NS:
                self.sweep(now, False)
        return self.take_frames()

    cdef void accept_batch(self, int64_t now) noexcept nogil:
        """Accepts the received batch from batch_next on, while the frames waiting have room for the worst case."""
        cdef int i
        while self.batch_next < self.batch_received:
            if self.ready_count and (self.ready_count > READY_CAPACITY - FRAMES_PER_DATAGRAM
                                     or self.ready_bytes >= self.frames.max_frame_bytes):
                return
            i = self.batch_next
            self.batch_next += 1
            if self.inbox.messages[i].msg_hdr.msg_flags & MSG_TRUNC:
                self.counters_[DATAGRAMS_RECEIVED] += 1
                self.counters_[DROPPED_TRUNCATED] += 1
                continue
            self.accept(self.inbox.slots + i * RECEIVE_BUFFER_STRIDE, self.inbox.messages[i].msg_len, now)

    def expire(self, now_ns=None, bint everything=False):
        """Discards partial frames older than the timeout (all of them with everything=True)."""
        cdef int64_t now = monotonic_ns() if now_ns is None else now_ns
        self.sweep(now, everything)
        self.publish()

    def counters(self):
        """Every counter, plus loss derived from sequence and frame ids, summed over all sessions, as of the end
        of the last feed(), receive() or expire() call: safe to read from another thread while receive() runs."""
        cdef int i
        result = {COUNTER_NAMES[i]: self.published[i] for i in range(COUNTER_COUNT)}
        for i in range(GAUGE_COUNT):
            result[GAUGE_NAMES[i]] = self.published_gauges[i]
        return result
