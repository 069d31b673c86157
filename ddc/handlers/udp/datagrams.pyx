"""The UDP handler's compiled loops: datagrams into the record ring, and values out as datagrams.

In: the UDP source receives up to 32 datagrams per recvmmsg straight into the
link's record ring, each a record whose metadata is its sender's "host:port",
formatted in C and again only when the sender changes; no Python object per
datagram.

Out: either a list of values (views into the frame, after filters) or, with no
filter, the whole record batch, walked in C without a Python object per
record. The datagrams leave 64 per system call with the GIL released, instead
of one Python sendto each. A full send buffer (ENOBUFS, EAGAIN) is waited out in
10 ms steps, up to 100 times per datagram (ddc/_core/datagram_io.pyx), then
counted as a failure; any other error fails that datagram alone.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport uint8_t, uint32_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memcpy

from ddc._core.datagram_io cimport (SendTally, close_inbox, open_inbox, receive_into, send_each,
                                    wait_readable)
from ddc._core.posix cimport iovec, mmsghdr, msghdr, sockaddr_storage
from ddc._core.records cimport BATCH_HEADER_BYTES, checked_batch, next_value
from ddc._core.ring cimport Entry, RecordRing

cdef extern from *:
    """
    #include <arpa/inet.h>
    #include <netinet/in.h>
    #include <stdio.h>
    #include <sys/socket.h>

    /* "host:port" or "[host]:port", as the config writes an address (ddc.config.values.Endpoint). */
    static int ddc_format_address(const struct sockaddr_storage* address, char* out, size_t capacity) {
        char host[INET6_ADDRSTRLEN];
        if (address->ss_family == AF_INET) {
            const struct sockaddr_in* v4 = (const struct sockaddr_in*)address;
            if (!inet_ntop(AF_INET, &v4->sin_addr, host, sizeof host)) return 0;
            return snprintf(out, capacity, "%s:%u", host, (unsigned)ntohs(v4->sin_port));
        }
        if (address->ss_family == AF_INET6) {
            const struct sockaddr_in6* v6 = (const struct sockaddr_in6*)address;
            if (!inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof host)) return 0;
            return snprintf(out, capacity, "[%s]:%u", host, (unsigned)ntohs(v6->sin6_port));
        }
        return 0;
    }
    """
    int ddc_format_address(const sockaddr_storage* address, char* out, size_t capacity) nogil


cdef class DatagramReceiver:
    """The UDP source's receive slots and the last sender's address, formatted once per change of sender."""

    def __cinit__(self):
        open_inbox(&self.inbox, RECEIVE_BATCH, RECEIVE_SLOT_BYTES, RECEIVE_SLOT_BYTES, True)

    def __dealloc__(self):
        close_inbox(&self.inbox)

    def receive(self, RecordRing ring, int fd, double timeout=0.0):
        """Waits up to timeout for datagrams on a UDP socket, then receives what is waiting (up to 32, one
        recvmmsg) into the ring, each a record whose metadata is the sender's "host:port". Returns
        (datagrams, bytes, dropped): (0, 0, 0) when nothing came. Raises OSError for a socket error."""
        cdef int received = 0, index
        cdef int error = 0
        cdef size_t total_bytes = 0
        cdef Py_ssize_t accepted = 0
        cdef Entry entries[RECEIVE_BATCH]
        with nogil:
            if timeout <= 0 or wait_readable(fd, <int>(timeout * 1000)):
                received = receive_into(&self.inbox, fd)
            if received < 0:
                error = errno
                received = 0
            for index in range(received):
                entries[index].metadata_length = self.sender_address(index)
                entries[index].metadata = <const uint8_t*>self.addresses + index * ADDRESS_BYTES
                entries[index].value = self.inbox.slots + <size_t>index * RECEIVE_SLOT_BYTES
                entries[index].value_length = self.inbox.messages[index].msg_len
                total_bytes += entries[index].value_length
            if received:
                accepted = ring.put_entries(entries, received, -1)
        if error and error != EAGAIN and error != EINTR:
            raise OSError(error, f"UDP source receive failed on descriptor {fd}")
        return received, total_bytes, received - accepted

    cdef int sender_address(self, int index) noexcept nogil:
        """Writes the sender's "host:port" into the slot's address and returns its length; formatted anew only
        when the sender is not the previous datagram's."""
        cdef msghdr* message = &self.inbox.messages[index].msg_hdr
        if message.msg_namelen != self.last_name_length or memcmp(&self.inbox.names[index], &self.last_name,
                                                                  message.msg_namelen) != 0:
            memcpy(&self.last_name, &self.inbox.names[index], message.msg_namelen)
            self.last_name_length = message.msg_namelen
            self.address_length = ddc_format_address(&self.last_name, self.address, ADDRESS_BYTES)
            if self.address_length <= 0 or self.address_length >= ADDRESS_BYTES:
                self.address_length = 0
        memcpy(self.addresses + index * ADDRESS_BYTES, self.address, self.address_length)
        return self.address_length


cdef struct Outbox:
    int fd
    const char* address
    int address_length
    Py_ssize_t max_payload
    Py_ssize_t queued
    SendTally tally
    Py_ssize_t too_large
    iovec vectors[SEND_BATCH]
    mmsghdr messages[SEND_BATCH]


cdef void post(Outbox* out, const void* value, size_t length) noexcept nogil:
    """Queues one datagram (or counts it too large); sends the queue when it is full."""
    cdef Py_ssize_t slot = out.queued
    if <Py_ssize_t>length > out.max_payload:
        out.too_large += 1
        return
    out.vectors[slot].iov_base = <void*>value
    out.vectors[slot].iov_len = length
    out.messages[slot].msg_hdr.msg_name = <void*>out.address
    out.messages[slot].msg_hdr.msg_namelen = out.address_length
    out.messages[slot].msg_hdr.msg_iov = &out.vectors[slot]
    out.messages[slot].msg_hdr.msg_iovlen = 1
    out.messages[slot].msg_hdr.msg_control = NULL
    out.messages[slot].msg_hdr.msg_controllen = 0
    out.messages[slot].msg_hdr.msg_flags = 0
    out.queued += 1
    if out.queued == SEND_BATCH:
        flush(out)


cdef void flush(Outbox* out) noexcept nogil:
    send_each(out.fd, out.messages, <unsigned int>out.queued, SEND_WAIT_MS, &out.tally)
    out.queued = 0


cdef Outbox* new_outbox(int fd, bytes address, Py_ssize_t max_payload) except NULL:
    cdef Outbox* out = <Outbox*>calloc(1, sizeof(Outbox))
    if out == NULL:
        raise MemoryError("cannot stage datagrams")
    out.fd = fd
    out.address = address
    out.address_length = len(address)
    out.max_payload = max_payload
    return out


cdef tuple outcome(Outbox* out):
    return out.tally.sent, out.tally.sent_bytes, out.too_large, out.tally.failed, out.tally.last_error


def send_values(int fd, values, bytes address, Py_ssize_t max_payload):
    """Sends every value of at most max_payload bytes as one datagram to address (a C sockaddr). Returns
    (datagrams sent, bytes sent, values too large, datagrams failed, errno of the last failure or 0)."""
    cdef Py_ssize_t count = len(values), acquired = 0, index
    cdef Py_buffer* views = <Py_buffer*>calloc(count if count else 1, sizeof(Py_buffer))
    cdef Outbox* out = NULL
    if views == NULL:
        raise MemoryError(f"cannot stage {count} datagrams")
    try:
        out = new_outbox(fd, address, max_payload)
        for value in values:
            PyObject_GetBuffer(value, &views[acquired], PyBUF_SIMPLE)
            acquired += 1
        with nogil:
            for index in range(acquired):
                post(out, views[index].buf, views[index].len)
            flush(out)
        return outcome(out)
    finally:
        for index in range(acquired):
            PyBuffer_Release(&views[index])
        free(views)
        free(out)


def send_batch_values(int fd, batch, bytes address, Py_ssize_t max_payload):
    """Sends the value of every record of a record batch as one datagram, as send_values() does, without
    making a Python object per record. The batch is checked whole first: ValueError (nothing sent) if it is
    malformed. Returns (records, then what send_values returns)."""
    cdef Py_buffer view
    cdef Outbox* out = NULL
    cdef uint32_t count, index, value_length
    cdef Py_ssize_t position = BATCH_HEADER_BYTES
    cdef const uint8_t* data
    cdef const uint8_t* value
    PyObject_GetBuffer(batch, &view, PyBUF_SIMPLE)
    try:
        data = <const uint8_t*>view.buf
        count = checked_batch(data, view.len)
        out = new_outbox(fd, address, max_payload)
        with nogil:
            for index in range(count):
                value = next_value(data, &position, &value_length)
                post(out, value, value_length)
            flush(out)
        return (count,) + outcome(out)
    finally:
        PyBuffer_Release(&view)
        free(out)
