"""Every input a fuzzer ever kept, replayed on the normal build; and a short run of each fuzz target.

- the coverage-guided receiver targets (fuzz/receiver_targets.py, run by atheris on the sanitized build, see
  docs/fuzzing.md): their seed corpus captured from real streams (tests/fuzz_corpus/TARGET/) and every
  crasher they kept (tests/fuzz_regressions/TARGET/), through the same harness code the fuzzer runs;
- bench/fuzz.py's unguided structure-aware mutator: the inputs it kept (tests/fuzz_regressions/*.bin), and
  20 000 inputs of each of its targets.
"""

import random
import re
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY / "bench"))
sys.path.insert(0, str(REPOSITORY / "fuzz"))
import fuzz  # noqa: E402  (bench/fuzz.py)
import listener_targets  # noqa: E402  (fuzz/listener_targets.py)
import directory_targets  # noqa: E402  (fuzz/directory_targets.py)
import receiver_targets  # noqa: E402  (fuzz/receiver_targets.py)

fuzz.crypto.load_sealing_library()
RECEIVER_INPUTS = [("receiver", target, path) for target in receiver_targets.TARGETS
                   for path in receiver_targets.corpus_files(target)]
BENCH_INPUTS = [("bench", path.name.split("-")[0], path) for path in sorted(fuzz.REGRESSIONS.glob("*.bin"))]
RUNNERS = {}


def runner(target: str) -> receiver_targets.Runner:
    if target not in RUNNERS:
        RUNNERS[target] = receiver_targets.Runner(target)
    return RUNNERS[target]


def test_every_receiver_target_has_seeds_from_real_streams():
    for target in receiver_targets.TARGETS:
        seeds = list((receiver_targets.CORPUS / target).glob("*.bin"))
        assert len(seeds) >= 5, target
        options = {receiver_targets.decode_input(path.read_bytes())[0] for path in seeds}
        assert {0, receiver_targets.RECEIVE} <= {option & receiver_targets.RECEIVE for option in options}, target


@pytest.mark.parametrize("kind, target, path", RECEIVER_INPUTS + BENCH_INPUTS,
                         ids=[f"{target}/{path.name}" for _, target, path in RECEIVER_INPUTS + BENCH_INPUTS])
def test_a_kept_input_is_refused_cleanly(kind, target, path):
    if kind == "receiver":
        counters = runner(target).run(path.read_bytes())  # raises receiver_targets.Finding on a broken promise
        assert counters["datagrams_received"] == sum(
            item is not None for item in receiver_targets.decode_input(path.read_bytes())[1])
        return
    bench_target = fuzz.TARGETS[target](random.Random(0))
    try:
        bench_target.run(fuzz.deserialize(path.read_bytes()))
    except ValueError:
        pass
    if hasattr(bench_target, "receiver"):
        fuzz.check_receiver(bench_target.receiver)


def test_the_fec_seeds_make_the_receiver_rebuild():
    recovered = sum(runner("fec").run(path.read_bytes())["datagrams_recovered"]
                    for path in receiver_targets.corpus_files("fec"))
    assert recovered > 100


def byte_flips(data: bytes, max_size: int, chooser=random.Random(1)) -> bytes:
    """Stands in for atheris.Mutate (libFuzzer's byte mutations) outside a fuzzing run."""
    out = bytearray(data[:max_size] or b"\0")
    for _ in range(chooser.randint(1, 4)):
        out[chooser.randrange(len(out))] = chooser.randrange(256)
    return bytes(out)


@pytest.mark.parametrize("target", receiver_targets.TARGETS)
def test_the_structure_aware_mutator_keeps_every_promise_for_a_short_run(target):
    mutator = receiver_targets.Mutator(target, byte_flips)
    corpus = [path.read_bytes() for path in receiver_targets.corpus_files(target)]
    chooser = random.Random(5)
    for seed in range(150):
        data = chooser.choice(corpus)
        if seed % 5 == 0:
            data = mutator.crossover(data, chooser.choice(corpus), 1 << 17, seed)
        data = mutator.mutate(data, 1 << 17, seed)
        assert len(data) <= 1 << 17
        runner(target).run(data)


@pytest.mark.parametrize("name", sorted(fuzz.TARGETS))
def test_twenty_thousand_fuzzed_inputs_end_in_a_result_or_a_clear_refusal(name, tmp_path, monkeypatch):
    monkeypatch.setattr(fuzz, "REGRESSIONS", tmp_path)
    result = fuzz.fuzz(name, 20_000, seed=7)
    assert result["failed"] is None, result


@pytest.mark.parametrize("script", sorted(path.name for path in (Path(__file__).resolve().parent.parent / "fuzz")
                                          .glob("*.py")))
def test_the_fuzz_tools_name_only_wire_constants_that_exist(script):
    """A renamed constant (wire.PARITY became wire.TYPE_PARITY) once left the structure-aware mutator falling back
    to plain byte flips, silently: the forged-parity inputs behind issue #20 were no longer made."""
    from ddc._core import wire

    text = (Path(__file__).resolve().parent.parent / "fuzz" / script).read_text()
    missing = sorted({name for name in re.findall(r"(?<![\w.])wire\.([A-Za-z_]\w*)", text) if not hasattr(wire, name)})
    assert not missing, f"fuzz/{script} names wire constants that do not exist: {missing}"


def test_every_structure_aware_mutation_of_the_fec_corpus_works():
    mutator = receiver_targets.Mutator("fec", lambda data, max_size: data[:max_size])
    for path in receiver_targets.corpus_files("fec")[:5]:
        for seed in range(40):
            mutator.mutate(path.read_bytes(), 1 << 20, seed)
    assert mutator.failures == 0


def test_the_coverage_ignorelist_names_functions_that_exist():
    """fuzz/coverage_ignore.txt keeps the FEC block table's slot walk out of libFuzzer's instrumentation; an entry
    that no longer matches (a function moved to another module) brings back milliseconds per input."""
    root = Path(__file__).resolve().parent.parent
    sources = "".join(path.read_text(errors="replace") for path in (root / "ddc").rglob("*.c"))
    if not sources:
        pytest.skip("no generated C in the tree: the core was built elsewhere")
    for line in (root / "fuzz" / "coverage_ignore.txt").read_text().splitlines():
        if line.startswith("fun:__pyx"):
            pattern = re.escape(line[4:]).replace(r"\*", r"\w*")
            assert re.search(pattern, sources), f"{line} matches no function"


LISTENER_INPUTS = sorted(listener_targets.CORPUS.iterdir()) + sorted(listener_targets.REGRESSIONS.glob("*"))


@pytest.mark.parametrize("path", LISTENER_INPUTS, ids=lambda path: f"{path.parent.parent.name}-{path.name[:24]}")
def test_the_kafka_listener_target_refuses_its_seeds_and_crashers_cleanly(path):
    """fuzz/listener_targets.py: requests and record batches end in a result, ProtocolError or BatchError."""
    listener_targets.test_one_input(path.read_bytes())


def test_the_kafka_listener_target_has_seeds_of_every_kind():
    names = {path.name for path in listener_targets.CORPUS.iterdir()}
    assert {"produce-v3", "produce-v12", "raw-codec1", "raw-codec2", "raw-codec3", "raw-codec4", "metadata-v12",
            "init-producer-id-v4", "api-versions-v4"} <= names


DIRECTORY_INPUTS = sorted(directory_targets.CORPUS.iterdir()) + sorted(directory_targets.REGRESSIONS.glob("*"))


@pytest.mark.parametrize("path", DIRECTORY_INPUTS, ids=lambda path: f"{path.parent.parent.name}-{path.name[:24]}")
def test_the_directory_target_takes_its_seeds_and_crashers_cleanly(path):
    """fuzz/directory_targets.py: nothing outside the target, no temporary file or descriptor left, no file under
    its name of a size its records did not declare."""
    directory_targets.test_one_input(path.read_bytes())


def test_the_directory_seeds_are_what_the_target_writes():
    assert {path.name: path.read_bytes() for path in directory_targets.CORPUS.iterdir()} == directory_targets.seeds()
