"""What ingress and egress links share: named worker threads whose failure stops the link,
and the rates and status an operator sees."""

import logging
import threading

log = logging.getLogger("ddc.link")

RATE_KEYS = {"records_in": ("source_datagrams_received", "records_received"),
             "records_out": ("records_sent", "sink_datagrams_sent"),
             "link_bytes": ("bytes_sent", "bytes_received")}


class Link:
    role = "link"
    #: Whether the link starts before the proxy's others: a receiving link, so that a proxy running both roles
    #: never sends before it listens.
    starts_first = False

    def __init__(self, name: str):
        self.name = name
        self.stopping = threading.Event()
        self.finished = threading.Event()  # its work is done (a stream ended); the proxy may stop
        self.attention: threading.Event | None = None  # the supervisor's: look now, not at the next tick
        self.failure: str | None = None
        self._threads: list[threading.Thread] = []
        self._previous_sample: tuple[float, dict] | None = None
        self.rates: dict = {}

    def _spawn(self, stage: str, target) -> None:
        def guarded():
            try:
                target()
            except Exception as error:  # a stage that dies must stop the link loudly, never silently
                self.failure = f"{stage} stage failed: {error}"
                log.exception(f"link {self.name}: {self.failure}", extra={"fields": {"link": self.name}})
                self.stopping.set()
                self._call_attention()

        thread = threading.Thread(target=guarded, name=f"ddc-{self.role}-{self.name}-{stage}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def tick(self, now: float) -> None:
        """The supervisor's periodic call (a few times a second), for work no data arrival triggers."""

    def begin_stop(self) -> None:
        """The proxy is about to stop its links one by one: a link that winds down on its own (an egress draining
        what is still arriving) starts now, so that all of them do it at once."""

    def abandon(self) -> None:
        """The coming stop is an operator's (a signal, a failed link): work that cannot finish now is given up
        at once rather than waited for."""

    def _finish(self) -> None:
        """The link's work is done; a one-shot transfer ends as soon as the supervisor sees it."""
        self.finished.set()
        self._call_attention()

    def _call_attention(self) -> None:
        if self.attention is not None:
            self.attention.set()

    def _join(self, threads, timeout: float) -> bool:
        for thread in threads:
            thread.join(timeout)
        return not any(thread.is_alive() for thread in threads)

    @property
    def alive(self) -> bool:
        return self.failure is None

    def log_fields(self) -> dict:
        return {"link": self.name, "role": self.role, **self.counters()}

    def counters(self) -> dict:
        raise NotImplementedError

    def sample(self, now: float) -> None:
        """Updates per-second rates from the change in counters since the previous sample."""
        counters = self.counters()
        if self._previous_sample is not None:
            then, before = self._previous_sample
            elapsed = max(now - then, 1e-9)
            for rate, keys in RATE_KEYS.items():
                key = next((k for k in keys if k in counters), None)
                if key is not None:
                    self.rates[f"{rate}_per_second"] = round((counters[key] - before.get(key, 0)) / elapsed, 1)
        self._previous_sample = (now, counters)

    def problems(self) -> list[str]:
        """Why this link cannot move data right now; empty when it can."""
        return [f"link {self.name}: {self.failure}"] if self.failure else []

    def status(self) -> dict:
        counters = self.counters()
        return {"link": self.name, "role": self.role, "state": self.state, "rates": dict(self.rates),
                "buffer_fill": round(counters["buffer_bytes"] / self.buffer.capacity_bytes, 4),
                "counters": counters}

    @property
    def state(self) -> str:
        return "failed" if self.failure else "running"
