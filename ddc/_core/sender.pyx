"""The sending half of a link: frames in, paced batches of datagrams out.

A frame is split into fragments that point into the caller's buffer (two iovecs
per datagram: header and payload slice), so payload bytes are never copied before
the kernel. Datagrams leave through sendmmsg in batches, paced on a virtual
schedule with nanosecond clock reads, all with the GIL released. Where the kernel
can segment UDP (udp_segmentation.h), each run of equal-size datagrams in a batch
is one message, cut apart by the kernel: the datagrams on the wire are the same.

With forward error correction on, fec_grouping decides which block each datagram
goes in and what parity each block gets; here the parity is accumulated once per
batch, when the batch leaves (each parity row is then read and written once for
all the batch's datagrams of its block, not once per datagram), and a group's
parity datagrams follow its data. A control datagram (heartbeat, shutdown) is a
block of its own, its parity sent with it in one batch.

Heartbeats are sent from here too, between batches, whenever one is due: a large
frame at a low rate can take seconds to send, and heartbeats that waited for it
would make the egress report a busy link as interrupted.

The units it composes live apart: pacing.pxd (the schedule), datagram_io (sendmmsg
and its retry policy), wire (headers), aead (sealing), fec_grouping (blocks and
their parity), fec and gf256.h (the code).
What stays here, over 400 lines, is the staging of one batch: headers, sealed
copies, FEC symbols and segmentation runs all index the same batch slots, filled
and sent together.
"""

import os

from libc.errno cimport EINVAL, EIO, EMSGSIZE, EOPNOTSUPP, errno
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from ddc._core.datagram_io cimport SendTally, send_each, wait_to_retry
from ddc._core.pacing cimport pace, start_pacer
from ddc._core.posix cimport iovec, mmsghdr, monotonic_ns, msghdr, sendmmsg, sockaddr_storage, socklen_t
from ddc._core.aead cimport SessionCipher
from ddc._core.byteorder cimport put16, put64
from ddc._core.fec cimport coefficient, multiply_add_rows
from ddc._core.fec_grouping cimport (absorb_block, advance_group, begin_frame, check_grouping, configure_grouping,
                                     control_block, next_parity, parity_symbol, place_data, release_grouping)
from ddc._core.wire cimport (FLAG_AUTH_TAG, HEADER_BYTES, MAX_CONTROL_PAYLOAD, MAX_DATAGRAM_BYTES, PARITY_SEQUENCE_BIT,
                             PEER_OFFSET_BYTES_SENT, PEER_OFFSET_DATAGRAMS_SENT, PEER_OFFSET_FRAMES_SENT,
                             SYMBOL_PREFIX_BYTES, TAG_BYTES, TYPE_DATA, TYPE_HEARTBEAT, TYPE_PARITY, TYPE_SHUTDOWN,
                             Header, datagram_overhead, fragment_chunk, fragment_count_for, seal, write_header)


cdef class DatagramSender:
    """Owns a link's sequence space: session id, datagram sequence and frame ids.

    rate_bytes_per_second = 0 means unlimited. The burst bounds how far ahead of
    the configured rate a batch may go, so a receiver never sees more than that
    many bytes at line speed.
    """
    def __cinit__(self):
        self.headers = <uint8_t*>malloc(BATCH_DATAGRAMS * HEADER_BYTES)
        if self.headers == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.headers)
        free(self.first_piece)
        free(self.sealed)
        release_grouping(&self.fec)

    def __init__(self, int fd, bytes socket_address, uint64_t session_id, uint32_t datagram_size,
                 double rate_bytes_per_second=0.0, double burst_bytes=0.0, double heartbeat_interval=0.0,
                 bint segmentation_offload=True):
        if datagram_size <= HEADER_BYTES or datagram_size > MAX_DATAGRAM_BYTES:
            raise ValueError(
                f"datagram size {datagram_size} must be between {HEADER_BYTES + 1} and {MAX_DATAGRAM_BYTES} bytes")
        if len(socket_address) > sizeof(sockaddr_storage):
            raise ValueError("socket address is larger than sockaddr_storage")
        self.fd = fd
        memset(&self.destination, 0, sizeof(sockaddr_storage))
        memcpy(&self.destination, <const char*>socket_address, len(socket_address))
        self.destination_length = len(socket_address)
        self.session_id = session_id
        self.datagram_size = datagram_size
        self.payload_capacity = datagram_size - HEADER_BYTES
        start_pacer(&self.pacer, rate_bytes_per_second, burst_bytes, 2.0 * datagram_size)
        self.heartbeat_interval_ns = <int64_t>(heartbeat_interval * 1e9)
        self.next_heartbeat_ns = <int64_t>self.pacer.send_at_ns
        self.segmentation_offload = segmentation_offload and ddc_segmentation_supported(fd)

    cdef void transmit(self, unsigned int count) noexcept nogil:
        if self.segmentation_offload and count > 1:
            self.transmit_segmented(count)
        else:
            self.transmit_each(0, count)
        self.datagrams_sent += count

    cdef void transmit_each(self, unsigned int first, unsigned int count) noexcept nogil:
        """Sends messages[first:count], a datagram each; one the kernel refuses is counted, not retried forever."""
        cdef SendTally tally
        memset(&tally, 0, sizeof(SendTally))
        send_each(self.fd, &self.messages[first], count - first, SEND_WAIT_MS, &tally)
        if tally.failed:
            self.datagrams_failed += tally.failed
            self.last_send_errno = tally.last_error

    cdef void transmit_segmented(self, unsigned int count) noexcept nogil:
        """Sends messages[0:count] as runs of equal-size datagrams, one message per run. If the kernel
        cannot segment for this route, the rest goes a datagram per message, and so does every later batch."""
        cdef unsigned int runs = self.gather_runs(count), done = 0, run
        cdef int sent, retries = 0
        while done < runs:
            sent = sendmmsg(self.fd, &self.runs[done], runs - done, 0)
            if sent > 0:
                for run in range(done, done + sent):
                    self.segmented_sends += self.run_length[run] > 1
                done += sent
                retries = 0
            elif wait_to_retry(self.fd, &retries, SEND_WAIT_MS):
                pass
            elif self.run_length[done] > 1 and (errno == EINVAL or errno == EIO or errno == EOPNOTSUPP
                                                or errno == EMSGSIZE):
                self.segmentation_offload = False
                self.transmit_each(self.run_first[done], count)
                return
            else:
                self.datagrams_failed += self.run_length[done]
                self.last_send_errno = errno
                done += 1
                retries = 0

    cdef unsigned int gather_runs(self, unsigned int count) noexcept nogil:
        """Splits messages[0:count] into runs the kernel cuts back into the very same datagrams: every
        datagram of a run as long as the first but the last, which may be shorter, at most 64 datagrams and
        65 507 bytes (the largest UDP payload) in all. Returns the number of runs."""
        cdef unsigned int runs = 0, first = 0, slot
        cdef size_t segment, length, total
        while first < count:
            segment = self.iov[2 * first].iov_len + self.iov[2 * first + 1].iov_len
            total = segment
            slot = first + 1
            while slot < count and slot - first < SEGMENTS_PER_SEND:
                length = self.iov[2 * slot].iov_len + self.iov[2 * slot + 1].iov_len
                if length > segment or total + length > SEGMENTED_SEND_BYTES:
                    break
                total += length
                slot += 1
                if length < segment:
                    break
            self.runs[runs] = self.messages[first]
            if slot - first > 1:
                self.runs[runs].msg_hdr.msg_iovlen = 2 * (slot - first)
                ddc_segmentation_control(&self.runs[runs].msg_hdr, self.run_control[runs], <uint16_t>segment)
            self.run_first[runs] = first
            self.run_length[runs] = slot - first
            runs += 1
            first = slot
        return runs

    cdef unsigned int stage(self, unsigned int slot, Header* header,
                            const uint8_t* payload, size_t payload_length) noexcept nogil:
        cdef uint8_t* header_bytes = self.headers + slot * HEADER_BYTES
        cdef uint8_t* sealed
        if self.cipher is not None:
            sealed = self.sealed + slot * MAX_DATAGRAM_BYTES
            header.flags = FLAG_AUTH_TAG
            header.key_id = <uint8_t>self.cipher.key_id
            header.payload_length = <uint16_t>(payload_length + TAG_BYTES)
            write_header(header_bytes, header)
            if not self.cipher.seal(header_bytes, HEADER_BYTES, payload, payload_length, header.sequence, sealed):
                self.datagrams_unsealed += 1
            payload = sealed
            payload_length += TAG_BYTES
        else:
            header.payload_length = <uint16_t>payload_length
            write_header(header_bytes, header)
        seal(header_bytes, payload, payload_length)
        self.iov[2 * slot].iov_base = header_bytes
        self.iov[2 * slot].iov_len = HEADER_BYTES
        self.iov[2 * slot + 1].iov_base = <void*>payload
        self.iov[2 * slot + 1].iov_len = payload_length
        memset(&self.messages[slot], 0, sizeof(mmsghdr))
        self.messages[slot].msg_hdr.msg_name = &self.destination
        self.messages[slot].msg_hdr.msg_namelen = self.destination_length
        self.messages[slot].msg_hdr.msg_iov = &self.iov[2 * slot]
        self.messages[slot].msg_hdr.msg_iovlen = 2
        return HEADER_BYTES + payload_length

    cdef void send_control_now(self, int datagram_type, const uint8_t* payload, size_t length) noexcept nogil:
        cdef Header header
        cdef size_t wire_bytes
        cdef unsigned int count = 1
        memset(&header, 0, sizeof(Header))
        header.type = datagram_type
        header.session_id = self.session_id
        header.sequence = self.next_sequence
        header.payload_length = <uint16_t>length
        header.fragment_count = 1
        if self.fec.data:
            header.fec_block = control_block(&self.fec)
            header.fec_count = 1
        self.next_sequence += 1
        wire_bytes = self.stage(0, &header, payload, length)
        if self.fec.data:
            wire_bytes += self.stage_control_parity(&header)
            count += self.fec.control_parity_count
        if self.pacer.burst_bytes <= 0 or wire_bytes <= self.pacer.burst_bytes:
            pace(&self.pacer, wire_bytes)
            self.transmit(count)
        else:
            self.transmit_within_burst(count)

    cdef void transmit_within_burst(self, unsigned int count) noexcept nogil:
        """Sends messages[0:count] in runs of at most the burst, each paced: at a low rate, a control datagram and
        its parity (up to 63 datagrams with loss_burst) can exceed what may leave back-to-back."""
        cdef unsigned int first = 0, end
        cdef size_t run_bytes, length
        while first < count:
            end = first
            run_bytes = 0
            while end < count:
                length = self.iov[2 * end].iov_len + self.iov[2 * end + 1].iov_len
                if end > first and run_bytes + length > self.pacer.burst_bytes:
                    break
                run_bytes += length
                end += 1
            pace(&self.pacer, run_bytes)
            self.transmit_each(first, end)
            self.datagrams_sent += end - first
            first = end

    cdef size_t stage_control_parity(self, const Header* control) noexcept nogil:
        """Stages the parity of the control datagram in slot 0 (a block of one) into the slots after it."""
        cdef Header header
        cdef uint8_t* targets[MAX_CONTROL_PARITY]
        cdef uint8_t factors[MAX_CONTROL_PARITY]
        cdef uint32_t row
        cdef size_t symbol_length, wire_bytes = 0
        memset(&header, 0, sizeof(Header))
        for row in range(self.fec.control_parity_count):
            targets[row] = self.control_parity[row]
            factors[row] = coefficient(row, 0)
        memset(self.control_parity, 0, sizeof(self.control_parity))
        symbol_length = self.add_symbol(targets, factors, self.fec.control_parity_count, 0)
        header.type = TYPE_PARITY
        header.session_id = self.session_id
        header.fec_block = control.fec_block
        header.fec_count = 1
        for row in range(self.fec.control_parity_count):
            header.sequence = PARITY_SEQUENCE_BIT | self.next_parity_sequence
            header.fec_index = <uint16_t>(1 + row)
            self.next_parity_sequence += 1
            self.parity_sent += 1
            wire_bytes += self.stage(1 + row, &header, self.control_parity[row], symbol_length)
        return wire_bytes

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

    cdef void flush(self) noexcept nogil:
        if self.slot == 0:
            return
        self.absorb_pending()
        pace(&self.pacer, self.batch_bytes)
        self.transmit(self.slot)
        self.slot = 0
        self.batch_bytes = 0
        self.heartbeat_when_due()

    cdef void push(self, Header* header, const uint8_t* payload, size_t length) noexcept nogil:
        """Stages one datagram into the batch (its parity is added at flush), sends the batch when full."""
        self.batch_bytes += self.stage(self.slot, header, payload, length)
        if header.fec_count and header.type == TYPE_DATA:
            self.pending_slots[self.pending_count] = self.slot
            self.pending_blocks[self.pending_count] = header.fec_block - self.fec.base
            self.pending_indexes[self.pending_count] = header.fec_index
            self.pending_count += 1
        self.slot += 1
        if self.slot == BATCH_DATAGRAMS or (
                self.pacer.burst_bytes > 0 and self.batch_bytes + self.datagram_size > self.pacer.burst_bytes):
            self.flush()

    cdef void absorb_pending(self) noexcept nogil:
        """Adds the staged data datagrams to their blocks' parity, a block's all at once; each symbol's first
        part, [u16 length][header], is copied together into symbol_heads."""
        cdef uint32_t block, position, count
        cdef unsigned int slot
        cdef const uint8_t* heads[BATCH_DATAGRAMS]
        cdef const uint8_t* payloads[BATCH_DATAGRAMS]
        cdef size_t lengths[BATCH_DATAGRAMS]
        cdef uint16_t indexes[BATCH_DATAGRAMS]
        if self.pending_count == 0:
            return
        for block in range(self.fec.blocks):
            count = 0
            for position in range(self.pending_count):
                if self.pending_blocks[position] != block:
                    continue
                slot = self.pending_slots[position]
                lengths[count] = self.iov[2 * slot + 1].iov_len
                put16(self.symbol_heads[slot], <uint16_t>(HEADER_BYTES + lengths[count]))
                memcpy(&self.symbol_heads[slot][SYMBOL_PREFIX_BYTES], self.iov[2 * slot].iov_base, HEADER_BYTES)
                heads[count] = self.symbol_heads[slot]
                payloads[count] = <const uint8_t*>self.iov[2 * slot + 1].iov_base
                indexes[count] = self.pending_indexes[position]
                count += 1
            absorb_block(&self.fec, block, heads, payloads, lengths, indexes, count)
        self.pending_count = 0

    cdef size_t add_symbol(self, uint8_t** targets, const uint8_t* factors, uint32_t rows,
                           unsigned int slot) noexcept nogil:
        """Adds the datagram staged in slot, as symbol [u16 length][datagram], times each factor into its
        target row; returns the symbol's length."""
        cdef size_t wire_length = HEADER_BYTES + self.iov[2 * slot + 1].iov_len
        cdef uint8_t prefix[SYMBOL_PREFIX_BYTES]
        put16(prefix, <uint16_t>wire_length)
        multiply_add_rows(targets, 0, factors, rows, prefix, SYMBOL_PREFIX_BYTES)
        multiply_add_rows(targets, SYMBOL_PREFIX_BYTES, factors, rows, <const uint8_t*>self.iov[2 * slot].iov_base,
                          HEADER_BYTES)
        multiply_add_rows(targets, SYMBOL_PREFIX_BYTES + HEADER_BYTES, factors, rows,
                          <const uint8_t*>self.iov[2 * slot + 1].iov_base, self.iov[2 * slot + 1].iov_len)
        return SYMBOL_PREFIX_BYTES + wire_length

    cdef void send_parity(self) noexcept nogil:
        """Sends the group's parity, then the batch, before the buffers are reused."""
        cdef Header header
        cdef uint32_t step = 0, block, row
        self.absorb_pending()
        memset(&header, 0, sizeof(Header))
        header.type = TYPE_PARITY
        header.session_id = self.session_id
        while next_parity(&self.fec, &step, &block, &row):
            header.sequence = PARITY_SEQUENCE_BIT | self.next_parity_sequence
            header.fec_block = self.fec.base + block
            header.fec_count = <uint16_t>self.fec.block_data[block]
            header.fec_index = <uint16_t>(self.fec.block_data[block] + row)
            self.next_parity_sequence += 1
            self.parity_sent += 1
            if row >= self.fec.block_share[block]:
                self.parity_beyond_share_sent += 1
            self.push(&header, parity_symbol(&self.fec, block, row), self.fec.block_symbol_length[block])
        self.flush()

    cdef void send_fragments(self, const uint8_t* prefix, uint32_t prefix_length, const uint8_t* data,
                             uint32_t length) noexcept nogil:
        """Sends one frame made of prefix then data (length counts both). A prefix of at most one datagram's
        payload lets a caller send a large value after its small header without first joining them: only
        the first datagram's payload is assembled."""
        cdef Header header
        cdef uint32_t count = fragment_count_for(length, self.payload_capacity)
        cdef uint32_t chunk = fragment_chunk(length, count)
        cdef uint32_t index = 0, offset, piece
        cdef const uint8_t* payload
        if self.fec.data:
            begin_frame(&self.fec, count)
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
            if self.fec.data:
                place_data(&self.fec, count - index, &header)
            self.next_sequence += 1
            if offset < prefix_length:  # the first datagram only: the caller keeps the prefix within it
                memcpy(self.first_piece, prefix, prefix_length)
                memcpy(self.first_piece + prefix_length, data, piece - prefix_length)
                payload = self.first_piece
            else:
                payload = data + (offset - prefix_length)
            self.push(&header, payload, piece)
            index += 1
            if self.fec.data and advance_group(&self.fec):
                self.send_parity()
        self.flush()
        self.frames_sent += 1
        self.bytes_sent += length

    def encrypt_with(self, bytes master_key, int key_id):
        """From now on every datagram is AES-256-GCM sealed with this session's key derived from master_key."""
        if self.next_sequence:
            raise ValueError("encryption must be set before the first datagram of a session")
        cipher = SessionCipher(True)
        cipher.set_key(master_key, key_id, self.session_id)
        previous, self.cipher = self.cipher, cipher
        needed = datagram_overhead(self.cipher is not None, self.fec.data != 0) + 1
        if self.datagram_size < needed:
            self.cipher = previous
            raise ValueError(f"datagram size {self.datagram_size} leaves no room for a payload and its "
                             f"{TAG_BYTES}-byte tag; use at least {needed}")
        if self.sealed == NULL:
            self.sealed = <uint8_t*>malloc(BATCH_DATAGRAMS * MAX_DATAGRAM_BYTES)
            if self.sealed == NULL:
                self.cipher = previous
                raise MemoryError()
        self.payload_capacity = self.datagram_size - datagram_overhead(self.cipher is not None, self.fec.data != 0)

    def rekey(self, uint64_t session_id, bytes master_key, bint new_session=False):
        """Goes on, between two frames, under a new key epoch: session_id keeps the low half of the current one
        and is larger. Only the key changes; sequence numbers (the nonces, unique under each key), frame ids and
        FEC blocks go on, so the receiver keeps every frame and window across it (docs/security.md). With
        new_session, session_id is any larger one: the receiver starts a new session with it (a copy of this
        sender restored from a snapshot must not share its next key)."""
        if self.cipher is None:
            raise ValueError("only an encrypting sender rekeys")
        if session_id <= self.session_id or (
                not new_session and session_id & 0xFFFFFFFF != self.session_id & 0xFFFFFFFF):
            raise ValueError(f"session {session_id:016x} is not a later key epoch of {self.session_id:016x}")
        cipher = SessionCipher(True)
        cipher.set_key(master_key, self.cipher.key_id, session_id)
        self.cipher = cipher
        self.session_id = session_id

    def protect_with(self, int data, int parity, int interleave=1, int loss_burst=0):
        """From now on each frame's datagrams go in Reed-Solomon blocks of up to data datagrams, a full block
        with parity parity datagrams and a smaller one with what makes it as strong, dealt over up to
        interleave blocks at a time; with loss_burst, every block also survives two bursts of that many
        consecutive losses."""
        if self.next_sequence:
            raise ValueError("forward error correction must be set before the first datagram of a session")
        check_grouping(data, parity, interleave, loss_burst)
        if self.datagram_size <= datagram_overhead(self.cipher is not None, True):
            raise ValueError(f"datagram size {self.datagram_size} leaves no room for a payload with FEC; "
                             f"use at least {datagram_overhead(self.cipher is not None, True) + 1}")
        configure_grouping(&self.fec, data, parity, interleave, loss_burst, self.datagram_size)
        self.payload_capacity = self.datagram_size - datagram_overhead(self.cipher is not None, True)

    def send_frame(self, frame, bytes prefix=None):
        """Fragments and sends one frame (any buffer of at most 4 GiB); returns its frame id.

        With a prefix, the frame is prefix then frame, sent without joining them when the prefix fits in the
        first datagram (a record batch's header before a large value: that value is not copied)."""
        cdef const uint8_t[:] view
        cdef const uint8_t* data
        cdef const uint8_t* head = NULL
        cdef uint64_t frame_id = self.next_frame_id
        cdef Py_ssize_t length = len(frame)
        cdef Py_ssize_t total = length + (len(prefix) if prefix else 0)
        cdef uint32_t prefix_length = 0
        if total > 0xFFFFFFFF:
            raise ValueError(f"frame of {total} bytes exceeds the 4 GiB protocol limit")
        if prefix:
            if len(prefix) > fragment_chunk(total, fragment_count_for(total, self.payload_capacity)):
                return self.send_frame(prefix + bytes(frame))
            if self.first_piece == NULL:
                self.first_piece = <uint8_t*>malloc(MAX_DATAGRAM_BYTES)
                if self.first_piece == NULL:
                    raise MemoryError()
            head = <const uint8_t*><const char*>prefix
            prefix_length = len(prefix)
        view = memoryview(frame).cast("B") if length else memoryview(b"\0")
        data = &view[0]
        with nogil:
            self.send_fragments(head, prefix_length, data, <uint32_t>total)
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

    def send_shutdown(self, bytes payload, int copies):
        """Sends a shutdown (peer counters) `copies` times. Each copy says, as a heartbeat does, how many sequence
        numbers the session used, counting all the copies: the egress then counts the copies lost at the very
        end as lost too, where no later datagram shows the gap."""
        cdef bytearray body = bytearray(payload)
        if len(body) < PEER_OFFSET_DATAGRAMS_SENT + 8:
            raise ValueError(f"a shutdown payload of {len(body)} bytes holds no peer counters")
        body[PEER_OFFSET_DATAGRAMS_SENT:PEER_OFFSET_DATAGRAMS_SENT + 8] = (self.next_sequence + copies).to_bytes(8, "big")
        for _ in range(copies):
            self.send_control(TYPE_SHUTDOWN, bytes(body))

    @property
    def last_send_error(self):
        """What the kernel said when it last refused a datagram, such as "Operation not permitted"."""
        return os.strerror(self.last_send_errno) if self.last_send_errno else "no refusal"

    def counters(self):
        return {
            "datagrams_sent": self.datagrams_sent,
            "datagrams_failed": self.datagrams_failed,
            "frames_sent": self.frames_sent,
            "bytes_sent": self.bytes_sent,
            "pacing_sleeps": self.pacer.sleeps,
            "heartbeats_sent": self.heartbeats_sent,
            "datagrams_unsealed": self.datagrams_unsealed,
            "parity_sent": self.parity_sent,
            "parity_beyond_share_sent": self.parity_beyond_share_sent,
            "segmented_sends": self.segmented_sends,
        }
