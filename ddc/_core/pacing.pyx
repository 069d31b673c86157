"""Pacing: when a batch of datagrams may leave, so that the link never sees more than the configured rate
beyond one burst. The schedule itself is in pacing.pxd (inlined into the sender); this module lets it be
driven and checked without a socket or a clock."""


cdef class PacingSchedule:
    """The sender's schedule, for tests and tools: delay_ns() says how long a batch would wait at time now."""
    cdef Pacer pacer

    def __init__(self, double rate_bytes_per_second, double burst_bytes, double least_burst_bytes=0.0):
        start_pacer(&self.pacer, rate_bytes_per_second, burst_bytes, least_burst_bytes)

    def start_at(self, double now_ns):
        self.pacer.send_at_ns = now_ns

    def delay_ns(self, size_t batch_bytes, double now_ns):
        return pace_delay_ns(&self.pacer, batch_bytes, now_ns)

    @property
    def burst_bytes(self):
        return self.pacer.burst_bytes
