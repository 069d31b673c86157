"""The egress receiver fuzz targets: one module for the atheris entry point (fuzz/receiver_fuzz.py), the seed
capture (fuzz/make_seeds.py) and the replay in the normal suite (tests/test_fuzz_regressions.py).

An input is one options byte, then datagrams, each behind a big-endian u16 length; the length 0xFFFF (longer
than any UDP datagram) is not a datagram but a break: the current batch ends, the clock moves on one second
and expire() runs. Options:

    bit 0  batches through receive(fd, 0) over an AF_UNIX datagram socket pair (recvmmsg), up to 64
           datagrams sent before each receive(); else one feed(datagram, now_ns) each, on a virtual clock
    bit 1  max_fec_bytes_in_flight=65536 (else 64 MiB)
    bit 2  max_frames_in_flight=4 (else 1024)
    bit 3  max_frame_bytes=16384, max_bytes_in_flight=32768 (else 64 MiB and 256 MiB)
    bit 4  frame_timeout and session_takeover of 0.5 s (else 5 s and 10 s)

Targets differ in the receiver's key and in their seeds: `plain` (no key), `sealed` (add_key(bytes(range(32)),
3), seeds sealed with that key) and `fec` (no key, seeds with parity and forged blocks).

After every batch or break, and at the end, the receiver must account for every datagram it was given:
    datagrams_received == datagrams given to it (none lost on the socket pair)
    datagrams_received + datagrams_recovered == datagrams_accepted + every dropped_* counter
    fec_bytes_in_flight <= max_fec_bytes_in_flight, bytes_in_flight <= max_bytes_in_flight
    frames_completed == frames handed out
and after a final expire(everything=True) it holds no partial frame and no FEC symbol. Frames it hands out
are decoded as the egress would (zstd, record batch, Kafka metadata); only ValueError may come of that.
Anything else raised is a finding; the sanitized build (fuzz/build.sh) adds memory errors and undefined
behaviour in the C.

The structure-aware mutator works on the datagram list: one datagram mutated (its checksum recomputed, or for
the sealed target re-sealed with the key, as a compromised or buggy ingress would), a header field set to an
edge value, datagrams dropped, replayed, swapped or moved, breaks and options changed, and forged FEC blocks
(parity computed over chosen data, so the receiver rebuilds what the "attacker" chose), next to libFuzzer's own
byte mutations of the whole input.
"""

import random
import socket
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
TESTS = REPOSITORY / "tests"
if str(TESTS) not in sys.path:
    sys.path.append(str(TESTS))  # protocol_reference (the independent sealing); appended: ddc stays as found

from ddc._core import wire  # noqa: E402
from ddc.handlers.kafka import codec  # noqa: E402
from ddc._core.receiver import COUNTER_NAMES, LinkReceiver  # noqa: E402
from ddc._core.records import decode_batch  # noqa: E402
from ddc.compression import decompress, is_compressed  # noqa: E402
from forge import with_checksum  # noqa: E402

TARGETS = ("plain", "sealed", "fec")
CORPUS = TESTS / "fuzz_corpus"
REGRESSIONS = TESTS / "fuzz_regressions"
KEY = bytes(range(32))
KEY_ID = 3
SESSION = (1 << 32) | 5  # the session id fuzz/make_seeds.py's sender uses

BREAK = 0xFFFF
MAX_DATAGRAM = 65507
BATCH = 64
RECEIVE = 1
SMALL_FEC = 2
SMALL_FRAMES = 4
SMALL_BYTES = 8
SHORT_TIMEOUTS = 16
OPTION_BITS = 5

START_NS = 10**12
STEP_NS = 1000
BREAK_NS = 10**9
DROP_REASONS = tuple(name for name in COUNTER_NAMES if name.startswith("dropped_"))


class Finding(AssertionError):
    """The receiver broke one of its promises on an input."""


# ---- the input format ----

def encode_input(options: int, items: list) -> bytes:
    """items: datagrams (bytes) and None for a break."""
    out = bytearray([options & 0xFF])
    for item in items:
        if item is None:
            out += BREAK.to_bytes(2, "big")
        else:
            item = item[:MAX_DATAGRAM]
            out += len(item).to_bytes(2, "big") + item
    return bytes(out)


def decode_input(data: bytes) -> tuple[int, list]:
    if not data:
        return 0, []
    options, items, position = data[0], [], 1
    while position + 2 <= len(data):
        length = int.from_bytes(data[position:position + 2], "big")
        position += 2
        if length == BREAK:
            items.append(None)
            continue
        items.append(data[position:position + length])
        position += length
    return options, items


# ---- running one input ----

def new_receiver(target: str, options: int) -> LinkReceiver:
    if target not in TARGETS:
        raise ValueError(f"target {target!r} is not one of {TARGETS}")
    settings = {}
    if options & SMALL_FEC:
        settings["max_fec_bytes_in_flight"] = 65536
    if options & SMALL_FRAMES:
        settings["max_frames_in_flight"] = 4
    if options & SMALL_BYTES:
        settings["max_frame_bytes"] = 16384
        settings["max_bytes_in_flight"] = 32768
    if options & SHORT_TIMEOUTS:
        settings["frame_timeout_seconds"] = 0.5
        settings["session_takeover_seconds"] = 0.5
    receiver = LinkReceiver(**settings)
    if target == "sealed":
        receiver.add_key(KEY, KEY_ID)
    return receiver


def decode_frame(frame, limit: int) -> None:
    """What the egress does with a frame: decompress, decode the batch and its Kafka metadata."""
    try:
        batch = decompress(frame, limit) if is_compressed(frame) else frame
        records = decode_batch(batch)
    except ValueError:
        return
    try:
        codec.unpack_records(records)
    except ValueError:
        pass
    for metadata, _ in records[:4]:
        try:
            codec.coordinates(metadata)
        except ValueError:
            pass


def check(receiver: LinkReceiver, given: int, handed_out: int) -> dict:
    counters = receiver.counters()
    dropped = sum(counters[reason] for reason in DROP_REASONS)
    if counters["datagrams_received"] != given:
        raise Finding(f"{given} datagrams given but {counters['datagrams_received']} received: {counters}")
    if counters["datagrams_received"] + counters["datagrams_recovered"] != counters["datagrams_accepted"] + dropped:
        raise Finding(f"a datagram is not accounted for: {counters}")
    if counters["fec_bytes_in_flight"] > receiver.max_fec_bytes:
        raise Finding(f"FEC bytes in flight {counters['fec_bytes_in_flight']} past {receiver.max_fec_bytes}")
    if counters["bytes_in_flight"] > receiver.max_bytes_in_flight:
        raise Finding(f"bytes in flight {counters['bytes_in_flight']} past {receiver.max_bytes_in_flight}")
    if counters["frames_completed"] != handed_out:
        raise Finding(f"{counters['frames_completed']} frames completed but {handed_out} handed out")
    return counters


class SocketPair:
    """An AF_UNIX datagram socket pair, reused for every input of a process; empty between inputs."""

    def __init__(self):
        self.writer, self.reader = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for option in (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF):
            if option is None:
                continue
            try:
                self.writer.setsockopt(socket.SOL_SOCKET, option, 8 << 20)
                break
            except OSError:
                continue
        self.writer.setblocking(False)
        self.reader.setblocking(False)

    def pending(self) -> bool:
        try:
            self.reader.recv(1, socket.MSG_PEEK)
            return True
        except BlockingIOError:
            return False

    def discard(self) -> None:
        while True:
            try:
                self.reader.recv(65536)
            except BlockingIOError:
                return


class Runner:
    """Runs inputs of one target; run() raises Finding when an invariant breaks."""

    def __init__(self, target: str):
        if target not in TARGETS:
            raise ValueError(f"target {target!r} is not one of {TARGETS}")
        self.target = target
        self.sockets = None
        if target == "sealed":
            from ddc import crypto

            crypto.load_sealing_library()

    def run(self, data: bytes) -> dict:
        options, items = decode_input(data)
        receiver = new_receiver(self.target, options)
        state = {"given": 0, "handed_out": 0}
        limit = receiver.max_frame_bytes

        def take(frames):
            state["handed_out"] += len(frames)
            for frame in frames:
                decode_frame(frame, limit)

        if options & RECEIVE:
            if self.sockets is None:
                self.sockets = SocketPair()
            try:
                now = self.run_batches(receiver, items, state, take)
            finally:
                self.sockets.discard()
        else:
            now = START_NS
            for item in items:
                if item is None:
                    now += BREAK_NS
                    receiver.expire(now_ns=now)
                    check(receiver, state["given"], state["handed_out"])
                    continue
                now += STEP_NS
                state["given"] += 1
                take(receiver.feed(item, now_ns=now))
        check(receiver, state["given"], state["handed_out"])
        receiver.expire(now_ns=now, everything=True)
        counters = check(receiver, state["given"], state["handed_out"])
        if counters["fec_bytes_in_flight"] or counters["bytes_in_flight"] or counters["frames_in_flight"]:
            raise Finding(f"state left after expire(everything=True): {counters}")
        return counters

    def run_batches(self, receiver, items, state, take) -> int:
        sockets = self.sockets
        fd = sockets.reader.fileno()
        offset = 0

        def drain():
            for _ in range(100_000):
                frames = receiver.receive(fd, 0)
                take(frames)
                if not frames and not sockets.pending():
                    return
            raise Finding("receive() did not empty the socket in 100 000 calls")

        def send(batch):
            for datagram in batch:
                for _ in range(1000):
                    try:
                        sockets.writer.send(datagram)
                        break
                    except BlockingIOError:
                        drain()
                else:
                    raise Finding("the socket pair never took a datagram")
                state["given"] += 1
            drain()
            check(receiver, state["given"], state["handed_out"])

        batch = []
        for item in items:
            if item is None:
                send(batch)
                batch = []
                offset += BREAK_NS
                receiver.expire(now_ns=time.monotonic_ns() + offset)
                check(receiver, state["given"], state["handed_out"])
                continue
            batch.append(item)
            if len(batch) == BATCH:
                send(batch)
                batch = []
        send(batch)
        return time.monotonic_ns() + offset


def corpus_files(target: str) -> list[Path]:
    """The seed corpus and every kept crasher of a target."""
    files = []
    for folder in (CORPUS / target, REGRESSIONS / target):
        if folder.is_dir():
            files += sorted(path for path in folder.iterdir() if path.is_file() and not path.name.startswith("."))
    return files


# ---- structure-aware mutation ----

HEADER_FIELDS = ((2, 1), (3, 1), (4, 1), (5, 1), (6, 2), (12, 4), (16, 8), (24, 8), (32, 8), (40, 4), (44, 4),
                 (48, 4), (52, 2), (54, 2))
INTERESTING = (0, 1, 2, 3, 4, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF,
               1 << 63, 56, 58, 127, 128, 65451, 65507)


def open_sealed(datagram: bytes) -> bytes | None:
    """The plain datagram inside one sealed with KEY, or None."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from protocol_reference import session_key

    try:
        fields = wire.decode_datagram(datagram)
    except ValueError:
        return None
    if not fields["flags"] & 1 or fields["key_id"] != KEY_ID:
        return None
    associated = bytearray(datagram[:wire.HEADER_BYTES])
    associated[8:12] = bytes(4)
    nonce = bytes(4) + fields["sequence"].to_bytes(8, "big")
    try:
        plain = AESGCM(session_key(KEY, fields["session_id"])).decrypt(nonce, fields["payload"], bytes(associated))
    except InvalidTag:
        return None
    return plain_datagram(fields, plain)


def plain_datagram(fields: dict, payload: bytes) -> bytes:
    return wire.encode_datagram(fields["type"], fields["session_id"], fields["sequence"], payload,
                                frame_id=fields["frame_id"], fragment_index=fields["fragment_index"],
                                fragment_count=fields["fragment_count"], frame_length=fields["frame_length"],
                                fec_block=fields["fec_block"], fec_index=fields["fec_index"],
                                fec_count=fields["fec_count"])


def seal(datagram: bytes) -> bytes:
    """Sealed with KEY as a (compromised) ingress would; as it is when its header does not parse."""
    from protocol_reference import sealed

    try:
        return sealed(datagram, KEY, KEY_ID)
    except (ValueError, OverflowError):
        return datagram


def forged_block(chooser: random.Random, members: list[bytes], block: int, session_id: int) -> list[bytes]:
    """A block whose parity is computed over members (any bytes), with some members lost: the receiver
    rebuilds exactly what was chosen."""
    from ddc._core import fec

    count = len(members)
    parity_count = chooser.randint(1, min(count, 8))
    symbols = [len(member).to_bytes(2, "big") + member for member in members]
    if chooser.random() < 0.3:
        pad = max(map(len, symbols)) + chooser.randint(1, 40)
        symbols = [symbol.ljust(pad, b"\0") for symbol in symbols]
    first_row = chooser.choice((0, 0, 0, chooser.randrange(127 - parity_count + 1)))
    rows = fec.encode(symbols, first_row + parity_count)[first_row:]
    parity = [wire.encode_datagram(wire.TYPE_PARITY, session_id, wire.PARITY_SEQUENCE | (block << 8) | (first_row + row),
                                   symbol, fec_block=block, fec_index=count + first_row + row, fec_count=count)
              for row, symbol in enumerate(rows)]
    lost = set(chooser.sample(range(count), chooser.randint(1, parity_count)))
    out = [member for index, member in enumerate(members) if index not in lost] + parity
    if chooser.random() < 0.5:
        chooser.shuffle(out)
    return out


def block_member(chooser: random.Random, datagram: bytes, block: int, index: int, count: int) -> bytes:
    """A datagram placed in a block: a real one's header rewritten, or the datagram as it is (a rebuilt datagram
    is whatever the data symbols were, even parity of another block)."""
    try:
        fields = wire.decode_datagram(datagram)
    except ValueError:
        return datagram
    if fields["type"] == wire.TYPE_PARITY and chooser.random() < 0.5:
        return datagram  # nested parity
    fields.update(fec_block=block, fec_index=index, fec_count=count)
    try:
        return plain_datagram(fields, fields["payload"])
    except (ValueError, OverflowError):
        return datagram


class Mutator:
    """atheris custom_mutator and custom_crossover for one target."""

    def __init__(self, target: str, byte_mutate):
        self.target = target
        self.byte_mutate = byte_mutate  # atheris.Mutate(data, max_size)
        self.failures = 0

    def mutate(self, data: bytes, max_size: int, seed: int) -> bytes:
        chooser = random.Random(seed)
        if chooser.random() < 0.3:
            return self.byte_mutate(data, max_size)
        options, items = decode_input(data)
        try:
            for _ in range(chooser.choice((1, 1, 1, 2, 3))):
                options, items = self.mutate_items(chooser, options, items, max_size)
        except Exception as error:  # noqa: BLE001 - a mutator bug must not end a long run; it is reported
            self.failures += 1
            if self.failures <= 3:
                print(f"WARNING: structure-aware mutation failed ({type(error).__name__}: {error}); "
                      f"a byte mutation instead", file=sys.stderr)
            return self.byte_mutate(data, max_size)
        out = encode_input(options, items)
        return out if len(out) <= max_size else self.byte_mutate(data, max_size)

    def crossover(self, data1: bytes, data2: bytes, max_size: int, seed: int) -> bytes:
        chooser = random.Random(seed)
        options1, items1 = decode_input(data1)
        options2, items2 = decode_input(data2)
        if not items1 or not items2:
            return data1 if len(data1) <= max_size else data1[:max_size]
        cut1, cut2 = chooser.randrange(len(items1) + 1), chooser.randrange(len(items2))
        items = items1[:cut1] + items2[cut2:cut2 + chooser.randint(1, 64)] + items1[cut1:]
        out = encode_input(chooser.choice((options1, options2)), items)
        return out if len(out) <= max_size else data1[:max_size]

    def datagrams(self, items):
        return [position for position, item in enumerate(items) if item is not None]

    def mutate_items(self, chooser, options, items, max_size):
        items = list(items)
        positions = self.datagrams(items)
        action = chooser.randrange(12)
        if not positions or action == 0:
            options ^= 1 << chooser.randrange(OPTION_BITS)
            if not positions:
                items.append(with_checksum(wire.encode_datagram(wire.TYPE_HEARTBEAT, SESSION, chooser.randrange(64), b"")))
            return options, items
        position = chooser.choice(positions)
        datagram = items[position]
        if action in (1, 2, 3):  # one datagram's bytes, then made valid again
            opened = open_sealed(datagram) if self.target == "sealed" else None
            base = opened if opened is not None else datagram
            mutated = self.byte_mutate(base, max(len(base), min(2 * len(base) + 64, 0xFFFE)))[:0xFFFE]
            if opened is not None:
                mutated = seal(with_checksum(mutated)) if chooser.random() < 0.8 else with_checksum(mutated)
            elif chooser.random() < 0.8:
                mutated = with_checksum(mutated)
            items[position] = mutated
        elif action == 4:  # one header field at an edge value
            opened = open_sealed(datagram) if self.target == "sealed" else None
            out = bytearray(opened if opened is not None else datagram)
            if len(out) >= wire.HEADER_BYTES:
                offset, width = chooser.choice(HEADER_FIELDS)
                value = chooser.choice(INTERESTING + (chooser.getrandbits(8 * width),)) & ((1 << (8 * width)) - 1)
                out[offset:offset + width] = value.to_bytes(width, "big")
                out = bytearray(with_checksum(bytes(out)))
                if opened is not None:
                    out = bytearray(seal(bytes(out)))
            items[position] = bytes(out)
        elif action == 5:  # lost
            del items[position]
        elif action == 6:  # replayed
            items.insert(chooser.randrange(len(items) + 1), datagram)
        elif action == 7:  # reordered
            other = chooser.choice(positions)
            items[position], items[other] = items[other], items[position]
        elif action == 8:  # a burst lost, or a run moved
            length = chooser.randint(1, 32)
            run = items[position:position + length]
            del items[position:position + length]
            if chooser.random() < 0.5:
                at = chooser.randrange(len(items) + 1)
                items[at:at] = run
        elif action == 9:  # a batch boundary, or none
            breaks = [index for index, item in enumerate(items) if item is None]
            if breaks and chooser.random() < 0.5:
                del items[chooser.choice(breaks)]
            else:
                items.insert(chooser.randrange(len(items) + 1), None)
        else:  # a forged FEC block over chosen members
            count = chooser.randint(1, min(len(positions), 16))
            start = chooser.randrange(len(positions) - count + 1)
            chosen = [items[index] for index in positions[start:start + count]]
            if self.target == "sealed":
                chosen = [opened for opened in map(open_sealed, chosen) if opened is not None] or chosen
            block = chooser.choice((0, 1, chooser.getrandbits(32)))
            members = [block_member(chooser, member, block, index, len(chosen)) if chooser.random() < 0.8
                       else member for index, member in enumerate(chosen)]
            session_id = SESSION
            try:
                session_id = wire.decode_datagram(members[0])["session_id"]
            except ValueError:
                pass
            try:
                forged = forged_block(chooser, members, block, session_id)
            except (ValueError, OverflowError):  # a member too long to be a symbol
                return options, items
            if self.target == "sealed" and chooser.random() < 0.8:
                forged = [seal(datagram) for datagram in forged]
            where = positions[start]
            for index in reversed(positions[start:start + count]):
                del items[index]
            items[where:where] = forged
        return options, items
