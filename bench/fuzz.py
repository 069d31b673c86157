"""Fuzzing of everything the egress reads from the network, with structure-aware mutations.

    python bench/fuzz.py [--inputs 1000000] [--seed 1] [--target datagram|batch|kafka|sealed]

This is the quick, unguided companion of the coverage-guided fuzzer in fuzz/
(atheris over a clang ASan/UBSan/libFuzzer build of the Cython core, receive()
batches and FEC included; docs/fuzzing.md). It needs no special build: the
mutations keep a valid skeleton and re-seal it (recomputed CRC-32C; for the
`sealed` target a real AES-256-GCM seal, as a compromised or buggy ingress
would produce) before breaking one field, one length or one byte, and it also
covers the batch and Kafka metadata decoders on their own.

Targets:
- datagram: LinkReceiver.feed, the header parser, sequence window and reassembly;
- batch: decode_batch and zstd decompress of frames (records.pyx, compression.py);
- kafka: codec.unpack / unpack_records / coordinates;
- sealed: a keyed LinkReceiver, then decompress and decode of what it completes.

Every input must end in a result or a ValueError, and the receiver's counters
must account for every datagram with its bounds held. A failing input is
written to tests/fuzz_regressions/ (replayed by tests/test_fuzz_regressions.py)
and the run exits 1.
"""

import argparse
import hashlib
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from ddc import crypto  # noqa: E402
from ddc._core import wire  # noqa: E402
from ddc.handlers.kafka import codec  # noqa: E402
from ddc._core.receiver import COUNTER_NAMES, LinkReceiver  # noqa: E402
from ddc._core.records import decode_batch, encode_batch  # noqa: E402
from ddc.compression import FrameCompressor, decompress, is_compressed  # noqa: E402
from protocol_reference import fragment_all, sealed  # noqa: E402
from forge import with_checksum  # noqa: E402

REGRESSIONS = HERE.parent / "tests" / "fuzz_regressions"
KEY = bytes(range(32))
MAX_FRAME = 1 << 16
DROP_REASONS = tuple(name for name in COUNTER_NAMES if name.startswith("dropped_"))
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0xFFFFFFFF, 56, 65451, 65507)


def mutate(data: bytes, chooser: random.Random, splice: bytes = b"") -> bytes:
    out = bytearray(data)
    for _ in range(chooser.choice((1, 1, 2, 4))):
        action = chooser.randrange(7)
        if not out:
            out += chooser.randbytes(chooser.randint(1, 64))
        position = chooser.randrange(len(out))
        if action == 0:
            out[position] ^= 1 << chooser.randrange(8)
        elif action == 1:
            out[position] = chooser.randrange(256)
        elif action == 2:
            width = chooser.choice((2, 4, 8))
            value = chooser.choice(INTERESTING) & ((1 << (8 * width)) - 1)
            out[position:position + width] = value.to_bytes(width, "big")
        elif action == 3:
            del out[chooser.randrange(len(out) + 1):]
        elif action == 4:
            out[position:position] = chooser.randbytes(chooser.randint(1, 32))
        elif action == 5 and splice:
            start = chooser.randrange(len(splice))
            out[position:] = splice[start:start + chooser.randint(1, 200)]
        else:
            del out[position:position + chooser.randint(1, 16)]
    return bytes(out)


def sample_records(chooser: random.Random, count: int) -> list:
    records = []
    for index in range(count):
        metadata = codec.pack(chooser.randrange(4), "topic-" + str(chooser.randrange(3)), chooser.randrange(8),
                                       index, index - 1, 0, 1, 1_700_000_000_000 + index,
                                       chooser.choice((None, b"", b"key")),
                                       [("h", b"v"), ("h", None)] if chooser.random() < 0.5 else None, True)
        records.append((metadata, chooser.randbytes(chooser.randint(0, 300))))
    return records


def check_receiver(receiver: LinkReceiver) -> None:
    counters = receiver.counters()
    dropped = sum(counters[reason] for reason in DROP_REASONS)
    if counters["datagrams_received"] != counters["datagrams_accepted"] + dropped:
        raise AssertionError(f"a datagram is not accounted for: {counters}")
    if receiver.bytes_in_flight > receiver.max_bytes_in_flight:
        raise AssertionError(f"bytes in flight {receiver.bytes_in_flight} past the bound")


def decode_frame(frame) -> None:
    try:
        batch = decompress(frame, MAX_FRAME) if is_compressed(frame) else frame
        records = decode_batch(batch)
    except ValueError:
        return
    codec.unpack_records(records)
    for metadata, _ in records[:4]:
        try:
            codec.coordinates(metadata)
        except ValueError:
            pass


class Target:
    """An input is a list of byte strings (one datagram, frame or metadata each); run(input) must return or
    raise ValueError."""

    name = ""

    def __init__(self, chooser: random.Random):
        self.seeds = self.make_seeds(chooser)

    def generate(self, chooser: random.Random) -> list[bytes]:
        return [mutate(chooser.choice(self.seeds), chooser, chooser.choice(self.seeds))]


HEADER_FIELDS = ((2, 1), (3, 1), (4, 1), (5, 1), (6, 2), (12, 4), (16, 8), (24, 8), (32, 8), (40, 4), (44, 4),
                 (48, 4), (52, 2), (54, 2))


class DatagramTarget(Target):
    """Unsealed datagrams: one field of a valid header broken, one frame's bytes broken and fragmented anew,
    or any mutation; most with a correct checksum."""

    name = "datagram"
    session_id = (1 << 32) + 5
    sealed_with = None

    def make_seeds(self, chooser):
        compressor = FrameCompressor(3)
        self.frames = [encode_batch(sample_records(chooser, 5)), compressor.compress(encode_batch(
            sample_records(chooser, 8))), chooser.randbytes(3000), b""]
        seeds = [d for datagrams in fragment_all(self.frames, session_id=self.session_id, datagram_size=300)
                 for d in datagrams]
        seeds += [wire.encode_datagram(wire.TYPE_HEARTBEAT, self.session_id, 999, wire.encode_peer_counters({})),
                  wire.encode_datagram(wire.TYPE_SHUTDOWN, self.session_id, 1000, b"")]
        return seeds

    def __init__(self, chooser):
        super().__init__(chooser)
        self.receiver = self.new_receiver()
        self.fed = 0
        self.next_sequence = 2000
        self.next_frame_id = 10

    def new_receiver(self):
        receiver = LinkReceiver(max_frame_bytes=MAX_FRAME, max_frames_in_flight=16, max_bytes_in_flight=1 << 20)
        if self.sealed_with:
            receiver.add_key(self.sealed_with, 1)
        return receiver

    def seal(self, datagram: bytes) -> bytes:
        return sealed(datagram, self.sealed_with, 1) if self.sealed_with else datagram

    def fragments(self, frame: bytes, chooser) -> list[bytes]:
        from protocol_reference import fragment
        datagrams = fragment(frame, session_id=self.session_id, frame_id=self.next_frame_id,
                             first_sequence=self.next_sequence, datagram_size=chooser.choice((120, 300, 1400)))
        self.next_frame_id += 1
        self.next_sequence += len(datagrams)
        chooser.shuffle(datagrams)
        return [self.seal(d) for d in datagrams]

    def generate(self, chooser):
        mode = chooser.random()
        if mode < 0.35:
            frame = chooser.choice(self.frames)
            return self.fragments(mutate(frame, chooser) if frame else frame, chooser)
        if mode < 0.7:
            out = bytearray(chooser.choice(self.seeds))
            out[24:32] = self.next_sequence.to_bytes(8, "big")
            self.next_sequence += 1
            offset, width = chooser.choice(HEADER_FIELDS)
            value = chooser.choice(INTERESTING + (chooser.getrandbits(8 * width),)) & ((1 << (8 * width)) - 1)
            out[offset:offset + width] = value.to_bytes(width, "big")
            return [with_checksum(self.seal_if_possible(bytes(out)))]
        datagram = mutate(self.seal(chooser.choice(self.seeds)), chooser, chooser.choice(self.seeds))
        return [with_checksum(datagram) if chooser.random() < 0.8 else datagram]

    def seal_if_possible(self, datagram: bytes) -> bytes:
        """Sealed when the target seals and the broken header still parses; else as it is."""
        try:
            return self.seal(datagram)
        except ValueError:
            return datagram

    def run(self, datagrams: list[bytes]) -> None:
        for datagram in datagrams:
            for frame in self.receiver.feed(datagram, now_ns=self.fed * 1000):
                decode_frame(frame)
            self.fed += 1
            if self.receiver.has_session and self.receiver.session_id != self.session_id:
                check_receiver(self.receiver)  # a mutated session id took over; start again to reach deeper
                self.receiver = self.new_receiver()
            elif self.fed % 4096 == 0:
                check_receiver(self.receiver)
                self.receiver.expire(now_ns=self.fed * 1000 + 10**10)
                if self.fed % (1 << 16) == 0:
                    self.receiver = self.new_receiver()


class SealedTarget(DatagramTarget):
    """The same through a keyed receiver: authentic datagrams carrying broken frames (a compromised or buggy
    ingress), broken sealed datagrams, and datagrams sealed with a broken header."""

    name = "sealed"
    session_id = (1 << 32) + 9
    sealed_with = KEY


class BatchTarget(Target):
    name = "batch"

    def make_seeds(self, chooser):
        plain = [encode_batch(sample_records(chooser, n)) for n in (0, 1, 7)]
        plain.append(encode_batch([(b"", b""), (b"m", b"v" * 100)]))
        return plain + [FrameCompressor(3).compress(batch) for batch in plain]

    def run(self, frames: list[bytes]) -> None:
        for frame in frames:
            decode_frame(frame)


class KafkaTarget(Target):
    name = "kafka"

    def make_seeds(self, chooser):
        return [metadata for metadata, _ in sample_records(chooser, 20)]

    def run(self, inputs: list[bytes]) -> None:
        for data in inputs:
            for decoder in (codec.unpack, codec.coordinates):
                try:
                    decoder(data)
                except ValueError:
                    pass
            codec.unpack_records([(data, b"value"), (data, b"")])


TARGETS = {target.name: target for target in (DatagramTarget, SealedTarget, BatchTarget, KafkaTarget)}


def serialize(pieces: list[bytes]) -> bytes:
    return b"".join(len(piece).to_bytes(4, "big") + piece for piece in pieces)


def deserialize(data: bytes) -> list[bytes]:
    pieces, position = [], 0
    while position + 4 <= len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        pieces.append(data[position + 4:position + 4 + length])
        position += 4 + length
    return pieces


def keep_crasher(target: str, pieces: list[bytes]) -> Path:
    """Writes a failing input where tests/test_fuzz_regressions.py replays it."""
    data = serialize(pieces)
    REGRESSIONS.mkdir(parents=True, exist_ok=True)
    path = REGRESSIONS / f"{target}-{hashlib.sha256(data).hexdigest()[:16]}.bin"
    path.write_bytes(data)
    return path


def fuzz(name: str, inputs: int, seed: int) -> dict:
    chooser = random.Random(seed)
    target = TARGETS[name](chooser)
    started = time.monotonic()
    for _ in range(inputs):
        data = target.generate(chooser)
        try:
            target.run(data)
        except ValueError:
            pass
        except Exception as error:  # anything else is a finding
            path = keep_crasher(name, data)
            return {"target": name, "inputs": inputs, "failed": f"{type(error).__name__}: {error}", "kept": str(path)}
    if hasattr(target, "receiver"):
        check_receiver(target.receiver)
    return {"target": name, "inputs": inputs, "seconds": round(time.monotonic() - started, 1), "failed": None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per target (default 1 000 000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--target", choices=sorted(TARGETS), action="append")
    arguments = parser.parse_args()
    crypto.load_sealing_library()
    failed = False
    for name in arguments.target or list(TARGETS):
        result = fuzz(name, arguments.inputs, arguments.seed)
        if result["failed"]:
            failed = True
            print(f"{name:<9} FAILED after fewer than {result['inputs']:,} inputs: {result['failed']} "
                  f"(input kept in {result['kept']})")
        else:
            print(f"{name:<9} {result['inputs']:>11,} inputs in {result['seconds']:>6} s, no failure")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
