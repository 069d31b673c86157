"""A fixed-bucket histogram a link can observe into without touching a metrics library.

Kept per link (not a global prometheus_client.Histogram) so links stay plain
objects; the Prometheus collector renders it at scrape time.
"""

import bisect
import threading


class Histogram:
    def __init__(self, buckets):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0
        self._lock = threading.Lock()

    def observe(self, value: float, times: int = 1) -> None:
        with self._lock:
            self.counts[bisect.bisect_left(self.buckets, value)] += times
            self.sum += value * times
            self.count += times

    def cumulative(self) -> tuple[list[tuple[str, int]], float]:
        """[(upper bound, cumulative count)…, ("+Inf", total)], sum — the Prometheus shape."""
        with self._lock:
            running, result = 0, []
            for bound, count in zip(self.buckets, self.counts):
                running += count
                result.append((repr(float(bound)), running))
            result.append(("+Inf", self.count))
            return result, self.sum
