#!/usr/bin/env python3
"""The atheris (libFuzzer) entry point for the directory sink; the target is fuzz/directory_targets.py.

    fuzz/run.sh directory [libFuzzer options]       # seeds, crashers kept: docs/fuzzing.md
"""

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["ddc", "directory_targets"]):
    import directory_targets

if __name__ == "__main__":
    import logging
    logging.getLogger("ddc").setLevel(logging.CRITICAL)  # every refused record logs a line: time, not coverage
    atheris.Setup(sys.argv, directory_targets.test_one_input)
    atheris.Fuzz()
