"""What a user installs (issue #22): the compiled core as the wheel takes it, and the wheel's file rules.

Building a whole wheel takes minutes, so the release workflow does that (.github/workflows/wheels.yml, with
packaging/check_wheel.py); here the core this suite runs, built by the same setup.py, is held to what the wheel
needs, and the rules that keep sources out of the wheel are checked where they are written."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent


def test_the_core_carries_no_debug_information_and_needs_no_glibc_newer_than_2_28():
    """-g0 and glibc_compat.h (setup.py): without them the installed core was 23 MB and the wheel manylinux_2_34."""
    result = subprocess.run([sys.executable, str(REPOSITORY / "packaging" / "check_wheel.py"), "--objects",
                             str(REPOSITORY / "ddc")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    total = sum(path.stat().st_size for path in (REPOSITORY / "ddc").rglob("*.so"))
    assert total < 4 * 1024 * 1024, f"the compiled core takes {total} bytes"


def test_the_wheel_leaves_sources_out_and_the_sdist_keeps_them():
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())
    assert project["project"]["name"] == "data-diode-connector"
    assert project["project"]["scripts"] == {"ddc": "ddc.cli:main"}
    excluded = project["tool"]["setuptools"]["exclude-package-data"]["*"]
    assert set(excluded) == {"*.c", "*.pyx", "*.pxd", "*.h"}
    assert "package-data" not in project["tool"]["setuptools"], "package-data would put sources back"
    manifest = (REPOSITORY / "MANIFEST.in").read_text()
    assert "recursive-include ddc *.pyx *.pxd *.h" in manifest
    cibuildwheel = project["tool"]["cibuildwheel"]
    assert cibuildwheel["manylinux-x86_64-image"] == cibuildwheel["manylinux-aarch64-image"] == "manylinux_2_28"
    assert "packaging/check_wheel.py --installed" in cibuildwheel["test-command"]
    assert "check_wheel.py --installed --core-tests" in (REPOSITORY / "packaging" / "build_aarch64.sh").read_text()


@pytest.mark.timeout(3600)
def test_the_aarch64_wheel_cross_builds_and_passes_the_core_tests_under_qemu():
    """packaging/build_aarch64.sh: the wheel cross-built with Debian's gcc-aarch64-linux-gnu, tagged manylinux
    by auditwheel, installed in a Debian arm64 root and tested there under qemu-user. Takes ten minutes and wants
    root, the cross compiler, qemu-user-static and binfmt_misc, so it runs when asked: DDC_TEST_AARCH64=1."""
    import os
    import re
    import shutil
    import signal

    if os.environ.get("DDC_TEST_AARCH64") != "1":
        pytest.skip("the aarch64 build takes ten minutes: DDC_TEST_AARCH64=1 runs it (packaging/build_aarch64.sh "
                    "says what it needs)")
    if os.geteuid() != 0:
        pytest.skip("packaging/build_aarch64.sh needs root (debootstrap, chroot)")
    for tool in ("aarch64-linux-gnu-gcc", "qemu-aarch64-static", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian: apt-get install gcc-aarch64-linux-gnu qemu-user-static "
                        "debootstrap)")
    build = subprocess.Popen(["bash", str(REPOSITORY / "packaging" / "build_aarch64.sh")], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = build.communicate(timeout=3300)
    finally:
        if build.poll() is None:  # the emulated tests run in the chroot: stop them all, not only bash
            os.killpg(build.pid, signal.SIGKILL)
            build.wait()
    assert build.returncode == 0, output[-5000:]
    assert re.search(r"ddc \S+ \(wire protocol v2, Python 3\.11\.\d+, aarch64\)", output), output[-5000:]
    passed = re.search(r"(\d+) passed", output)
    assert passed and int(passed.group(1)) > 150 and " failed" not in output, output[-5000:]
    assert re.search(r"data_diode_connector-\S+-cp311-cp311-manylinux_2_28_aarch64\.whl", output), output[-5000:]
