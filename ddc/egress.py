"""An egress link: datagrams → Cython receiver → frames → records → filters → sink.

Two threads: the receive thread only keeps the socket drained (the Cython
receiver does the per-datagram work without the GIL) and queues completed
frames; the sink thread decodes them into records and delivers them. Decoding on
the receive thread would let a burst of small records stall it until the kernel
drops datagrams. Between the two a bounded buffer of frames, which drops and
counts by default: blocking the receive thread would only move the loss into
the kernel, where it is harder to see. With a spool configured, what does not
fit in memory waits on disk instead (ddc/spool/).

The link is *up* while heartbeats arrive. It starts *waiting* for the first one;
a clean shutdown of the sender, or `alarm_after_missed_heartbeats` heartbeat
intervals (as the sender announced them) without one, make it *interrupted*,
logged once, until heartbeats return (*restored*).
"""

import logging
import threading
import time

from ddc._core import receiver as core_receiver
from ddc._core import wire
from ddc._core.receiver import LinkReceiver
from ddc._core.records import batch_record_count, batch_taken_in_ns, decode_batch
from ddc.compression import decompress, is_compressed
from ddc.crypto import link_keys
from ddc.filters import FilterChain
from ddc.handlers import build_handler
from ddc.link import Link
from ddc.session_state import SessionState
from ddc.spool import DiskSpool, SpooledBuffer
from ddc.stage_buffer import FrameBuffer, StageBuffer
from ddc.telemetry.catalogue import LATENCY_BUCKETS
from ddc.telemetry.histogram import Histogram
from ddc.transport.sockets import KernelDrops, open_bound

log = logging.getLogger("ddc.egress")

RECEIVE_POLL_MS = 100
# After a one-shot sender's shutdown: the quiet that ends the link, and the longest it waits for that quiet.
SHUTDOWN_QUIET_MS = 50
SHUTDOWN_LINGER_SECONDS = 1.0
# A stopping egress: the pause in data that ends its drain, and the longest drain (_receive_loop says why).
STOP_QUIET_SECONDS = 0.5
STOP_DRAIN_SECONDS = 5.0
SENDER_SHUT_DOWN = "sender shut down"
SINK_BATCH_BYTES = 1 << 20
DEFAULT_HEARTBEAT_SECONDS = 1.0

WAITING, UP, INTERRUPTED = "waiting", "up", "interrupted"


class EgressLink(Link):
    role = "egress"
    starts_first = True

    def __init__(self, name: str, config):
        super().__init__(name)
        self.config = config
        transport = config.transport
        self.receiver = LinkReceiver(transport.max_frame_size, transport.max_frames_in_flight,
                                     transport.max_bytes_in_flight, transport.frame_timeout,
                                     transport.session_takeover_after, transport.max_fec_bytes_in_flight)
        for key_id, key in link_keys(transport.key_configs):
            self.receiver.add_key(key, key_id)
        # Without keys anyone could write a forged session into the file: state is kept only for keyed links.
        self.session_state = SessionState(transport.state_directory if transport.key_configs else None, name,
                                          "egress")
        self.session_save_error: str | None = None
        self._sender_shut_down_at: float | None = None
        saved = self.session_state.load("session_id", optional=("highest_sequence", "highest_parity"))
        if saved:
            self.receiver.restore_session(saved["session_id"], saved.get("highest_sequence"),
                                          saved.get("highest_parity"))
        self.sink = build_handler(name, config.sink)
        # With a write-ahead log and a sink that confirms delivery later, frames are released as it confirms them.
        self._tracking = config.write_ahead and self.sink.confirms_later
        self.filters = FilterChain(name, config.filters, self.sink.coordinates, self.sink.placeholder,
                                   self.sink.describe)
        self._value_views = self.sink.takes_value_views and not self.filters.filters  # filters read values
        self._whole_batches = self.sink.takes_batches and not self.filters.filters
        # With a spool, frames that do not fit in memory go to disk, so memory must refuse, never drop.
        when_full = "block" if config.spool else (config.buffer.when_full or "drop")
        self.buffer: FrameBuffer = StageBuffer(config.buffer.size, when_full, records_in=batch_record_count)
        self.latency = Histogram(LATENCY_BUCKETS)
        self.records_received = 0
        self.frames_undecodable = 0
        self.kernel_drops = KernelDrops()
        self.peer: dict = {}
        self.peer_session_id: int | None = None
        self.last_heartbeat: float | None = None
        self.link_state = WAITING
        self._state_lock = threading.Lock()
        self._interrupted_by: str | None = None
        self._receive_lock = threading.Lock()
        self._socket = None

    def start(self) -> None:
        transport = self.config.transport
        if self._tracking:
            self.sink.track_deliveries()
        self.sink.open()
        if self.config.spool:
            spool = DiskSpool(self.config.spool.path, self.config.spool.max_size)
            self.buffer = SpooledBuffer(self.buffer, spool, self.name, batch_record_count, self.config.write_ahead)
        self._socket = open_bound(transport.listen, receive_buffer=transport.receive_buffer)
        self.kernel_drops = KernelDrops(self._socket)
        keys = [key.id for key in transport.key_configs]
        log.info(f"link {self.name}: listening on {transport.listen}, delivering to {self.config.sink.type} sink, "
                 + (f"accepting only datagrams sealed with key {' or '.join(map(str, keys))}" if keys
                    else "not encrypted"),
                 extra={"fields": {"link": self.name, "listen": str(transport.listen), "key_ids": keys}})
        if keys and transport.state_directory is None:
            log.warning(f"link {self.name}: no state_directory: after a restart this egress cannot tell a "
                        "replayed datagram of an earlier session from the sender's; set transport.state_directory",
                        extra={"fields": {"link": self.name}})
        self._spawn("receive", self._receive_loop)
        self._spawn("sink", self._sink_loop)

    def begin_stop(self) -> None:
        self.stopping.set()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stops receiving once the link is quiet, accounts for partial frames as lost, delivers everything
        buffered."""
        self.stopping.set()
        clean = self._join(self._threads[:1], timeout)
        with self._receive_lock:
            if self._socket is not None:
                while self.receiver.batch_pending:  # the rest of a batch a receive() call stopped inside
                    frames = self.receiver.receive(self._socket.fileno(), 0)
                    self._note_session()  # before the sink has them, as in the receive loop
                    self.buffer.put_many(frames)
            self.receiver.expire(everything=True)
            self._note_session()
        self.save_session()
        clean = clean and self.session_save_error is None
        self.buffer.close()
        clean = self._join(self._threads[1:], timeout) and clean
        self.buffer.release()
        self.sink.close()
        if self._tracking:
            self.buffer.settle(self.sink.delivered())  # what the sink's last flush delivered
        self.buffer.finish()
        if self._socket is not None:
            self.kernel_drops.read()
            self._socket.close()
        return clean

    # ---- receive thread ----

    def save_session(self) -> None:
        """Makes what the receive thread noted durable (fsync), from the supervisor's tick or at stop, so that the
        fsync never holds up reception."""
        try:
            self.session_state.sync()
        except OSError as error:
            self._state_failed(error)

    def _note_session(self) -> None:
        """Writes the newest session and highest sequence into the state file (one pwrite, no fsync) after every
        receive() call, before its frames reach the sink: a process that dies (SIGKILL, a crash) leaves the
        exact state in the page cache, and only a power cut can lose the last second of it."""
        if self.session_state.path is None:
            return
        saved = self.receiver.saved_session()
        if saved:
            try:
                self.session_state.note({"session_id": saved[0], "highest_sequence": saved[1],
                                         "highest_parity": saved[2]})
                self.session_save_error = None
            except OSError as error:
                self._state_failed(error)

    def _state_failed(self, error: OSError) -> None:
        if self.session_save_error is None:
            log.error(f"link {self.name}: cannot save the session state to {self.session_state.path}: {error}",
                      extra={"fields": {"link": self.name}})
        self.session_save_error = f"link {self.name}: cannot save the session state: {error.strerror}"

    def _receive_loop(self) -> None:
        """Receives until the link is finished, or stopped and drained.

        Stopped together with its ingress (both releases of a pair removed at once, one systemd stopping both),
        an egress that stopped reading at once would lose what the ingress sends while it drains its buffer,
        which the ingress counts as sent and a Kafka source commits. So a stopping egress whose link is up goes
        on receiving until the sender's shutdown has arrived and the link is quiet, or no data has come for
        STOP_QUIET_SECONDS (heartbeats and forgeries do not count: an idle or attacked link still stops), for
        at most STOP_DRAIN_SECONDS; one whose sender has shut down or gone silent stops once the link is quiet.
        The supervisor starts every link's drain at once (begin_stop)."""
        fd = self._socket.fileno()
        heard = 0
        drain_until = data_heard = data_at = None
        while not self.finished.is_set() and self.failure is None:  # a failed link has no sink to drain into
            if self.stopping.is_set() and drain_until is None:
                drain_until = time.monotonic() + STOP_DRAIN_SECONDS
                data_heard, data_at = self._data_datagrams(), time.monotonic()
            lingering = self._sender_shut_down_at is not None
            waits_for_quiet = lingering or drain_until is not None
            with self._receive_lock:
                frames = self.receiver.receive(fd, SHUTDOWN_QUIET_MS if waits_for_quiet else RECEIVE_POLL_MS)
                events = self.receiver.take_events()
                self._note_session()
            if frames:
                self.buffer.put_many(frames)
            for event in events:
                self._on_event(*event)
            if not waits_for_quiet:
                continue
            now = time.monotonic()
            heard, before = self.receiver.counters()["datagrams_received"], heard
            quiet = heard == before and not self.receiver.batch_pending
            if drain_until is not None:
                data_heard, data_before = self._data_datagrams(), data_heard
                if data_heard != data_before or self.receiver.batch_pending:
                    data_at = now
                if quiet and self.link_state != UP or now - data_at >= STOP_QUIET_SECONDS:
                    return
                if now > drain_until:
                    log.warning(f"link {self.name}: stopped while data still arrived ({STOP_DRAIN_SECONDS:g} s after "
                                "the stop): what the sender sends from now on is not received",
                                extra={"fields": {"link": self.name}})
                    return
            # A one-shot link is finished once its sender has shut down and the link has gone quiet: the
            # shutdown's other copies, still on their way, would otherwise count as lost.
            if lingering and (quiet or now - self._sender_shut_down_at > SHUTDOWN_LINGER_SECONDS):
                self._finish()

    def _data_datagrams(self) -> int:
        """Accepted datagrams that carry data or parity: what a draining sender still sends."""
        counters = self.receiver.counters()
        return counters["datagrams_accepted"] - counters["heartbeats_received"] - counters["shutdowns_received"]

    def _deliver(self, frame) -> None:
        """Decodes a frame's batch, filters its records and writes them to the sink. A sink that takes whole
        batches gets the batch itself when no filter needs the records."""
        records = None
        try:
            batch = decompress(frame, self.config.transport.max_frame_size) if is_compressed(frame) else frame
            if self._whole_batches:
                count = self.sink.write_batch(batch)
            else:
                records = decode_batch(batch, self._value_views)
                count = len(records)
            taken_in_ns = batch_taken_in_ns(batch)
        except ValueError as error:
            self.frames_undecodable += 1
            log.error(f"link {self.name}: frame {frame.frame_id} is not a valid record batch: {error}",
                      extra={"fields": {"link": self.name, "frame_id": frame.frame_id}})
            return
        if taken_in_ns and count:
            self.latency.observe(max(time.time_ns() - taken_in_ns, 0) / 1e9, count)
        self.records_received += count
        if records:
            records = self.filters.apply(records)
            if records:
                self.sink.write(records)

    def _on_event(self, kind, session_id, previous_session_id, payload) -> None:
        session = f"{session_id:016x}"
        if kind == core_receiver.SESSION_STARTED:
            self.peer_session_id = session_id
            if previous_session_id:
                log.warning(f"link {self.name}: new sender session {session} replaces "
                            f"{previous_session_id:016x}",
                            extra={"fields": {"link": self.name, "session_id": session,
                                              "previous_session_id": f"{previous_session_id:016x}"}})
            else:
                log.info(f"link {self.name}: receiving session {session}",
                         extra={"fields": {"link": self.name, "session_id": session}})
            return
        if kind == core_receiver.REKEYED:
            self.peer_session_id = session_id
            log.info(f"link {self.name}: sender session {previous_session_id:016x} goes on under a new key as "
                     f"{session}", extra={"fields": {"link": self.name, "session_id": session,
                                                      "previous_session_id": f"{previous_session_id:016x}"}})
            return
        try:
            self.peer = wire.decode_peer_counters(payload)
        except ValueError as error:
            log.warning(f"link {self.name}: unreadable peer counters: {error}", extra={"fields": {"link": self.name}})
        if kind == core_receiver.SHUTDOWN_RECEIVED:
            self._set_state(INTERRUPTED, SENDER_SHUT_DOWN, session)
            # A one-shot link ends with its sender's shutdown, except the shutdown of the session a previous run
            # received (the restored floor) before this run has delivered anything of it: played back to an
            # egress waiting for the next transfer, it must not end it.
            if self.sink.stops_after_sender_shutdown and self._sender_shut_down_at is None:
                if self.receiver.session_frames_completed or not self.receiver.resuming_floor:
                    self._sender_shut_down_at = time.monotonic()
                else:
                    log.warning(f"link {self.name}: session {session}, which a previous run received, shut down "
                                "before this run received anything of it: a replay, not the end of a transfer "
                                "received here; waiting for the next one",
                                extra={"fields": {"link": self.name, "session_id": session}})
        else:
            self.last_heartbeat = time.monotonic()
            self._set_state(UP, "heartbeats arriving", session)

    # ---- link state ----

    def _set_state(self, new_state: str, reason: str, session: str | None = None) -> None:
        with self._state_lock:
            old_state, self.link_state = self.link_state, new_state
            if old_state == new_state:
                return
            # A sender that shut down said so: the normal end of a transfer or a planned stop, not an alarm.
            planned = SENDER_SHUT_DOWN in (reason, self._interrupted_by)
            self._interrupted_by = reason if new_state == INTERRUPTED else None
        level = logging.INFO if planned else logging.WARNING
        fields = {"link": self.name, "state": new_state, "reason": reason}
        if session:
            fields["session_id"] = session
        peer = {f"peer_{key}": value for key, value in self.peer.items()}
        if new_state == INTERRUPTED:
            log.log(level, f"link {self.name}: link interrupted: {reason}", extra={"fields": {**fields, **peer}})
        elif old_state == INTERRUPTED:
            log.log(level, f"link {self.name}: link restored", extra={"fields": fields})
        else:
            log.info(f"link {self.name}: link up", extra={"fields": fields})

    @property
    def heartbeat_interval(self) -> float:
        announced = self.peer.get("heartbeat_interval_ms", 0)
        return announced / 1000 if announced else DEFAULT_HEARTBEAT_SECONDS

    def tick(self, now: float) -> None:
        self.check_heartbeats(now)
        self.save_session()

    def check_heartbeats(self, now: float) -> None:
        """Raises the link-down alarm once too many heartbeat intervals have passed without one."""
        if self.link_state != UP or self.last_heartbeat is None:
            return
        missed = self.config.transport.alarm_after_missed_heartbeats
        silent = now - self.last_heartbeat
        if silent > missed * self.heartbeat_interval:
            self._set_state(INTERRUPTED, f"no heartbeat for {silent:.1f} s ({missed} intervals of "
                                         f"{self.heartbeat_interval:g} s)")

    @property
    def state(self) -> str:
        return "failed" if self.failure else self.link_state

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.session_save_error:
            problems.append(self.session_save_error)
        if self.link_state == WAITING:
            problems.append(f"link {self.name}: no heartbeat received yet")
        elif self.link_state == INTERRUPTED:
            problems.append(f"link {self.name}: link interrupted")
        return problems

    def status(self) -> dict:
        status = super().status()
        status["heartbeat_age_seconds"] = status["counters"].get("peer_last_heartbeat_age_seconds")
        status["peer"] = dict(self.peer)
        status["session_id"] = f"{self.peer_session_id:016x}" if self.peer_session_id else None
        return status

    # ---- sink thread ----

    def _sink_loop(self) -> None:
        session_id = None
        while True:
            frames = self.buffer.get_many(SINK_BATCH_BYTES, 0.1)
            for frame in frames:
                # Spooled frames carry no session (0): a restart while spooling shows at the next frame from memory.
                frame_session = getattr(frame, "session_id", 0)
                if frame_session and frame_session != session_id:
                    if session_id is not None:
                        self.sink.sender_restarted()
                    session_id = frame_session
                if self._tracking:
                    self.sink.start_frame(frame.log_position)
                self._deliver(frame)
            if not frames:
                if self.buffer.drained:
                    return
                self.sink.idle()
            if self._tracking:
                self.buffer.settle(self.sink.delivered())
            elif frames:
                self.buffer.settle()

    def counters(self) -> dict:
        merged = {"records_received": self.records_received, "frames_undecodable": self.frames_undecodable,
                  "kernel_receive_drops": self.kernel_drops.read(), "link_up": int(self.link_state == UP)}
        merged.update(self.receiver.counters())
        merged.update(self.buffer.counters())
        merged.update(self.sink.counters())
        merged.update(self.filters.counters())
        merged.update({f"peer_{key}": value for key, value in self.peer.items()})
        if self.last_heartbeat is not None:
            merged["peer_last_heartbeat_age_seconds"] = round(time.monotonic() - self.last_heartbeat, 3)
        return merged
