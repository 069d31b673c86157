#!/usr/bin/env bash
# Builds the Cython core with sanitizers (or for coverage) out of tree, installing what that needs:
#     fuzz/build.sh [sanitized|coverage]      (default: sanitized)
# clang comes from Debian (apt-get, as root), atheris from PyPI into the project's virtualenv.
# See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
VARIANT=${1:-sanitized}
PYTHON=${PYTHON:-.venv/bin/python}

if ! command -v clang >/dev/null || ! command -v llvm-profdata >/dev/null || ! command -v llvm-cov >/dev/null; then
    if [ "$(id -u)" != 0 ]; then
        echo "clang and llvm (llvm-cov, llvm-profdata) are needed: apt-get install -y clang llvm" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang llvm >/dev/null
fi
# atheris 3.1.0 has no wheel for CPython 3.11; 3.0.0 is the newest that installs here.
if ! "$PYTHON" -c 'import atheris' 2>/dev/null; then
    "$PYTHON" -m pip install --quiet 'atheris>=3.0,<4'
fi
"$PYTHON" -c 'import Cython' 2>/dev/null || "$PYTHON" -m pip install --quiet 'Cython>=3.0'
exec nice -n "${NICE:-10}" "$PYTHON" fuzz/build_core.py "$VARIANT"
