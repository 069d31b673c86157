"""Memory under load: RSS of each proxy with the default config while moving data at full rate.

    python bench/memory.py [--seconds 60] [--results bench/results-memory.json]

An ingress reads /dev/zero as a byte stream (so it never runs dry) and sends at
the default rate (1 Gbit/s, 1472-byte datagrams); its egress writes to
/dev/null. RSS of both processes is sampled every second. Gates (issue #3):
peak RSS < 120 MB per process, and no growth: the mean of the last fifth of the
run is within 5 % (or 5 MB) of the mean of the second fifth.
"""

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from harness import start_proxies  # noqa: E402

from ddc.transport.sockets import free_udp_port  # noqa: E402

LIMIT_BYTES = 120 * 1000 * 1000


def rss(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--results", default=str(HERE / "results-memory.json"))
    arguments = parser.parse_args()
    port = free_udp_port()
    with tempfile.TemporaryDirectory(prefix="ddc-memory-") as directory:
        egress_log = open(Path(directory, "egress.log"), "w+")
        ingress, egress = start_proxies(
            directory,
            f'role = "ingress"\n[telemetry]\nlog_format = "json"\n'
            f'[links.load.source]\ntype = "file"\npath = "/dev/zero"\n'
            f'[links.load.transport]\ndestination = "127.0.0.1:{port}"\n',
            f'role = "egress"\n[telemetry]\nlog_format = "json"\n'
            f'[links.load.transport]\nlisten = "127.0.0.1:{port}"\n'
            f'[links.load.sink]\ntype = "file"\npath = "/dev/null"\n',
            egress_stderr=egress_log, egress_head_start=1.5)
        samples = {"ingress": [], "egress": []}
        started = time.monotonic()
        while time.monotonic() - started < arguments.seconds:
            time.sleep(1.0)
            samples["ingress"].append(rss(ingress.pid))
            samples["egress"].append(rss(egress.pid))
        ingress.send_signal(signal.SIGTERM)
        ingress.wait(60)
        time.sleep(1.0)
        egress.send_signal(signal.SIGTERM)
        egress.wait(60)
        egress_log.seek(0)
        summary = next((json.loads(line) for line in egress_log if '"link summary"' in line), {})
    elapsed = arguments.seconds
    figures, passed_all = [], True
    for side, values in samples.items():
        fifth = max(len(values) // 5, 1)
        early = sum(values[fifth:2 * fifth]) / fifth
        late = sum(values[-fifth:]) / fifth
        growth = late - early
        peak_ok = max(values) < LIMIT_BYTES
        growth_ok = growth <= max(0.05 * early, 5e6)
        passed_all &= peak_ok and growth_ok
        figures.append({"name": f"{side} peak RSS", "value": max(values) / 1e6, "unit": "MB", "gate": "< 120",
                        "passed": peak_ok})
        figures.append({"name": f"{side} RSS growth", "value": growth / 1e6, "unit": "MB",
                        "gate": "<= 5 % or 5 MB", "passed": growth_ok})
    delivered = summary.get("sink_bytes_written", 0)
    figures.append({"name": "egress throughput", "value": delivered / elapsed / 1e6, "unit": "MB/s",
                    "gate": "measured", "passed": True})
    for figure in figures:
        print(f"{figure['name']:<22} {figure['value']:>10.1f} {figure['unit']:<5} {figure['gate']:<16} "
              f"{'pass' if figure['passed'] else 'FAIL'}")
    Path(arguments.results).write_text(json.dumps({"seconds": elapsed, "figures": figures,
                                                   "samples_bytes": samples}, indent=2))
    return 0 if passed_all else 1


if __name__ == "__main__":
    sys.exit(main())
