"""The directory sink's fuzz target, shared by the fuzzer (fuzz/directory_fuzz.py) and the suite's replay of its
seeds and crashers (tests/test_fuzz_regressions.py): what a directory link's records can hold when a forger (on
a link without a key) or a compromised high side writes them.

The input is a run of records, each a u16 metadata length and a u16 value length, then both (the last cut short
by the input's end). With the first byte's bit 0 set, every LAST chunk's SHA-256 is made right for the bytes its
file got in this input, as a forger would, so that mutations reach delivery and not only the checksum. The
records go to a fresh DirectorySink over a target folder that holds a symbolic link to a folder outside it, in
two write() calls with a check for overtaken files between them, then close(). A finding: any exception, an
entry appearing outside the target, a temporary file left in .ddc-partial after close(), a file descriptor
left open, or a file under its name whose size is not the size its records declared.
"""

import atexit
import hashlib
import os
import shutil
import struct
import tempfile
from pathlib import Path

from ddc.handlers.directory import chunks
from ddc.handlers.directory.config import DirectorySinkConfig
from ddc.handlers.directory.sink import PARTIAL_FOLDER, DirectorySink

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "fuzz_corpus" / "directory"
REGRESSIONS = Path(__file__).resolve().parent.parent / "tests" / "fuzz_regressions" / "directory"
FRAME = struct.Struct(">HH")
ROOT = Path(tempfile.mkdtemp(prefix="ddc-fuzz-directory-"))
atexit.register(shutil.rmtree, ROOT, True)
TARGET, OUTSIDE, QUARANTINE = ROOT / "target", ROOT / "outside", ROOT / "quarantine"


def encode_input(records, right_digests: bool = True) -> bytes:
    return bytes([int(right_digests)]) + b"".join(FRAME.pack(len(metadata), len(value)) + metadata + value
                                                  for metadata, value in records)


def records_of(data: bytes) -> list:
    records, at = [], 1
    while at + FRAME.size <= len(data):
        metadata_length, value_length = FRAME.unpack_from(data, at)
        at += FRAME.size
        metadata = data[at:at + metadata_length]
        at += metadata_length
        records.append((metadata, data[at:at + value_length]))
        at += value_length
    return records


def read_or_none(metadata):
    try:
        return chunks.read(metadata)
    except ValueError:
        return None


def with_right_digests(records: list) -> list:
    contents = {}
    for metadata, value in records:
        record = read_or_none(metadata)
        if (record is not None and record.kind == chunks.CHUNK and record.size <= 1 << 20 and
                record.offset + len(value) <= record.size):
            content = contents.setdefault(record.file_id, bytearray(record.size))
            if len(content) == record.size:
                content[record.offset:record.offset + len(value)] = value
    fixed = []
    for metadata, value in records:
        record = read_or_none(metadata)
        if (record is not None and record.kind == chunks.CHUNK and record.flags & chunks.LAST and
                record.file_id in contents):
            metadata = chunks.chunk(record.run, record.sequence, record.spread, record.flags & ~chunks.DIGEST,
                                    record.copy, record.file_id, record.offset, record.size, record.mtime_ns,
                                    record.mode, record.path, hashlib.sha256(contents[record.file_id]).digest())
        fixed.append((metadata, value))
    return fixed


def _fresh_folders() -> None:
    for folder in (TARGET, OUTSIDE, QUARANTINE):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    os.symlink(OUTSIDE, TARGET / "link")


def test_one_input(data: bytes) -> None:
    if not data:
        return
    _fresh_folders()
    records = records_of(data)
    if data[0] & 1:
        records = with_right_digests(records)
    declared = {}
    for metadata, _ in records:
        record = read_or_none(metadata)
        if record is not None and record.kind == chunks.CHUNK:
            declared.setdefault(os.fsdecode(record.path), set()).add(record.size)
    descriptors = len(os.listdir("/proc/self/fd"))
    config = DirectorySinkConfig(type="directory", path=str(TARGET), quarantine_directory=str(QUARANTINE),
                                 fsync=False, max_file_size="1MiB", max_files_in_progress=16)
    config._reorder_seconds = 0.0
    sink = DirectorySink("fuzz", config)
    sink.open()
    half = len(records) // 2
    sink.write(records[:half])
    sink.next_check = 0.0
    sink.idle()
    sink.write(records[half:])
    sink.close()
    if os.listdir(OUTSIDE):
        raise AssertionError(f"written outside the target: {os.listdir(OUTSIDE)}")
    if os.listdir(TARGET / PARTIAL_FOLDER):
        raise AssertionError(f"temporary files left: {os.listdir(TARGET / PARTIAL_FOLDER)}")
    if len(os.listdir("/proc/self/fd")) != descriptors:
        raise AssertionError("a file descriptor was left open")
    for folder, _, files in os.walk(TARGET):
        for name in files:
            relative = os.path.relpath(os.path.join(folder, name), TARGET)
            size = os.lstat(os.path.join(folder, name)).st_size
            if relative in declared and size not in declared[relative]:
                raise AssertionError(f"{relative!r} delivered with {size} bytes, declared {declared[relative]}")


def seeds() -> dict[str, bytes]:
    """Records as a directory source writes them, and the hostile ones tests/test_directory_input.py sends."""
    run, data = 7, bytes(range(256)) * 40

    def whole(file_id, sequence, path, content):
        return (chunks.chunk(run, sequence, 10, chunks.LAST, 0, file_id, 0, len(content), 1_600_000_000 * 10**9,
                             0o644, path, hashlib.sha256(content).digest()), content)

    pieces = [(chunks.chunk(run, 1, 10, 0, 0, 1, 0, len(data), 1, 0o600, b"a/pieces.bin"), data[:4096]),
              (chunks.chunk(run, 3, 10, chunks.LAST, 0, 1, 8192, len(data), 1, 0o600, b"a/pieces.bin",
                            hashlib.sha256(data).digest()), data[8192:]),
              (chunks.chunk(run, 2, 10, 0, 0, 1, 4096, len(data), 1, 0o600, b"a/pieces.bin"), data[4096:8192])]
    return {
        "one-file": encode_input([whole(1, 0, b"file.txt", b"hello")]),
        "out-of-order": encode_input(pieces),
        "manifest-and-positions": encode_input([
            whole(1, 0, b"first", b"1"), (chunks.manifest(run, 1, 10, [(1, b"first"), (2, b"lost")]), b""),
            (chunks.position(run, 2, 10, 2), b""), (chunks.position(run, 30, 10, 2), b"")]),
        "abandoned-and-copy": encode_input([
            (chunks.chunk(run, 0, 10, 0, 0, 1, 0, 10, 1, 0o600, b"changing"), b"12345"),
            (chunks.chunk(run, 1, 10, chunks.ABANDONED, 0, 1, 0, 10, 1, 0o600, b"changing"), b""),
            whole(2, 2, b"copied", b"copy"),
            (chunks.chunk(run, 3, 10, chunks.LAST, 1, 3, 0, 4, 1, 0o600, b"copied",
                          hashlib.sha256(b"copy").digest()), b"copy")]),
        "hostile-names": encode_input([whole(index, index, name, b"x") for index, name in enumerate(
            [b"../escaped", b"/abs", b"link/through", b"a/../../b", PARTIAL_FOLDER.encode() + b"/x", b"bell\x07"],
            1)]),
        "two-runs": encode_input([
            (chunks.chunk(run, 0, 10, 0, 0, 1, 0, 10, 1, 0o600, b"cut"), b"12345"),
            (chunks.chunk(run + 1, 0, 10, chunks.LAST, 0, 1, 0, 3, 1, 0o600, b"other-run",
                          hashlib.sha256(b"new").digest()), b"new")]),
    }


if __name__ == "__main__":
    CORPUS.mkdir(parents=True, exist_ok=True)
    for name, content in seeds().items():
        (CORPUS / name).write_bytes(content)
    print(f"wrote {len(seeds())} seeds to {CORPUS}")
