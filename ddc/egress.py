"""An egress link: datagrams → Cython receiver → frames → records → sink.

Two threads: the receive thread keeps the socket drained (the Cython receiver
does the per-datagram work without the GIL) and decodes completed frames into
records; the sink thread delivers them. Between them a bounded buffer, which
drops and counts by default: blocking the receive thread would only move the
loss into the kernel, where it is harder to see.
"""

import logging
import threading
import time

from ddc._core import receiver as core_receiver
from ddc._core import wire
from ddc._core.records import decode_batch
from ddc._core.receiver import LinkReceiver
from ddc.handlers import build_sink
from ddc.link import Link
from ddc.stage_buffer import StageBuffer
from ddc.transport.sockets import kernel_drops, open_bound

log = logging.getLogger("ddc.egress")

RECEIVE_POLL_MS = 100
SINK_BATCH_BYTES = 1 << 20


class EgressLink(Link):
    role = "egress"

    def __init__(self, name: str, config):
        super().__init__(name)
        self.config = config
        transport = config.transport
        self.receiver = LinkReceiver(transport.max_frame_size, transport.max_frames_in_flight,
                                     transport.max_bytes_in_flight, transport.frame_timeout)
        self.sink = build_sink(name, config.sink)
        self.buffer = StageBuffer(config.buffer.size, config.buffer.when_full or "drop")
        self.records_received = 0
        self.frames_undecodable = 0
        self.peer: dict = {}
        self.peer_session_id: int | None = None
        self.last_heartbeat: float | None = None
        self.sender_shut_down = False
        self.kernel_drops = 0
        self._receive_lock = threading.Lock()
        self._socket = None

    def start(self) -> None:
        transport = self.config.transport
        self.sink.open()
        self._socket = open_bound(transport.listen, receive_buffer=transport.receive_buffer)
        log.info(f"link {self.name}: listening on {transport.listen}, delivering to {self.config.sink.type} sink",
                 extra={"fields": {"link": self.name, "listen": str(transport.listen)}})
        self._spawn("receive", self._receive_loop)
        self._spawn("sink", self._sink_loop)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stops receiving, accounts for partial frames as lost, delivers everything buffered."""
        self.stopping.set()
        clean = self._join(self._threads[:1], timeout)
        with self._receive_lock:
            self.receiver.expire(everything=True)
        self.buffer.close()
        clean = self._join(self._threads[1:], timeout) and clean
        self.sink.close()
        if self._socket is not None:
            self._read_kernel_drops()
            self._socket.close()
        return clean

    def _read_kernel_drops(self) -> int:
        current = kernel_drops(self._socket) if self._socket is not None else None
        if current is not None:
            self.kernel_drops = current
        return self.kernel_drops

    def _receive_loop(self) -> None:
        fd = self._socket.fileno()
        while not self.stopping.is_set():
            with self._receive_lock:
                frames = self.receiver.receive(fd, RECEIVE_POLL_MS)
                events = self.receiver.take_events()
            for frame in frames:
                try:
                    records = decode_batch(frame)
                except ValueError as error:
                    self.frames_undecodable += 1
                    log.error(f"link {self.name}: frame {frame.frame_id} is not a valid record batch: {error}",
                              extra={"fields": {"link": self.name, "frame_id": frame.frame_id}})
                    continue
                self.records_received += len(records)
                self.buffer.put_many(records)
            for event in events:
                self._on_event(*event)

    def _on_event(self, kind, session_id, previous_session_id, payload) -> None:
        session = f"{session_id:016x}"
        if kind == core_receiver.SESSION_STARTED:
            self.peer_session_id = session_id
            self.sender_shut_down = False
            if previous_session_id:
                log.warning(f"link {self.name}: sender restarted: session {session} replaces "
                            f"{previous_session_id:016x}",
                            extra={"fields": {"link": self.name, "session_id": session,
                                              "previous_session_id": f"{previous_session_id:016x}"}})
            else:
                log.info(f"link {self.name}: receiving session {session}",
                         extra={"fields": {"link": self.name, "session_id": session}})
            return
        try:
            self.peer = wire.decode_peer_counters(payload)
        except ValueError as error:
            log.warning(f"link {self.name}: unreadable peer counters: {error}", extra={"fields": {"link": self.name}})
        self.last_heartbeat = time.monotonic()
        if kind == core_receiver.SHUTDOWN_RECEIVED and not self.sender_shut_down:
            self.sender_shut_down = True
            log.info(f"link {self.name}: sender shut down session {session}",
                     extra={"fields": {"link": self.name, "session_id": session,
                                       **{f"peer_{key}": value for key, value in self.peer.items()}}})

    def _sink_loop(self) -> None:
        while True:
            records = self.buffer.get_many(SINK_BATCH_BYTES, 0.1)
            if records:
                self.sink.write(records)
            elif self.buffer.drained:
                return

    def counters(self) -> dict:
        merged = {"records_received": self.records_received, "frames_undecodable": self.frames_undecodable,
                  "kernel_receive_drops": self._read_kernel_drops()}
        merged.update(self.receiver.counters())
        merged.update(self.buffer.counters())
        merged.update(self.sink.counters())
        merged.update({f"peer_{key}": value for key, value in self.peer.items()})
        if self.last_heartbeat is not None:
            merged["peer_last_heartbeat_age_seconds"] = round(time.monotonic() - self.last_heartbeat, 3)
        return merged
