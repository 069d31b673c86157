"""DDC against pydiode (the Python diode tool on PyPI) on the same random byte stream.

    python bench/pydiode_compare.py [--megabytes 400] [--results bench/results-pydiode.json]

Both tools run as their own sender and receiver processes over loopback with
65 507-byte datagrams, stdin in and stdout out (redirected to files), which is
how pydiode is used. For each tool a few settings
are tried; the fastest whose output is byte-identical to the input counts. The
time is from the sender's start to the receiver's exit, both receivers started
and waiting first. Gate (issue #3): pydiode time / DDC time >= 1.5.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from ddc.transport.sockets import free_udp_port  # noqa: E402

GATE = 1.5
PYDIODE_SETTINGS = (
    ("defaults (1 Gbit/s, every chunk twice)", []),
    ("--max-bitrate 4000000000 --redundancy 1", ["--max-bitrate", "4000000000", "--redundancy", "1"]),
    ("--max-bitrate 8000000000 --redundancy 1", ["--max-bitrate", "8000000000", "--redundancy", "1"]),
)
DDC_RATES = ("8Gbit/s", "6Gbit/s", "4Gbit/s")


def digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 22):
            hasher.update(block)
    return hasher.hexdigest()


def wait_for_text(path: Path, text: bytes, process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"receiver did not start: {path.read_text()[-2000:]}")
        time.sleep(0.02)


def run_pydiode(pydiode: str, source: Path, output: Path, options: list[str]) -> float:
    port = str(free_udp_port())
    with open(output, "wb") as received:
        receiver = subprocess.Popen([pydiode, "receive", "127.0.0.1", "--port", port], stdout=received,
                                    stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # pydiode prints nothing when ready
        started = time.monotonic()
        with open(source, "rb") as sent:
            subprocess.run([pydiode, "send", "127.0.0.1", "127.0.0.1", "--port", port, *options], stdin=sent,
                           stderr=subprocess.DEVNULL, timeout=600, check=False)
        try:
            receiver.wait(timeout=120)
        except subprocess.TimeoutExpired:
            receiver.kill()
        return time.monotonic() - started


def run_ddc(directory: Path, source: Path, output: Path, rate: str) -> float:
    port = free_udp_port()
    ingress, egress = directory / "ingress.toml", directory / "egress.toml"
    ingress.write_text(f"""role = "ingress"
[telemetry]
log_format = "json"
[links.bytes.source]
type = "file"
path = "-"
[links.bytes.transport]
destination = "127.0.0.1:{port}"
datagram_size = 65507
rate = "{rate}"
""")
    egress.write_text(f"""role = "egress"
[telemetry]
log_format = "json"
[links.bytes.transport]
listen = "127.0.0.1:{port}"
receive_buffer = "64MiB"
[links.bytes.sink]
type = "file"
path = "-"
stop_after_sender_shutdown = true
""")
    log = directory / "egress.log"
    with open(log, "wb") as egress_log, open(output, "wb") as received, open(source, "rb") as sent:
        receiver = subprocess.Popen([sys.executable, "-m", "ddc", "run", str(egress)], stdout=received,
                                    stderr=egress_log)
        wait_for_text(log, b"listening on", receiver)
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "ddc", "run", str(ingress)], stdin=sent, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=600, check=False)
        try:
            receiver.wait(timeout=120)
        except subprocess.TimeoutExpired:
            receiver.kill()
        return time.monotonic() - started


def fastest_identical(label: str, attempts, expected: str, output: Path) -> dict:
    results = []
    for setting, run in attempts:
        seconds = run()
        identical = output.exists() and digest(output) == expected
        results.append({"setting": setting, "seconds": seconds, "identical": identical})
        print(f"  {label:<8} {setting:<42} {seconds:7.2f} s  {'identical' if identical else 'DIFFERENT'}")
        output.unlink(missing_ok=True)
    good = [result for result in results if result["identical"]]
    return {"tries": results, "best": min(good, key=lambda result: result["seconds"]) if good else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=400)
    parser.add_argument("--results", default=str(HERE / "results-pydiode.json"))
    arguments = parser.parse_args()
    pydiode = shutil.which("pydiode") or str(Path(sys.executable).with_name("pydiode"))
    if not Path(pydiode).exists():
        print("pydiode is not installed; `pip install -e '.[bench]'` installs it", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ddc-vs-pydiode-") as temporary:
        directory = Path(temporary)
        source, output = directory / "stream.bin", directory / "received.bin"
        with open(source, "wb") as stream:
            for _ in range(arguments.megabytes):
                stream.write(os.urandom(1 << 20))
        expected = digest(source)
        print(f"{arguments.megabytes} MiB random stream, 65 507-byte datagrams, loopback")
        theirs = fastest_identical("pydiode", [
            (name, lambda options=options: run_pydiode(pydiode, source, output, options))
            for name, options in PYDIODE_SETTINGS], expected, output)
        ours = fastest_identical("ddc", [
            (f"rate = {rate}", lambda rate=rate: run_ddc(directory, source, output, rate)) for rate in DDC_RATES],
            expected, output)
    ratio = (theirs["best"]["seconds"] / ours["best"]["seconds"]) if theirs["best"] and ours["best"] else 0.0
    passed = ratio >= GATE
    print(f"ddc/pydiode throughput: {ratio:.2f} (gate >= {GATE}): {'pass' if passed else 'FAIL'}")
    Path(arguments.results).write_text(json.dumps({
        "megabytes": arguments.megabytes, "pydiode": theirs, "ddc": ours,
        "figures": [{"name": "ddc/pydiode throughput", "value": ratio, "gate": f">= {GATE}", "passed": passed}]},
        indent=2))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
