"""Line coverage of chosen Cython functions, from llvm-cov's report of the C that Cython generated.

    python fuzz/pyx_coverage.py SHOW.txt FILE.pyx FUNCTION [FUNCTION...]

SHOW.txt is `llvm-cov show` of one generated .c file (fuzz/coverage.sh writes them). Cython puts a comment
`/* "ddc/_core/x.pyx":N` before the C of .pyx line N; a .pyx line counts as executed as many times as the
most executed C line under its comments. Prints each function's .pyx lines with those counts ("-" where a
line made no C of its own: comments, declarations without code, continuation lines).
"""

import re
import sys
from pathlib import Path

MARKER = re.compile(r'/\* "([^"]+)":(\d+)')
SHOW_LINE = re.compile(r"^\s*(\d+)\|\s*([0-9.]+[kMG]?)?\|(.*)$")
DEFINITION = re.compile(r"^(\s*)(?:cdef|cpdef|def)\s[^=]*?\b(\w+)\s*\(")


def count(text: str) -> int:
    scale = {"k": 10**3, "M": 10**6, "G": 10**9}
    if text[-1] in scale:
        return int(float(text[:-1]) * scale[text[-1]])
    return int(float(text))


def pyx_counts(show: Path, pyx_name: str) -> dict[int, int]:
    """{pyx line: executions} for the lines of pyx_name that made C code."""
    counts: dict[int, int] = {}
    current = None
    for raw in show.read_text(errors="replace").splitlines():
        match = SHOW_LINE.match(raw)
        if not match:
            continue
        executed, source = match.group(2), match.group(3)
        marker = MARKER.search(source)
        if marker:
            current = int(marker.group(2)) if marker.group(1).endswith(pyx_name) else None
            continue
        if current is not None and executed is not None:
            counts[current] = max(counts.get(current, 0), count(executed))
    return counts


def function_lines(pyx: Path, name: str) -> range:
    lines = pyx.read_text().splitlines()
    for index, line in enumerate(lines):
        match = DEFINITION.match(line)
        if match and match.group(2) == name:
            indent = len(match.group(1))
            end = index + 1
            while end < len(lines):
                stripped = lines[end].strip()
                if stripped and len(lines[end]) - len(lines[end].lstrip()) <= indent:
                    break
                end += 1
            return range(index + 1, end + 1)
    raise SystemExit(f"no function {name} in {pyx}")


def main(arguments: list[str]) -> int:
    if len(arguments) < 3:
        print(__doc__)
        return 2
    show, pyx, names = Path(arguments[0]), Path(arguments[1]), arguments[2:]
    counts = pyx_counts(show, pyx.name)
    source = pyx.read_text().splitlines()
    for name in names:
        span = function_lines(pyx, name)
        code = [line for line in span if line in counts]
        executed = [line for line in code if counts[line] > 0]
        print(f"{pyx}: {name}, lines {span.start}-{span.stop - 1}: {len(executed)} of {len(code)} lines with code "
              f"executed")
        for line in span:
            shown = f"{counts[line]:>10,}" if line in counts else f"{'-':>10}"
            flag = "  ####" if line in counts and counts[line] == 0 else "      "
            print(f"{shown}{flag}{line:>5}  {source[line - 1]}")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
