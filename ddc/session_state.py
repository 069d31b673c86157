"""The little a link remembers across restarts, in its state directory (docs/security.md, "Sessions").

The ingress remembers the last session id it used, so that its next one is larger
even when its clock went back. The egress remembers the newest authenticated
session and its highest sequence, so that after a restart a recorded datagram of
an older session, or an old datagram of the same session, is refused instead of
delivered again. Each is one small JSON record, padded to RECORD_BYTES and
written in place with one pwrite: the kernel keeps it across the death of the
process (SIGKILL, a crash), and sync() (fdatasync) across a power cut. A record
within one disk sector is written whole or not at all.
"""

import fcntl
import json
import logging
import math
import os
import secrets
import time
from pathlib import Path

from ddc.errors import ConfigError

log = logging.getLogger("ddc.session")

RECORD_BYTES = 256


class SessionState:
    """One link's state file: `<state_directory>/<link>.<role>.json`, held by one process at a time (an exclusive
    lock on it for as long as the process runs), so that two proxies given the same directory and link name
    cannot take each other's sessions or tear the file."""

    def __init__(self, directory: Path | str | None, link: str, role: str):
        self.path = Path(directory) / f"{link}.{role}.json" if directory else None
        self._written = None
        self._dirty = False
        self._descriptor = None
        if self.path is not None:
            self._claim()

    def _claim(self) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            fcntl.flock(self._descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise ConfigError(f"another process holds the session state {self.path}: give each proxy its own "
                              "state_directory (or its links their own names)") from None
        except OSError as error:
            self.close()
            raise ConfigError(f"cannot use the session state {self.path}: {error.strerror}; the state directory "
                              "must be writable by the user ddc runs as") from None

    def close(self) -> None:
        """Releases the file (and its lock); the process's end does the same."""
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    def load(self, *names: str, optional: tuple[str, ...] = ()) -> dict:
        """The saved fields, each a 64-bit unsigned integer (those in optional may be null), or {} when there is
        no state directory or nothing saved yet. A record that cannot be read is a ConfigError to fix, not a
        reason to start without protection."""
        if self._descriptor is None:
            return {}
        try:
            text = os.pread(self._descriptor, RECORD_BYTES, 0).decode().strip(" \n\0")
            if not text:
                return {}
            fields = json.loads(text)
            if not isinstance(fields, dict):
                raise ValueError("not a JSON object")
            for name in names + optional:
                value = fields.get(name)
                if name in optional and value is None:
                    continue
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 64:
                    raise ValueError(f"{name} is {value!r}, not a 64-bit unsigned integer")
            return fields
        except (OSError, ValueError) as error:
            raise ConfigError(f"session state file {self.path} cannot be read ({error}); restore it from a backup, "
                              "or delete it to start without it (replays of older sessions are then accepted "
                              "until the sender's next datagram)") from error

    def note(self, fields: dict) -> None:
        """Writes the fields in place when they changed: one pwrite, no fsync."""
        if self._descriptor is None or fields == self._written:
            return
        record = json.dumps(fields).encode()
        if len(record) >= RECORD_BYTES:
            raise ValueError(f"session state of {len(record)} bytes exceeds the {RECORD_BYTES}-byte record")
        os.pwrite(self._descriptor, record.ljust(RECORD_BYTES - 1) + b"\n", 0)
        self._written, self._dirty = dict(fields), True

    def sync(self) -> None:
        """Makes what note() wrote survive a power cut. A note() from another thread while fdatasync runs may
        not be covered by it, so it leaves the record dirty for the next sync()."""
        if self._descriptor is not None and self._dirty:
            self._dirty = False
            try:
                os.fdatasync(self._descriptor)
            except OSError:
                self._dirty = True
                raise

    def save(self, fields: dict) -> None:
        self.note(fields)
        self.sync()


def next_session_id(state: SessionState, keyed: bool = False, after: int | None = None) -> int:
    """The start second in the high 32 bits and 32 random bits below, larger than the last one this ingress
    used (its state file, or `after`): a keyed egress refuses sessions older than the newest it authenticated.
    With a state file that holds even if the clock went back. Without one, a keyed ingress waits for the next
    whole second, so that a restart within the second it started (a crash loop, a quick supervisor restart)
    still numbers after it."""
    if keyed and state.path is None:
        started = time.time()
        time.sleep(math.floor(started) + 1 - started)
        while time.time() < math.floor(started) + 1:
            time.sleep(0.001)
    last = max(state.load("session_id").get("session_id") or 0, after or 0) or None
    session_id = _after(last, secrets.randbits(32))
    state.save({"session_id": session_id})
    return session_id


def next_epoch(state: SessionState, session_id: int) -> int:
    """The session's next key epoch: a larger high half (the second, or one more than the last), the same low
    half, which tells the egress that the session goes on under a new key. Saved like a new session id; a
    state directory that cannot be written does not stop the rekey (the id is larger anyway)."""
    epoch = _after(session_id, session_id & 0xFFFFFFFF)
    try:
        state.save({"session_id": epoch})
    except OSError as error:
        log.error(f"cannot save the session state to {state.path} ({error}); going on with session {epoch:016x}")
    return epoch


def _after(last: int | None, low: int) -> int:
    seconds = int(time.time()) & 0xFFFFFFFF
    if last is not None and seconds <= last >> 32:
        seconds = (last >> 32) + 1
    if seconds > 0xFFFFFFFF:
        raise ConfigError(f"session id {last:016x} is the last there is (its high half counts seconds to 2106): "
                          "delete the link's state files on both sides to start again from the clock")
    return seconds << 32 | low or 1
