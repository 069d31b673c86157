"""The atheris (libFuzzer) entry point for the egress receiver; the targets live in fuzz/receiver_targets.py.

    fuzz/run.sh TARGET [libFuzzer options]            # sanitized build, seeds, crashers kept: docs/fuzzing.md
    python fuzz/receiver_fuzz.py TARGET [libFuzzer options] [corpus folders]

TARGET is plain, sealed or fec. Run under fuzz/env.sh sanitized, the receiver's C is the ASan/UBSan build with
libFuzzer's coverage counters; on the normal build only the Python around it guides the fuzzer (a warning says so).
"""

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

if len(sys.argv) < 2 or sys.argv[1] not in ("plain", "sealed", "fec"):
    sys.exit(__doc__)
TARGET = sys.argv.pop(1)

with atheris.instrument_imports(include=["ddc"]):
    import receiver_targets
    from ddc._core import receiver as receiver_module

if "/build/sanitized/" not in receiver_module.__file__:
    print(f"WARNING: {receiver_module.__file__} is not the sanitized build; run under `. fuzz/env.sh sanitized`",
          file=sys.stderr)
else:
    print(f"INFO: receiver from {receiver_module.__file__}", file=sys.stderr)

runner = receiver_targets.Runner(TARGET)
mutator = receiver_targets.Mutator(TARGET, atheris.Mutate)


def test_one_input(data: bytes) -> None:
    runner.run(data)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input, custom_mutator=mutator.mutate, custom_crossover=mutator.crossover)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
