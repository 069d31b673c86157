"""`ddc demo`: a real link pair on loopback, with generated traffic and a live view.

Everything is real except the data: an ingress and an egress run as two
`ddc run` child processes, exactly as in production, with a UDP link between
them over loopback. This process generates datagrams into the ingress and
collects what the egress re-emits. Each generated datagram carries its index and
a CRC-32 of its body, so the collector tells delivered, missing, corrupted and
duplicated datagrams apart exactly, and the summary accounts for every datagram
stage by stage from the proxies' own counters.

With `--loss` (or `--burst-rate`) the link runs through `ddc diode-sim`, a third
child process that drops datagrams as a noisy diode would, and `--fec` turns
forward error correction on, so the demo shows what FEC repairs and that what it
cannot repair is counted, never silent.
"""

import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import zlib
from pathlib import Path

from ddc.config import settings_from_mapping
from ddc.transport.sockets import KernelDrops, free_udp_port, set_buffer
from ddc.units import format_rate, parse_probability, parse_rate

PAYLOAD_HEADER = struct.Struct(">QI")
SIZES = (64, 120, 200, 400, 900, 1400, 4000, 9000)


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


INGRESS_CONFIG = """
role = "ingress"
[telemetry]
log_format = "json"
stats_interval = "500ms"
[links.demo.source]
type = "udp"
listen = "127.0.0.1:{source_port}"
receive_buffer = "32MiB"
[links.demo.transport]
destination = "127.0.0.1:{send_port}"
rate = "{link_rate}"
heartbeat_interval = "500ms"
{fec}
"""

EGRESS_CONFIG = """
role = "egress"
[telemetry]
log_format = "json"
stats_interval = "500ms"
[links.demo.transport]
listen = "127.0.0.1:{link_port}"
receive_buffer = "32MiB"
[links.demo.sink]
type = "udp"
target = "127.0.0.1:{target_port}"
"""


class Child:
    """A `python -m ddc` child process whose JSON-lines output a thread reads into attributes."""

    def __init__(self, name: str, arguments: list, output: str):
        self.name = name
        self.process = subprocess.Popen([sys.executable, "-m", "ddc", *arguments], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE if output == "stdout" else subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        self.problems: list[str] = []
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, args=(getattr(self.process, output),),
                                       name=f"ddc-demo-{name}", daemon=True)
        self.reader.start()

    def _read(self, stream) -> None:
        for raw in stream:
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                self.problems.append(f"{self.name}: {raw.rstrip()}")
                continue
            self.take(line)
        if stream is not self.process.stderr:
            self.problems.extend(f"{self.name}: {raw.rstrip()}" for raw in self.process.stderr if raw.strip())

    def take(self, line: dict) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; the exit code once its output is read."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.reader.join(5)
        return code


class Proxy(Child):
    """A `ddc run` child process; keeps its latest stats line and its warnings and errors."""

    def __init__(self, name: str, config_text: str, directory: Path):
        config = directory / f"{name}.toml"
        config.write_text(config_text)
        self.stats: dict = {}
        self.summary: dict = {}
        super().__init__(name, ["run", str(config)], "stderr")

    def take(self, line: dict) -> None:
        message = line.get("message", "")
        if line.get("event") == "link stats":
            self.stats = line
        elif line.get("event") == "link summary":
            self.summary = line
        elif "listening on" in message or "sending" in message:
            self.ready.set()
        if line.get("level") in ("warning", "error"):
            self.problems.append(f"{self.name}: {message}")


class HostileLinkProcess(Child):
    """`ddc diode-sim` between the ingress and the egress; its last counters line is the link's own account."""

    def __init__(self, forward_port: int, loss: str, burst_rate: str):
        self.port = free_udp_port()
        self.counters: dict = {}
        super().__init__("diode-sim", ["diode-sim", f"127.0.0.1:{self.port}", f"127.0.0.1:{forward_port}",
                                       "--loss", loss, "--burst-rate", burst_rate, "--report-every", "500ms"],
                         "stdout")

    def take(self, line: dict) -> None:
        if "listening" in line:
            self.ready.set()
        else:
            self.counters = line


def ingress_config(ports: dict, link_rate: str, fec: str) -> str:
    return INGRESS_CONFIG.format(**ports, link_rate=link_rate, fec=f"fec = {json.dumps(fec)}")


def check_options(offered_rate: str, link_rate: str, loss: str, burst_rate: str, fec: str) -> None:
    """ValueError or ConfigError, with the offending value, before any process starts."""
    parse_rate(offered_rate), parse_probability(loss), parse_probability(burst_rate)
    ports = {"source_port": 1, "send_port": 2}
    settings_from_mapping(tomllib.loads(ingress_config(ports, link_rate, fec)), "ddc demo options")


def run_demo(seconds: float = 10.0, offered_rate: str = "200Mbit/s", link_rate: str = "1Gbit/s",
             verbose: bool = False, out=None, loss: str = "0", burst_rate: str = "0", fec: str = "off") -> int:
    out = out or sys.stdout
    collector_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    set_buffer(collector_socket, "receive", 32 << 20)
    collector_socket.bind(("127.0.0.1", 0))
    ports = {"source_port": free_udp_port(), "link_port": free_udp_port(),
             "target_port": collector_socket.getsockname()[1]}
    offered = parse_rate(offered_rate)
    hostile = parse_probability(loss) > 0 or parse_probability(burst_rate) > 0
    live = out.isatty()
    with tempfile.TemporaryDirectory(prefix="ddc-demo-") as directory:
        egress = Proxy("egress", EGRESS_CONFIG.format(**ports), Path(directory))
        link = HostileLinkProcess(ports["link_port"], loss, burst_rate) if hostile else None
        children = [egress] + ([link] if link else [])
        if link and not link.ready.wait(15):
            for child in children:
                child.stop(5)
            print("ddc demo: diode-sim did not start:\n  " + "\n  ".join(link.problems), file=out)
            return 1
        ports["send_port"] = link.port if link else ports["link_port"]
        ingress = Proxy("ingress", ingress_config(ports, link_rate, fec), Path(directory))
        proxies = (ingress, egress)
        if not all(proxy.ready.wait(15) for proxy in proxies):
            for child in (ingress, *children):
                child.stop(5)
            print("ddc demo: a proxy did not start:\n  " + "\n  ".join(ingress.problems + egress.problems), file=out)
            return 1
        through = (f"diode-sim (loss {loss}, bursts {burst_rate}) → " if link else "")
        print(f"ddc demo: generator → ingress 127.0.0.1:{ports['source_port']} → link "
              f"127.0.0.1:{ports['link_port']} at {format_rate(parse_rate(link_rate))}, FEC {fec} → "
              f"{through}egress → collector; offering {format_rate(offered)} for {seconds:g} s", file=out)
        collector = Collector(collector_socket)
        generator = Generator(ports["source_port"], offered, seconds)
        collector.start()
        started = time.monotonic()
        generator.start()
        try:
            last_print, last_delivered, quiet_since = 0.0, -1, time.monotonic()
            while True:
                time.sleep(0.1)
                now = time.monotonic()
                delivered = len(collector.seen)
                if delivered != last_delivered:
                    last_delivered, quiet_since = delivered, now
                if not generator.is_alive() and (delivered >= generator.sent or now - quiet_since > 1.5):
                    break
                elapsed = now - started
                if live or elapsed - last_print >= 1.0:
                    last_print = elapsed
                    line = (f"{elapsed:5.1f} s  generated {generator.sent:>8}  delivered {delivered:>8}  "
                            f"{format_rate(collector.bytes / max(elapsed, 1e-9)):>12}  "
                            f"link datagrams {egress.stats.get('datagrams_received', 0):>9}  "
                            f"link lost {egress.stats.get('datagrams_lost', 0)}")
                    print(("\r" + line) if live else line, end="" if live else "\n", file=out, flush=True)
        except KeyboardInterrupt:
            generator.stop.set()
        generator.join()
        elapsed = time.monotonic() - started
        ingress_code = ingress.stop()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and egress.stats.get("shutdowns_received", 0) == 0:
            time.sleep(0.05)
        egress_code = egress.stop()
        if link:
            link.stop()
    collector.stop.set()
    collector.join()
    collector_drops = KernelDrops(collector_socket).read()
    collector_socket.close()
    return report(out, live, generator, collector, collector_drops, ingress, egress, link, elapsed,
                  ingress_code, egress_code, verbose)


def report(out, live, generator, collector, collector_drops, ingress, egress, link, elapsed,
           ingress_code, egress_code, verbose) -> int:
    source, sink = ingress.summary, egress.summary
    if not source or not sink:
        print("\nddc demo: a proxy exited without its summary:\n  " + "\n  ".join(ingress.problems + egress.problems),
              file=out)
        return 1
    missing = generator.sent - len(collector.seen)
    rows = [
        ("generated", f"{generator.sent} datagrams, {generator.bytes} bytes"),
        ("ingress source", f"received {source['source_datagrams_received']}, kernel drops "
                           f"{source['source_kernel_drops']}, buffer drops {source['buffer_records_dropped']}"),
        ("link", f"{source['frames_sent']} frames in {source['datagrams_sent']} datagrams; egress received "
                 f"{sink['datagrams_received']}, lost {sink['datagrams_lost']}, kernel drops "
                 f"{sink['kernel_receive_drops']}"),
        *([("diode-sim", f"received {link.counters.get('received', 0)}, dropped "
                         f"{link.counters.get('lost_random', 0) + link.counters.get('lost_burst', 0)}")] if link else []),
        *([("FEC", f"{sink.get('datagrams_recovered', 0)} datagrams rebuilt from parity "
                   f"({sink.get('parity_received', 0)} parity received), "
                   f"{sink.get('fec_blocks_unrecoverable', 0)} blocks beyond repair")]
          if sink.get("parity_received") else []),
        ("egress sink", f"{sink['records_received']} records rebuilt, buffer drops {sink['buffer_records_dropped']}, "
                        f"sent {sink['sink_datagrams_sent']}"),
        ("collector", f"delivered {len(collector.seen)}, missing {missing}, corrupted {collector.corrupted}, "
                      f"duplicated {collector.duplicates}, kernel drops {collector_drops}"),
        ("throughput", f"{format_rate(collector.bytes / max(elapsed, 1e-9))} delivered over {elapsed:.1f} s"),
    ]
    print(("\n" if live else "") + "summary:", file=out)
    for stage, text in rows:
        print(f"  {stage:<15} {text}", file=out)
    if verbose or missing:
        for problem in ingress.problems + egress.problems:
            print(f"  note: {problem}", file=out)
    clean = (missing == 0 and collector.corrupted == 0 and collector.duplicates == 0
             and ingress_code == 0 and egress_code == 0)
    return 0 if clean else 1
