"""Idle cost: CPU of an ingress and an egress whose link carries heartbeats and nothing else.

    python bench/idle.py [--seconds 30] [--results bench/results-idle.json]

Two `ddc run` processes at their defaults (one UDP link, heartbeats every
second, Prometheus endpoints on), no traffic offered. After a warm-up that
leaves start-up out, utime + stime of each process is read from /proc over the
measuring window. Gate (issue #3): < 1 % of one core per process. The egress's
own metrics must show the link up and a heartbeat for every second of the
window, so a link that died (and would cost nothing) cannot pass.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from harness import GateTable, cpu_seconds, metric, start_proxies  # noqa: E402

from ddc.transport.sockets import free_tcp_port, free_udp_port  # noqa: E402

WARM_UP_SECONDS = 3.0
LIMIT = 0.01


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--results", default=str(HERE / "results-idle.json"))
    arguments = parser.parse_args()
    source_port, link_port, target_port = free_udp_port(), free_udp_port(), free_udp_port()
    ingress_http, egress_http = free_tcp_port(), free_tcp_port()
    with tempfile.TemporaryDirectory(prefix="ddc-idle-") as directory:
        ingress, egress = start_proxies(
            directory,
            f'role = "ingress"\n[telemetry.http]\nlisten = "127.0.0.1:{ingress_http}"\n'
            f'[links.idle.source]\ntype = "udp"\nlisten = "127.0.0.1:{source_port}"\n'
            f'[links.idle.transport]\ndestination = "127.0.0.1:{link_port}"\n',
            f'role = "egress"\n[telemetry.http]\nlisten = "127.0.0.1:{egress_http}"\n'
            f'[links.idle.transport]\nlisten = "127.0.0.1:{link_port}"\n'
            f'[links.idle.sink]\ntype = "udp"\ntarget = "127.0.0.1:{target_port}"\n')
        try:
            time.sleep(WARM_UP_SECONDS)
            heartbeats_before = metric(egress_http, "ddc_heartbeats_received_total")
            before = cpu_seconds(ingress.pid), cpu_seconds(egress.pid)
            started = time.monotonic()
            time.sleep(arguments.seconds)
            after = cpu_seconds(ingress.pid), cpu_seconds(egress.pid)
            window = time.monotonic() - started
            heartbeats = metric(egress_http, "ddc_heartbeats_received_total") - heartbeats_before
            link_up = metric(egress_http, "ddc_link_up")
        finally:
            for process in (ingress, egress):
                process.terminate()
                process.wait(30)
    table = GateTable()
    expected = int(window) - 1
    table.record("heartbeats received in the window", heartbeats, f">= {expected}, link up",
                 heartbeats >= expected and link_up == 1)
    for side, spent_before, spent_after in zip(("ingress", "egress"), before, after):
        share = (spent_after - spent_before) / window
        table.record(f"{side} idle CPU", 100 * share, f"< {100 * LIMIT:g} % of a core over {window:.0f} s",
                     share < LIMIT, "%")
    return table.finish(arguments.results, quick=False)


if __name__ == "__main__":
    sys.exit(main())
