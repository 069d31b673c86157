"""An ingress link: source → filters → batches → frames → paced datagrams.

Two threads: the source fills the link's buffer; the transport thread takes
records in batches, packs them into frames (bounded by batch_max_bytes and
linger) and hands frames to the Cython sender. The sender sends a heartbeat with
the link's counters every heartbeat_interval, idle or busy, even in the middle of
a large frame. Frames are zstd-compressed first when the transport says so. The
source learns which records were sent (acknowledge) so that a Kafka source can
commit them. Stopping drains the buffer, then sends the shutdown datagrams.
"""

import errno
import logging
import threading
import time

from ddc._core import wire
from ddc._core.fec import rated_loss
from ddc._core.records import BATCH_HEADER_BYTES, batch_header, decode_records, encode_batch, record_size
from ddc._core.ring import RecordRing
from ddc._core.sender import DatagramSender
from ddc.crypto import link_keys
from ddc.filters import FilterChain
from ddc.handlers import build_handler
from ddc.link import Link
from ddc.session_state import SessionState, next_epoch, next_session_id
from ddc.transport.sockets import open_sending
from ddc.units import format_rate

log = logging.getLogger("ddc.ingress")

SHUTDOWN_COPIES = 3
# While the kernel refuses a frame's datagrams: the pause before sending it again, doubling up to the last.
FIRST_RESEND_PAUSE = 0.05
LAST_RESEND_PAUSE = 5.0
# What the kernel says while a route or a firewall refuses for a time; anything else resending cannot cure.
PASSING_REFUSALS = frozenset((errno.EPERM, errno.EACCES, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN,
                              errno.EHOSTDOWN, errno.ECONNREFUSED, errno.EADDRNOTAVAIL, errno.ENOBUFS,
                              errno.EAGAIN))
# A session key seals at most this many datagrams (about 38 TB at 9 000 bytes), far inside AES-GCM's limits.
REKEY_DATAGRAMS = 1 << 32
# A wall clock that moves this far against the monotonic clock means a restored snapshot or a suspended host:
# the process may be a copy that another instance already continued, so it rekeys at once.
CLOCK_JUMP_SECONDS = 60.0


class IngressLink(Link):
    role = "ingress"

    def __init__(self, name: str, config):
        super().__init__(name)
        self.config = config
        self.source = build_handler(name, config.source)
        self.filters = FilterChain(name, config.filters, self.source.coordinates, self.source.placeholder,
                                   self.source.describe)
        self.buffer = RecordRing(config.buffer.size, config.buffer.when_full or self.source.default_when_full)
        # Start time first, and larger than the last one: a keyed egress refuses sessions older than its newest.
        self.session_state = SessionState(config.transport.state_directory, name, "ingress")
        self.session_id = next_session_id(self.session_state, keyed=config.transport.key is not None)
        self.rekeys = 0
        self._session_started = time.monotonic()
        self._session_first_datagram = 0
        self._clock_offset = time.time() - time.monotonic()
        self.keys = link_keys(config.transport.key_configs)
        self.records_sent = 0
        self.records_too_large = 0
        self.frames_failed = 0
        self.frames_resent = 0
        self.refusing_since: float | None = None
        self.left_unsent = False
        self._abandoning = threading.Event()
        self.compressor = None
        if config.transport.compression == "zstd":
            from ddc.compression import FrameCompressor  # loaded only when configured: start-up time
            self.compressor = FrameCompressor(config.transport.compression_level)
        self.frame_bytes_uncompressed = 0
        self.frame_bytes_compressed = 0
        self._source_stopping = threading.Event()
        self._socket = None
        self.sender = None
        self._segmenting = False

    def start(self) -> None:
        transport = self.config.transport
        self.source.open()
        self._socket, _, address = open_sending(transport.destination, send_buffer=transport.send_buffer)
        self.sender = DatagramSender(self._socket.fileno(), address, self.session_id, transport.datagram_size,
                                     transport.rate, transport.burst_bytes, transport.heartbeat_interval,
                                     transport.segmentation_offload)
        for key_id, key in self.keys:
            self.sender.encrypt_with(key, key_id)
        if transport.fec is not None:
            self.sender.protect_with(transport.fec.data, transport.fec.parity, transport.fec.interleave,
                                     transport.fec.loss_burst)
        self._segmenting = self.sender.segmentation_offload
        if transport.segmentation_offload and not self._segmenting:
            log.info(f"link {self.name}: this kernel has no UDP segmentation offload (Linux 4.18 or newer); "
                     "sending a datagram per message", extra={"fields": {"link": self.name}})
        self.started = time.monotonic()
        log.info(f"link {self.name}: sending {self.config.source.type} records to {transport.destination} "
                 f"at {format_rate(transport.rate)}, session {self.session_id:016x}"
                 f"{f', sealed with key {self.keys[0][0]}' if self.keys else ', not encrypted'}"
                 + (f", FEC {transport.fec.data}+{transport.fec.parity} interleave {transport.fec.interleave} "
                    f"(rated for {rated_loss(transport.fec.data, transport.fec.parity):.1%} independent loss"
                    f"{f' and two bursts of {transport.fec.loss_burst} per block' if transport.fec.loss_burst else ''})"
                    if transport.fec else ", no FEC"),
                 extra={"fields": {"link": self.name, "session_id": f"{self.session_id:016x}",
                                   "destination": str(transport.destination), "rate_bytes": transport.rate,
                                   "key_id": self.keys[0][0] if self.keys else None}})
        self._spawn("source", self._source_loop)
        self._spawn("transport", self._transport_loop)

    def abandon(self) -> None:
        """An operator's stop: a frame the kernel refuses is given up (left unacknowledged) at once."""
        self._abandoning.set()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stops the source, sends everything already buffered, then the shutdown datagrams. A frame the kernel
        refuses holds the drain up for at most timeout (a route that flaps while a file's last chunks leave),
        then is given up; a stop that leaves records unsent is not clean."""
        self._source_stopping.set()
        clean = self._join(self._threads[:1], timeout)
        self.buffer.close()
        if not self._join(self._threads[1:], timeout):
            self._abandoning.set()
            self._join(self._threads[1:], timeout)
            clean = False
        clean = clean and not self.left_unsent
        self.source.close()
        if self._socket is not None:
            self._socket.close()
        return clean

    def _source_loop(self) -> None:
        self.source.run(self.buffer, self._source_stopping)
        if not self._source_stopping.is_set() and self.source.stops_link_at_end:
            self._finish()

    # ---- transport thread ----

    def _peer_counters(self) -> dict:
        sender = self.sender.counters()
        return {
            "heartbeat_interval_ms": int(self.config.transport.heartbeat_interval * 1000),
            "uptime_ms": int((time.monotonic() - self.started) * 1000),
            "datagrams_sent": sender["datagrams_sent"],
            "frames_sent": sender["frames_sent"],
            "records_sent": self.records_sent,
            "bytes_sent": sender["bytes_sent"],
            "records_dropped": self.records_dropped,
            "source_healthy": int(self.source.healthy()),
            "buffer_fill_permille": self.buffer.counters()["buffer_bytes"] * 1000 // self.buffer.capacity_bytes,
        }

    @property
    def records_dropped(self) -> int:
        return self.buffer.records_dropped + self.filters.records_dropped + self.records_too_large

    def _send(self, frame, prefix: bytes | None, records: int) -> bool:
        """Sends one batch: frame alone, or prefix + frame, which the sender joins without copying frame.
        Returns False when the kernel refused a datagram of it (a firewall, an interface down): the frame
        did not cross whole, and a source that can wait sends it again (_send_until_it_leaves)."""
        length = len(frame) + (len(prefix) if prefix is not None else 0)
        self.frame_bytes_uncompressed += length
        refused_before = self.sender.datagrams_failed
        try:
            if self.compressor is not None:
                frame = self.compressor.compress(frame if prefix is None else prefix + frame)
                prefix, length = None, len(frame)
            self.frame_bytes_compressed += length
            self.sender.send_frame(frame, prefix)
            if self._segmenting and not self.sender.segmentation_offload:
                self._segmenting = False
                log.warning(f"link {self.name}: the kernel refused UDP segmentation offload to "
                            f"{self.config.transport.destination} (datagram_size "
                            f"{self.config.transport.datagram_size} above the path MTU, or a NIC without checksum "
                            "offload); sending a datagram per message from now on",
                            extra={"fields": {"link": self.name}})
        except (OSError, ValueError) as error:
            self.frames_failed += 1
            log.error(f"link {self.name}: a frame of {records} records could not be sent: {error}",
                      extra={"fields": {"link": self.name, "records": records}})
            return True  # nothing to gain from sending it again
        if self.sender.datagrams_failed != refused_before:
            self.frames_failed += 1
            return False
        self.records_sent += records
        return True

    def _send_until_it_leaves(self, frame, prefix: bytes | None, records: int) -> bool:
        """Sends a frame; while the kernel refuses its datagrams, a source that can wait (Kafka, a file) has
        it sent again after a growing pause, and nothing after it is acknowledged (so never committed): the
        records are late, never lost. Returns False only when the stop gives up on it (abandon(), or a drain
        past stop's timeout); a source that cannot wait (UDP) goes on, the loss counted in
        datagrams_send_failed and, at the egress, frames_lost. A refusal no resend can cure (a datagram the
        route can never carry, a broken socket) fails the link instead of stalling it."""
        pause = FIRST_RESEND_PAUSE
        while not self._send(frame, prefix, records):
            if not self.source.can_wait:
                return True
            if self.sender.last_send_errno not in PASSING_REFUSALS:
                raise OSError(self.sender.last_send_errno, f"the kernel refuses to send to "
                              f"{self.config.transport.destination}: {self.sender.last_send_error}; resending cannot "
                              "help (check datagram_size against the path MTU)")
            if self.refusing_since is None:
                self.refusing_since = time.monotonic()
                log.error(f"link {self.name}: the kernel refused to send a frame's datagrams to "
                          f"{self.config.transport.destination} ({self.sender.last_send_error}); sending it again "
                          "until it leaves, and acknowledging nothing after it", extra={"fields": {
                              "link": self.name, "records": records, "errno": self.sender.last_send_errno}})
            if self._abandoning.wait(pause):
                self.left_unsent = True
                return False
            pause = min(pause * 2, LAST_RESEND_PAUSE)
            self.frames_resent += 1
            self._rekey_if_due()  # a snapshot may have been restored during the pause
        if self.refusing_since is not None:
            log.warning(f"link {self.name}: the kernel takes datagrams again after "
                        f"{time.monotonic() - self.refusing_since:.1f} s of refusals",
                        extra={"fields": {"link": self.name}})
            self.refusing_since = None
        return True

    def _admitted(self, records: list, record_limit: int) -> list:
        """The records of a run that cross: filtered, and too large ones replaced by placeholders or dropped."""
        admitted = []
        for record in self.filters.apply(records):
            size = record_size(record)
            if size > record_limit:
                self.records_too_large += 1
                log.warning(f"link {self.name}: dropped a record of {size} bytes, larger than max_frame_size",
                            extra={"fields": {"link": self.name, "record_bytes": size,
                                              **self.source.coordinates(record[0])}})
                record = self.source.placeholder(record, "too_large")
                if record is None:
                    continue
            admitted.append(record)
        return admitted

    def _transport_loop(self) -> None:
        """Takes runs of records from the ring; a run goes out in place behind a 16-byte batch header, unless
        filters must judge it or a record in it is too large, which needs the records as objects."""
        transport = self.config.transport
        record_limit = transport.max_frame_size - BATCH_HEADER_BYTES
        run_limit = transport.batch_max_bytes - BATCH_HEADER_BYTES
        in_place = not self.filters.filters
        while True:
            self._rekey_if_due()
            if self.sender.seconds_until_heartbeat() == 0:
                # Heartbeats inside a long frame reuse this payload; the C sender refreshes its sent-counters.
                self.sender.set_heartbeat(wire.encode_peer_counters(self._peer_counters()))
                self.sender.heartbeat_if_due()
            taken = self.buffer.take(run_limit, self.sender.seconds_until_heartbeat(), transport.linger)
            if taken is None:
                if self.buffer.drained:
                    break
                continue
            run, count, taken_in_ns = taken
            self._rekey_if_due()  # take() may have waited across a snapshot's restore
            if in_place and len(run) <= record_limit:
                sent = self._send_until_it_leaves(run, batch_header(count, taken_in_ns), count)
            else:
                records = self._admitted(decode_records(run, count), record_limit)
                sent = not records or self._send_until_it_leaves(encode_batch(records, taken_in_ns), None,
                                                                  len(records))
            if not sent:
                log.error(f"link {self.name}: stopping while the kernel refuses to send; the records not sent "
                          "stay unacknowledged: a Kafka source sends them after a restart, a file transfer is "
                          "incomplete", extra={"fields": {"link": self.name}})
                return
            self.buffer.free_taken()
            # Every record taken so far is now sent or settled, in order.
            self.source.acknowledge(count)
        self.sender.send_shutdown(wire.encode_peer_counters(self._peer_counters()), SHUTDOWN_COPIES)
        log.info(f"link {self.name}: drained and sent shutdown", extra={"fields": self.log_fields()})

    def _rekey_if_due(self) -> None:
        """Goes on under a new key epoch, between two frames, once the key is old (rekey_interval) or has sealed
        REKEY_DATAGRAMS. Only the key changes: sequence numbers, frame ids and FEC blocks go on, and the egress
        keeps its windows and frames across it. When the wall clock jumped (a snapshot restored, perhaps twice),
        it starts a new session instead, with 32 fresh random bits: two copies of one snapshot must not go on
        under one key with the same sequence numbers (AES-GCM nonce reuse). Called before every frame and
        idle heartbeat; a heartbeat sent from inside a frame that a restore interrupted is the one exception."""
        if not self.keys:
            return
        now = time.monotonic()
        offset = time.time() - now
        new_session = abs(offset - self._clock_offset) > CLOCK_JUMP_SECONDS
        if new_session:
            reason = f"the wall clock moved {offset - self._clock_offset:+.0f} s against the monotonic clock"
        elif now - self._session_started >= self.config.transport.rekey_interval:
            reason = f"the session is {now - self._session_started:.0f} s old"
        elif self.sender.datagrams_sent - self._session_first_datagram >= REKEY_DATAGRAMS:
            reason = f"the session key sealed {REKEY_DATAGRAMS} datagrams"
        else:
            return
        previous = self.session_id
        if new_session:
            self.session_id = next_session_id(self.session_state, keyed=True, after=previous)
        else:
            self.session_id = next_epoch(self.session_state, previous)
        self.sender.rekey(self.session_id, self.keys[0][1], new_session)
        self.rekeys += 1
        self._session_started, self._clock_offset = now, offset
        self._session_first_datagram = self.sender.datagrams_sent
        log.info(f"link {self.name}: rekeyed: session {previous:016x} goes on as "
                 f"{'the new session ' if new_session else ''}{self.session_id:016x}: {reason}",
                 extra={"fields": {"link": self.name, "session_id": f"{self.session_id:016x}",
                                   "previous_session_id": f"{previous:016x}"}})

    def counters(self) -> dict:
        merged = {"records_sent": self.records_sent, "sessions_rekeyed": self.rekeys,
                  "records_too_large": self.records_too_large,
                  "records_dropped": self.records_dropped, "frames_failed": self.frames_failed,
                  "frames_resent": self.frames_resent,
                  "frame_bytes_uncompressed": self.frame_bytes_uncompressed,
                  "compression_ratio": round(self.frame_bytes_uncompressed / self.frame_bytes_compressed, 3)
                  if self.frame_bytes_compressed else 1.0}
        merged.update(self.source.counters())
        merged.update(self.filters.counters())
        merged.update(self.buffer.counters())
        if self.sender is not None:
            merged.update(self.sender.counters())
        return merged
