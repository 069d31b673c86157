"""A million hostile datagrams at a live, keyed egress with FEC (issue #20's gate), while a real stream crosses.

    python bench/hostile_flood.py [--datagrams 1000000] [--records 200000] [--results bench/results-flood.json]

The attack is tests/flood.py's, which the suite runs at 100 000 datagrams: garbage, corrupted and forged
datagrams, forged FEC blocks without a key, with a wrong tag and with another key, a recorded older session with
its parity, and replays of the live session's own data and parity. Passes when the stream arrives byte for byte,
nothing of the attack is delivered, every bad datagram is counted under its reason, no loss is reported, and the
egress's RSS grows by less than 16 MiB.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from conftest import DdcProcess  # noqa: E402
from flood import problems, run_flood  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datagrams", type=int, default=1_000_000)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--results", default=str(HERE / "results-flood.json"))
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ddc-flood-") as directory:
        started = []

        def start_ddc(name, config_text):
            path = Path(directory, f"{name}.toml")
            path.write_text(config_text)
            started.append(DdcProcess(path, Path(directory, f"{name}.log")))
            return started[-1]

        try:
            result = run_flood(start_ddc, Path(directory), arguments.datagrams, arguments.records)
        finally:
            for proxy in started:
                if proxy.process.poll() is None:
                    proxy.kill()
    found = problems(result)
    egress = result["egress"]
    summary = {"datagrams": arguments.datagrams, "records": result["records"], "delivered": result["delivered"],
               "identical": result["identical"], "attack_seconds": round(result["attack_seconds"], 1),
               "attack_rate": round(arguments.datagrams / result["attack_seconds"]),
               "rss_before_mb": round(result["rss_before"] / 2**20, 1),
               "rss_peak_mb": round(result["rss_peak"] / 2**20, 1), "plan": result["plan"],
               "counted": {name: egress[name] for name in sorted(egress) if name.startswith("dropped_")},
               "parity_received": egress["parity_received"], "problems": found}
    Path(arguments.results).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print("PASS" if not found else "FAIL: " + "; ".join(found))
    return 0 if not found else 1


if __name__ == "__main__":
    sys.exit(main())
