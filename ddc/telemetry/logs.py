"""Logging: JSON lines on stderr for machines, readable text on a terminal, RFC 5424 syslog.

Logs go to stderr so that stdout stays free for data (a byte-stream sink). Any
log call may pass extra={"fields": {...}}; JSON lines carry those fields as keys,
text lines append them as key=value, syslog lines carry them as structured data.
Syslog is sent from a background thread behind a bounded queue, so a slow or
unreachable syslog server never stalls a link; lines that do not fit are counted.
"""

import datetime
import json
import logging
import logging.handlers
import os
import queue
import socket
import sys
import threading
import time

from ddc.transport.sockets import resolve

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class JsonFormatter(logging.Formatter):
    def format(self, record):
        line = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record):
        stamp = datetime.datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        text = f"{stamp} {record.levelname:<7} {record.getMessage()}"
        fields = getattr(record, "fields", {})
        if fields and record.levelno >= logging.WARNING:
            text += "  " + " ".join(f"{key}={value}" for key, value in fields.items())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


SEVERITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}
FACILITIES = {"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
              "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "audit": 13, "alert": 14, "clock": 15,
              **{f"local{n}": 16 + n for n in range(8)}}
STRUCTURED_DATA_ID = "ddc@32473"  # 32473: the private enterprise number reserved for examples (RFC 5612)
SYSLOG_QUEUE_LINES = 10_000
RECONNECT_SECONDS = 2.0


def _sd_name(name: str) -> str:
    cleaned = "".join(c for c in str(name) if 33 <= ord(c) <= 126 and c not in '= ]"')
    return cleaned[:32] or "field"


def _sd_value(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


class Rfc5424Formatter(logging.Formatter):
    def __init__(self, facility: str, app_name: str):
        super().__init__()
        self.facility = FACILITIES[facility]
        self.app_name = app_name
        self.hostname = (socket.gethostname() or "-")[:255]

    def format(self, record) -> str:
        priority = self.facility * 8 + SEVERITIES.get(record.levelno, 6)
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
        message_id = _sd_name(record.name.rsplit(".", 1)[-1])
        fields = getattr(record, "fields", {})
        if fields:
            parameters = " ".join(f'{_sd_name(key)}="{_sd_value(value)}"' for key, value in fields.items())
            structured = f"[{STRUCTURED_DATA_ID} {parameters}]"
        else:
            structured = "-"
        return (f"<{priority}>1 {stamp} {self.hostname} {self.app_name} {os.getpid()} {message_id} "
                f"{structured} {record.getMessage()}")


class SyslogSender:
    """Sends formatted lines over UDP (one per datagram) or TCP (octet-counted, RFC 6587)."""

    def __init__(self, address, protocol: str):
        self.address = address
        self.protocol = protocol
        self.socket = None
        self.next_attempt = 0.0
        self.lines_failed = 0

    def _connect(self):
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        kind = socket.SOCK_STREAM if self.protocol == "tcp" else socket.SOCK_DGRAM
        sock = socket.socket(family, kind)
        if self.protocol == "tcp":
            sock.settimeout(2.0)
            sock.connect(self.address)
        return sock

    def send(self, line: str) -> None:
        data = line.encode("utf-8", "replace")
        try:
            if self.socket is None:
                if time.monotonic() < self.next_attempt:
                    self.lines_failed += 1
                    return
                self.socket = self._connect()
            if self.protocol == "tcp":
                self.socket.sendall(f"{len(data)} ".encode() + data)
            else:
                self.socket.sendto(data[:65000], self.address)
        except OSError:
            self.lines_failed += 1
            if self.socket is not None:
                self.socket.close()
            self.socket = None
            self.next_attempt = time.monotonic() + RECONNECT_SECONDS


class SyslogHandler(logging.Handler):
    """Queues formatted lines for a sender thread; drops and counts when the queue is full."""

    def __init__(self, target, protocol: str, facility: str, app_name: str):
        super().__init__()
        self.setFormatter(Rfc5424Formatter(facility, app_name))
        _, address = resolve(target)
        self.sender = SyslogSender(address[:2], protocol)
        self.lines = queue.Queue(SYSLOG_QUEUE_LINES)
        self.lines_dropped = 0
        self.thread = threading.Thread(target=self._drain, name="ddc-syslog", daemon=True)
        self.thread.start()

    def emit(self, record) -> None:
        try:
            self.lines.put_nowait(self.format(record))
        except queue.Full:
            self.lines_dropped += 1

    def _drain(self) -> None:
        while True:
            line = self.lines.get()
            if line is None:
                return
            self.sender.send(line)

    def close(self) -> None:
        try:
            self.lines.put(None, timeout=1.0)
            self.thread.join(2.0)
        except queue.Full:
            pass
        super().close()


def configure_logging(level: str = "info", log_format: str = "auto", stream=None, syslog=None) -> None:
    """Routes the "ddc" and "asyncio" loggers to stderr (and to syslog when a SyslogConfig is given)."""
    stream = stream or sys.stderr
    if log_format == "auto":
        log_format = "text" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger("ddc")
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    if syslog is not None:
        root.handlers.append(SyslogHandler(syslog.target, syslog.protocol, syslog.facility, syslog.app_name))
    root.setLevel(_LEVELS[level])
    root.propagate = False
    # asyncio's own warnings (a task that failed unseen, a protocol misused) in the same format, not past it.
    loop_logger = logging.getLogger("asyncio")
    loop_logger.handlers[:] = root.handlers
    loop_logger.setLevel(max(logging.WARNING, root.level))
    loop_logger.propagate = False


def syslog_handler() -> SyslogHandler | None:
    return next((h for h in logging.getLogger("ddc").handlers if isinstance(h, SyslogHandler)), None)
