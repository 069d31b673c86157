"""How a file crosses: the metadata of each record a directory link sends, read and written by both sides.

A file is cut into chunks, one record each. Every chunk names its file in full (id, path, size, mode,
modification time), so that whatever part of a file arrives, the egress knows which file it belongs to and can
report it by name. The last chunk carries the file's SHA-256; a copy sent again (`resend`) carries it in every
chunk, so the egress can tell a copy of a file it already delivered from its first chunk.

Every record also carries its source run (a random number each start: a new run drops what the last left
unfinished, whatever the link's sessions do), the run's record sequence number and the most records the source
sends between two chunks of one file (`spread`): once the egress has seen a sequence number more than `spread`
past a file's last chunk, the file's next chunk is late or lost, never still to come. While it has no file to send, the
source sends a position record each second, with the last file id it gave out, so that the egress learns this
about a link's last file too.

A file of which nothing arrives would leave the egress nothing to name it by; so the source also sends
manifests of the files it started lately (id and path), every file in MANIFEST_COPIES of them, each manifest
only once the one before has left, so that no two share a frame and one loss.

Written with struct rather than in Cython: a record is a chunk of up to a few MiB, and the per-record work is
small beside reading, hashing and writing its bytes.
"""

import struct
from typing import NamedTuple

VERSION = 1
HEAD = struct.Struct(">BBBBQQH")  # version, kind, flags, copy, run, sequence, spread
LAST_FILE = struct.Struct(">Q")  # a position's last file id
FILE = struct.Struct(">QQQqIH")  # file id, offset, size, mtime (ns), mode, path length
DIGEST_BYTES = 32
MAX_PATH_BYTES = 4096

MANIFEST_ENTRY = struct.Struct(">QH")  # file id, path length; the path follows
MANIFEST_COPIES = 5
MAX_MANIFEST_BYTES = 64 * 1024

# Kinds.
CHUNK = 1
POSITION = 2
MANIFEST = 3
# Flags of a chunk.
LAST = 1  # the file's last chunk
DIGEST = 2  # carries the file's SHA-256 after its path
ABANDONED = 4  # the sender gave this file up: no data, no report
STOPPED = 8  # with ABANDONED: because the sender stopped (a one-shot sender will not send it again)
END = 16  # a position: the run's last record; whatever of its files did not come whole never will


class Chunk(NamedTuple):
    kind: int
    flags: int
    copy: int
    run: int
    sequence: int
    spread: int
    file_id: int = 0
    offset: int = 0
    size: int = 0
    mtime_ns: int = 0
    mode: int = 0
    path: bytes = b""
    digest: bytes | None = None
    names: tuple = ()  # a manifest's (file id, path) pairs
    last_file_id: int = 0  # a position's


def position(run: int, sequence: int, spread: int, last_file_id: int, flags: int = 0) -> bytes:
    return HEAD.pack(VERSION, POSITION, flags, 0, run, sequence, spread) + LAST_FILE.pack(last_file_id)


def chunk(run: int, sequence: int, spread: int, flags: int, copy: int, file_id: int, offset: int, size: int,
          mtime_ns: int, mode: int, path: bytes, digest: bytes | None = None) -> bytes:
    if digest is not None:
        flags |= DIGEST
    return b"".join((HEAD.pack(VERSION, CHUNK, flags, copy, run, sequence, spread),
                     FILE.pack(file_id, offset, size, mtime_ns, mode, len(path)), path, digest or b""))


def manifest(run: int, sequence: int, spread: int, entries) -> bytes:
    """entries: (file id, path) pairs, at most MAX_MANIFEST_BYTES of them in all."""
    return b"".join([HEAD.pack(VERSION, MANIFEST, 0, 0, run, sequence, spread)] +
                    [MANIFEST_ENTRY.pack(file_id, len(path)) + path for file_id, path in entries])


def read(metadata) -> Chunk:
    """Raises ValueError, naming what is wrong, for metadata no DDC directory source writes."""
    metadata = bytes(metadata)
    if len(metadata) < HEAD.size:
        raise ValueError(f"{len(metadata)} bytes of metadata, fewer than a directory record's {HEAD.size}")
    version, kind, flags, copy, run, sequence, spread = HEAD.unpack_from(metadata)
    if version != VERSION:
        raise ValueError(f"directory record format {version}; this egress reads {VERSION}")
    if kind == POSITION:
        if len(metadata) != HEAD.size + LAST_FILE.size:
            raise ValueError(f"a position record of {len(metadata)} bytes")
        return Chunk(kind, flags, copy, run, sequence, spread, last_file_id=LAST_FILE.unpack_from(metadata,
                                                                                                 HEAD.size)[0])
    if kind == MANIFEST:
        if len(metadata) > MAX_MANIFEST_BYTES:
            raise ValueError(f"a manifest of {len(metadata)} bytes, more than {MAX_MANIFEST_BYTES}")
        return Chunk(kind, flags, copy, run, sequence, spread, names=tuple(_manifest_entries(metadata)))
    if kind != CHUNK:
        raise ValueError(f"unknown directory record kind {kind}")
    if len(metadata) < HEAD.size + FILE.size:
        raise ValueError(f"a chunk's metadata is {len(metadata)} bytes, too short for its file's description")
    file_id, offset, size, mtime_ns, mode, path_length = FILE.unpack_from(metadata, HEAD.size)
    path_at = HEAD.size + FILE.size
    expected = path_at + path_length + (DIGEST_BYTES if flags & DIGEST else 0)
    if len(metadata) != expected or path_length > MAX_PATH_BYTES:
        raise ValueError(f"a chunk's metadata is {len(metadata)} bytes, its fields say {expected}")
    path = metadata[path_at:path_at + path_length]
    digest = metadata[path_at + path_length:] if flags & DIGEST else None
    return Chunk(kind, flags, copy, run, sequence, spread, file_id, offset, size, mtime_ns, mode, path, digest)


def _manifest_entries(metadata: bytes):
    at = HEAD.size
    while at < len(metadata):
        if at + MANIFEST_ENTRY.size > len(metadata):
            raise ValueError("a manifest ends inside an entry")
        file_id, length = MANIFEST_ENTRY.unpack_from(metadata, at)
        at += MANIFEST_ENTRY.size
        if length > MAX_PATH_BYTES or at + length > len(metadata):
            raise ValueError(f"a manifest entry of {length} bytes runs past the manifest's end")
        yield file_id, metadata[at:at + length]
        at += length
