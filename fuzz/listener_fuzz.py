#!/usr/bin/env python3
"""The atheris (libFuzzer) entry point for the Kafka listener's parsers; the target is fuzz/listener_targets.py.

    fuzz/run.sh listener [libFuzzer options]       # sanitized build, seeds, crashers kept: docs/fuzzing.md
"""

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["ddc", "listener_targets"]):
    import listener_targets

if __name__ == "__main__":
    listener_targets.protocol.load_every_version()
    atheris.Setup(sys.argv, listener_targets.test_one_input)
    atheris.Fuzz()
