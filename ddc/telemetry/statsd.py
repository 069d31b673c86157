"""StatsD emission: the catalogue per link, plus the Rust DDC's own metric names.

Every `interval` the emitter reads each link's counters and sends, over UDP,
counters as deltas since the previous flush (`|c`) and gauges as values (`|g`),
many lines per datagram. Per-link names are `<prefix>.<role>.<link>.<metric>`,
with label values appended (`….datagrams_dropped.bad_checksum`). The Rust DDC
names are sums over all links, so dashboards built for it keep working:

    ddc.ingress.packets_sent   ddc.ingress.bytes_sent   ddc.egress.packets_received
    ddc.egress.packet_loss (gauge)   ddc.dropped_packets   ddc.buffer_full

A final flush runs at shutdown so that the totals add up exactly.
"""

import logging
import socket
import threading

from ddc.telemetry.catalogue import COUNTER, FILTER_METRICS, metrics_for, per_filter
from ddc.transport.sockets import resolve

log = logging.getLogger("ddc.telemetry")

MAX_PACKET_BYTES = 1432

RUST_COMPATIBLE = (
    ("ingress.packets_sent", COUNTER, lambda role, c: c.get("datagrams_sent", 0) if role == "ingress" else 0),
    ("ingress.bytes_sent", COUNTER, lambda role, c: c.get("bytes_sent", 0) if role == "ingress" else 0),
    ("egress.packets_received", COUNTER,
     lambda role, c: c.get("datagrams_received", 0) if role == "egress" else 0),
    ("egress.packet_loss", "gauge", lambda role, c: c.get("datagrams_lost", 0) if role == "egress" else 0),
    ("dropped_packets", COUNTER, lambda role, c: (
        c.get("records_dropped", 0) + c.get("source_kernel_drops", 0) if role == "ingress"
        else sum(value for key, value in c.items() if key.startswith("dropped_"))
        + c.get("buffer_records_dropped", 0) + c.get("kernel_receive_drops", 0))),
    ("buffer_full", COUNTER, lambda role, c: c.get("buffer_full_events", 0)),
)


def _format(value) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


class StatsdEmitter:
    def __init__(self, links, config):
        self.links = links
        self.prefix = config.prefix
        self.interval = config.interval
        _, self.address = resolve(config.target)
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_DGRAM)
        self.previous: dict = {}
        self.packets_failed = 0
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="ddc-statsd", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Stops the timer and sends a last flush, so totals add up after a clean stop."""
        self.stopping.set()
        self.thread.join(5)
        self.flush()
        self.socket.close()

    def _run(self) -> None:
        while not self.stopping.wait(self.interval):
            self.flush()

    def _line(self, name: str, kind: str, value) -> str | None:
        if kind == COUNTER:
            delta = value - self.previous.get(name, 0)
            self.previous[name] = value
            return f"{name}:{_format(delta)}|c" if delta else None
        return f"{name}:{_format(value)}|g"

    def lines(self) -> list[str]:
        lines, totals = [], {}
        for link in self.links:
            counters = link.counters()
            base = f"{self.prefix}.{link.role}.{link.name}"
            for metric in metrics_for(link.role):
                if metric.key in counters:
                    name = ".".join([base, metric.name, *metric.labels.values()])
                    lines.append(self._line(name, metric.kind, counters[metric.key] * metric.scale))
            for metric, suffix in FILTER_METRICS:
                for filter_name, value in per_filter(counters, suffix).items():
                    lines.append(self._line(f"{base}.{metric.name}.{filter_name}", COUNTER, value))
            for name, kind, read in RUST_COMPATIBLE:
                totals[name] = (kind, totals.get(name, (kind, 0))[1] + read(link.role, counters))
        for name, (kind, value) in totals.items():
            lines.append(self._line(f"{self.prefix}.{name}", kind, value))
        return [line for line in lines if line]

    def flush(self) -> None:
        with self._lock:
            packet = b""
            for line in self.lines():
                data = line.encode()
                if packet and len(packet) + 1 + len(data) > MAX_PACKET_BYTES:
                    self._send(packet)
                    packet = b""
                packet = packet + b"\n" + data if packet else data
            if packet:
                self._send(packet)

    def _send(self, packet: bytes) -> None:
        try:
            self.socket.sendto(packet, self.address)
        except OSError as error:
            self.packets_failed += 1
            log.debug(f"statsd send to {self.address} failed: {error.strerror}")
