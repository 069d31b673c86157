"""What ingress and egress links share: named worker threads whose failure stops the link."""

import logging
import threading

log = logging.getLogger("ddc.link")


class Link:
    role = "link"

    def __init__(self, name: str):
        self.name = name
        self.stopping = threading.Event()
        self.failure: str | None = None
        self._threads: list[threading.Thread] = []

    def _spawn(self, stage: str, target) -> None:
        def guarded():
            try:
                target()
            except Exception as error:  # a stage that dies must stop the link loudly, never silently
                self.failure = f"{stage} stage failed: {error}"
                log.exception(f"link {self.name}: {self.failure}", extra={"fields": {"link": self.name}})
                self.stopping.set()

        thread = threading.Thread(target=guarded, name=f"ddc-{self.role}-{self.name}-{stage}", daemon=True)
        self._threads.append(thread)
        thread.start()

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
