"""The sending half of a link: frames in, paced batches of datagrams out.

A frame is split into fragments that point into the caller's buffer (two iovecs
per datagram: header and payload slice), so payload bytes are never copied before
the kernel. Datagrams leave through sendmmsg in batches, paced by a token bucket
with nanosecond clock reads, all with the GIL released.

Heartbeats are sent from here too, between batches, whenever one is due: a large
frame at a low rate can take seconds to send, and heartbeats that waited for it
would make the egress report a busy link as interrupted.
"""

from libc.errno cimport EAGAIN, EINTR, ENOBUFS, errno
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from ddc._core.posix cimport (CLOCK_MONOTONIC, POLLOUT, clock_nanosleep, iovec, mmsghdr, monotonic_ns,
                              poll, pollfd, sendmmsg, sockaddr_storage, socklen_t, timespec)
from ddc._core.aead cimport TAG_BYTES, SessionCipher
from ddc._core.byteorder cimport put64
from ddc._core.wire cimport (FLAG_AUTH_TAG, HEADER_SIZE, MAX_CONTROL_PAYLOAD, MAX_DATAGRAM_SIZE, PEER_OFFSET_BYTES_SENT,
                             PEER_OFFSET_DATAGRAMS_SENT, PEER_OFFSET_FRAMES_SENT, TYPE_DATA, TYPE_HEARTBEAT,
                             TYPE_SHUTDOWN, Header, fragment_chunk, fragment_count_for, seal, write_header)


cdef enum:
    BATCH_DATAGRAMS = 64
    MAX_SEND_RETRIES = 100


cdef inline void sleep_ns(int64_t duration) noexcept nogil:
    cdef timespec request
    if duration <= 0:
        return
    request.tv_sec = duration // 1000000000
    request.tv_nsec = duration % 1000000000
    clock_nanosleep(CLOCK_MONOTONIC, 0, &request, NULL)


cdef class DatagramSender:
    """Owns a link's sequence space: session id, datagram sequence and frame ids.

    rate_bytes_per_second = 0 means unlimited. The burst bounds how far ahead of
    the configured rate a batch may go, so a receiver never sees more than that
    many bytes at line speed.
    """
    cdef int fd
    cdef sockaddr_storage destination
    cdef socklen_t destination_length
    cdef readonly uint64_t session_id
    cdef uint64_t next_sequence
    cdef uint64_t next_frame_id
    cdef readonly uint32_t datagram_size
    cdef uint32_t payload_capacity
    cdef double rate_bytes_per_ns
    cdef double burst_bytes
    cdef double burst_ns
    cdef double send_at_ns
    cdef uint8_t* headers
    cdef uint8_t* sealed
    cdef SessionCipher cipher
    cdef readonly uint64_t datagrams_unsealed
    cdef iovec iov[BATCH_DATAGRAMS * 2]
    cdef mmsghdr messages[BATCH_DATAGRAMS]
    cdef readonly uint64_t datagrams_sent
    cdef readonly uint64_t frames_sent
    cdef readonly uint64_t bytes_sent
    cdef readonly uint64_t datagrams_failed
    cdef readonly uint64_t pacing_sleeps
    cdef readonly uint64_t heartbeats_sent
    cdef uint8_t heartbeat_payload[MAX_CONTROL_PAYLOAD]
    cdef size_t heartbeat_length
    cdef int64_t heartbeat_interval_ns
    cdef int64_t next_heartbeat_ns

    def __cinit__(self):
        self.headers = <uint8_t*>malloc(BATCH_DATAGRAMS * HEADER_SIZE)
        if self.headers == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.headers)
        free(self.sealed)

    def __init__(self, int fd, bytes socket_address, uint64_t session_id, uint32_t datagram_size,
                 double rate_bytes_per_second=0.0, double burst_bytes=0.0, double heartbeat_interval=0.0):
        if datagram_size <= HEADER_SIZE or datagram_size > MAX_DATAGRAM_SIZE:
            raise ValueError(
                f"datagram size {datagram_size} must be between {HEADER_SIZE + 1} and {MAX_DATAGRAM_SIZE} bytes")
        if len(socket_address) > sizeof(sockaddr_storage):
            raise ValueError("socket address is larger than sockaddr_storage")
        self.fd = fd
        memset(&self.destination, 0, sizeof(sockaddr_storage))
        memcpy(&self.destination, <const char*>socket_address, len(socket_address))
        self.destination_length = len(socket_address)
        self.session_id = session_id
        self.datagram_size = datagram_size
        self.payload_capacity = datagram_size - HEADER_SIZE
        self.rate_bytes_per_ns = rate_bytes_per_second / 1e9
        if rate_bytes_per_second > 0:
            self.burst_bytes = max(burst_bytes, 2.0 * datagram_size)
        else:
            self.burst_bytes = 0
        self.burst_ns = self.burst_bytes / self.rate_bytes_per_ns if rate_bytes_per_second > 0 else 0
        self.send_at_ns = monotonic_ns()
        self.heartbeat_interval_ns = <int64_t>(heartbeat_interval * 1e9)
        self.next_heartbeat_ns = <int64_t>self.send_at_ns

    cdef void pace(self, size_t batch_bytes) noexcept nogil:
        """Waits until batch_bytes may leave: a virtual schedule (GCRA) rather than a token count.

        Each batch advances the schedule by exactly batch_bytes / rate; the sender may run
        at most burst ahead of it. Oversleeping only shortens the next wait, so the long-run
        rate stays exact however coarse the sleeps are, and idle time earns at most a burst.
        """
        cdef double now, wait
        if self.rate_bytes_per_ns <= 0:
            return
        now = <double>monotonic_ns()
        if self.send_at_ns < now - self.burst_ns:
            self.send_at_ns = now - self.burst_ns
        self.send_at_ns += batch_bytes / self.rate_bytes_per_ns
        wait = self.send_at_ns - self.burst_ns - now
        if wait > 0:
            self.pacing_sleeps += 1
            sleep_ns(<int64_t>wait)

    cdef void transmit(self, unsigned int count) noexcept nogil:
        """Sends messages[0:count]; a datagram the kernel refuses is counted, not retried forever."""
        cdef unsigned int done = 0
        cdef int sent, retries = 0
        cdef pollfd waiter
        while done < count:
            sent = sendmmsg(self.fd, &self.messages[done], count - done, 0)
            if sent > 0:
                done += sent
                retries = 0
                continue
            if errno == EINTR:
                continue
            if (errno == EAGAIN or errno == ENOBUFS) and retries < MAX_SEND_RETRIES:
                retries += 1
                waiter.fd = self.fd
                waiter.events = POLLOUT
                poll(&waiter, 1, 1)
                continue
            self.datagrams_failed += 1
            done += 1
            retries = 0
        self.datagrams_sent += count

    cdef unsigned int stage(self, unsigned int slot, Header* header,
                            const uint8_t* payload, size_t payload_length) noexcept nogil:
        cdef uint8_t* header_bytes = self.headers + slot * HEADER_SIZE
        cdef uint8_t* sealed
        if self.cipher is not None:
            sealed = self.sealed + slot * MAX_DATAGRAM_SIZE
            header.flags = FLAG_AUTH_TAG
            header.key_id = <uint8_t>self.cipher.key_id
            header.payload_length = <uint16_t>(payload_length + TAG_BYTES)
            write_header(header_bytes, header)
            if not self.cipher.seal(header_bytes, HEADER_SIZE, payload, payload_length, header.sequence, sealed):
                self.datagrams_unsealed += 1
            payload = sealed
            payload_length += TAG_BYTES
        else:
            write_header(header_bytes, header)
        seal(header_bytes, payload, payload_length)
        self.iov[2 * slot].iov_base = header_bytes
        self.iov[2 * slot].iov_len = HEADER_SIZE
        self.iov[2 * slot + 1].iov_base = <void*>payload
        self.iov[2 * slot + 1].iov_len = payload_length
        memset(&self.messages[slot], 0, sizeof(mmsghdr))
        self.messages[slot].msg_hdr.msg_name = &self.destination
        self.messages[slot].msg_hdr.msg_namelen = self.destination_length
        self.messages[slot].msg_hdr.msg_iov = &self.iov[2 * slot]
        self.messages[slot].msg_hdr.msg_iovlen = 2
        return HEADER_SIZE + payload_length

    cdef void send_control_now(self, int datagram_type, const uint8_t* payload, size_t length) noexcept nogil:
        cdef Header header
        cdef size_t wire_bytes
        memset(&header, 0, sizeof(Header))
        header.type = datagram_type
        header.session_id = self.session_id
        header.sequence = self.next_sequence
        header.payload_length = <uint16_t>length
        header.fragment_count = 1
        self.next_sequence += 1
        wire_bytes = self.stage(0, &header, payload, length)
        self.pace(wire_bytes)
        self.transmit(1)

    cdef void heartbeat_when_due(self) noexcept nogil:
        cdef int64_t now
        if self.heartbeat_length == 0 or self.heartbeat_interval_ns <= 0:
            return
        now = monotonic_ns()
        if now < self.next_heartbeat_ns:
            return
        self.next_heartbeat_ns = now + self.heartbeat_interval_ns
        put64(self.heartbeat_payload + PEER_OFFSET_DATAGRAMS_SENT, self.next_sequence)
        put64(self.heartbeat_payload + PEER_OFFSET_FRAMES_SENT, self.frames_sent)
        put64(self.heartbeat_payload + PEER_OFFSET_BYTES_SENT, self.bytes_sent)
        self.heartbeats_sent += 1
        self.send_control_now(TYPE_HEARTBEAT, self.heartbeat_payload, self.heartbeat_length)

    cdef void send_fragments(self, const uint8_t* data, uint32_t length) noexcept nogil:
        cdef Header header
        cdef uint32_t count = fragment_count_for(length, self.payload_capacity)
        cdef uint32_t chunk = fragment_chunk(length, count)
        cdef uint32_t index = 0, offset, piece
        cdef unsigned int slot = 0
        cdef size_t batch_bytes = 0
        memset(&header, 0, sizeof(Header))
        header.type = TYPE_DATA
        header.session_id = self.session_id
        header.frame_id = self.next_frame_id
        header.fragment_count = count
        header.frame_length = length
        self.next_frame_id += 1
        while index < count:
            offset = index * chunk
            piece = chunk if length - offset > chunk else length - offset
            header.fragment_index = index
            header.sequence = self.next_sequence
            header.payload_length = <uint16_t>piece
            self.next_sequence += 1
            batch_bytes += self.stage(slot, &header, data + offset, piece)
            slot += 1
            index += 1
            if slot == BATCH_DATAGRAMS or index == count or (
                    self.burst_bytes > 0 and batch_bytes + self.datagram_size > self.burst_bytes):
                self.pace(batch_bytes)
                self.transmit(slot)
                slot = 0
                batch_bytes = 0
                self.heartbeat_when_due()
        self.frames_sent += 1
        self.bytes_sent += length

    def encrypt_with(self, bytes master_key, int key_id):
        """From now on every datagram is AES-256-GCM sealed with this session's key derived from master_key."""
        if self.next_sequence:
            raise ValueError("encryption must be set before the first datagram of a session")
        if self.datagram_size <= HEADER_SIZE + TAG_BYTES:
            raise ValueError(f"datagram size {self.datagram_size} leaves no room for a payload and its "
                             f"{TAG_BYTES}-byte tag; use at least {HEADER_SIZE + TAG_BYTES + 1}")
        cipher = SessionCipher(True)
        cipher.set_key(master_key, key_id, self.session_id)
        if self.sealed == NULL:
            self.sealed = <uint8_t*>malloc(BATCH_DATAGRAMS * MAX_DATAGRAM_SIZE)
            if self.sealed == NULL:
                raise MemoryError()
        self.cipher = cipher
        self.payload_capacity = self.datagram_size - HEADER_SIZE - TAG_BYTES

    def send_frame(self, frame):
        """Fragments and sends one frame (any buffer of at most 4 GiB); returns its frame id."""
        cdef const uint8_t[:] view
        cdef const uint8_t* data
        cdef uint64_t frame_id = self.next_frame_id
        cdef Py_ssize_t length = len(frame)
        if length > 0xFFFFFFFF:
            raise ValueError(f"frame of {length} bytes exceeds the 4 GiB protocol limit")
        view = memoryview(frame).cast("B") if length else memoryview(b"\0")
        data = &view[0]
        with nogil:
            self.send_fragments(data, <uint32_t>length)
        return frame_id

    def set_heartbeat(self, bytes payload):
        """The heartbeat payload to send when one is due; its sent-counters are refreshed at sending."""
        if len(payload) > MAX_CONTROL_PAYLOAD or len(payload) < PEER_OFFSET_BYTES_SENT + 8:
            raise ValueError(f"heartbeat payload of {len(payload)} bytes is not a peer counter payload")
        memcpy(self.heartbeat_payload, <const char*>payload, len(payload))
        self.heartbeat_length = len(payload)

    def heartbeat_if_due(self):
        """Sends the heartbeat if its interval has passed; for idle links, between frames."""
        with nogil:
            self.heartbeat_when_due()

    def seconds_until_heartbeat(self):
        if self.heartbeat_interval_ns <= 0:
            return float("inf")
        return max(self.next_heartbeat_ns - monotonic_ns(), 0) / 1e9

    def send_control(self, int datagram_type, bytes payload):
        """Sends one heartbeat or shutdown datagram now; it takes a sequence number like any other."""
        cdef size_t length = len(payload)
        cdef const uint8_t* data = <const uint8_t*><const char*>payload
        if datagram_type != TYPE_HEARTBEAT and datagram_type != TYPE_SHUTDOWN:
            raise ValueError(f"control datagram type {datagram_type} is neither heartbeat nor shutdown")
        if length > self.payload_capacity or length > MAX_CONTROL_PAYLOAD:
            raise ValueError(f"control payload of {length} bytes exceeds the datagram capacity")
        with nogil:
            self.send_control_now(datagram_type, data, length)

    def counters(self):
        return {
            "datagrams_sent": self.datagrams_sent,
            "datagrams_failed": self.datagrams_failed,
            "frames_sent": self.frames_sent,
            "bytes_sent": self.bytes_sent,
            "pacing_sleeps": self.pacing_sleeps,
            "heartbeats_sent": self.heartbeats_sent,
            "datagrams_unsealed": self.datagrams_unsealed,
        }
