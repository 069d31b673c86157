#!/usr/bin/env bash
# Builds DDC's container image for one architecture with podman, from a Debian 12 base that debootstrap makes
# here (no image registry needed), and smoke-tests it: Dockerfile.multiarch runs `ddc version` and `ddc check`
# in the final stage, so a broken image fails its build.
#
#   packaging/build_image.sh [amd64|arm64]      default: this machine's architecture
#
# Needs, as root: podman, debootstrap (Debian: apt-get install podman debootstrap), and for arm64 on another
# machine qemu-user-static with binfmt_misc. The wheel for the architecture comes from dist/ (built here with
# `pip wheel` for this machine's; an aarch64 wheel comes from packaging/build_aarch64.sh or the release).
# Images are built with --isolation chroot: this works where containers cannot run (no user namespaces).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
native=$(dpkg --print-architecture 2>/dev/null || echo amd64)
arch=${1:-$native}
case "$arch" in amd64) machine=x86_64 ;; arm64) machine=aarch64 ;; *) echo "build_image.sh: $arch is not amd64 or arm64" >&2; exit 2 ;; esac
for tool in podman debootstrap; do
    command -v "$tool" >/dev/null || { echo "build_image.sh: $tool is not installed (apt-get install $tool)" >&2; exit 3; }
done
version=$(cd "$root" && python3 -c 'import re; print(re.search(r"__version__ = \"(.+)\"", open("ddc/__init__.py").read()).group(1))')
work=$root/build/image
mkdir -p "$work" "$root/dist"

# The image's Python is Debian 12's, 3.11: the wheel must be a cp311 one.
if ! ls "$root"/dist/data_diode_connector-"$version"-cp311-*"$machine".whl >/dev/null 2>&1; then
    [ "$arch" = "$native" ] || { echo "build_image.sh: no cp311 $machine wheel in dist/ for $version" >&2; exit 3; }
    python=$(command -v python3.11 || true)
    [ -n "$python" ] || { echo "build_image.sh: building the wheel needs python3.11 (the image's Python)" >&2; exit 3; }
    "$python" -m pip --version >/dev/null || { echo "build_image.sh: $python has no pip" >&2; exit 3; }
    "$python" -m pip wheel --no-deps -w "$root/dist" "$root"
fi

# DDC's wheel and its dependencies' for the image's Python (Debian 12: 3.11), so the build itself is offline.
wheels=$root/dist/wheels-$arch
mkdir -p "$wheels"
cp "$root"/dist/data_diode_connector-"$version"-cp311-*"$machine".whl "$wheels"/
python3 -m pip download --quiet --only-binary=:all: --python-version 3.11 --implementation cp \
    --platform "manylinux_2_28_$machine" --platform "manylinux2014_$machine" --platform "manylinux_2_17_$machine" \
    --platform "manylinux_2_5_$machine" --platform "manylinux1_$machine" --platform "linux_$machine" \
    -d "$wheels" "$wheels"/data_diode_connector-"$version"-cp311-*"$machine".whl

base=localhost/ddc-base:bookworm-$arch
if ! podman image exists "$base"; then
    rootfs=$work/rootfs-$arch
    rm -rf "$rootfs"
    debootstrap --variant=minbase --arch="$arch" bookworm "$rootfs" http://deb.debian.org/debian
    # What debian:bookworm-slim leaves out: documentation, manuals, translations, package caches.
    rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
        "$rootfs"/usr/share/locale/* "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*
    tar -C "$rootfs" -c . | podman import --arch "$arch" - "$base"
    rm -rf "$rootfs"
fi

# Docker's image format: the OCI one has no HEALTHCHECK. DDC_IMAGE_NO_CACHE=1 rebuilds every layer, so the
# smoke test runs again (the test suite's image test does).
podman build --isolation chroot --format docker ${DDC_IMAGE_NO_CACHE:+--no-cache} --platform "linux/$arch" --build-arg BASE="$base" \
    -f "$root/Dockerfile.multiarch" -t "localhost/ddc:$version-$arch" "$root"
podman image inspect "localhost/ddc:$version-$arch" --format '{{.Architecture}} {{.Config.User}} {{.Config.Entrypoint}} {{.Size}}'
