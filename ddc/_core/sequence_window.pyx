"""A session's sequence window: which datagram sequences arrived, in a sliding 65 536-bit window (8 KiB).

Duplicates are recognised within the window, anything behind it is refused as too old (it cannot be told from
a duplicate or a replay, and proves nothing about loss), and loss is the gap between the lowest and highest
sequence seen and the number of distinct datagrams. The receiver inlines the functions of sequence_window.pxd
per datagram; SequenceTracker lets tests drive the same code without a socket or a session.
"""

cdef class SequenceTracker:
    cdef SequenceWindow window

    def __cinit__(self):
        reset_window(&self.window)

    def see(self, uint64_t sequence):
        """"in_order", "late", "duplicate" or "too_old"."""
        return ("in_order", "late", "duplicate", "too_old")[see_sequence(&self.window, sequence)]

    def reach(self, uint64_t last):
        reach_sequence(&self.window, last)

    def was_announced(self, uint64_t sequence):
        return was_announced(&self.window, sequence)

    @property
    def lost(self):
        return datagrams_lost(&self.window)

    @property
    def highest(self):
        return self.window.highest

    @property
    def lowest(self):
        return self.window.lowest
