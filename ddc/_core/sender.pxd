# The sending half of a link (sender.pyx): the DatagramSender and the declarations its batches need.
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from ddc._core.aead cimport SessionCipher
from ddc._core.fec_grouping cimport MAX_CONTROL_PARITY, SYMBOL_HEAD_SIZE, Grouping
from ddc._core.pacing cimport Pacer
from ddc._core.posix cimport iovec, mmsghdr, msghdr, sockaddr_storage, socklen_t
from ddc._core.wire cimport HEADER_BYTES, MAX_CONTROL_PAYLOAD, MAX_DATAGRAM_BYTES, SYMBOL_PREFIX_BYTES, TAG_BYTES, Header

cdef extern from "udp_segmentation.h" nogil:
    enum: DDC_SEGMENT_CONTROL_WORDS
    int ddc_segmentation_supported(int fd)
    void ddc_segmentation_control(msghdr* message, uint64_t* control, uint16_t segment_size)

cdef enum:
    BATCH_DATAGRAMS = MAX_CONTROL_PARITY + 1  # a control datagram and its parity leave in one batch
    SEND_WAIT_MS = 1  # a full send buffer is waited for in steps of this
    CONTROL_SYMBOL_SIZE = SYMBOL_PREFIX_BYTES + HEADER_BYTES + MAX_CONTROL_PAYLOAD + TAG_BYTES
    SEGMENTS_PER_SEND = 64
    SEGMENTED_SEND_BYTES = MAX_DATAGRAM_BYTES


cdef class DatagramSender:
    cdef int fd
    cdef sockaddr_storage destination
    cdef socklen_t destination_length
    cdef readonly uint64_t session_id
    cdef uint64_t next_sequence
    cdef uint64_t next_frame_id
    cdef readonly uint32_t datagram_size
    cdef uint32_t payload_capacity
    cdef Pacer pacer
    cdef uint8_t* headers
    cdef uint8_t* sealed
    cdef uint8_t* first_piece  # a frame's first datagram payload when the frame comes as prefix + body
    cdef SessionCipher cipher
    cdef readonly uint64_t datagrams_unsealed
    cdef iovec iov[BATCH_DATAGRAMS * 2]
    cdef mmsghdr messages[BATCH_DATAGRAMS]
    # the same batch as runs of equal-size datagrams, one send each (UDP segmentation offload)
    cdef readonly bint segmentation_offload
    cdef readonly uint64_t segmented_sends
    cdef mmsghdr runs[BATCH_DATAGRAMS]
    cdef unsigned int run_first[BATCH_DATAGRAMS]
    cdef unsigned int run_length[BATCH_DATAGRAMS]
    cdef uint64_t run_control[BATCH_DATAGRAMS][DDC_SEGMENT_CONTROL_WORDS]
    cdef readonly uint64_t datagrams_sent
    cdef readonly uint64_t frames_sent
    cdef readonly uint64_t bytes_sent
    cdef readonly uint64_t datagrams_failed
    cdef readonly int last_send_errno
    cdef readonly uint64_t heartbeats_sent
    cdef uint8_t heartbeat_payload[MAX_CONTROL_PAYLOAD]
    cdef size_t heartbeat_length
    cdef int64_t heartbeat_interval_ns
    cdef int64_t next_heartbeat_ns
    # the batch being staged
    cdef unsigned int slot
    cdef size_t batch_bytes
    # forward error correction: how datagrams are dealt into blocks, and the parity being built
    cdef Grouping fec
    cdef uint64_t next_parity_sequence
    # staged data datagrams whose parity is added when the batch leaves, and their symbols' first bytes
    cdef unsigned int pending_count
    cdef unsigned int pending_slots[BATCH_DATAGRAMS]
    cdef uint32_t pending_blocks[BATCH_DATAGRAMS]
    cdef uint16_t pending_indexes[BATCH_DATAGRAMS]
    cdef uint8_t symbol_heads[BATCH_DATAGRAMS][SYMBOL_HEAD_SIZE]
    cdef readonly uint64_t parity_sent
    cdef readonly uint64_t parity_beyond_share_sent
    cdef uint8_t control_parity[MAX_CONTROL_PARITY][CONTROL_SYMBOL_SIZE]

    cdef void transmit(self, unsigned int count) noexcept nogil
    cdef void transmit_each(self, unsigned int first, unsigned int count) noexcept nogil
    cdef void transmit_segmented(self, unsigned int count) noexcept nogil
    cdef unsigned int gather_runs(self, unsigned int count) noexcept nogil
    cdef unsigned int stage(self, unsigned int slot, Header* header,
                            const uint8_t* payload, size_t payload_length) noexcept nogil
    cdef void send_control_now(self, int datagram_type, const uint8_t* payload, size_t length) noexcept nogil
    cdef void transmit_within_burst(self, unsigned int count) noexcept nogil
    cdef size_t stage_control_parity(self, const Header* control) noexcept nogil
    cdef void heartbeat_when_due(self) noexcept nogil
    cdef void flush(self) noexcept nogil
    cdef void push(self, Header* header, const uint8_t* payload, size_t length) noexcept nogil
    cdef void absorb_pending(self) noexcept nogil
    cdef size_t add_symbol(self, uint8_t** targets, const uint8_t* factors, uint32_t rows,
                           unsigned int slot) noexcept nogil
    cdef void send_parity(self) noexcept nogil
    cdef void send_fragments(self, const uint8_t* prefix, uint32_t prefix_length, const uint8_t* data,
                             uint32_t length) noexcept nogil
