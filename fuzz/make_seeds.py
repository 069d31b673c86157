"""Writes the receiver fuzz targets' seed corpus, tests/fuzz_corpus/TARGET/NAME.bin, from real streams.

    python fuzz/make_seeds.py [--out tests/fuzz_corpus]

Every datagram comes from the real sender (ddc._core.sender.DatagramSender) read back from a loopback UDP
socket, as tests/test_fec.py's sent_datagrams() does: record batches with Kafka metadata, zstd-compressed
batches, empty frames, heartbeats and shutdowns, sealed with `encrypt_with(KEY, 3)` for the sealed target,
in FEC blocks with `protect_with(...)` and some datagrams lost for the fec target. The fec target also gets
the attacks of tests/forge.py (parity forged over chosen data, nested parity) and the issue #20 scenarios at
a small scale. The output is deterministic: the same code writes the same files.
"""

import argparse
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from receiver_targets import (CORPUS, KEY, KEY_ID, RECEIVE, SESSION, SHORT_TIMEOUTS, SMALL_BYTES,  # noqa: E402
                              SMALL_FEC, SMALL_FRAMES, TESTS, encode_input)

sys.path.append(str(TESTS))
import forge  # noqa: E402
import traffic  # noqa: E402

from ddc import crypto  # noqa: E402
from ddc._core import wire  # noqa: E402
from ddc.handlers.kafka import codec  # noqa: E402
from ddc._core.records import encode_batch  # noqa: E402
from ddc.compression import FrameCompressor  # noqa: E402


def sent_datagrams(items, datagram_size=512, protect=None, key=None) -> list[bytes]:
    return traffic.sent_datagrams(items, datagram_size, protect, key, KEY_ID, SESSION)


def records(chooser: random.Random, count: int, value_bytes: int = 120) -> list:
    """Records as the Kafka source packs them: metadata (topic, partition, offset, key, headers) and value."""
    out = []
    for index in range(count):
        metadata = codec.pack(chooser.randrange(4), f"topic-{chooser.randrange(3)}", chooser.randrange(8),
                                       1000 + index, 999 + index, 0, 1, 1_700_000_000_000 + index,
                                       chooser.choice((None, b"", b"key")),
                                       [("h", b"v"), ("n", None)] if chooser.random() < 0.5 else None, True)
        out.append((metadata, chooser.randbytes(chooser.randint(0, value_bytes))))
    return out


def stream(chooser: random.Random) -> list:
    """One ingress session's worth: a batch, a compressed batch, an empty frame, a raw (UDP source) frame,
    a heartbeat and a shutdown."""
    heartbeat = wire.encode_peer_counters({"heartbeat_interval_ms": 1000, "uptime_ms": 5000, "datagrams_sent": 12,
                                           "frames_sent": 4, "records_sent": 40, "bytes_sent": 9000})
    return [encode_batch(records(chooser, 6)),
            FrameCompressor(3).compress(encode_batch(records(chooser, 12))),
            (wire.TYPE_HEARTBEAT, heartbeat),
            b"",
            chooser.randbytes(700),
            (wire.TYPE_SHUTDOWN, b"")]


def is_parity(datagram: bytes) -> bool:
    return datagram[3] == wire.TYPE_PARITY


def lose_data(datagrams: list[bytes], every: int) -> list[bytes]:
    """Every every-th data datagram lost, so parity has something to rebuild."""
    out, seen = [], 0
    for datagram in datagrams:
        if not is_parity(datagram):
            seen += 1
            if seen % every == 0:
                continue
        out.append(datagram)
    return out


def batches(datagrams: list[bytes], size: int) -> list:
    """Datagrams with a break after every size of them."""
    out = []
    for start in range(0, len(datagrams), size):
        out += datagrams[start:start + size] + [None]
    return out


def seeds() -> dict[str, dict[str, bytes]]:
    crypto.load_sealing_library()
    chooser = random.Random(20)
    corpus = {"plain": {}, "sealed": {}, "fec": {}}
    plain = sent_datagrams(stream(chooser))
    big = sent_datagrams([encode_batch(records(chooser, 40, 400))], datagram_size=1472)
    sealed = sent_datagrams(stream(random.Random(20)), key=KEY)
    sealed_fec = sent_datagrams(stream(random.Random(20)), protect=(8, 3, 2), key=KEY)
    shuffled = list(plain)
    random.Random(3).shuffle(shuffled)

    corpus["plain"]["stream-feed"] = encode_input(0, plain)
    corpus["plain"]["stream-receive"] = encode_input(RECEIVE, plain)
    corpus["plain"]["stream-reordered-receive"] = encode_input(RECEIVE, shuffled)
    corpus["plain"]["stream-replayed-small-frames"] = encode_input(SMALL_FRAMES | SMALL_BYTES, plain + plain[::-1])
    corpus["plain"]["large-frame-feed-breaks"] = encode_input(SHORT_TIMEOUTS, batches(big, 7))
    corpus["plain"]["large-frame-receive-small-bytes"] = encode_input(RECEIVE | SMALL_BYTES, big)
    corpus["plain"]["two-sessions"] = encode_input(SHORT_TIMEOUTS, plain[:5] + [None] + [
        forge.data_datagram(0, b"other session", frame_id=0, session_id=(2 << 32) | 1)] + plain[5:])
    corpus["plain"]["control-only"] = encode_input(RECEIVE, [d for d in plain if d[3] != wire.TYPE_DATA])

    corpus["sealed"]["stream-feed"] = encode_input(0, sealed)
    corpus["sealed"]["stream-receive"] = encode_input(RECEIVE, sealed)
    corpus["sealed"]["stream-replayed-receive"] = encode_input(RECEIVE, sealed + [None] + sealed)
    corpus["sealed"]["fec-lossy-feed"] = encode_input(0, lose_data(sealed_fec, 5))
    corpus["sealed"]["fec-lossy-receive-small"] = encode_input(RECEIVE | SMALL_FEC | SMALL_FRAMES,
                                                               lose_data(sealed_fec, 3))
    corpus["sealed"]["unsealed-on-keyed"] = encode_input(0, plain[:6])
    corpus["sealed"]["short-timeouts"] = encode_input(SHORT_TIMEOUTS, batches(sealed, 4))

    for protect, every in (((16, 4, 1), 6), ((8, 3, 2), 4), ((4, 2, 1), 3), ((32, 8, 4), 5)):
        name = "x".join(map(str, protect))
        datagrams = sent_datagrams(stream(random.Random(sum(protect))), protect=protect)
        corpus["fec"][f"protect-{name}-lossy-feed"] = encode_input(0, lose_data(datagrams, every))
        corpus["fec"][f"protect-{name}-lossy-receive"] = encode_input(RECEIVE, lose_data(datagrams, every))
    big_fec = sent_datagrams([encode_batch(records(chooser, 40, 400))], datagram_size=1472, protect=(16, 4, 1))
    corpus["fec"]["large-frame-small-budget"] = encode_input(SMALL_FEC | RECEIVE, lose_data(big_fec, 7))
    corpus["fec"]["large-frame-small-budget-feed"] = encode_input(SMALL_FEC | SMALL_FRAMES, lose_data(big_fec, 4))
    corpus["fec"]["parity-only"] = encode_input(0, [d for d in big_fec if is_parity(d)])

    # tests/forge.py: parity computed over data the attacker chose, rebuilt by the receiver
    members = [forge.data_datagram(index, bytes([65 + index]) * 20, frame_id=index, block=0, index=index, count=8)
               for index in range(8)]
    parity = forge.parity_for(members, 3, block=0)
    corpus["fec"]["forged-parity"] = encode_input(0, members[3:] + parity)
    corpus["fec"]["forged-parity-receive"] = encode_input(RECEIVE, members[3:] + parity)
    corpus["fec"]["forged-parity-padded"] = encode_input(0, members[1:] + forge.parity_for(
        members, 1, block=0, first_row=5, symbol_length=200))
    corpus["fec"]["nested-parity-3"] = encode_input(0, [forge.nested_parity(3)])
    corpus["fec"]["nested-parity-40-receive"] = encode_input(RECEIVE, [forge.nested_parity(40)])
    # a rebuilt "datagram" that is parity of its own block, and one that claims another place
    wrong_place = forge.data_datagram(0, b"elsewhere", frame_id=0, block=9, index=0, count=2)
    corpus["fec"]["rebuilt-inconsistent"] = encode_input(0, [
        forge.data_datagram(1, b"second", frame_id=1, block=0, index=1, count=2)] + forge.parity_for(
        [wrong_place, forge.data_datagram(1, b"second", frame_id=1, block=0, index=1, count=2)], 1, block=0))
    # issue #20 defect 1 at a small scale: blocks of k = 127 one-byte frames, rebuilt from forged parity only,
    # all in one receive() batch, with 4 frame slots
    for blocks in (1, 2):
        items = []
        for block in range(blocks):
            frames = [forge.data_datagram(block * 127 + index, b"z", frame_id=block * 127 + index, block=block,
                                          index=index, count=127) for index in range(127)]
            items += frames[:64] + forge.parity_for(frames, 63, block=block)
        corpus["fec"][f"k127-forged-{blocks}-blocks"] = encode_input(RECEIVE | SMALL_FRAMES, items)
    # defect 3: data kept beyond a 64 KiB budget while parity arrives
    wide = [forge.data_datagram(index, bytes([index]) * 7000, frame_id=index, block=4, index=index, count=10)
            for index in range(10)]
    corpus["fec"]["small-budget-wide-block"] = encode_input(SMALL_FEC, wide[2:] + forge.parity_for(wide, 2, block=4))
    # the budget closes the oldest open block for a newer one's symbols
    older = [forge.data_datagram(index, b"o" * 6000, frame_id=index, block=1, index=index, count=8)
             for index in range(5)]
    newer = [forge.data_datagram(5 + index, b"n" * 6000, frame_id=5 + index, block=2, index=index, count=8)
             for index in range(8)]
    corpus["fec"]["small-budget-evicts-older-block"] = encode_input(SMALL_FEC, older + newer[1:] + forge.parity_for(
        newer, 1, block=2))
    # two parity datagrams of one block that disagree about the symbol length
    corpus["fec"]["parity-length-mismatch"] = encode_input(0, members[2:] + forge.parity_for(members, 1, block=0) +
                                                           forge.parity_for(members, 1, block=0, first_row=1,
                                                                            symbol_length=300))
    return corpus


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=CORPUS)
    arguments = parser.parse_args()
    total = 0
    for target, named in seeds().items():
        folder = arguments.out / target
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.bin"):
            old.unlink()
        for name, data in named.items():
            (folder / f"{name}.bin").write_bytes(data)
            total += len(data)
        print(f"{target:<7} {len(named):>3} seeds in {folder}")
    print(f"{total:,} bytes in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
