"""The UDP sink's way out: a batch's values sent as datagrams with sendmmsg, straight from the received frame.

The sink gets each value as a view into the frame (no copy) and hands the whole
list here; the datagrams leave 64 per system call with the GIL released, instead
of one Python sendto each. A full send buffer (ENOBUFS, EAGAIN) is waited out in
10 ms steps, up to 100 times per datagram, then counted as a failure, as the
Python loop did; any other error fails that datagram alone.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.errno cimport EAGAIN, EINTR, ENOBUFS, errno
from libc.stdlib cimport calloc, free

from ddc._core.posix cimport POLLOUT, iovec, mmsghdr, poll, pollfd, sendmmsg

cdef enum:
    BATCH = 64
    WAIT_MS = 10
    MAX_WAITS = 100


def send_each(int fd, values, bytes address, Py_ssize_t max_payload):
    """Sends every value of at most max_payload bytes as one datagram to address (a C sockaddr). Returns
    (datagrams sent, bytes sent, values too large, datagrams failed, errno of the last failure or 0)."""
    cdef Py_ssize_t count = len(values), index = 0, queued, start, sent = 0, too_large = 0, failed = 0
    cdef Py_ssize_t sent_bytes = 0
    cdef int last_error = 0, result, waits = 0
    cdef Py_ssize_t done
    cdef const char* address_data = address
    cdef int address_length = len(address)
    cdef Py_buffer* views = <Py_buffer*>calloc(count if count else 1, sizeof(Py_buffer))
    cdef iovec vectors[BATCH]
    cdef mmsghdr messages[BATCH]
    cdef pollfd writable
    if views == NULL:
        raise MemoryError(f"cannot stage {count} datagrams")
    writable.fd = fd
    writable.events = POLLOUT
    try:
        for value in values:
            PyObject_GetBuffer(value, &views[index], PyBUF_SIMPLE)
            index += 1
        index = 0
        with nogil:
            while index < count:
                queued = 0
                while index < count and queued < BATCH:
                    if views[index].len > max_payload:
                        too_large += 1
                    else:
                        vectors[queued].iov_base = views[index].buf
                        vectors[queued].iov_len = views[index].len
                        messages[queued].msg_hdr.msg_name = <void*>address_data
                        messages[queued].msg_hdr.msg_namelen = address_length
                        messages[queued].msg_hdr.msg_iov = &vectors[queued]
                        messages[queued].msg_hdr.msg_iovlen = 1
                        messages[queued].msg_hdr.msg_control = NULL
                        messages[queued].msg_hdr.msg_controllen = 0
                        messages[queued].msg_hdr.msg_flags = 0
                        queued += 1
                    index += 1
                start = 0
                while start < queued:
                    result = sendmmsg(fd, &messages[start], <unsigned int>(queued - start), 0)
                    if result > 0:
                        for done in range(start, start + result):
                            sent_bytes += vectors[done].iov_len
                        sent += result
                        start += result
                        waits = 0
                        continue
                    if errno == EINTR:
                        continue
                    if (errno == ENOBUFS or errno == EAGAIN) and waits < MAX_WAITS:
                        waits += 1
                        poll(&writable, 1, WAIT_MS)
                        continue
                    last_error = errno
                    failed += 1
                    start += 1
                    waits = 0
    finally:
        for index in range(count):
            PyBuffer_Release(&views[index])
        free(views)
    return sent, sent_bytes, too_large, failed, last_error
