"""Every input bench/fuzz.py ever kept, replayed; and a short run of each fuzz target inside the suite."""

import random
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
import fuzz  # noqa: E402

fuzz.crypto.load_sealing_library()
KEPT = sorted(fuzz.REGRESSIONS.glob("*.bin"))


@pytest.mark.parametrize("path", KEPT, ids=[path.name for path in KEPT])
def test_a_kept_input_is_refused_cleanly(path):
    target = fuzz.TARGETS[path.name.split("-")[0]](random.Random(0))
    try:
        target.run(fuzz.deserialize(path.read_bytes()))
    except ValueError:
        pass
    if hasattr(target, "receiver"):
        fuzz.check_receiver(target.receiver)


@pytest.mark.parametrize("name", sorted(fuzz.TARGETS))
def test_twenty_thousand_fuzzed_inputs_end_in_a_result_or_a_clear_refusal(name, tmp_path, monkeypatch):
    monkeypatch.setattr(fuzz, "REGRESSIONS", tmp_path)
    result = fuzz.fuzz(name, 20_000, seed=7)
    assert result["failed"] is None, result
