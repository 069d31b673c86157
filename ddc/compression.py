"""zstd per frame: fewer datagrams for the same records on a link that is slower than the data.

A compressed frame keeps the 16-byte batch header readable (format 2 instead of
1, record count, taken-in time), so counters and latency need no decompression;
the records after it are one zstd frame. The egress refuses to decompress past
the link's max_frame_size, so a small forged frame cannot make it allocate
gigabytes (a decompression bomb). The zstandard package does the work: zstd is
per frame, called once per batch, never per record.
"""

import zstandard

from ddc._core.records import BATCH_FORMAT as PLAIN_FORMAT
from ddc._core.records import BATCH_HEADER_BYTES

ZSTD_FORMAT = 2


class FrameCompressor:
    def __init__(self, level: int):
        self._compressor = zstandard.ZstdCompressor(level=level)

    def compress(self, batch: bytes) -> bytes:
        header = bytearray(batch[:BATCH_HEADER_BYTES])
        header[0] = ZSTD_FORMAT
        return bytes(header) + self._compressor.compress(memoryview(batch)[BATCH_HEADER_BYTES:])


def is_compressed(frame) -> bool:
    """Whether a frame (any buffer) holds a compressed batch, from its first byte."""
    return len(frame) >= BATCH_HEADER_BYTES and memoryview(frame)[0] == ZSTD_FORMAT


def decompress(frame, limit: int) -> bytes:
    """The plain batch of a compressed frame; ValueError if it is not one whole zstd frame, or would expand
    past limit bytes. The size is read from the zstd frame header (DDC always writes it) before anything is
    allocated."""
    view = memoryview(frame)
    if len(view) <= BATCH_HEADER_BYTES:
        raise ValueError("compressed frame holds no zstd data")
    header = bytearray(view[:BATCH_HEADER_BYTES])
    header[0] = PLAIN_FORMAT
    data = view[BATCH_HEADER_BYTES:]
    try:
        size = zstandard.frame_content_size(data)
        if size < 0:
            raise ValueError("compressed frame does not state its size; refused")
        if BATCH_HEADER_BYTES + size > limit:
            raise ValueError(f"compressed frame expands to {size} bytes, past max_frame_size ({limit}); refused")
        return bytes(header) + zstandard.ZstdDecompressor().decompress(data, max_output_size=size)
    except zstandard.ZstdError as error:
        raise ValueError(f"compressed frame is not valid zstd: {error}") from None
