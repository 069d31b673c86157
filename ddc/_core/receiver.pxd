# The receiving half of a link (receiver.pyx): its tables, its counters and the LinkReceiver that composes them.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from ddc._core.aead cimport KEY_BYTES, SessionCipher
from ddc._core.datagram_io cimport Inbox
from ddc._core.fec cimport MAX_DATA_SYMBOLS, MAX_PARITY_SYMBOLS
from ddc._core.fec_blocks cimport BlockStore, FecBlock
from ddc._core.reassembly cimport FrameTable
from ddc._core.sequence_window cimport SequenceWindow
from ddc._core.sessions cimport Sessions
from ddc._core.wire cimport Header

cdef enum:
    BATCH_DATAGRAMS = 64
    RECEIVE_BUFFER_BYTES = 65536
    # Receive buffers 64 KiB apart would all start in the same cache sets, and a batch of jumbo datagrams would
    # evict itself before it is checked and copied; an odd number of extra cache lines spreads them out.
    RECEIVE_BUFFER_STRIDE = RECEIVE_BUFFER_BYTES + 23 * 64
    MAX_EVENTS = 32
    EVENT_PAYLOAD_BYTES = 256
    SWEEP_INTERVAL_NS = 10000000
    # the most frames one received datagram can complete: its own, and each datagram its block rebuilds
    FRAMES_PER_DATAGRAM = 1 + MAX_PARITY_SYMBOLS
    READY_CAPACITY = 8 * FRAMES_PER_DATAGRAM

cdef enum:
    DATAGRAMS_RECEIVED
    BYTES_RECEIVED
    DATAGRAMS_ACCEPTED
    DATAGRAMS_REORDERED
    DROPPED_TRUNCATED
    DROPPED_BAD_MAGIC
    DROPPED_UNKNOWN_VERSION
    DROPPED_BAD_CHECKSUM
    DROPPED_MALFORMED
    DROPPED_UNKNOWN_TYPE
    DROPPED_OVERSIZED_FRAME
    DROPPED_STALE_SESSION
    DROPPED_DUPLICATE
    DROPPED_TOO_OLD
    DROPPED_LATE_FRAGMENT
    DROPPED_UNAUTHENTICATED
    DROPPED_UNKNOWN_KEY
    DROPPED_FORGED
    DROPPED_INCONSISTENT_REBUILD
    FRAMES_COMPLETED
    FRAMES_TIMED_OUT
    FRAMES_EVICTED
    FRAMES_ABANDONED
    FRAGMENTS_MISSING
    HEARTBEATS_RECEIVED
    SHUTDOWNS_RECEIVED
    SESSIONS_STARTED
    EVENTS_DROPPED
    PARITY_RECEIVED
    DATAGRAMS_RECOVERED
    FEC_BLOCKS_RECOVERED
    FEC_BLOCKS_UNRECOVERABLE
    SESSIONS_REKEYED
    COUNTER_COUNT

cdef enum:
    GAUGE_DATAGRAMS_LOST
    GAUGE_FRAMES_LOST
    GAUGE_FRAMES_IN_FLIGHT
    GAUGE_BYTES_IN_FLIGHT
    GAUGE_PEAK_BYTES_IN_FLIGHT
    GAUGE_FEC_BYTES_IN_FLIGHT
    GAUGE_HIGHEST_SEQUENCE
    GAUGE_COUNT

cpdef enum:
    # what receive() reports beside frames (LinkReceiver.events())
    SESSION_STARTED = 1
    HEARTBEAT_RECEIVED = 2
    SHUTDOWN_RECEIVED = 3
    REKEYED = 4

cdef struct Event:
    int kind
    uint64_t session_id
    uint64_t previous_session_id
    uint32_t payload_length
    uint8_t payload[EVENT_PAYLOAD_BYTES]

cdef struct Ready:
    uint8_t* data
    uint32_t length
    uint64_t frame_id
    uint64_t session_id

cdef struct Expected:
    # what a rebuilt datagram must say about itself: the place its block lost
    uint64_t session_id
    uint32_t fec_block
    uint16_t fec_index
    uint16_t fec_count


cdef class Frame:
    cdef uint8_t* data
    cdef Py_ssize_t length
    cdef readonly uint64_t frame_id
    cdef readonly uint64_t session_id
    cdef public object log_position  # where the egress's write-ahead log (ddc/spool/) holds it, if it does


cdef class LinkReceiver:
    cdef readonly int64_t frame_timeout_ns
    cdef uint64_t counters_[COUNTER_COUNT]
    # the session followed, and what may replace it
    cdef Sessions sessions
    # sequence window
    cdef SequenceWindow window
    # frames
    cdef FrameTable frames
    cdef uint64_t earlier_sessions_datagrams_lost
    cdef uint64_t earlier_sessions_frames_lost
    cdef int64_t last_sweep_ns
    # hand-off to Python
    cdef Ready* ready
    cdef uint32_t ready_count
    cdef uint64_t ready_bytes
    # the rest of a received batch, when a call stopped before its end
    cdef int batch_received
    cdef int batch_next
    # the work queue: datagrams one block rebuilt, accepted after the datagram that completed it
    cdef uint8_t* rebuilt
    cdef size_t rebuilt_symbol_length
    cdef uint32_t rebuilt_count
    cdef Expected rebuilt_expected[MAX_DATA_SYMBOLS]
    # what counters() reads: a copy made with the GIL held, never torn by a receive() running without it
    cdef uint64_t published[COUNTER_COUNT]
    cdef uint64_t published_gauges[GAUGE_COUNT]
    cdef Event events[MAX_EVENTS]
    cdef int event_count
    # authentication: up to 256 master keys by key id; two session ciphers, one always the current session's
    cdef uint8_t master_keys[256 * KEY_BYTES]
    cdef bint key_known[256]
    cdef SessionCipher cipher_a
    cdef SessionCipher cipher_b
    cdef uint8_t* plain
    # forward error correction
    cdef BlockStore fec
    cdef Inbox inbox  # socket reception's slots, made by the first receive() (feed() needs none)
    cdef void push_event(self, int kind, uint64_t previous, const uint8_t* payload, uint32_t length) noexcept nogil
    cdef void start_session(self, uint64_t session_id) noexcept nogil
    cdef uint64_t session_datagrams_lost(self) noexcept nogil
    cdef uint64_t session_frames_lost(self) noexcept nogil
    cdef bint track_sequence(self, uint64_t sequence, bint recovered) noexcept nogil
    cdef void accept_fragment(self, const Header* h, const uint8_t* payload, int64_t now) noexcept nogil
    cdef void take_data(self, const Header* h, const uint8_t* datagram, size_t length, int64_t now) noexcept nogil
    cdef void take_parity(self, const Header* h, const uint8_t* payload, int64_t now) noexcept nogil
    cdef void try_recover(self, FecBlock* block, int64_t now) noexcept nogil
    cdef void accept_rebuilt(self, int64_t now) noexcept nogil
    cdef uint8_t* live_unfilled_fragment(self, const Header* h) noexcept nogil
    cdef bint unseal(self, const Header* h, const uint8_t* data, uint8_t* plain) noexcept nogil
    cdef int damaged_or(self, const uint8_t* data, size_t length, int reason) noexcept nogil
    cdef void accept(self, const uint8_t* data, size_t length, int64_t now) noexcept nogil
    cdef void process(self, const uint8_t* data, size_t length, int64_t now, const Expected* expected) noexcept nogil
    cdef void sweep(self, int64_t now, bint everything) noexcept nogil
    cdef list take_frames(self)
    cdef void publish(self) noexcept
    cdef void accept_batch(self, int64_t now) noexcept nogil
