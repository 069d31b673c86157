"""What a user installs (issue #22): the compiled core as the wheel takes it, and the wheel's file rules.

Building a whole wheel takes minutes, so the release workflow does that (.github/workflows/wheels.yml, with
packaging/check_wheel.py); here the core this suite runs, built by the same setup.py, is held to what the wheel
needs, and the rules that keep sources out of the wheel are checked where they are written."""

import subprocess
import sys
import tomllib
from pathlib import Path

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
