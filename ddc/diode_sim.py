"""A hostile link to put between an ingress and its egress: `ddc diode-sim`.

Real diode links lose datagrams one at a time (noise) and in bursts (a switch
buffer overflowing, a receiver stalling), and lab networks add reordering,
duplication, corruption, a bandwidth cap and latency. This relay does each of
them, drawn from one seeded random generator, so a run that lost data can be
repeated datagram for datagram. It is the test suite's, the benchmarks' and the
demo's link; it is not on any production path, so it is plain Python and moves
a few hundred thousand datagrams a second.

Loss models (all may be combined; a datagram is lost if any of them says so):
- `loss`: each datagram independently;
- `burst_rate` / `burst_length`: at each datagram a burst of `burst_length`
  consecutive losses starts with probability `burst_rate`;
- `gilbert_enter` / `gilbert_leave`: the Gilbert-Elliott two-state channel; in
  the bad state every datagram is lost, the state changes with these
  probabilities per datagram (mean burst length 1 / gilbert_leave).
"""

import heapq
import json
import random
import select
import socket
import threading
import time
from dataclasses import asdict, dataclass

from ddc.transport.sockets import set_buffer

RECEIVE_BYTES = 65536


@dataclass
class Impairments:
    loss: float = 0.0
    burst_rate: float = 0.0
    burst_length: int = 10
    gilbert_enter: float = 0.0
    gilbert_leave: float = 1.0
    reorder: float = 0.0
    reorder_depth: int = 8
    reorder_delay: float = 0.005  # the longest a reordered datagram waits when fewer than reorder_depth follow it
    duplicate: float = 0.0
    corrupt: float = 0.0
    rate: float = 0.0  # bytes per second; 0 is unlimited
    queue_bytes: int = 4 << 20  # what the capped link may hold before it drops (a router's buffer)
    latency: float = 0.0
    seed: int = 1

    def __post_init__(self):
        for name in ("loss", "burst_rate", "gilbert_enter", "gilbert_leave", "reorder", "duplicate", "corrupt"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} {value} is not a probability between 0 and 1")
        if self.burst_length < 1 or self.reorder_depth < 1:
            raise ValueError(f"burst_length ({self.burst_length}) and reorder_depth ({self.reorder_depth}) "
                             "must be at least 1")
        if self.rate < 0 or self.latency < 0 or self.reorder_delay < 0 or self.queue_bytes < RECEIVE_BYTES:
            raise ValueError(f"rate ({self.rate}), latency ({self.latency}) and reorder_delay ({self.reorder_delay}) "
                             f"must not be negative, queue_bytes "
                             f"({self.queue_bytes}) must hold a largest datagram ({RECEIVE_BYTES})")


COUNTERS = ("received", "forwarded", "lost_random", "lost_burst", "lost_gilbert", "lost_queue_full", "reordered",
            "duplicated", "corrupted")


class HostileLink:
    """Relays datagrams from `listen` to `forward`, impaired as `impairments` says; see the module docstring."""

    def __init__(self, listen: tuple[str, int], forward: tuple[str, int], impairments: Impairments | None = None):
        self.impairments = impairments or Impairments()
        self.forward = forward
        self.random = random.Random(self.impairments.seed)
        self.counters = dict.fromkeys(COUNTERS, 0)
        family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_DGRAM)
        set_buffer(self.socket, "receive", 32 << 20)
        self.socket.bind(listen)
        self.port = self.socket.getsockname()[1]
        self.sending = socket.socket(socket.AF_INET6 if ":" in forward[0] else socket.AF_INET, socket.SOCK_DGRAM)
        set_buffer(self.sending, "send", 8 << 20)
        self.burst_left = 0
        self.bad_state = False
        self.held: list[list] = []  # [datagrams still to pass, latest release time, datagram]
        self.scheduled: list[tuple[float, int, bytes]] = []
        self.sequence = 0
        self.link_free_at = 0.0
        self.queued_bytes = 0
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- one datagram's fate ----

    def lost(self) -> bool:
        settings, draw = self.impairments, self.random.random
        if settings.gilbert_enter:
            self.bad_state = draw() >= settings.gilbert_leave if self.bad_state else draw() < settings.gilbert_enter
            if self.bad_state:
                self.counters["lost_gilbert"] += 1
                return True
        if self.burst_left:
            self.burst_left -= 1
            self.counters["lost_burst"] += 1
            return True
        if settings.burst_rate and draw() < settings.burst_rate:
            self.burst_left = settings.burst_length - 1
            self.counters["lost_burst"] += 1
            return True
        if settings.loss and draw() < settings.loss:
            self.counters["lost_random"] += 1
            return True
        return False

    def take(self, datagram: bytes, now: float) -> None:
        settings, draw = self.impairments, self.random.random
        self.counters["received"] += 1
        if self.lost():
            return
        if settings.corrupt and datagram and draw() < settings.corrupt:
            position = self.random.randrange(len(datagram))
            datagram = datagram[:position] + bytes([datagram[position] ^ (1 << self.random.randrange(8))]) \
                + datagram[position + 1:]
            self.counters["corrupted"] += 1
        copies = 2 if settings.duplicate and draw() < settings.duplicate else 1
        self.counters["duplicated"] += copies - 1
        for _ in range(copies):
            for waiting in self.held:
                waiting[0] -= 1
            if settings.reorder and draw() < settings.reorder:
                self.counters["reordered"] += 1
                self.held.append([settings.reorder_depth, now + settings.reorder_delay, datagram])
            else:
                self.schedule(datagram, now)
            self.release_held(now)

    def release_held(self, now: float) -> None:
        """A reordered datagram is late, not lost: it goes once enough others have passed it or once it has
        waited reorder_delay, so the last datagrams of a transfer are not held until the relay stops."""
        while self.held and (self.held[0][0] <= 0 or self.held[0][1] <= now):
            self.schedule(self.held.pop(0)[2], now)

    def schedule(self, datagram: bytes, now: float) -> None:
        """Queues a datagram behind the ones already on the capped link, plus the latency; a full queue drops."""
        settings = self.impairments
        if settings.rate:
            if self.queued_bytes + len(datagram) > settings.queue_bytes:
                self.counters["lost_queue_full"] += 1
                return
            self.link_free_at = max(self.link_free_at, now) + len(datagram) / settings.rate
            due = self.link_free_at + settings.latency
        else:
            due = now + settings.latency
        self.queued_bytes += len(datagram)
        self.sequence += 1
        heapq.heappush(self.scheduled, (due, self.sequence, datagram))

    def send_due(self, now: float) -> None:
        while self.scheduled and self.scheduled[0][0] <= now:
            _, _, datagram = heapq.heappop(self.scheduled)
            self.queued_bytes -= len(datagram)
            try:
                self.sending.sendto(datagram, self.forward)
                self.counters["forwarded"] += 1
            except OSError:
                self.counters["lost_queue_full"] += 1

    # ---- running ----

    def run(self) -> None:
        buffer = bytearray(RECEIVE_BYTES)
        view = memoryview(buffer)
        self.socket.setblocking(False)
        while not self.stopping.is_set():
            now = time.monotonic()
            self.release_held(now)
            self.send_due(now)
            due = [self.scheduled[0][0]] if self.scheduled else []
            due += [self.held[0][1]] if self.held else []
            wait = max(0.0, min([now + 0.05, *due]) - now)
            ready, _, _ = select.select([self.socket], [], [], wait)
            if not ready:
                continue
            for _ in range(256):
                try:
                    length = self.socket.recv_into(buffer)
                except BlockingIOError:
                    break
                self.take(bytes(view[:length]), time.monotonic())
        for waiting in self.held:
            self.schedule(waiting[2], time.monotonic())
        self.held.clear()
        while self.scheduled:
            self.send_due(time.monotonic())
            if self.scheduled:
                time.sleep(min(0.01, max(0.0, self.scheduled[0][0] - time.monotonic())))

    def start(self) -> "HostileLink":
        self._thread = threading.Thread(target=self.run, name="diode-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict:
        """Stops, after delivering what was held or queued; returns the counters."""
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(10)
        self.socket.close()
        self.sending.close()
        return dict(self.counters)


def run_forever(listen, forward, impairments: Impairments, report_every: float, out) -> int:
    """The CLI's loop: relay until SIGINT/SIGTERM, printing the counters as JSON lines."""
    link = HostileLink(listen, forward, impairments).start()
    print(json.dumps({"listening": f"{listen[0]}:{link.port}", "forwarding": f"{forward[0]}:{forward[1]}",
                      **asdict(impairments)}), file=out, flush=True)
    try:
        while link._thread.is_alive():
            link._thread.join(report_every)
            print(json.dumps(link.counters), file=out, flush=True)
    except KeyboardInterrupt:
        pass
    print(json.dumps(link.stop()), file=out, flush=True)
    return 0
