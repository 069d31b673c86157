# Pacing (a unit on its own: the sender composes it, tests drive it without a socket through pacing.pyx).
from libc.stdint cimport int64_t, uint64_t

from ddc._core.posix cimport monotonic_ns, sleep_ns

cdef struct Pacer:
    double rate_bytes_per_ns  # 0: unlimited
    double burst_bytes        # how far ahead of the rate a batch may go
    double burst_ns
    double send_at_ns         # the virtual schedule
    uint64_t sleeps


cdef inline void start_pacer(Pacer* pacer, double rate_bytes_per_second, double burst_bytes,
                             double least_burst_bytes) noexcept nogil:
    """A burst is at least least_burst_bytes (two datagrams), so that a batch can always leave."""
    pacer.rate_bytes_per_ns = rate_bytes_per_second / 1e9
    pacer.burst_bytes = max(burst_bytes, least_burst_bytes) if rate_bytes_per_second > 0 else 0
    pacer.burst_ns = pacer.burst_bytes / pacer.rate_bytes_per_ns if rate_bytes_per_second > 0 else 0
    pacer.send_at_ns = monotonic_ns()
    pacer.sleeps = 0


cdef inline double pace_delay_ns(Pacer* pacer, size_t batch_bytes, double now) noexcept nogil:
    """Advances the schedule by batch_bytes and returns how long to wait before they may leave (<= 0: now).

    A virtual schedule (GCRA) rather than a token count: each batch advances the schedule by exactly
    batch_bytes / rate; the sender may run at most burst ahead of it. Oversleeping only shortens the next wait,
    so the long-run rate stays exact however coarse the sleeps are, and idle time earns at most a burst."""
    if pacer.rate_bytes_per_ns <= 0:
        return 0
    if pacer.send_at_ns < now - pacer.burst_ns:
        pacer.send_at_ns = now - pacer.burst_ns
    pacer.send_at_ns += batch_bytes / pacer.rate_bytes_per_ns
    return pacer.send_at_ns - pacer.burst_ns - now


cdef inline void pace(Pacer* pacer, size_t batch_bytes) noexcept nogil:
    """Waits until batch_bytes may leave."""
    cdef double wait
    if pacer.rate_bytes_per_ns <= 0:
        return
    wait = pace_delay_ns(pacer, batch_bytes, <double>monotonic_ns())
    if wait > 0:
        pacer.sleeps += 1
        sleep_ns(<int64_t>wait)
