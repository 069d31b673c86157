"""Runs every link of one proxy until asked to stop, then stops them in order.

Egress links start first so that a proxy running both roles in one process (the
demo) never sends before it listens. A link whose stage fails stops the whole
proxy with exit code 1: a half-running diode proxy is worse than a restarted one.
"""

import logging
import signal
import threading
import time

from ddc.config import IngressSettings
from ddc.egress import EgressLink
from ddc.ingress import IngressLink

log = logging.getLogger("ddc.supervisor")

EXIT_OK = 0
EXIT_FAILURE = 1


def build_links(settings) -> list:
    link_class = IngressLink if isinstance(settings, IngressSettings) else EgressLink
    return [link_class(name, config) for name, config in settings.links.items()]


class Supervisor:
    def __init__(self, links: list, stats_interval: float = 10.0):
        self.links = sorted(links, key=lambda link: link.role != "egress")
        self.stats_interval = stats_interval
        self.stop_requested = threading.Event()
        self.started_links: list = []

    def start(self) -> None:
        for link in self.links:
            link.start()
            self.started_links.append(link)

    def stop(self) -> bool:
        clean = True
        for link in reversed(self.started_links):
            if not link.stop():
                clean = False
                log.error(f"link {link.name}: did not stop within its timeout", extra={"fields": {"link": link.name}})
            log.info(f"link {link.name}: summary", extra={"fields": {"event": "link summary", **link.log_fields()}})
        self.started_links = []
        return clean

    def failed_links(self) -> list:
        return [link for link in self.started_links if not link.alive]

    def log_stats(self) -> None:
        for link in self.started_links:
            log.info(f"link {link.name}: stats", extra={"fields": {"event": "link stats", **link.log_fields()}})

    def run_until_stopped(self) -> int:
        """Starts, then blocks until stop_requested is set or a link fails; returns the exit code."""
        try:
            self.start()
        except OSError as error:
            log.error(f"cannot start: {error}")
            self.stop()
            return EXIT_FAILURE
        next_stats = time.monotonic() + self.stats_interval
        while not self.stop_requested.wait(0.2):
            if self.failed_links():
                break
            if time.monotonic() >= next_stats:
                self.log_stats()
                next_stats += self.stats_interval
        failed = self.failed_links()
        clean = self.stop()
        for link in failed:
            log.error(f"link {link.name}: {link.failure}", extra={"fields": {"link": link.name}})
        return EXIT_OK if clean and not failed else EXIT_FAILURE


def install_signal_handlers(stop_requested: threading.Event) -> None:
    def request_stop(signum, frame):
        if stop_requested.is_set():
            return
        log.info(f"received {signal.Signals(signum).name}, shutting down")
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)


def run(settings) -> int:
    supervisor = Supervisor(build_links(settings), settings.telemetry.stats_interval)
    install_signal_handlers(supervisor.stop_requested)
    role = "ingress" if isinstance(settings, IngressSettings) else "egress"
    log.info(f"ddc {role} starting with {len(supervisor.links)} link(s)")
    return supervisor.run_until_stopped()
