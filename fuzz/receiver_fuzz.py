#!/usr/bin/env python3
"""The atheris (libFuzzer) entry point for the egress receiver; the targets live in fuzz/receiver_targets.py.

    fuzz/run.sh TARGET [libFuzzer options]            # sanitized build, seeds, crashers kept: docs/fuzzing.md
    python fuzz/receiver_fuzz.py TARGET [libFuzzer options] [corpus folders]

TARGET is plain, sealed or fec. Run under fuzz/env.sh sanitized, the receiver's C is the ASan/UBSan build with
libFuzzer's coverage counters; on the normal build only the Python around it guides the fuzzer (a warning says so).
"""

import ctypes
import os
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

# libFuzzer's -jobs/-workers run this file again with the same options (minus the target, which atheris must not
# see), so fuzz/run.sh also passes the target in DDC_FUZZ_TARGET and puts the virtualenv first on PATH.
if os.environ.get("DDC_FUZZ_TARGET") and (len(sys.argv) < 2 or sys.argv[1] not in ("plain", "sealed", "fec")):
    TARGET = os.environ["DDC_FUZZ_TARGET"]
elif len(sys.argv) >= 2 and sys.argv[1] in ("plain", "sealed", "fec"):
    TARGET = sys.argv.pop(1)
else:
    sys.exit(__doc__)

with atheris.instrument_imports(include=["ddc"]):
    import receiver_targets
    from ddc._core import receiver as receiver_module

if "/build/sanitized/" not in receiver_module.__file__:
    print(f"WARNING: {receiver_module.__file__} is not the sanitized build; run under `. fuzz/env.sh sanitized`",
          file=sys.stderr)
else:
    print(f"INFO: receiver from {receiver_module.__file__}", file=sys.stderr)



def libfuzzer_mutate():
    """libFuzzer's byte mutation. atheris.Mutate refuses to run with a preloaded libFuzzer ("Fuzz() must be
    called before Mutate()"), so then LLVMFuzzerMutate is called straight from the preloaded library."""
    try:
        native = ctypes.CDLL(None).LLVMFuzzerMutate
    except AttributeError:
        return atheris.Mutate
    native.restype = ctypes.c_size_t
    native.argtypes = (ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t)

    def mutate(data: bytes, max_size: int) -> bytes:
        max_size = max(max_size, len(data), 1)
        buffer = ctypes.create_string_buffer(data, max_size)
        return buffer.raw[:native(buffer, len(data), max_size)]

    return mutate


runner = receiver_targets.Runner(TARGET)
mutator = receiver_targets.Mutator(TARGET, libfuzzer_mutate())


def test_one_input(data: bytes) -> None:
    runner.run(data)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input, custom_mutator=mutator.mutate, custom_crossover=mutator.crossover)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
