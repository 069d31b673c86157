"""The directory source: sends each file of a folder once it is complete, in chunks, with its SHA-256.

A file is complete when its writer closed it or moved it in (inotify), or when it has not changed for
`stable_after` (a periodic scan, which also runs at start-up and whenever inotify cannot keep up). Files are
sent `parallel_files` at a time, one chunk each in turn, so a large file does not hold the small ones up;
`priority` patterns choose which go first. Chunks are read straight into the link's ring (one copy, the
kernel's); a file's last chunk is read first, hashed, and then put, since its metadata carries the digest.

A file is sent when the link has sent its last chunk (acknowledge, on the transport's thread, only notes it): then
the source's thread records it in the ledger and leaves, moves or deletes it, if it is still the file that was
read. A file that changes while it is read is abandoned (the egress drops what it got, quietly) and
sent again once stable. inotify comes from inotify_simple, a thin, maintained wrapper of the system calls.
"""

import collections
import fnmatch
import hashlib
import heapq
import logging
import os
import re
import secrets
import shutil
import stat
import threading
import time
from dataclasses import dataclass, field

from ddc.handlers.base import Source
from ddc.handlers.directory import chunks
from ddc.handlers.directory.ledger import SentLedger
from ddc.handlers.directory.metrics import SKIP_REASONS

log = logging.getLogger("ddc.handlers.directory")

POSITION_EVERY_SECONDS = 1.0
MANIFEST_EVERY_SECONDS = 1.0  # while files are sent; when none are, as soon as the last manifest has left
MANIFEST_IDLE_SECONDS = 0.01
MANIFEST_BATCH = 200  # files started that make a manifest due at once
WAIT_SECONDS = 0.2
PROMOTE_EVERY_SECONDS = 0.1  # how often files waiting to be stable are looked at again


@dataclass
class Root:
    directory: str  # absolute
    prefix: str  # what the names of its files start with on the egress ("" or "name/")
    only: str | None = None  # a single file of the directory


@dataclass
class Transfer:
    name: str
    full_path: str
    copy: int = 0
    digest: bytes | None = None
    descriptor: int = -1
    size: int = 0
    mtime_ns: int = 0
    mode: int = 0
    file_id: int = 0
    offset: int = 0
    hasher: object = None
    encoded: bytes = b""
    identity: tuple = ()  # device, inode, size and modification time when it was opened


@dataclass(order=True)
class Copy:
    due: float
    number: int
    name: str = field(compare=False)
    full_path: str = field(compare=False)
    digest: bytes = field(compare=False)
    copy: int = field(compare=False)


class DirectorySource(Source):
    default_when_full = "block"
    can_wait = True

    def open(self) -> None:
        config = self.config
        self.roots = [self._root(path) for path in config.paths]
        self._check_roots()
        self.ignore = re.compile("|".join(f"(?:{fnmatch.translate(pattern)})" for pattern in config.ignore)
                                 or "(?!)")
        self.run_id = secrets.randbits(64)
        self.sent_directory = os.path.abspath(config.sent_directory) if config.sent_directory else None
        self.ledger = SentLedger(config.state_directory, self.link_name)
        if config.state_directory is None and not config.once and config.after_sent == "leave":
            log.warning(f"link {self.link_name}: no state_directory: after a restart every file of the folder is "
                        "sent again", extra={"fields": {"link": self.link_name}})
        self.spread = 2 * config.parallel_files + 4
        self.named: collections.deque = collections.deque()  # [file id, path, manifests left] of files started
        self.next_manifest = 0.0
        self.manifest_put = 0  # records put when the last manifest was
        self.sequence = 0
        self.next_file_id = 1
        self.waiting: dict[str, list] = {}  # name → [full path, closed by its writer, first seen]
        self.queue: list = []  # (priority, order, name, full path, first seen)
        self.queued: set[str] = set()
        self.in_flight: dict[str, bool] = {}  # name → changed since it was opened (an event came meanwhile)
        self.acknowledged_files: collections.deque = collections.deque()  # transfers sent, for the source thread
        self.next_promote = 0.0
        self.order = 0
        self.active: collections.deque[Transfer] = collections.deque()
        self.copies: list[Copy] = []
        self.completions: collections.deque = collections.deque()  # (records put at its last chunk, transfer)
        self.files_interrupted = 0
        self.acknowledged = 0
        self._ack_lock = threading.Lock()
        self.last_put = 0.0
        self.watch = None
        self.watches: dict[int, tuple[Root, str]] = {}
        self.next_scan = 0.0
        self.files_sent = self.bytes_sent = self.copies_sent = self.files_abandoned = 0
        self.files_found = self.bytes_found = 0
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)
        self.skipped_names: dict[str, int] = {}  # links and devices found, by inode
        self.ledger.open(self._still_there)
        self._watch_folders()

    def _root(self, path: str) -> Root:
        absolute = os.path.abspath(path)
        try:
            status = os.stat(absolute)
        except OSError as error:
            raise OSError(f"cannot read source path {path!r}: {error.strerror}") from None
        if isinstance(self.config.path, list):
            if stat.S_ISDIR(status.st_mode):
                return Root(absolute, os.path.basename(absolute.rstrip("/")) + "/")
            return Root(os.path.dirname(absolute), "", os.path.basename(absolute))
        if not stat.S_ISDIR(status.st_mode):
            raise OSError(f"source path {path!r} is not a folder; a directory link watches a folder")
        return Root(absolute, "")

    def _check_roots(self) -> None:
        """Two paths under one name would have one overwrite the other on the egress."""
        names = {}
        for root, path in zip(self.roots, self.config.paths):
            name = root.prefix or root.only or ""
            if name in ("", "/") and isinstance(self.config.path, list):
                raise OSError(f"cannot send {path!r} under a name of its own; send what is in it instead")
            if name in names:
                raise OSError(f"{names[name]!r} and {path!r} would both arrive as {name.rstrip('/')!r}; send them "
                              "separately, or rename one")
            names[name] = path

    def _still_there(self, name: str, size: int, mtime_ns: int) -> bool:
        full_path = self._full_path(name)
        try:
            status = os.lstat(full_path) if full_path else None
        except OSError:
            return False
        if status is None or (status.st_size, status.st_mtime_ns) != (size, mtime_ns):
            return False
        if self.config.after_sent != "leave":  # sent, but the crash came before the move or delete: do it now
            self._after_sent(name, full_path)
        return True

    def _full_path(self, name: str) -> str | None:
        for root in self.roots:
            if name.startswith(root.prefix):
                relative = name[len(root.prefix):]
                if root.only is None or relative == root.only:
                    return os.path.join(root.directory, relative)
        return None

    # ---- finding files ----

    def _watch_folders(self) -> None:
        if self.config.once:
            return
        try:
            from inotify_simple import INotify
            self.watch = INotify()
        except (ImportError, OSError) as error:
            log.warning(f"link {self.link_name}: no inotify ({error}); finding files by scanning every "
                        f"{self.config.scan_interval:g} s", extra={"fields": {"link": self.link_name}})
            return
        for root in self.roots:
            self._watch_tree(root, "")

    def _watch_tree(self, root: Root, relative: str) -> None:
        from inotify_simple import flags
        mask = (flags.CLOSE_WRITE | flags.MOVED_TO | flags.CREATE | flags.MODIFY | flags.ATTRIB |
                flags.DELETE_SELF | flags.ONLYDIR | flags.DONT_FOLLOW)
        pending = [relative]
        while pending and self.watch is not None:
            folder = pending.pop()
            try:
                descriptor = self.watch.add_watch(os.path.join(root.directory, folder), mask)
            except OSError as error:
                if error.errno == 28:  # ENOSPC: fs.inotify.max_user_watches reached
                    log.warning(f"link {self.link_name}: inotify's watch limit is reached "
                                "(sysctl fs.inotify.max_user_watches); finding files by scanning every "
                                f"{self.config.scan_interval:g} s", extra={"fields": {"link": self.link_name}})
                    self.watch.close()
                    self.watch = None
                continue
            self.watches[descriptor] = (root, folder)
            try:
                with os.scandir(os.path.join(root.directory, folder)) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False) and not self._ignored(entry.name, folder):
                            if os.path.join(root.directory, folder, entry.name) != self.sent_directory:
                                pending.append(os.path.join(folder, entry.name))
            except OSError:
                pass

    def _ignored(self, base: str, relative: str) -> bool:
        return bool(self.ignore.match(base) or relative and self.ignore.match(os.path.join(relative, base)))

    def _scan(self) -> None:
        """Every file of the roots not sent yet becomes a candidate."""
        for root in self.roots:
            if root.only is not None:
                self._consider(root, "", root.only, closed=False)
                continue
            pending = [""]
            while pending:
                folder = pending.pop()
                try:
                    with os.scandir(os.path.join(root.directory, folder)) as entries:
                        listed = sorted(entries, key=lambda entry: entry.name)
                except OSError as error:
                    log.warning(f"link {self.link_name}: cannot list {os.path.join(root.directory, folder)!r}: "
                                f"{error.strerror}", extra={"fields": {"link": self.link_name}})
                    continue
                for entry in listed:
                    if self._ignored(entry.name, folder):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        if entry.path != self.sent_directory:
                            pending.append(os.path.join(folder, entry.name))
                    else:
                        self._consider(root, folder, entry.name, closed=False)
        self.next_scan = time.monotonic() + self.config.scan_interval

    def _consider(self, root: Root, folder: str, base: str, closed: bool) -> None:
        name = root.prefix + os.path.join(folder, base)
        if name in self.queued:
            return
        if name in self.in_flight:
            self.in_flight[name] = True
            return
        entry = self.waiting.get(name)
        if entry is None:
            if len(self.waiting) + len(self.queued) >= self.config.max_queued_files:
                return  # found again by a later scan, once the queue has room
            self.waiting[name] = [os.path.join(root.directory, folder, base), closed, time.monotonic()]
        else:
            entry[1] = closed
        if closed:
            self.next_promote = 0.0

    def _read_events(self, timeout: float) -> None:
        if self.watch is None:
            if timeout:
                time.sleep(timeout)
            return
        from inotify_simple import flags
        for event in self.watch.read(timeout=int(timeout * 1000)):
            if event.mask & flags.Q_OVERFLOW:
                self.next_scan = 0.0
                continue
            watched = self.watches.get(event.wd)
            if watched is None or not event.name:
                if event.mask & flags.IGNORED:
                    self.watches.pop(event.wd, None)
                continue
            root, folder = watched
            if root.only is not None and event.name != root.only or self._ignored(event.name, folder):
                continue
            if event.mask & flags.ISDIR:
                if event.mask & (flags.CREATE | flags.MOVED_TO):
                    full_path = os.path.join(root.directory, folder, event.name)
                    if full_path != self.sent_directory:
                        self._watch_tree(root, os.path.join(folder, event.name))
                        self._scan_folder(root, os.path.join(folder, event.name))
                continue
            self._consider(root, folder, event.name, bool(event.mask & (flags.CLOSE_WRITE | flags.MOVED_TO)))

    def _scan_folder(self, root: Root, folder: str) -> None:
        """A folder moved in, or made and filled before its watch was added: its files, now."""
        for directory, folders, files in os.walk(os.path.join(root.directory, folder)):
            relative = os.path.relpath(directory, root.directory)
            folders[:] = [name for name in folders if not self._ignored(name, relative)]
            for base in files:
                if not self._ignored(base, relative):
                    self._consider(root, relative, base, closed=False)

    def _promote_ready(self, now: float) -> None:
        """Candidates that are complete join the queue; those gone or not regular files are dropped."""
        if now < self.next_promote or not self.waiting:
            return
        self.next_promote = now + PROMOTE_EVERY_SECONDS
        now_wall = time.time()
        for name, (full_path, closed, first_seen) in list(self.waiting.items()):
            try:
                status = os.lstat(full_path)
            except OSError:
                del self.waiting[name]
                continue
            if not stat.S_ISREG(status.st_mode):
                del self.waiting[name]
                if self.skipped_names.get(name) != status.st_ino:  # told once, not at every scan
                    if len(self.skipped_names) < self.config.max_queued_files:
                        self.skipped_names[name] = status.st_ino
                    self._skip(name, "symlink" if stat.S_ISLNK(status.st_mode) else "special")
                continue
            if self.ledger.was_sent(name, status.st_size, status.st_mtime_ns):
                del self.waiting[name]
                continue
            if not (self.config.once or closed or now_wall - status.st_mtime >= self.config.stable_after):
                continue
            del self.waiting[name]
            self.queued.add(name)
            self.order += 1
            heapq.heappush(self.queue, (self._priority(name), self.order, name, full_path, first_seen))
            self.files_found += 1
            self.bytes_found += status.st_size

    def _priority(self, name: str) -> int:
        for index, pattern in enumerate(self.config.priority):
            if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(os.path.basename(name), pattern):
                return index
        return len(self.config.priority)

    def _skip(self, name: str, reason: str) -> None:
        self.skipped[reason] += 1
        log.warning(f"link {self.link_name}: not sending {name!r}: " + {
            "symlink": "a symbolic link (only regular files are sent)",
            "special": "not a regular file (a device, pipe or socket)",
            "unreadable": "it cannot be opened",
            "name": "its name is longer than a path may be"}[reason],
            extra={"fields": {"link": self.link_name, "file": name, "reason": reason}})

    # ---- sending ----

    def run(self, output, stopping) -> None:
        self._scan()
        while not stopping.is_set():
            now = time.monotonic()
            if now >= self.next_scan:
                self._scan()
            self._settle_acknowledged()
            self._promote_ready(now)
            self._start_transfers(now)
            busy = bool(self.active)
            # A manifest waits until the last one has left, so that no two share a frame (and a loss).
            if self.named and self.acknowledged >= self.manifest_put and (
                    not busy or now >= self.next_manifest or len(self.named) >= MANIFEST_BATCH):
                self._send_manifest(output, stopping)
                self.next_manifest = now + MANIFEST_EVERY_SECONDS
            if busy:
                transfer = self.active.popleft()
                if self._send_chunk(output, transfer, stopping):
                    self.active.append(transfer)
                self._read_events(0)
                continue
            if self.config.once and not (self.waiting or self.queue or self.copies or self.named or
                                         self.completions or self.acknowledged_files):
                break
            if now - self.last_put >= POSITION_EVERY_SECONDS:
                self._put(output, [(chunks.position(self.run_id, self.sequence, self.spread,
                                                    self.next_file_id - 1), b"")], stopping)
            waiting_on_link = self.named or self.completions or self.queue
            self._read_events(MANIFEST_IDLE_SECONDS if waiting_on_link else
                              PROMOTE_EVERY_SECONDS if self.waiting else WAIT_SECONDS)
        for transfer in self.active:
            self._abandon(output, transfer, None)
        self.active.clear()
        end = chunks.position(self.run_id, self.sequence, self.spread, self.next_file_id - 1, chunks.END)
        if output.put_many([(end, b"")], WAIT_SECONDS):  # the egress gives up what did not come whole
            self._count_put()

    def _start_transfers(self, now: float) -> None:
        while len(self.active) < self.config.parallel_files:
            if self.copies and self.copies[0].due <= now:
                due = heapq.heappop(self.copies)
                transfer = Transfer(due.name, due.full_path, due.copy, due.digest)
            elif self.queue:
                _, _, name, full_path, _ = heapq.heappop(self.queue)
                self.queued.discard(name)
                transfer = Transfer(name, full_path)
            else:
                return
            if self._open(transfer):
                if transfer.copy == 0:
                    self.in_flight[transfer.name] = False
                self.active.append(transfer)

    def _open(self, transfer: Transfer) -> bool:
        try:
            descriptor = os.open(transfer.full_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as error:
            if error.errno not in (2, 20):  # gone since it was found: nothing to send
                self._skip(transfer.name, "symlink" if error.errno == 40 else "unreadable")
            return False
        status = os.fstat(descriptor)
        encoded = os.fsencode(transfer.name)
        if not stat.S_ISREG(status.st_mode) or len(encoded) > chunks.MAX_PATH_BYTES:
            os.close(descriptor)
            self._skip(transfer.name, "special" if not stat.S_ISREG(status.st_mode) else "name")
            return False
        transfer.descriptor = descriptor
        transfer.size, transfer.mtime_ns = status.st_size, status.st_mtime_ns
        transfer.identity = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
        transfer.mode = stat.S_IMODE(status.st_mode)
        transfer.file_id = self.next_file_id
        self.next_file_id += 1
        transfer.hasher = hashlib.sha256()
        transfer.encoded = encoded
        self.named.append([transfer.file_id, encoded, chunks.MANIFEST_COPIES])
        return True

    def _send_manifest(self, output, stopping) -> None:
        """Names the files started lately, each in MANIFEST_COPIES manifests (chunks.py says why)."""
        entries, size = [], chunks.HEAD.size
        for entry in self.named:
            size += chunks.MANIFEST_ENTRY.size + len(entry[1])
            if size > chunks.MAX_MANIFEST_BYTES:
                break
            entries.append(entry)
        manifest = chunks.manifest(self.run_id, self.sequence, self.spread, [entry[:2] for entry in entries])
        if self._put(output, [(manifest, b"")], stopping):
            self.manifest_put = self.sequence
            for entry in entries:
                entry[2] -= 1
            while self.named and self.named[0][2] <= 0:  # the oldest entries have the fewest manifests left
                self.named.popleft()

    def _metadata(self, transfer: Transfer, flags: int, digest: bytes | None = None) -> bytes:
        return chunks.chunk(self.run_id, self.sequence, self.spread, flags, transfer.copy, transfer.file_id,
                            transfer.offset, transfer.size, transfer.mtime_ns, transfer.mode, transfer.encoded,
                            digest if digest is not None else transfer.digest)

    def _send_chunk(self, output, transfer: Transfer, stopping) -> bool:
        """Sends the transfer's next chunk; False once the transfer is over (sent, abandoned or stopped)."""
        remaining = transfer.size - transfer.offset
        if remaining > self.config.chunk_size:
            metadata = self._metadata(transfer, 0)
            while (space := output.reserve(metadata, self.config.chunk_size, WAIT_SECONDS)) is None:
                if stopping.is_set():
                    self._abandon(output, transfer, None)
                    return False
            read = os.preadv(transfer.descriptor, [space], transfer.offset)
            if read != len(space):
                output.commit(0)
                self._abandon(output, transfer, "it became shorter while it was read")
                return False
            transfer.hasher.update(space)
            output.commit(read)
            self._count_put()
            transfer.offset += read
            return True
        data = os.pread(transfer.descriptor, remaining + 1, transfer.offset)
        status = os.fstat(transfer.descriptor)
        if len(data) != remaining or (status.st_size, status.st_mtime_ns) != (transfer.size, transfer.mtime_ns):
            self._abandon(output, transfer, "it changed while it was read")
            return False
        transfer.hasher.update(data)
        digest = transfer.hasher.digest()
        if transfer.digest is not None and digest != transfer.digest:
            self._abandon(output, transfer, "its content is not what was sent first")
            return False
        transfer.digest = digest
        if not self._put(output, [(self._metadata(transfer, chunks.LAST, digest), data)], stopping):
            self._abandon(output, transfer, None)
            return False
        transfer.offset = transfer.size
        os.close(transfer.descriptor)
        transfer.descriptor = -1
        with self._ack_lock:
            self.completions.append((self.sequence, transfer))
        return False

    def _put(self, output, records, stopping) -> bool:
        while not output.put_many(records, WAIT_SECONDS):
            if stopping.is_set():
                return False
        self._count_put()
        return True

    def _count_put(self) -> None:
        self.sequence += 1
        self.last_put = time.monotonic()

    def _abandon(self, output, transfer: Transfer, reason: str | None) -> None:
        """Tells the egress to drop what it got of the file (reason None: the source is stopping); a file that
        changed is found and sent again once stable."""
        if transfer.descriptor >= 0:
            os.close(transfer.descriptor)
            transfer.descriptor = -1
        flags = chunks.ABANDONED | (chunks.STOPPED if reason is None else 0)
        if output.put_many([(self._metadata(transfer, flags), b"")], WAIT_SECONDS):
            self._count_put()
        if transfer.copy == 0:
            self.in_flight.pop(transfer.name, None)
        if reason is None:
            self.files_interrupted += 1
            return
        self.files_abandoned += 1
        log.warning(f"link {self.link_name}: sending {transfer.name!r} again later: {reason}",
                    extra={"fields": {"link": self.link_name, "file": transfer.name}})
        if transfer.copy == 0:
            self.waiting.setdefault(transfer.name, [transfer.full_path, False, time.monotonic()])

    # ---- what was sent ----

    def acknowledge(self, count: int) -> None:
        """On the transport's thread: only notes which files are now sent; the source's thread acts on them."""
        with self._ack_lock:
            self.acknowledged += count
            while self.completions and self.completions[0][0] <= self.acknowledged:
                self.acknowledged_files.append(self.completions.popleft()[1])

    def _settle_acknowledged(self) -> None:
        while self.acknowledged_files:
            self._sent(self.acknowledged_files.popleft())

    def _sent(self, transfer: Transfer) -> None:
        if transfer.copy:
            self.copies_sent += 1
        else:
            self.files_sent += 1
            self.bytes_sent += transfer.size
            self.ledger.record(transfer.name, transfer.size, transfer.mtime_ns)
            if self.in_flight.pop(transfer.name, False):  # it changed since it was opened: look at it again
                self.waiting.setdefault(transfer.name, [transfer.full_path, False, time.monotonic()])
        log.debug(f"link {self.link_name}: sent {transfer.name!r}", extra={"fields": {
            "link": self.link_name, "file": transfer.name, "file_id": transfer.file_id, "bytes": transfer.size,
            "sha256": transfer.digest.hex(), "copy": transfer.copy}})
        if transfer.copy < self.config.resend:
            full_path = transfer.full_path
            if transfer.copy == 0 and self.config.after_sent == "move":
                full_path = self._after_sent(transfer.name, full_path, transfer.identity)
            heapq.heappush(self.copies, Copy(time.monotonic() + self.config.resend_delay, transfer.file_id,
                                             transfer.name, full_path, transfer.digest, transfer.copy + 1))
        elif self.config.resend == 0 or self.config.after_sent == "delete":
            self._after_sent(transfer.name, transfer.full_path, transfer.identity)

    def _after_sent(self, name: str, full_path: str, identity: tuple | None = None) -> str:
        """Leaves, moves or deletes a sent file, if it is still the one that was read (identity: its device,
        inode, size and modification time then); the path it is at now."""
        if self.config.after_sent == "leave":
            return full_path
        try:
            status = os.lstat(full_path)
            if identity and (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns) != identity:
                log.info(f"link {self.link_name}: {name!r} changed since it was sent; left in place, to be sent "
                         "again", extra={"fields": {"link": self.link_name, "file": name}})
                self.waiting.setdefault(name, [full_path, False, time.monotonic()])
                return full_path
            if self.config.after_sent == "delete":
                os.unlink(full_path)
                self.ledger.forget(name)
                return full_path
            target = os.path.join(self.sent_directory, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            try:
                os.rename(full_path, target)
            except OSError as error:
                if error.errno != 18:  # EXDEV: another filesystem, copied then removed
                    raise
                shutil.move(full_path, target)
            self.ledger.forget(name)
            return target
        except OSError as error:
            log.error(f"link {self.link_name}: sent {name!r} but cannot {self.config.after_sent} it: "
                      f"{error.strerror}", extra={"fields": {"link": self.link_name, "file": name}})
        return full_path

    @property
    def stops_link_at_end(self) -> bool:
        return self.config.once

    def close(self) -> None:
        """After the link's last acknowledgement: what it sent last is recorded, moved or deleted now."""
        self.acknowledge(0)
        self._settle_acknowledged()
        for transfer in self.active:
            if transfer.descriptor >= 0:
                os.close(transfer.descriptor)
        if self.watch is not None:
            self.watch.close()
        self.ledger.close()

    def coordinates(self, metadata: bytes) -> dict:
        try:
            record = chunks.read(metadata)
        except ValueError:
            return {}
        return {"file": os.fsdecode(record.path), "file_offset": record.offset} if record.kind == chunks.CHUNK else {}

    def progress(self) -> dict:
        """For `ddc send`'s display: what was found and sent, and the files on their way."""
        return {"files_total": self.files_found, "bytes_total": self.bytes_found if self.config.once else None,
                "files": self.files_sent, "bytes": self.bytes_sent,
                "active": [(transfer.name, transfer.offset, transfer.size) for transfer in list(self.active)]}

    def counters(self) -> dict:
        oldest = min((entry[4] for entry in self.queue), default=None)
        return {"directory_files_sent": self.files_sent, "directory_bytes_sent": self.bytes_sent,
                "directory_copies_sent": self.copies_sent, "directory_files_abandoned": self.files_abandoned,
                "directory_files_queued": len(self.queue) + len(self.waiting),
                "directory_oldest_queued_seconds": round(time.monotonic() - oldest, 3) if oldest else 0.0,
                **{f"directory_files_skipped_{reason}": count for reason, count in self.skipped.items()}}
