"""Telling systemd how the proxy is doing: ready once its links run, alive while its supervisor ticks, stopping.

With `Type=notify` (deploy/systemd/ddc@.service), systemd sets NOTIFY_SOCKET and
waits for READY=1 before it counts the unit as started, so units ordered after
it start once DDC listens; with `WatchdogSec=`, it also sets WATCHDOG_USEC and
restarts a proxy whose WATCHDOG=1 pings stop. Without NOTIFY_SOCKET (not under
systemd, or another Type) every call here does nothing.

Written by hand: the protocol is one datagram of text on a Unix socket
(sd_notify(3)), and the libraries that wrap it need libsystemd's headers to
build (systemd-python) or are unmaintained (sdnotify).
"""

import logging
import os
import re
import socket

log = logging.getLogger("ddc.telemetry")


class ServiceManager:
    def __init__(self, environment=os.environ):
        address = environment.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address  # "@": the abstract namespace
        watchdog_usec = environment.get("WATCHDOG_USEC", "")
        watchdog_pid = environment.get("WATCHDOG_PID", "")
        meant_for_us = not watchdog_pid or watchdog_pid == str(os.getpid())
        # Pinging at half the timeout, as sd_watchdog_enabled(3) advises, leaves a tick's delay to spare.
        self.watchdog_interval = (int(watchdog_usec) / 2e6 if re.fullmatch(r"[0-9]+", watchdog_usec)
                                  and int(watchdog_usec) > 0 and meant_for_us else None)
        self.next_ping = 0.0
        self.warned = False
        self.socket = None
        if self.address:
            self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def notify(self, *lines: str) -> None:
        """Sends "KEY=value" lines. A failure is logged once and never an error of the proxy; later
        notifications are still tried, since a watchdog that stops hearing would restart a healthy proxy."""
        if self.socket is None:
            return
        try:
            self.socket.sendto("\n".join(lines).encode(), self.address)
        except OSError as error:
            if not self.warned:
                self.warned = True
                log.warning(f"cannot notify the service manager at {self.address!r}: {error.strerror or error}; "
                            "notifications go on being tried, without another warning")

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def alive(self, now: float, status) -> None:
        """Called on every supervisor tick: a watchdog ping when one is due, with status() (the links' state)."""
        if self.watchdog_interval is not None and self.socket is not None and now >= self.next_ping:
            self.next_ping = now + self.watchdog_interval
            self.notify("WATCHDOG=1", f"STATUS={status()}")

    def stopping(self) -> None:
        self.notify("STOPPING=1", "STATUS=stopping")
