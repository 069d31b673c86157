"""Checks DDC as a user gets it (issue #22): the wheel file, and the ddc installed in an environment.

    python packaging/check_wheel.py WHEEL         what the wheel holds: no C or Cython sources, no debug
                                                  information, under 8 MB installed, a manylinux_2_28 tag or older
    python packaging/check_wheel.py --installed   the ddc this Python imports: not a source checkout, and
                                                  `ddc version`, `ddc check` and `ddc demo --seconds 3` work,
                                                  run from a directory outside any checkout
        [--core-tests TESTS]                      then the core's tests from the directory TESTS (a copy of
                                                  tests/): those that need no broker, against that ddc
    python packaging/check_wheel.py --objects DIR the compiled modules under DIR: no debug information, no glibc
                                                  symbol newer than 2.28 (what the wheel inherits)

Exits 1 with every problem listed, 0 when all hold. The release workflow runs --installed against each wheel,
then the whole suite but its end-to-end tests (pyproject.toml's cibuildwheel test-command);
packaging/build_aarch64.sh runs --installed --core-tests under qemu-user; tests/test_packaging.py runs --objects
on every test run.
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MAX_INSTALLED_BYTES = 8 * 1024 * 1024
SOURCES = (".c", ".pyx", ".pxd", ".h")
NEWEST_GLIBC = (2, 28)
ELF_MACHINES = {62: "x86_64", 183: "aarch64"}  # e_machine
# The wire format and CRC, FEC, reassembly, AEAD, sessions, records, the ring, the datagram handler, the Kafka
# codec and ledger, the spool: everything compiled, and nothing that needs a broker or minutes of traffic.
CORE_TESTS = ("test_wire.py", "test_fec.py", "test_reassembly.py", "test_records.py", "test_ring.py",
              "test_encryption.py", "test_session_attacks.py", "test_refused_sends.py", "test_udp_datagrams.py",
              "test_stage_buffer.py", "test_spool.py", "test_kafka_ledger.py", "test_kafka_source.py",
              "test_units.py")
EGRESS = """
role = "egress"
[links.check.transport]
listen = "127.0.0.1:9"
[links.check.sink]
type = "udp"
target = "127.0.0.1:9"
"""


def has_debug_information(data: bytes) -> bool:
    return b".debug_info" in data or b".zdebug_info" in data  # the second: compressed (gcc -gz=zlib-gnu)


def elf_machine(path: Path) -> int:
    with open(path, "rb") as module:
        return int.from_bytes(module.read(20)[18:20], "little")


def newest_glibc(path: Path) -> tuple[int, ...]:
    """The newest GLIBC_x.y version the module asks the dynamic linker for (objdump -T); raises ValueError when
    that cannot be told, which is a problem too: a check that cannot run must not pass."""
    # Plain objdump reads this machine's modules; another architecture's (a cross-built wheel) need its triplet's.
    machine = elf_machine(path)
    if machine == elf_machine(Path(sys.executable).resolve()):
        objdump = shutil.which("objdump")
    elif machine in ELF_MACHINES:
        objdump = shutil.which(f"{ELF_MACHINES[machine]}-linux-gnu-objdump")
    else:
        raise ValueError(f"an ELF module for machine {machine}, neither this one's nor one this check knows")
    if objdump is None:
        raise ValueError("no objdump for its architecture (Debian: apt-get install binutils, or "
                         "binutils-aarch64-linux-gnu for an aarch64 wheel); the GLIBC versions were not checked")
    listed = subprocess.run([objdump, "-T", str(path)], capture_output=True, text=True)
    if listed.returncode:
        raise ValueError(f"objdump cannot read it: {listed.stderr.strip()[-200:]}")
    table = listed.stdout
    versions = [tuple(map(int, found.group(1).split("."))) for line in table.splitlines() if "*UND*" in line
                for found in [re.search(r"GLIBC_([0-9.]+)", line)] if found]
    return max(versions, default=(0,))


def check_objects(directory: Path) -> list[str]:
    problems = []
    modules = sorted(directory.rglob("*.so"))
    if not modules:
        return [f"no compiled module under {directory}"]
    for module in modules:
        if has_debug_information(module.read_bytes()):
            problems.append(f"{module}: carries debug information (built without -g0?)")
        try:
            newest = newest_glibc(module)
        except ValueError as error:
            problems.append(f"{module}: {error}")
            continue
        if newest > NEWEST_GLIBC:
            problems.append(f"{module}: asks for GLIBC_{'.'.join(map(str, newest))}, newer than manylinux_2_28 "
                            "allows (ddc/_core/glibc_compat.h binds the moved symbols to older versions)")
    return problems


def check_wheel(wheel: Path) -> list[str]:
    problems = []
    with zipfile.ZipFile(wheel) as archive:
        entries = archive.infolist()
        sources = [entry.filename for entry in entries if entry.filename.endswith(SOURCES)]
        if sources:
            problems.append(f"{wheel.name} holds sources: {', '.join(sources[:5])}")
        installed = sum(entry.file_size for entry in entries)
        if installed > MAX_INSTALLED_BYTES:
            problems.append(f"{wheel.name}: {installed} bytes installed, more than {MAX_INSTALLED_BYTES}")
        with tempfile.TemporaryDirectory() as unpacked:
            archive.extractall(unpacked)
            problems += check_objects(Path(unpacked))
    auditwheel = shutil.which("auditwheel")
    if auditwheel is None:
        print("auditwheel is not installed: the manylinux tag was not checked", file=sys.stderr)
    else:
        shown = subprocess.run([auditwheel, "show", str(wheel)], capture_output=True, text=True).stdout
        tag = re.search(r'platform tag: "(manylinux_(\d+)_(\d+)_\w+|linux_\w+)"', " ".join(shown.split()))
        if tag is None or tag.group(2) is None or (int(tag.group(2)), int(tag.group(3))) > NEWEST_GLIBC:
            problems.append(f"{wheel.name}: auditwheel says {tag.group(1) if tag else shown.strip()[:200]!r}")
        else:
            print(f"{wheel.name}: {installed} bytes installed, {tag.group(1)}")
    return problems


def check_installed() -> list[str]:
    problems = []
    with tempfile.TemporaryDirectory() as elsewhere:
        where = subprocess.run([sys.executable, "-c", "import ddc, pathlib; print(pathlib.Path(ddc.__file__).parent)"],
                               capture_output=True, text=True, cwd=elsewhere)
        package = Path(where.stdout.strip())
        if where.returncode or (package / "_core" / "wire.pyx").exists():
            return [f"ddc is not installed from a wheel here: {where.stdout.strip() or where.stderr.strip()}"]
        config = Path(elsewhere, "egress.toml")
        config.write_text(EGRESS)
        command = [sys.executable, "-m", "ddc"]
        for arguments in (["version"], ["check", str(config)], ["demo", "--seconds", "3"]):
            done = subprocess.run(command + arguments, capture_output=True, text=True, cwd=elsewhere, timeout=120,
                                  stdin=subprocess.DEVNULL)
            if done.returncode:
                problems.append(f"ddc {' '.join(arguments)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
            elif arguments == ["version"]:
                print(done.stdout.strip())
        size = sum(path.stat().st_size for path in package.rglob("*") if path.is_file() and "__pycache__" not in
                   path.parts)
        print(f"ddc installed at {package}: {size} bytes")
    return problems


def run_core_tests(tests: Path) -> list[str]:
    """From a directory outside any checkout, so that the tests import the installed ddc."""
    with tempfile.TemporaryDirectory() as elsewhere:
        done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-ra",
                               "--timeout", "900", *(str(tests.resolve() / name) for name in CORE_TESTS)],
                              cwd=elsewhere, stdin=subprocess.DEVNULL)
    return [f"the core's tests failed (pytest exited {done.returncode})"] if done.returncode else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("wheel", nargs="?", type=Path)
    group.add_argument("--installed", action="store_true")
    group.add_argument("--objects", type=Path)
    parser.add_argument("--core-tests", type=Path, metavar="TESTS")
    arguments = parser.parse_args()
    if arguments.core_tests and not arguments.installed:
        parser.error("--core-tests goes with --installed")
    if arguments.installed:
        problems = check_installed()
        if arguments.core_tests and problems:
            problems.append("the core's tests were not run")
        elif arguments.core_tests:
            problems = run_core_tests(arguments.core_tests)
    elif arguments.objects:
        problems = check_objects(arguments.objects)
    else:
        problems = check_wheel(arguments.wheel)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
