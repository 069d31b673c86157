"""Socket batching: the one place DDC calls sendmmsg and recvmmsg.

The sender (sender.pyx), the UDP sink and the UDP source (ddc/handlers/udp/datagrams.pyx) and the receiver
(receiver.pyx) all move datagrams in batches. What a failed send means is decided here once: interrupted,
try again; the socket's send buffer full (EAGAIN, ENOBUFS), wait for it to drain (poll for POLLOUT) up to
MAX_SEND_WAITS times in a row; anything else, that datagram is counted failed with its errno and the batch
goes on. A receive batch is a set of fixed slots with their headers, reset before each recvmmsg (the kernel
writes lengths and flags into them).
"""

from libc.errno cimport EAGAIN, EINTR, ENOBUFS, errno
from libc.stdlib cimport free, malloc

from ddc._core.posix cimport MSG_DONTWAIT, POLLIN, POLLOUT, poll, pollfd, recvmmsg, sendmmsg


cdef bint wait_to_retry(int fd, int* waits, int wait_ms) noexcept nogil:
    """After a failed send: whether to try again (interrupted, or the send buffer full for a moment, which it
    waits up to wait_ms for)."""
    cdef pollfd writable
    if errno == EINTR:
        return True
    if (errno == EAGAIN or errno == ENOBUFS) and waits[0] < MAX_SEND_WAITS:
        waits[0] += 1
        writable.fd = fd
        writable.events = POLLOUT
        poll(&writable, 1, wait_ms)
        return True
    return False


cdef void send_each(int fd, mmsghdr* messages, unsigned int count, int wait_ms, SendTally* tally) noexcept nogil:
    """Sends messages[0:count], a datagram each; one the kernel refuses is counted in tally, not retried forever."""
    cdef unsigned int done = 0, index
    cdef int sent, waits = 0
    while done < count:
        sent = sendmmsg(fd, &messages[done], count - done, 0)
        if sent > 0:
            for index in range(done, done + <unsigned int>sent):
                tally.sent_bytes += messages[index].msg_len
            tally.sent += sent
            done += sent
            waits = 0
        elif not wait_to_retry(fd, &waits, wait_ms):
            tally.failed += 1
            tally.last_error = errno
            done += 1
            waits = 0


cdef int open_inbox(Inbox* inbox, unsigned int capacity, size_t slot_bytes, size_t slot_stride,
                    bint with_names) except -1:
    """capacity slots of slot_bytes each, slot_stride apart (a stride above the size keeps slots off each other's
    cache sets); with_names keeps each datagram's sender address."""
    inbox.capacity = capacity
    inbox.slot_bytes = slot_bytes
    inbox.slot_stride = slot_stride
    inbox.slots = <uint8_t*>malloc(<size_t>capacity * slot_stride)
    inbox.messages = <mmsghdr*>malloc(capacity * sizeof(mmsghdr))
    inbox.vectors = <iovec*>malloc(capacity * sizeof(iovec))
    inbox.names = <sockaddr_storage*>malloc(capacity * sizeof(sockaddr_storage)) if with_names else NULL
    if inbox.slots == NULL or inbox.messages == NULL or inbox.vectors == NULL or (with_names and inbox.names == NULL):
        close_inbox(inbox)
        raise MemoryError(f"cannot allocate {capacity} receive slots of {slot_bytes} bytes")
    return 0


cdef void close_inbox(Inbox* inbox) noexcept nogil:
    free(inbox.slots)
    free(inbox.messages)
    free(inbox.vectors)
    free(inbox.names)
    inbox.slots = NULL
    inbox.messages = NULL
    inbox.vectors = NULL
    inbox.names = NULL


cdef int receive_into(Inbox* inbox, int fd) noexcept nogil:
    """Receives what is waiting, without waiting: the number of datagrams (slot i holds messages[i].msg_len bytes,
    MSG_TRUNC in its flags if it was longer), or -1 with errno set."""
    cdef unsigned int index
    for index in range(inbox.capacity):
        inbox.vectors[index].iov_base = inbox.slots + <size_t>index * inbox.slot_stride
        inbox.vectors[index].iov_len = inbox.slot_bytes
        inbox.messages[index].msg_hdr.msg_name = &inbox.names[index] if inbox.names != NULL else NULL
        inbox.messages[index].msg_hdr.msg_namelen = sizeof(sockaddr_storage) if inbox.names != NULL else 0
        inbox.messages[index].msg_hdr.msg_iov = &inbox.vectors[index]
        inbox.messages[index].msg_hdr.msg_iovlen = 1
        inbox.messages[index].msg_hdr.msg_control = NULL
        inbox.messages[index].msg_hdr.msg_controllen = 0
        inbox.messages[index].msg_hdr.msg_flags = 0
        inbox.messages[index].msg_len = 0
    return recvmmsg(fd, inbox.messages, inbox.capacity, MSG_DONTWAIT, NULL)


cdef bint wait_readable(int fd, int timeout_ms) noexcept nogil:
    """Whether datagrams (or an error) wait on fd within timeout_ms."""
    cdef pollfd readable
    readable.fd = fd
    readable.events = POLLIN
    return poll(&readable, 1, timeout_ms) > 0
