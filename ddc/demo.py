"""`ddc demo`: a real link pair on loopback, with generated traffic and a live view.

Everything is real except the data: the ingress listens on a UDP port, the link
runs over loopback UDP through the same code as `ddc run`, the egress re-emits
every record to a collector socket. Each generated datagram carries its index
and a CRC-32 of its body, so the collector can tell delivered, missing, corrupted
and duplicated datagrams apart exactly.
"""

import os
import random
import socket
import struct
import sys
import threading
import time
import zlib

from ddc.config import settings_from_mapping
from ddc.supervisor import Supervisor, build_links
from ddc.telemetry import configure_logging
from ddc.units import format_rate, parse_rate

PAYLOAD_HEADER = struct.Struct(">QI")
SIZES = (64, 120, 200, 400, 900, 1400, 4000, 9000)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Generator(threading.Thread):
    """Sends indexed, checksummed datagrams of mixed sizes at a paced rate."""

    def __init__(self, target_port: int, bytes_per_second: float, seconds: float):
        super().__init__(name="ddc-demo-generator", daemon=True)
        self.target = ("127.0.0.1", target_port)
        self.bytes_per_second = bytes_per_second
        self.seconds = seconds
        self.sent = 0
        self.bytes = 0
        self.stop = threading.Event()
        self.noise = os.urandom(1 << 16)

    def run(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        chooser = random.Random(7)
        started = time.monotonic()
        while not self.stop.is_set():
            elapsed = time.monotonic() - started
            if elapsed >= self.seconds:
                break
            if self.bytes > elapsed * self.bytes_per_second:
                time.sleep(0.0005)
                continue
            size = chooser.choice(SIZES)
            offset = chooser.randrange(0, len(self.noise) - size)
            body = self.noise[offset:offset + size]
            sock.sendto(PAYLOAD_HEADER.pack(self.sent, zlib.crc32(body)) + body, self.target)
            self.sent += 1
            self.bytes += size + PAYLOAD_HEADER.size
        sock.close()


class Collector(threading.Thread):
    """Receives what the egress delivers and checks every datagram."""

    def __init__(self, sock: socket.socket):
        super().__init__(name="ddc-demo-collector", daemon=True)
        self.socket = sock
        self.socket.settimeout(0.1)
        self.seen = set()
        self.bytes = 0
        self.corrupted = 0
        self.duplicates = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                data = self.socket.recv(65535)
            except socket.timeout:
                continue
            self.bytes += len(data)
            if len(data) < PAYLOAD_HEADER.size:
                self.corrupted += 1
                continue
            index, checksum = PAYLOAD_HEADER.unpack_from(data)
            if zlib.crc32(data[PAYLOAD_HEADER.size:]) != checksum:
                self.corrupted += 1
            elif index in self.seen:
                self.duplicates += 1
            else:
                self.seen.add(index)


def demo_settings(source_port: int, link_port: int, target_port: int, link_rate: str):
    ingress = settings_from_mapping({"role": "ingress", "links": {"demo": {
        "source": {"type": "udp", "listen": f"127.0.0.1:{source_port}", "receive_buffer": "16MiB"},
        "transport": {"destination": f"127.0.0.1:{link_port}", "rate": link_rate, "heartbeat_interval": "500ms"},
    }}}, "demo ingress")
    egress = settings_from_mapping({"role": "egress", "links": {"demo": {
        "transport": {"listen": f"127.0.0.1:{link_port}", "receive_buffer": "32MiB"},
        "sink": {"type": "udp", "target": f"127.0.0.1:{target_port}"},
    }}}, "demo egress")
    return ingress, egress


def run_demo(seconds: float = 10.0, offered_rate: str = "200Mbit/s", link_rate: str = "1Gbit/s",
             verbose: bool = False, out=None) -> int:
    out = out or sys.stdout
    configure_logging("info" if verbose else "warning", "text")
    collector_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    collector_socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
    collector_socket.bind(("127.0.0.1", 0))
    source_port, link_port = free_udp_port(), free_udp_port()
    ingress, egress = demo_settings(source_port, link_port, collector_socket.getsockname()[1], link_rate)
    links = build_links(egress) + build_links(ingress)
    supervisor = Supervisor(links)
    collector = Collector(collector_socket)
    generator = Generator(source_port, parse_rate(offered_rate), seconds)
    live = out.isatty()
    print(f"ddc demo: ingress 127.0.0.1:{source_port} → link 127.0.0.1:{link_port} → egress → "
          f"collector, offered {format_rate(parse_rate(offered_rate))} for {seconds:g} s", file=out)
    supervisor.start()
    collector.start()
    started = time.monotonic()
    generator.start()
    try:
        last_print = 0.0
        while generator.is_alive() or (time.monotonic() - started < seconds + 3
                                       and len(collector.seen) < generator.sent):
            time.sleep(0.1)
            elapsed = time.monotonic() - started
            if live or elapsed - last_print >= 1.0:
                last_print = elapsed
                egress_counters = links[0].counters()
                line = (f"{elapsed:5.1f} s  sent {generator.sent:>8}  delivered {len(collector.seen):>8}  "
                        f"{format_rate(collector.bytes / max(elapsed, 1e-9)):>12}  "
                        f"link datagrams {egress_counters['datagrams_received']:>9}  "
                        f"lost {egress_counters['datagrams_lost']}")
                print(("\r" + line) if live else line, end="" if live else "\n", file=out, flush=True)
    except KeyboardInterrupt:
        generator.stop.set()
    generator.join()
    supervisor.stop()
    collector.stop.set()
    collector.join()
    collector_socket.close()
    elapsed = time.monotonic() - started
    egress_counters = links[0].counters()
    missing = generator.sent - len(collector.seen)
    print(("\n" if live else "") + f"summary: sent {generator.sent} datagrams ({generator.bytes} bytes), "
          f"delivered {len(collector.seen)}, missing {missing}, corrupted {collector.corrupted}, "
          f"duplicated {collector.duplicates}; link: {egress_counters['frames_completed']} frames, "
          f"{egress_counters['datagrams_received']} datagrams, {egress_counters['datagrams_lost']} lost; "
          f"{elapsed:.1f} s", file=out)
    return 0 if missing == 0 and collector.corrupted == 0 and collector.duplicates == 0 else 1
