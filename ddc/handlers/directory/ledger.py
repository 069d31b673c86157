"""What a directory source has sent, kept across restarts: a file of JSON lines, one per file sent.

A line is appended (one write) once the link has sent a file's last chunk, and the file is skipped afterwards
while its size and modification time stay the same. At start-up the file is rewritten with the entries whose
files still exist, so it never outgrows the folder. A line cut short by a crash is dropped: its file is sent
again, which the egress takes as a newer copy."""

import json
import logging
import os
import threading

log = logging.getLogger("ddc.handlers.directory")


class SentLedger:
    def __init__(self, directory: str | None, link_name: str):
        self.path = os.path.join(directory, f"{link_name}.directory-sent.jsonl") if directory else None
        self.sent: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._file = None

    def open(self, still_there) -> None:
        """Loads what was sent; keeps only the entries still_there(name, size, mtime_ns) confirms."""
        if self.path is None:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        try:
            with open(self.path, "rb") as stream:
                for number, line in enumerate(stream, 1):
                    try:
                        entry = json.loads(line)
                        self.sent[entry["name"]] = (int(entry["size"]), int(entry["mtime_ns"]))
                    except (ValueError, KeyError, TypeError):
                        log.warning(f"{self.path}: line {number} is not a sent file's entry (cut short by a "
                                    "crash?); the file it named is sent again")
        except FileNotFoundError:
            pass
        except OSError as error:
            raise OSError(f"cannot read the directory source's state {self.path}: {error.strerror}") from None
        self.sent = {name: key for name, key in self.sent.items() if still_there(name, *key)}
        temporary = self.path + ".new"
        try:
            with open(temporary, "w", encoding="utf-8") as stream:
                for name, (size, mtime_ns) in self.sent.items():
                    stream.write(self._line(name, size, mtime_ns))
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.path)
            self._file = open(self.path, "a", encoding="utf-8")
        except OSError as error:
            raise OSError(f"cannot write the directory source's state {self.path}: {error.strerror}") from None

    @staticmethod
    def _line(name: str, size: int, mtime_ns: int) -> str:
        return json.dumps({"name": name, "size": size, "mtime_ns": mtime_ns}) + "\n"

    def was_sent(self, name: str, size: int, mtime_ns: int) -> bool:
        return self.sent.get(name) == (size, mtime_ns)

    def record(self, name: str, size: int, mtime_ns: int) -> None:
        with self._lock:
            self.sent[name] = (size, mtime_ns)
            if self._file is not None:
                try:
                    self._file.write(self._line(name, size, mtime_ns))
                    self._file.flush()
                except OSError as error:
                    log.error(f"cannot record {name!r} as sent in {self.path}: {error.strerror}; it is sent "
                              "again after a restart")

    def forget(self, name: str) -> None:
        with self._lock:
            self.sent.pop(name, None)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
