"""Logging: JSON lines on stderr for machines, readable text on a terminal.

Logs go to stderr so that stdout stays free for data (a byte-stream sink). Any
log call may pass extra={"fields": {...}}; JSON lines carry those fields as keys,
text lines append them as key=value.
"""

import datetime
import json
import logging
import sys

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


def configure_logging(level: str = "info", log_format: str = "auto", stream=None) -> None:
    stream = stream or sys.stderr
    if log_format == "auto":
        log_format = "text" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger("ddc")
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    root.propagate = False
