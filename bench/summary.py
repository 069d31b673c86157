"""One table of every gated figure the benchmarks of this run wrote, shaped as docs/performance.md's tables.

    python bench/summary.py [--since UNIX_TIME]

`make bench` runs every benchmark (each prints its own table and writes bench/results-*.json), then this,
so the run ends with the figures side by side: area, figure, value, gate, result, and when it was measured.
Files older than --since (the start of the run) are left out, so a figure from an earlier run is never shown
as today's. Exits 1 if any figure shown missed its gate.
"""

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rows(since: float) -> list[tuple]:
    found = []
    for path in sorted(HERE.glob("results-*.json")):
        if path.stat().st_mtime < since:
            continue
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            found.append((path.stem.removeprefix("results-"), f"unreadable: {error}", "", "", False, ""))
            continue
        for figure in results.get("figures", []):
            value = figure.get("value")
            shown = f"{value:,.3f} {figure.get('unit', '')}".strip() if isinstance(value, (int, float)) else str(value)
            found.append((path.stem.removeprefix("results-"), figure.get("name", "?"), shown, figure.get("gate", ""),
                          bool(figure.get("passed")), results.get("time", "")[:10]))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--since", type=float, default=0.0, help="leave out results written before this Unix time")
    arguments = parser.parse_args()
    found = rows(arguments.since)
    if not found:
        print(f"no benchmark results written since {time.ctime(arguments.since)}", file=sys.stderr)
        return 1
    print("\n| area | figure | current | gate | result | measured |\n| --- | --- | --- | --- | --- | --- |")
    for area, name, shown, gate, passed, day in found:
        print(f"| {area} | {name} | {shown} | {gate} | {'met' if passed else '**missed**'} | {day} |")
    missed = sum(not row[4] for row in found)
    print(f"\n{len(found)} figures, {missed} below their gate")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
