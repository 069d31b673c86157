# The UDP handler's compiled loops (datagrams.pyx): the source's receive state.
from ddc._core.datagram_io cimport Inbox
from ddc._core.posix cimport sockaddr_storage, socklen_t

cdef enum:
    RECEIVE_BATCH = 32       # datagrams per recvmmsg
    RECEIVE_SLOT_BYTES = 65536
    ADDRESS_BYTES = 64       # "[" + 45-character IPv6 + "]:" + port, with room to spare
    SEND_BATCH = 64          # datagrams per sendmmsg
    SEND_WAIT_MS = 10        # a full send buffer is waited for in steps of this


cdef class DatagramReceiver:
    cdef Inbox inbox
    cdef sockaddr_storage last_name
    cdef socklen_t last_name_length
    cdef char address[ADDRESS_BYTES]
    cdef int address_length
    cdef char addresses[RECEIVE_BATCH * ADDRESS_BYTES]

    cdef int sender_address(self, int index) noexcept nogil
