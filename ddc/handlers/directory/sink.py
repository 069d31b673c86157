"""The directory sink: writes each file under a temporary name, and renames it into place only once it is whole
and its SHA-256 matches.

Chunks are written where they belong as they come (out of order too), into `.ddc-partial/` in the target
folder; a file's ranges are tracked, so that one missing a piece is reported by name with the exact byte ranges
that never came. A file is given up when the link has moved well past it (see chunks.py: its next chunk is
late beyond the egress's frame timeout, or lost), when its run ended without it, when nothing of it came for
`incomplete_timeout`, or when the egress stops; it then goes to `quarantine_directory` (or is removed), is
logged, counted and written to `report_file`. A new run of the source drops, unreported, what the last run was
in the middle of when it died: the restarted source sends it again. Nothing is ever left under its real name.

Every name is checked before it is used: absolute paths, `..`, empty or control-character components and names
too long for the target are refused; folders are opened one at a time without following symbolic links, so a
link planted in the target cannot lead a file out of it.
"""

import bisect
import collections
import concurrent.futures
import ctypes
import errno
import hashlib
import json
import logging
import os
import re
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
NAMES_BYTES = 16 << 20  # the most memory names from manifests take, counted as their bytes and ENTRY_BYTES each
ENTRY_BYTES = 150
MAX_FOLDERS = 64  # folders held open at once during a write()
CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
RENAME_NOREPLACE = 1
MAX_FINISHING = 256  # files finished in one write() that are synced and renamed together
HASH_APART_BYTES = 256 * 1024  # chunks at least this large are hashed on a thread of their own, while written
NAME_WAIT_SECONDS = chunks.MANIFEST_COPIES + 1.0  # how long a lost file's name may take to come in a manifest
REMEMBERED_FILES = 100_000
SHOWN_RANGES = 20
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
CONFIGURED_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC  # the operator's own path may be a link


def _renameat2():
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    return function


_RENAMEAT2 = _renameat2()


def _syncfs():
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int,)
    return function


_SYNCFS = _syncfs()


def rename_no_replace(name: str, folder: int, new_name: str, new_folder: int) -> bool:
    """Renames without ever replacing what is there (False then): renameat2's RENAME_NOREPLACE, or where the
    C library or the filesystem lacks it, a hard link then an unlink."""
    if _RENAMEAT2 is not None:
        if _RENAMEAT2(folder, os.fsencode(name), new_folder, os.fsencode(new_name), RENAME_NOREPLACE) == 0:
            return True
        number = ctypes.get_errno()
        if number == errno.EEXIST:
            return False
        if number not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(number, os.strerror(number))
    try:
        os.link(name, new_name, src_dir_fd=folder, dst_dir_fd=new_folder)
    except FileExistsError:
        return False
    os.unlink(name, dir_fd=folder)
    return True


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
        if CONTROL.search(part):
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
            self.root = os.open(config.path, CONFIGURED_FOLDER_FLAGS)
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
                self.quarantine = os.open(config.quarantine_directory, CONFIGURED_FOLDER_FLAGS)
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
        self.names_bytes = 0
        self.run = None
        self._new_run(None)
        self.next_check = 0.0
        self.folders: dict[tuple, int] = {}  # folders opened during one write(), by their components
        self.folders_renamed_in: set[int] = set()
        self.finishing: list[Incoming] = []
        self.hashing = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"ddc-hash-{self.link_name}")
        self.hashes_pending: list = []  # whole and checked, to be synced and renamed at the write()'s end
        self.files_delivered = self.bytes_delivered = self.files_duplicate = self.files_interrupted = 0
        self.quarantined = dict.fromkeys(QUARANTINE_REASONS, 0)
        self.refused = dict.fromkeys(REFUSE_REASONS, 0)

    def _new_run(self, run: int | None) -> None:
        """The records that follow come from a new run of the source: what the last left unfinished is dropped
        (the source sends its unfinished files again) and what it never sent a piece of is reported."""
        if self.run is not None:
            for incoming in list(self.files.values()):
                if (self.run_ended_at is not None or incoming.digest is not None or
                        self.max_sequence > incoming.last_sequence + incoming.spread):
                    # The last run ended, or had sent all of it (its last chunk came, or the run went past it).
                    self._give_up(incoming, "incomplete", "the rest of it never arrived")
                else:
                    self._interrupted(incoming.name, "its source restarted, and sends what it had not finished "
                                                     "again")
                    self._discard(incoming)
            self._report_unseen(time.monotonic(), everything=True)
        self.run = run
        self.run_ended_at = None  # when the run's last record came
        self.max_sequence = -1
        self.max_file_id = None
        self.closed_ids.clear()
        self.unseen.clear()
        self.names.clear()
        self.names_bytes = 0

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
            if record.run != self.run:
                self._new_run(record.run)
            self.max_sequence = max(self.max_sequence, record.sequence)
            if record.kind == chunks.CHUNK:
                self._expect_through(record.file_id, now, seen=True)
                self.unseen.pop(record.file_id, None)
                self._take(record, value, now)
            elif record.kind == chunks.MANIFEST:
                for file_id, path in record.names:
                    self._remember_name(file_id, path)
                if record.names:
                    self._expect_through(max(file_id for file_id, _ in record.names), now)
            else:
                self._expect_through(record.last_file_id, now)
                if record.flags & chunks.END and self.run_ended_at is None:
                    self.run_ended_at = now
        self._wait_for_hashes()
        self._place_finished()
        self._check(now)
        self._release_folders()

    def _folder(self, components: list, create: bool) -> int:
        """The folder a file goes in, opened once per write(): a batch of small files shares it."""
        key = tuple(components[:-1])
        folder = self.folders.get(key)
        if folder is None:
            if len(self.folders) >= MAX_FOLDERS:  # a batch of files in many folders: synced and closed so far
                self._release_folders()
            folder = self.folders[key] = self._open_parent(components, create)
        return folder

    def _release_folders(self) -> None:
        """Syncs the folders files were renamed into (once each, for the whole batch), and closes them."""
        for folder in self.folders.values():
            if folder in self.folders_renamed_in and self.config.fsync:
                try:
                    os.fsync(folder)
                except OSError as error:
                    log.error(f"link {self.link_name}: cannot sync a folder of delivered files: {error.strerror}")
            os.close(folder)
        self.folders.clear()
        self.folders_renamed_in.clear()

    def idle(self) -> None:
        self._check(time.monotonic())

    def _expect_through(self, file_id: int, now: float, seen: bool = False) -> None:
        """Files up to file_id were started by the source (ids are given out in order): those not seen yet are
        expected, and reported if nothing of them comes. Up to the first id this egress heard of in a run,
        nothing is expected (but that file itself, if a chunk of it came): the egress may have started after
        them, and a previous egress may have delivered them."""
        if self.max_file_id is None:
            self.max_file_id = file_id - 1 if seen else file_id
        if file_id <= self.max_file_id:
            return
        for expected in range(self.max_file_id + 1, min(file_id, self.max_file_id + REMEMBERED_FILES) + 1):
            if len(self.unseen) >= REMEMBERED_FILES:
                break
            self.unseen[expected] = now
        self.max_file_id = file_id

    def _remember_name(self, file_id: int, path: bytes) -> None:
        if file_id in self.names or file_id in self.closed_ids:
            return
        self.names[file_id] = path
        self.names_bytes += len(path) + ENTRY_BYTES
        while self.names_bytes > NAMES_BYTES:
            self.names_bytes -= len(self.names.popitem(last=False)[1]) + ENTRY_BYTES

    def _forget_name(self, file_id: int) -> None:
        path = self.names.pop(file_id, None)
        if path is not None:
            self.names_bytes -= len(path) + ENTRY_BYTES

    def _take(self, record, value, now: float) -> None:
        if record.file_id in self.closed_ids:
            return
        incoming = self.files.get(record.file_id)
        if record.flags & chunks.ABANDONED:
            if incoming is not None:
                self._discard(incoming)
            self._close_id(record.file_id)
            if record.flags & chunks.STOPPED:
                self._interrupted(os.fsdecode(record.path), "its sender stopped before sending it whole")
            return
        if incoming is None:
            incoming = self._start(record, value, now)
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
            if record.offset == incoming.hashed_to:  # in order: hashed now (a large chunk while it is written)
                if len(value) >= HASH_APART_BYTES or self.hashes_pending:  # one worker: updates stay in order
                    self.hashes_pending.append(self.hashing.submit(incoming.hasher.update, value))
                else:
                    incoming.hasher.update(value)
                incoming.hashed_to = end
            try:
                self._write_at(incoming.descriptor, value, record.offset)
            except OSError as error:
                self._give_up(incoming, "write_failed", f"cannot write it: {error.strerror}")
                return
            incoming.received += add_range(incoming.ranges, record.offset, end)
        if incoming.received == incoming.size and incoming.digest is not None:
            self._finish(incoming)

    @staticmethod
    def _write_at(descriptor: int, value, offset: int) -> None:
        """All of value at offset; a short write (a disk filling up) goes on until it fails."""
        view = memoryview(value)
        while view:
            written = os.pwrite(descriptor, view, offset)
            if written <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view, offset = view[written:], offset + written

    def _interrupted(self, name: str, why: str) -> None:
        self.files_interrupted += 1
        log.warning(f"link {self.link_name}: dropped the partial {name!r}: {why}",
                    extra={"fields": {"link": self.link_name, "file": name}})

    def _start(self, record, value, now: float) -> Incoming | None:
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
            if record.offset or record.size > len(value):
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
        if self.delivered_digests.get(record.path) == record.digest or any(
                finished.components == components and finished.digest == record.digest for finished in self.finishing):
            return True
        try:
            parent = self._folder(components, create=False)
            status = os.stat(components[-1], dir_fd=parent, follow_symlinks=False)
        except (Refused, OSError):
            return False
        return stat.S_ISREG(status.st_mode) and (status.st_size, status.st_mtime_ns) == (record.size,
                                                                                          record.mtime_ns)

    # ---- finishing ----

    def _wait_for_hashes(self) -> None:
        """The values hashed apart are views into the frame being written: done before write() returns."""
        for pending in self.hashes_pending:
            pending.result()
        self.hashes_pending.clear()

    def _finish(self, incoming: Incoming) -> None:
        self._wait_for_hashes()
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
        except OSError as error:
            self._give_up(incoming, "write_failed", f"cannot finish it: {error.strerror}")
            return
        del self.files[incoming.file_id]
        self._close_id(incoming.file_id)
        self.finishing.append(incoming)
        if not self.config.fsync or len(self.finishing) >= MAX_FINISHING:
            self._place_finished()

    def _place_finished(self) -> None:
        """Renames the files finished in this write() into place: with fsync, after one sync of the target's
        filesystem for all of them (syncfs; fsync of each where the C library lacks it), so that a power cut
        never leaves a file under its name whose bytes did not reach the disk."""
        if self.config.fsync and self.finishing:
            try:
                if _SYNCFS is None or _SYNCFS(self.partial) != 0:
                    for incoming in self.finishing:
                        os.fsync(incoming.descriptor)
            except OSError as error:
                for incoming in self.finishing:
                    self._give_up(incoming, "write_failed", f"cannot sync it to disk: {error.strerror}")
                self.finishing.clear()
                return
        finished, self.finishing = self.finishing, []
        for incoming in finished:
            self._place_one(incoming)

    def _place_one(self, incoming: Incoming) -> None:
        try:
            parent = self._folder(incoming.components, create=True)
        except Refused as refusal:
            self._refuse_open(incoming, refusal)
            return
        except OSError as error:
            self._give_up(incoming, "write_failed", f"cannot make its folder: {error.strerror}")
            return
        try:
            placed = self._place(incoming, parent)
        except OSError as error:
            self._give_up(incoming, "write_failed", f"cannot rename it into place: {error.strerror}")
            return
        self.folders_renamed_in.add(parent)
        if placed is None:
            self._give_up(incoming, "exists", 'a file of its name exists (existing = "refuse"), or a folder does')
            return
        os.close(incoming.descriptor)
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
        """Renames the finished temporary file into place in one step; the name it got, or None if refused (a
        folder of its name, or a file and existing = "refuse")."""
        base = incoming.components[-1]
        if self.config.existing == "overwrite":
            try:
                os.replace(incoming.temporary, base, src_dir_fd=self.partial, dst_dir_fd=parent)
            except (IsADirectoryError, FileExistsError, NotADirectoryError):
                return None
            except OSError as error:
                if error.errno == errno.ENOTEMPTY:
                    return None
                raise
            return incoming.name
        stem, dot, extension = base.partition(".") if not base.startswith(".") else (base, "", "")
        for number in range(0, 1000 if self.config.existing == "keep_both" else 1):
            candidate = base if number == 0 else f"{stem}.{number}{dot}{extension}"
            if len(os.fsencode(candidate)) > 255:
                return None
            if rename_no_replace(incoming.temporary, self.partial, candidate, parent):
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
        ended = self.run_ended_at is not None and now - self.run_ended_at >= reorder
        for incoming in list(self.files.values()):
            if ended:
                self._give_up(incoming, "incomplete", "the rest of it never arrived before its sender finished")
                continue
            if self.max_sequence > incoming.last_sequence + incoming.spread:
                if incoming.overtaken_at is None:
                    incoming.overtaken_at = now
                elif now - incoming.overtaken_at >= reorder:
                    self._give_up(incoming, "incomplete", "the rest of it never arrived")
                    continue
            if now - incoming.last_time >= self.config.incomplete_timeout:
                self._give_up(incoming, "incomplete", f"nothing more of it came in "
                                                      f"{self.config.incomplete_timeout:g} s")
        self._report_unseen(now)

    def _report_unseen(self, now: float, everything: bool = False) -> None:
        """Reports the files of which nothing came: by name where a manifest named them, else by id, a run of
        consecutive ids in one line (a forged jump of ids must not make a line per id)."""
        reorder = self.config._reorder_seconds
        nameless = []
        for file_id, noticed in list(self.unseen.items()):
            named = file_id in self.names
            waited = now - noticed
            if not everything and (waited < reorder or not named and waited < reorder + NAME_WAIT_SECONDS):
                continue
            del self.unseen[file_id]
            self.quarantined["incomplete"] += 1
            if named:
                self._report(os.fsdecode(self.names[file_id]), "incomplete", "nothing of it arrived", [])
            else:
                nameless.append(file_id)
        nameless.sort()
        index = 0
        while index < len(nameless):
            first = last = nameless[index]
            index += 1
            while index < len(nameless) and nameless[index] == last + 1:
                last = nameless[index]
                index += 1
            count = last - first + 1
            self._report(f"#{first}" if count == 1 else f"#{first}-#{last}", "incomplete",
                         f"nothing of {'this file' if count == 1 else f'these {count} files'} arrived, not even a "
                         "name; the ingress's debug log names the files it sends by id", [])

    def _give_up(self, incoming: Incoming, reason: str, detail: str) -> None:
        missing = missing_ranges(incoming.ranges, incoming.size) if reason == "incomplete" else []
        self.quarantined[reason] += 1
        kept = None
        if self.quarantine is not None:
            kept = self._to_quarantine(incoming)
        self._discard(incoming, keep=kept is not None)
        self._report(incoming.name, reason, detail, missing, kept)

    def _to_quarantine(self, incoming: Incoming) -> str | None:
        """Moves the temporary file into quarantine as ID-NAME (ID-NAME.TOKEN if that is taken: file ids start
        again with every source run), never replacing an earlier one."""
        base = os.fsencode(f"{incoming.file_id}-{incoming.components[-1]}")[:200].decode("utf-8", "ignore")
        try:
            for candidate in (base, f"{base}.{secrets.token_hex(4)}", f"{base}.{secrets.token_hex(8)}"):
                if rename_no_replace(incoming.temporary, self.partial, candidate, self.quarantine):
                    return os.path.join(self.config.quarantine_directory, candidate)
            raise OSError(errno.EEXIST, "names taken")
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
        self._forget_name(file_id)
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
        what = f"file {name!r}" if name is not None else "a record (no file named)"
        log.error(f"link {self.link_name}: {what} not delivered ({reason}): {detail}"
                  f"{f'; bytes missing: {text}' if missing else ''}{where}", extra={"fields": fields})
        if self.report is not None:
            try:
                self.report.write(json.dumps({"time": time.time(), **fields}) + "\n")
                self.report.flush()
            except OSError as error:
                log.error(f"link {self.link_name}: cannot write report_file: {error.strerror}")

    def close(self) -> None:
        for incoming in list(self.files.values()):
            self._give_up(incoming, "incomplete", "the link stopped before it was whole")
        self._report_unseen(time.monotonic(), everything=True)
        for descriptor in (self.partial, self.root, self.quarantine):
            if descriptor is not None:
                os.close(descriptor)
        if self.report is not None:
            self.report.close()
        self.hashing.shutdown()

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
