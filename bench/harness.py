"""What the benchmark scripts share: a DDC receiving process that drains one link."""

import json
import multiprocessing
import os
import platform
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ddc.transport.sockets import KernelDrops, free_udp_port, set_buffer

IDLE_SECONDS = 2.0


def start_proxies(directory: str, ingress_config: str, egress_config: str, egress_stderr=subprocess.DEVNULL,
                  egress_head_start: float = 0.0) -> tuple[subprocess.Popen, subprocess.Popen]:
    """Writes the two configs into directory and runs `ddc run` on each, the egress first (so the link's
    first datagrams find it listening); returns (ingress, egress)."""
    paths = {role: Path(directory, f"{role}.toml") for role in ("ingress", "egress")}
    paths["ingress"].write_text(ingress_config)
    paths["egress"].write_text(egress_config)
    egress = subprocess.Popen([sys.executable, "-m", "ddc", "run", str(paths["egress"])], stderr=egress_stderr)
    time.sleep(egress_head_start)
    ingress = subprocess.Popen([sys.executable, "-m", "ddc", "run", str(paths["ingress"])],
                               stderr=subprocess.DEVNULL)
    return ingress, egress


def metric(port: int, name: str) -> float:
    """One sample of a metric from a proxy's /metrics, summed over its labels."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(value) for value in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, all its threads included (librdkafka's too)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drain_link(port: int, frames_expected: int, results, on_frame=len, receiver_options=None, keys=()) -> None:
    """Receives frames on port until frames_expected arrive (or 2 s pass without one) and puts
    {"frames", "handled", "seconds" (first to last frame), "counters"} on the results queue.

    Runs in a child process; puts "ready" first. on_frame(frame) returns a number to add up
    (bytes by default, records when it decodes). keys: (key id, key) pairs the link is sealed with."""
    from ddc._core.receiver import LinkReceiver
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    set_buffer(sock, "receive", 64 << 20)
    sock.bind(("127.0.0.1", port))
    receiver = LinkReceiver(**(receiver_options or {}))
    if keys:
        from ddc.crypto import load_sealing_library
        load_sealing_library()
    for key_id, key in keys:
        receiver.add_key(key, key_id)
    results.put("ready")
    frames, handled, first, last = 0, 0, 0.0, 0.0
    idle_since = time.monotonic()
    while frames < frames_expected and time.monotonic() - idle_since < IDLE_SECONDS:
        for frame in receiver.receive(sock.fileno(), 100):
            handled += on_frame(frame)
            frames += 1
            last = idle_since = time.monotonic()
            first = first or last
    counters = receiver.counters()
    counters["kernel_receive_drops"] = KernelDrops(sock).read()
    results.put({"frames": frames, "handled": handled, "seconds": last - first, "counters": counters})


def count_records(frame) -> int:
    """on_frame for frames that are record batches: how many records the frame holds."""
    from ddc._core.records import decode_batch
    return len(decode_batch(frame))


class DrainingReceiver:
    """drain_link in a child process on a free loopback port, ready to receive when constructed."""

    def __init__(self, frames_expected: int, on_frame=len, **options):
        self.port = free_udp_port()
        context = multiprocessing.get_context("fork")
        self._results = context.Queue()
        self._process = context.Process(target=drain_link, args=(self.port, frames_expected, self._results, on_frame),
                                        kwargs=options)
        self._process.start()
        assert self._results.get(timeout=30) == "ready"

    def result(self, timeout: float = 120) -> dict:
        """{"frames", "handled", "seconds", "counters"} once the expected frames arrived or the link went idle."""
        received = self._results.get(timeout=timeout)
        self._process.join(10)
        return received


class GateTable:
    """Figures with their gates: printed as a table, written as JSON, passed or not as a whole."""

    def __init__(self):
        self.figures, self.rows = [], []

    def record(self, name, value, gate, passed, unit="") -> None:
        self.figures.append({"name": name, "value": value, "gate": gate, "passed": passed, "unit": unit})
        self.rows.append((name, f"{value:,.3f} {unit}".strip(), gate, "pass" if passed else "FAIL"))

    def finish(self, results_path: str, quick: bool) -> int:
        """Prints the table, writes the JSON file; the exit code: 0 when every gate passed, else 1."""
        width = max(len(row[0]) for row in self.rows)
        gate_width = max(len(row[2]) for row in self.rows)
        print(f"\n{'figure'.ljust(width)}  {'value':>18}  {'gate'.ljust(gate_width)} result")
        for name, shown, gate, verdict in self.rows:
            print(f"{name.ljust(width)}  {shown:>18}  {gate.ljust(gate_width)} {verdict}")
        Path(results_path).write_text(json.dumps({
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": quick,
            "figures": self.figures}, indent=2))
        print(f"\nresults written to {results_path}")
        return 0 if all(figure["passed"] for figure in self.figures) else 1
