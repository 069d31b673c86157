"""The UDP sink's way out: values sent as datagrams with sendmmsg, straight from the received frame.

Either a list of values (views into the frame, after filters) or, with no
filter, the whole record batch, walked in C without a Python object per
record. The datagrams leave 64 per system call with the GIL released, instead
of one Python sendto each. A full send buffer (ENOBUFS, EAGAIN) is waited out in
10 ms steps, up to 100 times per datagram, then counted as a failure, as the
Python loop did; any other error fails that datagram alone.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.errno cimport EAGAIN, EINTR, ENOBUFS, errno
from libc.stdint cimport uint8_t, uint32_t
from libc.stdlib cimport calloc, free

from ddc._core.posix cimport POLLOUT, iovec, mmsghdr, poll, pollfd, sendmmsg
from ddc._core.records cimport BATCH_HEADER_BYTES, checked_batch, next_value

cdef enum:
    BATCH = 64
    WAIT_MS = 10
    MAX_WAITS = 100


cdef struct Outbox:
    int fd
    const char* address
    int address_length
    Py_ssize_t max_payload
    Py_ssize_t queued
    Py_ssize_t sent
    Py_ssize_t sent_bytes
    Py_ssize_t too_large
    Py_ssize_t failed
    int last_error
    iovec vectors[BATCH]
    mmsghdr messages[BATCH]


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
    if out.queued == BATCH:
        flush(out)


cdef void flush(Outbox* out) noexcept nogil:
    cdef Py_ssize_t start = 0, done
    cdef int result, waits = 0
    cdef pollfd writable
    writable.fd = out.fd
    writable.events = POLLOUT
    while start < out.queued:
        result = sendmmsg(out.fd, &out.messages[start], <unsigned int>(out.queued - start), 0)
        if result > 0:
            for done in range(start, start + result):
                out.sent_bytes += out.vectors[done].iov_len
            out.sent += result
            start += result
            waits = 0
            continue
        if errno == EINTR:
            continue
        if (errno == ENOBUFS or errno == EAGAIN) and waits < MAX_WAITS:
            waits += 1
            poll(&writable, 1, WAIT_MS)
            continue
        out.last_error = errno
        out.failed += 1
        start += 1
        waits = 0
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
    return out.sent, out.sent_bytes, out.too_large, out.failed, out.last_error


def send_each(int fd, values, bytes address, Py_ssize_t max_payload):
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
    """Sends the value of every record of a record batch as one datagram, as send_each() does, without
    making a Python object per record. The batch is checked whole first: ValueError (nothing sent) if it is
    malformed. Returns (records, then what send_each returns)."""
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
