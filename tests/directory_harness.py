"""Trees of files and directory-link configs for the directory handler's tests and benchmark."""

import hashlib
import os
import random
from pathlib import Path

PARTIAL = ".ddc-partial"


def write_file(path: Path, size: int, rng: random.Random, mode: int = 0o644, mtime_ns: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as stream:
        left = size
        while left:
            block = min(left, 1 << 22)
            stream.write(rng.randbytes(block))
            left -= block
    os.chmod(path, mode)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def make_tree(root: Path, seed: int = 1, small_files: int = 200, large_bytes: int = 0) -> None:
    """A tree with what breaks file movers: empty files, deep paths, unicode and spaced names, odd modes, old
    modification times, and optionally one large file."""
    rng = random.Random(seed)
    old = 1_500_000_000_123_456_789
    for index in range(small_files):
        folder = root / f"d{index % 7}" / f"e{index % 3}"
        write_file(folder / f"file-{index}.bin", rng.choice((0, 1, 100, 4095, 4096, 20_000, 70_000, 300_000)), rng,
                   rng.choice((0o600, 0o640, 0o644, 0o755)), old + index * 1_000_003)
    for index in range(10):
        write_file(root / "empty" / f"nothing-{index}", 0, rng)
    deep = root.joinpath(*[f"level{depth}" for depth in range(40)])
    write_file(deep / "bottom.txt", 1234, rng)
    for name in ("ünïcödé.txt", "日本語のファイル.dat", "emoji 🚀 launch.bin", "space in name .txt", "-dash",
                 "#hash%percent", "quote'single\"double"):
        write_file(root / "names" / name, rng.randint(1, 5000), rng)
    if large_bytes:
        write_file(root / "large.bin", large_bytes, rng, 0o600)


def digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 22):
            hasher.update(block)
    return hasher.hexdigest()


def listing(root: Path, contents: bool = True) -> dict:
    """Every regular file under root but the egress's partial folder: name → (size, mode, mtime, sha-256)."""
    found = {}
    for folder, folders, files in os.walk(root):
        folders[:] = [name for name in folders if not (folder == str(root) and name == PARTIAL)]
        for name in files:
            path = Path(folder) / name
            status = path.lstat()
            found[str(path.relative_to(root))] = (status.st_size, status.st_mode & 0o777, status.st_mtime_ns,
                                                  digest(path) if contents else None)
    return found


def directory_configs(link_port: int, source: Path, target: Path, *, source_extra: str = "", sink_extra: str = "",
                      transport_extra: str = "", egress_transport_extra: str = "",
                      link: str = "files") -> tuple[str, str]:
    ingress = f"""
role = "ingress"
[telemetry]
log_format = "json"
stats_interval = "1s"
[links.{link}.source]
type = "directory"
path = "{source}"
{source_extra}
[links.{link}.transport]
destination = "127.0.0.1:{link_port}"
heartbeat_interval = "200ms"
{transport_extra}
"""
    egress = f"""
role = "egress"
[telemetry]
log_format = "json"
stats_interval = "1s"
[links.{link}.transport]
listen = "127.0.0.1:{link_port}"
receive_buffer = "64MiB"
{egress_transport_extra}
[links.{link}.sink]
type = "directory"
path = "{target}"
{sink_extra}
"""
    return ingress, egress
