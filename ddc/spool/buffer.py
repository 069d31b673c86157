"""The egress's frame buffer with the disk spool behind it (ddc/spool/__init__.py says why and how)."""

import logging
import threading

from ddc.spool.disk import ENTRY, DiskSpool, LogPosition
from ddc.stage_buffer import EVERYTHING, StageBuffer

log = logging.getLogger("ddc.spool")


class SpooledBuffer:
    """The egress's frame buffer with a disk spool behind it: a FrameBuffer, as StageBuffer is.

    As a write-ahead log, every frame is appended to the spool and, while the sink keeps up, also kept in memory;
    once memory refuses one, the sink reads the log from that frame on until it has caught up."""

    def __init__(self, memory: StageBuffer, spool: DiskSpool, link_name: str, records_in, write_ahead=False):
        self.memory = memory
        self.spool = spool
        self.link_name = link_name
        self.records_in_item = records_in
        self.write_ahead = write_ahead
        self._lock = threading.Lock()
        self._closed = False
        self._unsettled = 0
        self.frames_spooled = 0
        self.frames_unspooled = 0
        self.frames_unlogged = 0
        self.records_dropped = 0
        self.bytes_dropped = 0
        # As a write-ahead log: where the sink reads the log from while memory does not hold the next frame, and
        # the newest log position handed to the sink.
        self._log_cursor = spool.first_unreleased() if write_ahead else None
        self._handed_out: LogPosition | None = None
        self._skipped_after = None  # (the position handed out before a trailing corrupt entry, the entry's)
        self._spooling = spool.frames > 0
        self._reported_full = False
        self._reported_unlogged = False
        if self._spooling:
            log.warning(f"link {link_name}: {spool.frames} frames left in the spool at {spool.directory} are "
                        "delivered first", extra={"fields": {"link": link_name, "frames": spool.frames}})

    @property
    def capacity_bytes(self) -> int:
        return self.memory.capacity_bytes

    def put_many(self, frames) -> int:
        with self._lock:
            if self.write_ahead:
                return self._log_many(frames)
            start = 0 if self.spool.frames else self.memory.put_many(frames, timeout=0)
            accepted = start + self._append_or_drop(frames[start:])
            if accepted > start:
                self._announce(True)
            return accepted

    def _append(self, frame) -> tuple[LogPosition | None, str | None]:
        """Appends a frame to the spool: its position, or None and why (full, or it cannot be written)."""
        if not self.spool.has_room(len(frame)):
            return None, "is full"
        try:
            position = self.spool.append(frame, frame.frame_id)
        except OSError as error:
            return None, f"cannot be written ({error.strerror or error})"
        self.frames_spooled += 1
        return position, None

    def _append_or_drop(self, frames) -> int:
        """Appends frames to the spool, dropping (counted) those it cannot take; returns how many it took."""
        taken = 0
        for frame in frames:
            position, why = self._append(frame)
            if position is None:
                self._drop(frame, why)
            else:
                taken += 1
        return taken

    def _log_many(self, frames) -> int:
        """Every frame goes to the log first, then to memory unless the sink is reading the log. A frame the log
        cannot take still goes to memory when it can, unlogged: delivered, unless the egress dies first."""
        if self._log_cursor is not None:
            return self._append_or_drop(frames)
        why = None
        for frame in frames:
            frame.log_position, reason = self._append(frame)
            why = reason or why
        accepted = self.memory.put_many(frames, timeout=0)
        for frame in frames[:accepted] if why else ():
            if frame.log_position is None:
                self._unlogged(why)
        for frame in frames[accepted:]:
            if frame.log_position is None:
                self._drop(frame, why)
            elif self._log_cursor is None:
                self._log_cursor = frame.log_position
                self._announce(True)
        return accepted + sum(frame.log_position is not None for frame in frames[accepted:])

    def _unlogged(self, why: str) -> None:
        self.frames_unlogged += 1
        if not self._reported_unlogged:
            self._reported_unlogged = True
            log.error(f"link {self.link_name}: write-ahead log at {self.spool.directory} {why} (its limit is "
                      f"{self.spool.max_bytes} bytes); frames go to the sink from memory only, and are lost if the "
                      "egress dies before they are delivered (spool_frames_unlogged)",
                      extra={"fields": {"link": self.link_name, "max_bytes": self.spool.max_bytes}})

    def _drop(self, frame, why: str) -> None:
        self.records_dropped += self.records_in_item(frame)
        self.bytes_dropped += len(frame)
        if not self._reported_full:
            self._reported_full = True
            log.error(f"link {self.link_name}: spool at {self.spool.directory} {why} (its limit is "
                      f"{self.spool.max_bytes} bytes); dropping the newest frames until it drains "
                      "(spool_records_dropped); their records are reported missing",
                      extra={"fields": {"link": self.link_name, "max_bytes": self.spool.max_bytes}})

    def _announce(self, spooling: bool) -> None:
        if spooling == self._spooling:
            return
        self._spooling = spooling
        fields = {"link": self.link_name, "spool": str(self.spool.directory)}
        if spooling:
            log.warning(f"link {self.link_name}: the sink is not keeping up; spooling frames to "
                        f"{self.spool.directory}", extra={"fields": fields})
        else:
            self._reported_full = self._reported_unlogged = False
            log.warning(f"link {self.link_name}: spool drained; frames go straight to the sink again",
                        extra={"fields": fields})

    def get_many(self, max_bytes: int, timeout: float) -> list:
        """Memory first (it holds only frames older than the spool's), then the spool; once closed, memory
        only: what is left in the spool stays there for the next start."""
        if self.write_ahead:
            return self._get_logged(max_bytes, timeout)
        frames = self.memory.get_many(max_bytes, 0 if self.spool.frames and not self._closed else timeout)
        if frames or self._closed:
            return frames
        with self._lock:
            frames = self.spool.read(max_bytes)
            self._unsettled += len(frames)
            self.frames_unspooled += len(frames)
            return frames

    def _get_logged(self, max_bytes: int, timeout: float) -> list:
        """Memory and the log are looked at under the lock that put_many() holds, so a frame memory refused meanwhile
        cannot be read from the log before the older frames still in memory."""
        with self._lock:
            frames = self.memory.get_many(max_bytes, 0)
            if not frames and self._log_cursor is not None and not self._closed:
                frames, self._log_cursor, skipped = self.spool.read_at(self._log_cursor, max_bytes)
                self.frames_unspooled += len(frames)
                if skipped is not None:
                    self._skipped_after = (frames[-1].log_position if frames else self._handed_out, skipped)
                if self._log_cursor is None:
                    self._announce(False)
            reading = self._log_cursor is not None
        if not frames and not reading:
            # Waiting on memory alone: while the log is not being read, new frames go to memory first.
            frames = self.memory.get_many(max_bytes, timeout)
        self._hand_out(frames)
        return frames

    def _hand_out(self, frames: list) -> None:
        if self.write_ahead:
            for frame in reversed(frames):
                if frame.log_position is not None:
                    self._handed_out = frame.log_position
                    break

    def settle(self, delivered=EVERYTHING) -> None:
        """The sink has delivered what it took, or as a write-ahead log, every frame up to the one with log
        position `delivered` (None: nothing new): the spool may forget it."""
        with self._lock:
            if self.write_ahead:
                position = self._handed_out if delivered is EVERYTHING else delivered
                if position is not None:
                    self.spool.release(position)
                if self._skipped_after is not None and position == self._skipped_after[0]:
                    self.spool.release(self._skipped_after[1])  # a corrupt entry after the last frame delivered
                    self._skipped_after = None
                if not self.spool.frames and self._log_cursor is not None:
                    self._log_cursor = None  # all released, so all read: its files are gone
                    self._announce(False)
            elif self._unsettled:
                self._unsettled = 0
                self.spool.settle()
                if not self.spool.frames:
                    self._announce(False)

    def close(self) -> None:
        self._closed = True
        self.memory.close()

    def release(self) -> None:
        """After the sink stopped (or its stop timed out): frames still in memory go to the spool, so a
        destination that is down at shutdown loses nothing. A write-ahead log holds them already (unless it
        could not take them); it stays open for a last settle() once the sink has closed."""
        left = self.memory.get_many(1 << 62, 0)
        with self._lock:
            if self.write_ahead:
                for frame in left:
                    if frame.log_position is None:
                        self._drop(frame, "could not take it")
                return
            kept, kept_bytes = [], 0
            for frame in left:
                if self.spool.has_room(kept_bytes + len(frame)):
                    kept.append(frame)
                    kept_bytes += ENTRY.size + len(frame)
                else:
                    self._drop(frame, "is full")
            try:
                self.spool.save_before_stop(kept)
                self.frames_spooled += len(kept)
            except OSError as error:
                for frame in kept:
                    self._drop(frame, f"cannot be written ({error.strerror or error})")
                self.spool.close()
        if left:
            log.warning(f"link {self.link_name}: {len(left)} frames not yet delivered were saved to the spool; "
                        "they are delivered first at the next start", extra={"fields": {"link": self.link_name}})

    def finish(self) -> None:
        """Closes the spool's files; what it holds stays for the next start."""
        with self._lock:
            self.spool.close()

    @property
    def drained(self) -> bool:
        return self.memory.drained

    def counters(self) -> dict:
        counters = self.memory.counters()
        with self._lock:
            counters.update({
                "spool_frames_in": self.frames_spooled, "spool_frames_out": self.frames_unspooled,
                "spool_frames": self.spool.frames, "spool_bytes": self.spool.disk_bytes,
                "spool_records_dropped": self.records_dropped, "spool_bytes_dropped": self.bytes_dropped,
                "spool_frames_corrupt": self.spool.frames_corrupt, "spool_frames_unlogged": self.frames_unlogged,
            })
        return counters
