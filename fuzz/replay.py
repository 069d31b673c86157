"""Runs fuzz inputs through the receiver targets once each, without a fuzzer: a crasher to look at, the seed
corpus, or a whole grown corpus for coverage (fuzz/coverage.sh).

    python fuzz/replay.py TARGET PATH...        # files, or folders of them
    python fuzz/replay.py --all                 # every target's seeds (tests/fuzz_corpus) and crashers
                                                # (tests/fuzz_regressions), plus build/fuzz/corpus if present

Under `. fuzz/env.sh sanitized` the C is checked by ASan/UBSan; under `. fuzz/env.sh coverage` it records
line coverage. Exits 1 on the first input that breaks a promise, naming it.
"""

import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from receiver_targets import REPOSITORY, TARGETS, Runner, corpus_files  # noqa: E402

GROWN = REPOSITORY / "build" / "fuzz" / "corpus"


def inputs(paths: list[Path]) -> list[Path]:
    out = []
    for path in paths:
        if path.is_dir():
            out += sorted(entry for entry in path.iterdir() if entry.is_file() and not entry.name.startswith("."))
        elif path.exists():
            out.append(path)
    return out


def replay(target: str, files: list[Path]) -> bool:
    runner = Runner(target)
    started = time.monotonic()
    for path in files:
        try:
            runner.run(path.read_bytes())
        except Exception:  # noqa: BLE001 - every failure is reported with the input that caused it
            traceback.print_exc()
            print(f"{target}: FAILED on {path}")
            return False
    print(f"{target:<7} {len(files):>6} inputs in {time.monotonic() - started:6.1f} s, every promise kept")
    return True


def main(arguments: list[str]) -> int:
    if arguments == ["--all"]:
        plan = {target: corpus_files(target) + inputs([GROWN / target]) for target in TARGETS}
    elif len(arguments) >= 2 and arguments[0] in TARGETS:
        plan = {arguments[0]: inputs([Path(argument) for argument in arguments[1:]])}
    else:
        print(__doc__)
        return 2
    return 0 if all(replay(target, files) for target, files in plan.items()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
