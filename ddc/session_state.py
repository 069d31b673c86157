"""The little a link remembers across restarts, in its state directory (docs/security.md, "Sessions").

The ingress remembers the last session id it used, so that its next one is larger
even when its clock went back. The egress remembers the newest authenticated
session and its highest sequence, so that after a restart a recorded datagram of
an older session, or an old datagram of the same session, is refused instead of
delivered again. Each is one small JSON file, replaced atomically (write, fsync,
rename), so a crash leaves either the old or the new content.
"""

import json
import math
import logging
import os
import secrets
import time
from pathlib import Path

from ddc.config import ConfigError

log = logging.getLogger("ddc.session")

SAVE_INTERVAL_SECONDS = 1.0


class SessionState:
    """One link's state file: `<state_directory>/<link>.<role>.json`."""

    def __init__(self, directory: Path | str | None, link: str, role: str):
        self.path = Path(directory) / f"{link}.{role}.json" if directory else None
        self._saved = None
        self._saved_at = 0.0

    def load(self, *names: str, optional: tuple[str, ...] = ()) -> dict:
        """The saved fields, each a 64-bit unsigned integer (those in optional may be null), or {} when there is
        no state directory or file. A file that cannot be read is a ConfigError to fix, not a reason to start
        without protection."""
        if self.path is None or not self.path.exists():
            return {}
        try:
            fields = json.loads(self.path.read_text())
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

    def save(self, fields: dict, *, force: bool = False) -> None:
        """Writes the fields when they changed, at most once a SAVE_INTERVAL_SECONDS unless forced."""
        if self.path is None or fields == self._saved:
            return
        now = time.monotonic()
        if not force and now - self._saved_at < SAVE_INTERVAL_SECONDS:
            return
        self._saved_at = now
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        with open(temporary, "w") as out:
            json.dump(fields, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself must survive a power cut
        finally:
            os.close(directory)
        self._saved = dict(fields)


def next_session_id(state: SessionState, keyed: bool = False) -> int:
    """The start second in the high 32 bits and 32 random bits below, larger than the last one this ingress
    used (its state file): a keyed egress refuses sessions older than the newest it authenticated. With a state
    file that holds even if the clock went back. Without one, a keyed ingress waits for the next whole second,
    so that a restart within the second it started (a crash loop, a quick supervisor restart) still numbers
    after it."""
    if keyed and state.path is None:
        started = time.time()
        time.sleep(math.floor(started) + 1 - started)
        while time.time() < math.floor(started) + 1:
            time.sleep(0.001)
    last = state.load("session_id").get("session_id")
    session_id = _after(last, secrets.randbits(32))
    state.save({"session_id": session_id}, force=True)
    return session_id


def next_epoch(state: SessionState, session_id: int) -> int:
    """The session's next key epoch: a larger high half (the second, or one more than the last), the same low
    half, which tells the egress that the session goes on under a new key. Saved like a new session id; a
    state directory that cannot be written does not stop the rekey (the id is larger anyway)."""
    epoch = _after(session_id, session_id & 0xFFFFFFFF)
    try:
        state.save({"session_id": epoch}, force=True)
    except OSError as error:
        log.error(f"cannot save the session state to {state.path} ({error}); going on with session {epoch:016x}")
    return epoch


def _after(last: int | None, low: int) -> int:
    seconds = int(time.time()) & 0xFFFFFFFF
    if last is not None and seconds <= last >> 32:
        seconds = (last >> 32) + 1
    return (seconds << 32 | low) & 0xFFFFFFFFFFFFFFFF or 1
