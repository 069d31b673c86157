"""zstd frames: round trip, and what a forged or corrupted compressed frame gets (a counted refusal)."""

import collections
import hashlib
import json
import random

import pytest
import zstandard

from conftest import stop_pair
from ddc._core.records import BATCH_HEADER_BYTES, decode_batch, encode_batch
from ddc.compression import ZSTD_FORMAT, FrameCompressor, decompress, is_compressed
from test_end_to_end import assert_no_loss
from traffic import send_paced


def log_lines(count: int, seed: int) -> list[bytes]:
    chooser = random.Random(seed)
    return [json.dumps({"index": index, "host": f"plc-{chooser.randint(1, 40)}", "level": "info",
                        "message": "valve position " + str(chooser.randint(0, 100))}).encode()
            for index in range(count)]


def test_round_trip_keeps_the_header_readable():
    records = [(b"10.0.0.1:514", line) for line in log_lines(2000, 1)]
    batch = encode_batch(records, 12345)
    frame = FrameCompressor(3).compress(batch)
    assert is_compressed(frame) and not is_compressed(batch)
    assert frame[4:BATCH_HEADER_BYTES] == batch[4:BATCH_HEADER_BYTES]  # count and taken-in time stay readable
    assert len(frame) * 3 < len(batch)
    assert decode_batch(decompress(frame, len(batch))) == records


def test_a_decompression_bomb_is_refused_at_the_frame_limit():
    bomb = bytes([ZSTD_FORMAT]) + bytes(BATCH_HEADER_BYTES - 1) + zstandard.ZstdCompressor().compress(
        bytes(200 << 20))
    assert len(bomb) < 64 << 10
    with pytest.raises(ValueError, match="past max_frame_size"):
        decompress(bomb, 64 << 20)


ZSTD = zstandard.ZstdCompressor()


@pytest.mark.parametrize("payload", [b"", b"not zstd at all", ZSTD.compress(b"x" * 1000)[:-3],
                                     zstandard.ZstdCompressor(write_content_size=False).compress(b"x" * 1000),
                                     ZSTD.compress(b"x" * 1000) + b"trailing"],
                         ids=["empty", "garbage", "truncated", "no content size", "trailing bytes"])
def test_corrupt_compressed_frames_are_refused(payload):
    with pytest.raises(ValueError):
        decode_batch(decompress(bytes([ZSTD_FORMAT]) + bytes(BATCH_HEADER_BYTES - 1) + payload, 1 << 20))


@pytest.mark.timeout(180)
def test_compressed_link_delivers_every_datagram_in_fewer_bytes(link_pair):
    payloads = log_lines(50_000, 2)
    source_port, _, collector, ingress, egress, _ = link_pair(ingress_extra='compression = "zstd"')
    send_paced(source_port, payloads, bytes_per_second=20e6)
    delivered = collector.wait_for(len(payloads), timeout=60)
    ingress_summary, egress_summary = stop_pair(ingress, egress)
    assert delivered == len(payloads)
    assert collector.digests == collections.Counter(hashlib.blake2b(p, digest_size=16).digest() for p in payloads)
    assert_no_loss(ingress_summary, egress_summary, len(payloads))
    assert egress_summary["frames_undecodable"] == 0
    assert ingress_summary["compression_ratio"] > 3
    assert ingress_summary["bytes_sent"] * 3 < ingress_summary["frame_bytes_uncompressed"]


@pytest.mark.timeout(120)
def test_a_forged_bomb_over_the_wire_is_counted_and_the_egress_carries_on(start_ddc):
    import socket

    from conftest import free_udp_port, link_pair_configs
    from ddc._core import wire

    link_port = free_udp_port()
    _, egress_config = link_pair_configs(free_udp_port(), link_port, free_udp_port())
    egress = start_ddc("egress", egress_config)
    egress.wait_until_ready()
    bomb = bytes([ZSTD_FORMAT]) + bytes(BATCH_HEADER_BYTES - 1) + zstandard.ZstdCompressor().compress(bytes(1 << 30))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.sendto(wire.encode_datagram(wire.TYPE_DATA, 0xB0B, 0, bomb, fragment_count=1), ("127.0.0.1", link_port))
    sender.close()
    egress.wait_for(lambda line: "past max_frame_size" in line.get("message", ""))
    assert egress.stop() == 0
    summary = egress.summary("stream")
    assert summary["frames_completed"] == 1 and summary["frames_undecodable"] == 1
    assert egress.unparsed_or_tracebacks() == []
