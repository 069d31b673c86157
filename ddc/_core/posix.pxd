# Every POSIX declaration the core uses, once (the uvloop way: includes/ holds each C declaration a single
# time): sockets, clocks, poll, threads, and the small clock helpers built on them.
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
    int CLOCK_REALTIME
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

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    ctypedef struct pthread_condattr_t:
        pass
    int pthread_mutex_init(pthread_mutex_t*, void*)
    int pthread_mutex_destroy(pthread_mutex_t*)
    int pthread_mutex_lock(pthread_mutex_t*)
    int pthread_mutex_unlock(pthread_mutex_t*)
    int pthread_condattr_init(pthread_condattr_t*)
    int pthread_condattr_setclock(pthread_condattr_t*, int)
    int pthread_cond_init(pthread_cond_t*, pthread_condattr_t*)
    int pthread_cond_destroy(pthread_cond_t*)
    int pthread_cond_wait(pthread_cond_t*, pthread_mutex_t*)
    int pthread_cond_timedwait(pthread_cond_t*, pthread_mutex_t*, const timespec*)
    int pthread_cond_signal(pthread_cond_t*)
    int pthread_cond_broadcast(pthread_cond_t*)


cdef inline int64_t clock_ns(int clock) noexcept nogil:
    cdef timespec now
    clock_gettime(clock, &now)
    return <int64_t>now.tv_sec * 1000000000 + now.tv_nsec


cdef inline int64_t monotonic_ns() noexcept nogil:
    return clock_ns(CLOCK_MONOTONIC)


cdef inline timespec timespec_of(int64_t nanoseconds) noexcept nogil:
    cdef timespec at
    at.tv_sec = nanoseconds // 1000000000
    at.tv_nsec = nanoseconds % 1000000000
    return at


cdef inline void sleep_ns(int64_t duration) noexcept nogil:
    cdef timespec request
    if duration <= 0:
        return
    request = timespec_of(duration)
    clock_nanosleep(CLOCK_MONOTONIC, 0, &request, NULL)
