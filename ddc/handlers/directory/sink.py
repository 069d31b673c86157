"""The directory sink: writes each file under a temporary name, and renames it into place only once it is whole
and its SHA-256 matches.

Chunks are written where they belong as they come (out of order too), into `.ddc-partial/` in the target
folder; a file's ranges are tracked, so that one missing a piece is reported by name with the exact byte ranges
that never came. A file is given up when the link has moved well past it (see chunks.py: its next chunk is
late beyond the egress's frame timeout, or lost), when nothing of it came for `incomplete_timeout`, or when its
sender restarted. It then goes to `quarantine_directory` (or is removed), is logged, counted and written to
`report_file`; nothing is ever left under its real name.

Every name is checked before it is used: absolute paths, `..`, empty or control-character components and names
too long for the target are refused; folders are opened one at a time without following symbolic links, so a
link planted in the target cannot lead a file out of it.
"""

import bisect
import collections
import errno
import hashlib
import json
import logging
import os
import secrets
import stat
import time
from dataclasses import dataclass, field

from ddc.handlers.base import Sink
from ddc.handlers.directory import chunks
from ddc.handlers.directory.metrics import QUARANTINE_REASONS, REFUSE_REASONS

log = logging.getLogger("ddc.handlers.directory")

PARTIAL_FOLDER = ".ddc-partial"
CHECK_EVERY_SECONDS = 0.25
NAME_WAIT_SECONDS = chunks.MANIFEST_COPIES + 1.0  # how long a lost file's name may take to come in a manifest
REMEMBERED_FILES = 100_000
SHOWN_RANGES = 20
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Refused(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass
class Incoming:
    file_id: int
    name: str
    components: list
    size: int
    mtime_ns: int
    mode: int
    copy: int
    spread: int
    digest: bytes | None
    descriptor: int
    temporary: str
    last_sequence: int
    last_time: float
    ranges: list = field(default_factory=list)  # sorted, merged [start, end) pairs, flattened
    received: int = 0
    hasher: object = field(default_factory=hashlib.sha256)
    hashed_to: int = 0
    overtaken_at: float | None = None


def check_name(encoded: bytes) -> list[str]:
    """The components of a relative path from the wire; raises Refused for any name not safe to create."""
    if not encoded or encoded.startswith(b"/"):
        raise Refused("invalid_name", "not a relative path")
    parts = encoded.split(b"/")
    for part in parts:
        if part in (b"", b".", b".."):
            raise Refused("invalid_name", f"has a {part.decode() or 'empty'!r} component")
        if len(part) > 255:
            raise Refused("invalid_name", "has a component longer than 255 bytes")
        if any(byte < 0x20 or byte == 0x7F for byte in part):
            raise Refused("invalid_name", "has a control character")
    if parts[0] == PARTIAL_FOLDER.encode():
        raise Refused("invalid_name", f"is inside {PARTIAL_FOLDER}, which the egress keeps for itself")
    return [os.fsdecode(part) for part in parts]


def missing_ranges(ranges: list, size: int) -> list[tuple[int, int]]:
    """The [first, last] byte ranges of a file of size not covered by ranges."""
    missing, at = [], 0
    for index in range(0, len(ranges), 2):
        if ranges[index] > at:
            missing.append((at, ranges[index] - 1))
        at = ranges[index + 1]
    if at < size:
        missing.append((at, size - 1))
    return missing


def add_range(ranges: list, start: int, end: int) -> int:
    """Merges [start, end) into ranges (sorted, merged pairs, flattened); returns how many of its bytes were new."""
    left = bisect.bisect_left(ranges, start)
    right = bisect.bisect_right(ranges, end)
    low, high = left - left % 2, right + right % 2
    covered = sum(min(ranges[index + 1], end) - max(ranges[index], start) for index in range(low, high, 2)
                  if ranges[index] < end and ranges[index + 1] > start)
    ranges[low:high] = [ranges[low] if low < left else start, ranges[high - 1] if high > right else end]
    return end - start - covered


class DirectorySink(Sink):
    takes_value_views = True

    def open(self) -> None:
        config = self.config
        try:
            os.makedirs(config.path, exist_ok=True)
            self.root = os.open(config.path, FOLDER_FLAGS)
            try:
                os.mkdir(PARTIAL_FOLDER, 0o700, dir_fd=self.root)
            except FileExistsError:
                pass
            self.partial = os.open(PARTIAL_FOLDER, FOLDER_FLAGS, dir_fd=self.root)
        except OSError as error:
            raise OSError(f"cannot write directory sink {config.path!r}: {error.strerror}") from None
        self.quarantine = None
        if config.quarantine_directory:
            try:
                os.makedirs(config.quarantine_directory, exist_ok=True)
                self.quarantine = os.open(config.quarantine_directory, FOLDER_FLAGS)
            except OSError as error:
                raise OSError(f"cannot write quarantine_directory {config.quarantine_directory!r}: "
                              f"{error.strerror}") from None
        self.report = None
        if config.report_file:
            try:
                self.report = open(config.report_file, "a", encoding="utf-8")
            except OSError as error:
                raise OSError(f"cannot write report_file {config.report_file!r}: {error.strerror}") from None
        self.partials_discarded = 0
        for leftover in os.listdir(self.partial):
            try:
                os.unlink(leftover, dir_fd=self.partial)
                self.partials_discarded += 1
            except OSError:
                pass
        if self.partials_discarded:
            log.warning(f"link {self.link_name}: removed {self.partials_discarded} partial file(s) an interrupted "
                        "run left; their files are whole only if the sender sends them again (`resend`)",
                        extra={"fields": {"link": self.link_name, "files": self.partials_discarded}})
        self.files: dict[int, Incoming] = {}
        self.closed_ids: collections.OrderedDict = collections.OrderedDict()
        self.delivered_digests: collections.OrderedDict = collections.OrderedDict()
        self.unseen: dict[int, float] = {}
        self.names: collections.OrderedDict = collections.OrderedDict()  # file id → path, from manifests
        self._new_session()
        self.next_check = 0.0
        self.files_delivered = self.bytes_delivered = self.files_duplicate = self.files_interrupted = 0
        self.files_unseen = 0
        self.quarantined = dict.fromkeys(QUARANTINE_REASONS, 0)
        self.refused = dict.fromkeys(REFUSE_REASONS, 0)

    def _new_session(self) -> None:
        self.max_sequence = -1
        self.max_file_id = None
        self.closed_ids.clear()
        self.unseen.clear()
        self.names.clear()

    @property
    def stops_after_sender_shutdown(self) -> bool:
        return self.config.stop_after_sender_shutdown

    # ---- records ----

    def write(self, records) -> None:
        now = time.monotonic()
        for metadata, value in records:
            try:
                record = chunks.read(metadata)
            except ValueError as error:
                self._refuse(None, "malformed", str(error))
                continue
            self.max_sequence = max(self.max_sequence, record.sequence)
            if record.kind == chunks.CHUNK:
                self._take(record, value, now)
            elif record.kind == chunks.MANIFEST:
                for file_id, path in record.names:
                    self.names[file_id] = path
                    if len(self.names) > REMEMBERED_FILES:
                        self.names.popitem(last=False)
        self._check(now)

    def idle(self) -> None:
        self._check(time.monotonic())

    def _note_file_id(self, file_id: int, now: float) -> None:
        if self.max_file_id is None:
            self.max_file_id = file_id
        elif file_id > self.max_file_id:
            for skipped in range(self.max_file_id + 1, min(file_id, self.max_file_id + 10_000)):
                if len(self.unseen) < REMEMBERED_FILES:
                    self.unseen[skipped] = now
            self.max_file_id = file_id
        self.unseen.pop(file_id, None)

    def _take(self, record, value, now: float) -> None:
        self._note_file_id(record.file_id, now)
        if record.file_id in self.closed_ids:
            return
        incoming = self.files.get(record.file_id)
        if record.flags & chunks.ABANDONED:
            if incoming is not None:
                self._discard(incoming)
            self._close_id(record.file_id)
            return
        if incoming is None:
            incoming = self._start(record, now)
            if incoming is None:
                return
        elif (record.path, record.size) != (os.fsencode(incoming.name), incoming.size):
            self._refuse(record, "malformed", f"chunk of file #{record.file_id} names another file")
            return
        end = record.offset + len(value)
        if end > incoming.size or (record.flags & chunks.LAST and end != incoming.size):
            self._refuse(record, "malformed", f"a chunk at bytes {record.offset} to {end} of a {incoming.size}-byte "
                                              "file")
            return
        if record.digest is not None:
            incoming.digest = record.digest
        incoming.last_sequence = max(incoming.last_sequence, record.sequence)
        incoming.last_time = now
        incoming.overtaken_at = None
        if value:
            try:
                os.pwrite(incoming.descriptor, value, record.offset)
            except OSError as error:
                self._give_up(incoming, "write_failed", f"cannot write it: {error.strerror}")
                return
            if record.offset == incoming.hashed_to:
                incoming.hasher.update(value)
                incoming.hashed_to = end
            incoming.received += add_range(incoming.ranges, record.offset, end)
        if incoming.received == incoming.size and incoming.digest is not None:
            self._finish(incoming)

    def _start(self, record, now: float) -> Incoming | None:
        try:
            components = check_name(record.path)
        except Refused as refusal:
            self._refuse(record, refusal.reason, str(refusal))
            self._close_id(record.file_id)
            return None
        name = "/".join(components)
        if record.size > self.config.max_file_size:
            self._report(name, "too_large", f"{record.size} bytes, more than max_file_size "
                                            f"{self.config.max_file_size}", [])
            self.quarantined["too_large"] += 1
            self._close_id(record.file_id)
            return None
        if record.copy and record.digest is not None and self._already_delivered(record, components):
            self.files_duplicate += 1
            self._close_id(record.file_id)
            return None
        if len(self.files) >= self.config.max_files_in_progress:
            self._refuse(record, "too_many_files", f"{len(self.files)} files are in progress already "
                                                   "(max_files_in_progress)")
            self._close_id(record.file_id)
            return None
        temporary = f"{record.file_id}-{secrets.token_hex(6)}.part"
        try:
            descriptor = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600,
                                 dir_fd=self.partial)
        except OSError as error:
            self._report(name, "write_failed", f"cannot create its temporary file: {error.strerror}", [])
            self.quarantined["write_failed"] += 1
            self._close_id(record.file_id)
            return None
        try:
            os.ftruncate(descriptor, record.size)  # sparse: a quarantined file keeps every byte at its offset
        except OSError as error:
            os.close(descriptor)
            os.unlink(temporary, dir_fd=self.partial)
            self._report(name, "write_failed", f"cannot size its temporary file: {error.strerror}", [])
            self.quarantined["write_failed"] += 1
            self._close_id(record.file_id)
            return None
        incoming = Incoming(record.file_id, name, components, record.size, record.mtime_ns, record.mode,
                            record.copy, max(record.spread, 1), record.digest, descriptor, temporary,
                            record.sequence, now)
        self.files[record.file_id] = incoming
        return incoming

    def _already_delivered(self, record, components: list) -> bool:
        """A copy (`resend`) of a file delivered before: this run saw it, or it lies in place unchanged."""
        if self.delivered_digests.get(record.path) == record.digest:
            return True
        try:
            parent = self._open_parent(components, create=False)
        except (Refused, OSError):
            return False
        try:
            status = os.stat(components[-1], dir_fd=parent, follow_symlinks=False)
        except OSError:
            return False
        finally:
            os.close(parent)
        return stat.S_ISREG(status.st_mode) and (status.st_size, status.st_mtime_ns) == (record.size,
                                                                                          record.mtime_ns)

    # ---- finishing ----

    def _finish(self, incoming: Incoming) -> None:
        try:
            self._hash_rest(incoming)
        except OSError as error:
            self._give_up(incoming, "write_failed", f"cannot read it back: {error.strerror}")
            return
        actual = incoming.hasher.digest()
        if actual != incoming.digest:
            self._give_up(incoming, "checksum", f"its SHA-256 is {actual.hex()}, the sender's "
                                                f"{incoming.digest.hex()}")
            return
        mode = incoming.mode & (0o7777 if self.config.keep_permissions else 0o777)
        try:
            os.fchmod(incoming.descriptor, mode)
            os.utime(incoming.descriptor, ns=(incoming.mtime_ns, incoming.mtime_ns))
            if self.config.fsync:
                os.fsync(incoming.descriptor)
        except OSError as error:
            self._give_up(incoming, "write_failed", f"cannot finish it: {error.strerror}")
            return
        try:
            parent = self._open_parent(incoming.components, create=True)
        except Refused as refusal:
            self._refuse_open(incoming, refusal)
            return
        except OSError as error:
            self._give_up(incoming, "write_failed", f"cannot make its folder: {error.strerror}")
            return
        try:
            placed = self._place(incoming, parent)
            if placed is not None and self.config.fsync:
                os.fsync(parent)
        except OSError as error:
            self._give_up(incoming, "write_failed", f"cannot rename it into place: {error.strerror}")
            return
        finally:
            os.close(parent)
        if placed is None:
            self._give_up(incoming, "exists", 'a file of its name exists (existing = "refuse"), or a folder does')
            return
        os.close(incoming.descriptor)
        del self.files[incoming.file_id]
        self._close_id(incoming.file_id)
        self.files_delivered += 1
        self.bytes_delivered += incoming.size
        encoded = os.fsencode(incoming.name)
        self.delivered_digests[encoded] = incoming.digest
        self.delivered_digests.move_to_end(encoded)
        if len(self.delivered_digests) > REMEMBERED_FILES:
            self.delivered_digests.popitem(last=False)
        log.debug(f"link {self.link_name}: delivered {placed!r}", extra={"fields": {
            "link": self.link_name, "file": placed, "bytes": incoming.size, "copy": incoming.copy}})

    def _hash_rest(self, incoming: Incoming) -> None:
        while incoming.hashed_to < incoming.size:
            block = os.pread(incoming.descriptor, min(incoming.size - incoming.hashed_to, 1 << 22),
                             incoming.hashed_to)
            if not block:
                raise OSError(errno.EIO, "the temporary file is shorter than what was written")
            incoming.hasher.update(block)
            incoming.hashed_to += len(block)

    def _open_parent(self, components: list, create: bool) -> int:
        """The folder a file goes in, opened one component at a time from the target without following links."""
        folder = os.dup(self.root)
        try:
            for part in components[:-1]:
                try:
                    inner = os.open(part, FOLDER_FLAGS, dir_fd=folder)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(part, 0o755, dir_fd=folder)
                    except FileExistsError:
                        pass
                    inner = os.open(part, FOLDER_FLAGS, dir_fd=folder)
                except OSError as error:
                    if error.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise Refused("unsafe_path", f"{part!r} on its path is a symbolic link or not a folder")
                    raise
                os.close(folder)
                folder = inner
            return folder
        except BaseException:
            os.close(folder)
            raise

    def _place(self, incoming: Incoming, parent: int) -> str | None:
        """Renames the finished temporary file into place; the name it got, or None if refused."""
        base = incoming.components[-1]
        try:
            existing = os.stat(base, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        if existing is not None and (stat.S_ISDIR(existing.st_mode) or self.config.existing == "refuse"):
            return None
        if existing is not None and self.config.existing == "overwrite":
            os.replace(incoming.temporary, base, src_dir_fd=self.partial, dst_dir_fd=parent)
            return incoming.name
        stem, dot, extension = base.partition(".") if not base.startswith(".") else (base, "", "")
        for number in range(0, 10_000):
            candidate = base if number == 0 else f"{stem}.{number}{dot}{extension}"
            if len(os.fsencode(candidate)) > 255:
                return None
            try:
                os.link(incoming.temporary, candidate, src_dir_fd=self.partial, dst_dir_fd=parent)
            except FileExistsError:
                if self.config.existing == "refuse":
                    return None
                continue
            except OSError as error:
                if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                    raise
                os.rename(incoming.temporary, candidate, src_dir_fd=self.partial, dst_dir_fd=parent)
                return "/".join(incoming.components[:-1] + [candidate])
            os.unlink(incoming.temporary, dir_fd=self.partial)
            return "/".join(incoming.components[:-1] + [candidate])
        return None

    # ---- giving up ----

    def _check(self, now: float) -> None:
        """Gives up the files the link has moved past for longer than frames are reordered, and those that
        stalled; reports the files of which nothing came."""
        if now < self.next_check:
            return
        self.next_check = now + CHECK_EVERY_SECONDS
        reorder = self.config._reorder_seconds
        for incoming in list(self.files.values()):
            if self.max_sequence > incoming.last_sequence + incoming.spread:
                if incoming.overtaken_at is None:
                    incoming.overtaken_at = now
                elif now - incoming.overtaken_at >= reorder:
                    self._give_up(incoming, "incomplete", "the rest of it never arrived")
                    continue
            if now - incoming.last_time >= self.config.incomplete_timeout:
                self._give_up(incoming, "incomplete", f"nothing more of it came in "
                                                      f"{self.config.incomplete_timeout:g} s")
        for file_id, noticed in list(self.unseen.items()):
            if now - noticed >= reorder and (file_id in self.names or now - noticed >= reorder + NAME_WAIT_SECONDS):
                self._lost_unseen(file_id)

    def _lost_unseen(self, file_id: int) -> None:
        del self.unseen[file_id]
        self.files_unseen += 1
        path = self.names.get(file_id)
        if path is None:
            self._report(f"#{file_id}", "incomplete", "nothing of this file arrived, not even its name; the "
                                                      "ingress's debug log names the files it sends by id", [])
        else:
            self._report(os.fsdecode(path), "incomplete", "nothing of it arrived", [])
        self.quarantined["incomplete"] += 1

    def _give_up(self, incoming: Incoming, reason: str, detail: str) -> None:
        missing = missing_ranges(incoming.ranges, incoming.size) if reason == "incomplete" else []
        self.quarantined[reason] += 1
        kept = None
        if self.quarantine is not None:
            kept = self._to_quarantine(incoming)
        self._discard(incoming, keep=kept is not None)
        self._report(incoming.name, reason, detail, missing, kept)

    def _to_quarantine(self, incoming: Incoming) -> str | None:
        base = f"{incoming.file_id}-{incoming.components[-1]}"[:255]
        try:
            os.rename(incoming.temporary, base, src_dir_fd=self.partial, dst_dir_fd=self.quarantine)
            return os.path.join(self.config.quarantine_directory, base)
        except OSError as error:
            log.error(f"link {self.link_name}: cannot move {incoming.name!r} to quarantine: {error.strerror}; "
                      "removed instead", extra={"fields": {"link": self.link_name, "file": incoming.name}})
            return None

    def _refuse_open(self, incoming: Incoming, refusal: Refused) -> None:
        self._discard(incoming)
        self.refused[refusal.reason] += 1
        self._report(incoming.name, refusal.reason, str(refusal), [])

    def _discard(self, incoming: Incoming, keep: bool = False) -> None:
        os.close(incoming.descriptor)
        if not keep:
            try:
                os.unlink(incoming.temporary, dir_fd=self.partial)
            except OSError:
                pass
        self.files.pop(incoming.file_id, None)
        self._close_id(incoming.file_id)

    def _close_id(self, file_id: int) -> None:
        self.closed_ids[file_id] = None
        if len(self.closed_ids) > REMEMBERED_FILES:
            self.closed_ids.popitem(last=False)

    def _refuse(self, record, reason: str, detail: str) -> None:
        self.refused[reason] += 1
        name = os.fsdecode(record.path) if record is not None else None
        self._report(name, reason, detail, [])

    def _report(self, name, reason: str, detail: str, missing: list, kept: str | None = None) -> None:
        shown = missing[:SHOWN_RANGES]
        text = ", ".join(f"{first}-{last}" for first, last in shown) + (
            f" and {len(missing) - len(shown)} more" if len(missing) > len(shown) else "")
        fields = {"link": self.link_name, "file": name, "reason": reason, "detail": detail,
                  "missing_ranges": [list(item) for item in shown],
                  "bytes_missing": sum(last - first + 1 for first, last in missing), "quarantined_as": kept}
        where = f"; kept as {kept!r}" if kept else ""
        log.error(f"link {self.link_name}: file {name!r} not delivered ({reason}): {detail}"
                  f"{f'; bytes missing: {text}' if missing else ''}{where}", extra={"fields": fields})
        if self.report is not None:
            try:
                self.report.write(json.dumps({"time": time.time(), **fields}) + "\n")
                self.report.flush()
            except OSError as error:
                log.error(f"link {self.link_name}: cannot write report_file: {error.strerror}")

    def sender_restarted(self) -> None:
        """A new ingress run: what the last left unfinished is dropped (a restarted directory source sends its
        unfinished files again); what it never sent a piece of is reported."""
        for incoming in list(self.files.values()):
            self.files_interrupted += 1
            log.warning(f"link {self.link_name}: dropped the partial {incoming.name!r}: its sender restarted, and "
                        "sends what it had not finished again", extra={"fields": {
                            "link": self.link_name, "file": incoming.name}})
            self._discard(incoming)
        for file_id in list(self.unseen):
            self._lost_unseen(file_id)
        self._new_session()

    def close(self) -> None:
        for incoming in list(self.files.values()):
            self._give_up(incoming, "incomplete", "the link stopped before it was whole")
        for file_id in list(self.unseen):
            self._lost_unseen(file_id)
        for descriptor in (self.partial, self.root, self.quarantine):
            if descriptor is not None:
                os.close(descriptor)
        if self.report is not None:
            self.report.close()

    def progress(self) -> dict:
        return {"files": self.files_delivered, "bytes": self.bytes_delivered,
                "active": [(incoming.name, incoming.received, incoming.size) for incoming in list(self.files.values())]}

    def counters(self) -> dict:
        return {"directory_files_delivered": self.files_delivered, "directory_bytes_delivered": self.bytes_delivered,
                "directory_files_duplicate": self.files_duplicate,
                "directory_files_interrupted": self.files_interrupted,
                "directory_files_in_progress": len(self.files),
                **{f"directory_files_quarantined_{reason}": count for reason, count in self.quarantined.items()},
                **{f"directory_files_refused_{reason}": count for reason, count in self.refused.items()}}
