"""UDP → DDC → UDP, DDC's main job: loss and CPU per datagram of each proxy.

    python bench/udp_streams.py [--datagrams 500000] [--size 1000] [--rate 150e6]
                                [--results bench/results-udp-streams.json]

The C sender of bench/kernel_baseline.c offers datagrams at a steady rate to an
ingress with a UDP source; its egress's UDP sink sends them on to the C
receiver, which counts them. Two `ddc run` processes with default settings
(the link at 16 Gbit/s, jumbo datagrams on loopback). Figures: datagrams
delivered (gate: all of them) and the CPU time each proxy spent per datagram
(utime + stime from /proc, measured only; the machine is shared). Before the
record ring (session 10) both proxies spent 5.5–6.4 µs per datagram here and
the egress lost a fifth of the stream at 150 000 datagrams/s.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from harness import GateTable, cpu_seconds, start_proxies  # noqa: E402
from transport import compile_baseline  # noqa: E402

from ddc.transport.sockets import free_udp_port  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datagrams", type=int, default=500_000)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=150e6, help="offered bytes/s (default 150 MB/s)")
    parser.add_argument("--results", default=str(HERE / "results-udp-streams.json"))
    arguments = parser.parse_args()
    binary = compile_baseline()
    source_port, link_port, target_port = free_udp_port(), free_udp_port(), free_udp_port()
    with tempfile.TemporaryDirectory(prefix="ddc-udp-streams-") as directory:
        receiver = subprocess.Popen([str(binary), "recv", str(target_port), str(arguments.size), "1500"],
                                    stdout=subprocess.PIPE, text=True)
        assert receiver.stdout.readline().strip() == "ready"
        ingress, egress = start_proxies(
            directory,
            f'role = "ingress"\n[links.udp.source]\ntype = "udp"\nlisten = "127.0.0.1:{source_port}"\n'
            f'[links.udp.transport]\ndestination = "127.0.0.1:{link_port}"\ndatagram_size = 8972\n'
            f'rate = "16Gbit/s"\n',
            f'role = "egress"\n[links.udp.transport]\nlisten = "127.0.0.1:{link_port}"\n'
            f'[links.udp.sink]\ntype = "udp"\ntarget = "127.0.0.1:{target_port}"\n')
        time.sleep(2.0)
        before = cpu_seconds(ingress.pid), cpu_seconds(egress.pid)
        subprocess.run([str(binary), "send", "127.0.0.1", str(source_port), str(arguments.size),
                        str(arguments.datagrams), str(arguments.rate)], check=True, stdout=subprocess.DEVNULL)
        time.sleep(1.0)
        after = cpu_seconds(ingress.pid), cpu_seconds(egress.pid)
        for process in (ingress, egress):
            process.terminate()
            process.wait(30)
        delivered = int(receiver.communicate(timeout=30)[0].split()[0])
    table = GateTable()
    table.record("datagrams delivered", delivered, f"= {arguments.datagrams}", delivered == arguments.datagrams)
    for side, spent_before, spent_after in zip(("ingress", "egress"), before, after):
        per_datagram = 1e6 * (spent_after - spent_before) / arguments.datagrams
        table.record(f"{side} CPU per datagram", per_datagram, "measured", True, "µs")
    return table.finish(arguments.results, quick=False)


if __name__ == "__main__":
    sys.exit(main())
