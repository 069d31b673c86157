# Socket batching, once for every part that moves datagrams: sendmmsg with the retry policy for a send buffer
# that is full for a moment, and recvmmsg into a batch of fixed slots.
from libc.stdint cimport uint8_t

from ddc._core.posix cimport iovec, mmsghdr, sockaddr_storage

cdef enum:
    MAX_SEND_WAITS = 100

cdef struct SendTally:
    size_t sent
    size_t sent_bytes
    size_t failed
    int last_error

cdef bint wait_to_retry(int fd, int* waits, int wait_ms) noexcept nogil
cdef void send_each(int fd, mmsghdr* messages, unsigned int count, int wait_ms, SendTally* tally) noexcept nogil

cdef struct Inbox:
    unsigned int capacity
    size_t slot_bytes
    size_t slot_stride
    uint8_t* slots
    mmsghdr* messages
    iovec* vectors
    sockaddr_storage* names

cdef int open_inbox(Inbox* inbox, unsigned int capacity, size_t slot_bytes, size_t slot_stride,
                    bint with_names) except -1
cdef void close_inbox(Inbox* inbox) noexcept nogil
cdef int receive_into(Inbox* inbox, int fd) noexcept nogil
cdef bint wait_readable(int fd, int timeout_ms) noexcept nogil
