# POSIX declarations shared by the sender and the receiver (sockets, clocks, poll).
from libc.stdint cimport int64_t

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct iovec:
        void* iov_base
        size_t iov_len
    struct msghdr:
        void* msg_name
        socklen_t msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    struct sockaddr_storage:
        pass
    int sendmmsg(int fd, mmsghdr* vector, unsigned int count, int flags)
    int recvmmsg(int fd, mmsghdr* vector, unsigned int count, int flags, void* timeout)
    int MSG_DONTWAIT
    int MSG_TRUNC

cdef extern from "<time.h>" nogil:
    struct timespec:
        long tv_sec
        long tv_nsec
    int CLOCK_MONOTONIC
    int clock_gettime(int clock, timespec* now)
    int clock_nanosleep(int clock, int flags, const timespec* request, timespec* remain)

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    short POLLIN
    short POLLOUT
    int poll(pollfd* fds, unsigned long count, int timeout_ms)


cdef inline int64_t monotonic_ns() noexcept nogil:
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)
    return <int64_t>now.tv_sec * 1000000000 + now.tv_nsec
