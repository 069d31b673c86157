"""Forward error correction: the erasure code itself, then real sender datagrams with chosen losses."""

import collections
import os
import random
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddc._core import fec, wire
from ddc._core.receiver import COUNTER_NAMES, LinkReceiver
from protocol_reference import parity_symbols
from traffic import sent_datagrams as sent_by_sender

DROP_REASONS = [name for name in COUNTER_NAMES if name.startswith("dropped_")]
KEY = bytes(range(32))


def accounted(counters) -> bool:
    return (counters["datagrams_received"] + counters["datagrams_recovered"]
            == counters["datagrams_accepted"] + sum(counters[reason] for reason in DROP_REASONS))


# ---- the code ----

@st.composite
def blocks(draw):
    data_count = draw(st.integers(1, 40))
    parity_count = draw(st.integers(1, 12))
    data = [draw(st.binary(max_size=300)) for _ in range(data_count)]
    lost = draw(st.sets(st.integers(0, data_count + parity_count - 1), max_size=parity_count))
    return data, parity_count, lost


@settings(max_examples=150, deadline=None)
@given(blocks())
def test_any_data_count_of_a_blocks_symbols_rebuild_its_data(block):
    data, parity_count, lost = block
    parity = fec.encode(data, parity_count)
    length = len(parity[0])
    received = {index: symbol for index, symbol in enumerate(data + parity) if index not in lost}
    assert fec.decode(received, len(data)) == [symbol.ljust(length, b"\0") for symbol in data]


def test_the_vector_multiply_agrees_with_the_table():
    generator = random.Random(7)
    data = [generator.randbytes(generator.randint(0, 2000)) for _ in range(128)]
    vector = fec.encode(data, 127)
    assert fec.implementation() == fec.available_multiplies()[0]
    for name in fec.available_multiplies()[1:]:
        fec.choose_multiply(name)
        try:
            assert fec.implementation() == name
            assert fec.encode(data, 127) == vector, name
        finally:
            fec.choose_multiply()
    assert fec.available_multiplies()[-1] == "table"
    with pytest.raises(ValueError, match="not one this CPU runs"):
        fec.choose_multiply("abacus")


def test_the_largest_block_survives_losing_all_its_parity_worth():
    generator = random.Random(3)
    data = [generator.randbytes(1400) for _ in range(128)]
    parity = fec.encode(data, 127)
    lost = set(generator.sample(range(255), 127))
    received = {index: symbol for index, symbol in enumerate(data + parity) if index not in lost}
    assert fec.decode(received, 128) == data


def test_too_few_symbols_are_refused_not_guessed():
    data = [os.urandom(100) for _ in range(8)]
    parity = fec.encode(data, 2)
    received = {index: symbol for index, symbol in enumerate(data + parity) if index not in (0, 1, 2)}
    with pytest.raises(ValueError, match="3 data symbols missing but only 2 parity"):
        fec.decode(received, 8)
    with pytest.raises(ValueError):
        fec.encode(data * 20, 2)


# ---- datagrams from the real sender ----

def sent_datagrams(frames, datagram_size=1472, protect=(16, 4, 1), key=None) -> list[bytes]:
    """traffic.sent_datagrams, with FEC on unless told otherwise."""
    return sent_by_sender(frames, datagram_size, protect, key)


def is_parity(datagram: bytes) -> bool:
    return datagram[3] == wire.TYPE_PARITY


def deliver(datagrams, drop=lambda position, datagram: False, key=None, **receiver_options):
    receiver = LinkReceiver(**receiver_options)
    if key:
        receiver.add_key(key, 3)
    frames = []
    for position, datagram in enumerate(datagrams):
        if not drop(position, datagram):
            frames += [bytes(frame) for frame in receiver.feed(datagram)]
    receiver.expire(everything=True)
    return frames, receiver.counters()


def test_random_loss_within_the_parity_is_fully_repaired():
    generator = random.Random(11)
    frames = [generator.randbytes(generator.randint(1, 300_000)) for _ in range(30)]
    datagrams = sent_datagrams(frames, protect=(64, 16, 4))
    dropped = {position for position in range(len(datagrams)) if generator.random() < 0.05}
    delivered, counters = deliver(datagrams, lambda position, _: position in dropped)
    assert delivered == frames
    data_dropped = sum(1 for position in dropped if not is_parity(datagrams[position]))
    assert counters["datagrams_recovered"] == data_dropped > 0
    assert counters["datagrams_lost"] == 0 and counters["frames_lost"] == 0
    assert counters["fec_blocks_unrecoverable"] == 0 and counters["fec_blocks_recovered"] > 0
    assert counters["parity_received"] == sum(map(is_parity, datagrams)) - (len(dropped) - data_dropped)
    assert counters["fec_bytes_in_flight"] == 0
    assert accounted(counters)


def burst_in_first_frame(datagrams, length=10, start=20):
    """Positions of `length` consecutive data datagrams of frame 0, from its start-th."""
    data_positions = [position for position, datagram in enumerate(datagrams)
                      if not is_parity(datagram) and wire.decode_datagram(datagram)["frame_id"] == 0]
    return set(data_positions[start:start + length])


def test_interleaving_repairs_a_burst_that_one_block_could_not():
    frames = [os.urandom(200_000)]
    interleaved = sent_datagrams(frames, protect=(16, 4, 4))
    delivered, counters = deliver(interleaved, lambda position, _: position in burst_in_first_frame(interleaved))
    assert delivered == frames and counters["datagrams_recovered"] == 10 and counters["datagrams_lost"] == 0

    plain = sent_datagrams(frames, protect=(16, 4, 1))
    delivered, counters = deliver(plain, lambda position, _: position in burst_in_first_frame(plain))
    assert delivered == []
    assert counters["fec_blocks_unrecoverable"] >= 1 and counters["frames_lost"] == 1
    assert counters["datagrams_lost"] > 0 and accounted(counters)


def test_a_block_that_loses_more_than_its_parity_is_reported_exactly_once():
    frames = [os.urandom(1358 * 16 - 100), os.urandom(5000)]
    datagrams = sent_datagrams(frames, protect=(16, 4, 1))
    first_block = [position for position, datagram in enumerate(datagrams)
                   if not is_parity(datagram) and wire.decode_datagram(datagram)["fec_block"] == 0]
    assert len(first_block) == 16
    dropped = set(first_block[5:10])
    delivered, counters = deliver(datagrams, lambda position, _: position in dropped)
    assert delivered == frames[1:]
    assert counters["fec_blocks_unrecoverable"] == 1 and counters["datagrams_recovered"] == 0
    assert counters["datagrams_lost"] == 5 and counters["frames_lost"] == 1
    assert accounted(counters)


@pytest.mark.parametrize("multiply", fec.available_multiplies())
@pytest.mark.parametrize("protect", [(8, 3, 2), (64, 16, 4)])
def test_parity_on_the_wire_matches_an_independent_reading_of_the_protocol(protect, multiply):
    """The sender encodes a batch's datagrams per block at once (gf256.h, ddc_gf_dot_rows): with every
    multiply this CPU runs, rows in tiles of 8 and fewer, datagrams shorter than the others."""
    frames = [os.urandom(1358 * 20 + 77), os.urandom(500), os.urandom(1358 * 300 + 5)]
    fec.choose_multiply(multiply)
    try:
        assert fec.implementation() == multiply
        datagrams = sent_datagrams(frames, protect=protect)
    finally:
        fec.choose_multiply()
    blocks = {}
    for datagram in datagrams:
        header = wire.decode_datagram(datagram)
        kind = "parity" if is_parity(datagram) else "data"
        blocks.setdefault(header["fec_block"], {"data": {}, "parity": {}})[kind][header["fec_index"]] = \
            header["payload"] if kind == "parity" else datagram
    assert len(blocks) >= 4
    for block in blocks.values():
        data = [block["data"][index] for index in sorted(block["data"])]
        assert sorted(block["data"]) == list(range(len(data)))
        expected = parity_symbols(data, len(block["parity"]))
        assert [block["parity"][len(data) + row] for row in range(len(expected))] == expected


def fec_blocks(datagrams) -> dict:
    """{fec_block: [data datagrams, parity datagrams]} of what a sender put on the wire."""
    blocks = {}
    for datagram in datagrams:
        header = wire.decode_datagram(datagram)
        if header["fec_count"]:
            blocks.setdefault(header["fec_block"], [0, 0])[is_parity(datagram)] += 1
    return blocks


@st.composite
def dealings(draw):
    data = draw(st.integers(1, 128))
    return (data, draw(st.integers(1, 127)), draw(st.integers(1, 64)), draw(st.integers(0, 31)),
            draw(st.lists(st.integers(1, 3 * data * 64 + 5), min_size=1, max_size=3)))


@settings(max_examples=300, deadline=None)
@given(dealings())
def test_the_dealing_alone_keeps_every_promise_the_sender_makes(dealing):
    """ddc/_core/fec_grouping.pxd driven without a socket: each data datagram in exactly one block, as few
    blocks as hold the frame, none over `data`, a group's blocks sized alike; each block at least as strong as
    a full one and at least its share; every index of a block once; and, with loss_burst L, no L consecutive
    datagrams of a frame on the wire hold more than half of any block's parity."""
    from ddc._core.fec_grouping import FecGrouping
    data, parity, interleave, loss_burst, counts = dealing
    grouping = FecGrouping(data, parity, interleave, loss_burst)
    by_size = fec.parity_by_block_size(data, parity)
    for count in counts:
        wire_order = grouping.deal(count)
        blocks = {}
        for kind, block, index, size, block_parity in wire_order:
            entry = blocks.setdefault(block, {"size": size, "parity": block_parity, "data": [], "rows": []})
            assert (entry["size"], entry["parity"]) == (size, block_parity)
            entry["data" if kind == "data" else "rows"].append(index)
        assert sum(len(entry["data"]) for entry in blocks.values()) == count
        assert len(blocks) == -(-count // data)
        for entry in blocks.values():
            assert sorted(entry["data"]) == list(range(entry["size"])) and entry["size"] <= data
            assert sorted(entry["rows"]) == list(range(entry["size"], entry["size"] + entry["parity"]))
            assert entry["parity"] >= max(by_size[entry["size"]], -(-entry["size"] * parity // data))
        sizes = [blocks[block]["size"] for block in sorted(blocks)]
        assert max(sizes) - min(sizes) <= 1, "blocks of a frame sized alike"
        if loss_burst:  # a sliding window of loss_burst datagrams: a block's count grows only as it enters
            owners = [block for _, block, *_ in wire_order]
            window = collections.Counter()
            for end, block in enumerate(owners):
                if end >= loss_burst:
                    window[owners[end - loss_burst]] -= 1
                window[block] += 1
                assert 2 * window[block] <= blocks[block]["parity"], (block, max(0, end - loss_burst + 1))
    assert grouping.control_parity == min(max(by_size[1], 3, 2 * loss_burst), 63)


def test_a_frame_of_nearly_four_billion_fragments_is_dealt_not_divided_by_zero():
    """The review of #24: at the FEC minimum datagram size a fragment carries one byte, and a frame of 2^32 - 1
    bytes made the block count wrap to zero in 32 bits; the sender then divided by it (SIGFPE, before and after
    the unit was split out). An unconfigured FecGrouping is refused the same way."""
    from ddc._core.fec_grouping import FecGrouping

    assert FecGrouping(2, 1).frame_shape(2**32 - 1) == (2**31, 2**31)
    assert FecGrouping(128, 4, 64).frame_shape(2**32 - 1) == (2**25, 2**19)
    with pytest.raises(ValueError, match="not configured"):
        FecGrouping.__new__(FecGrouping).deal(1)


@pytest.mark.parametrize("protect", [(64, 16, 4, 10), (16, 4, 1, 0), (128, 32, 2, 31), (5, 3, 7, 2)])
def test_the_sender_sends_what_the_dealing_decides(protect):
    """The sender composes the unit: its datagrams carry, frame after frame, the blocks, indexes and parity
    that FecGrouping gives for frames of the same sizes, with control datagrams (blocks of their own) between."""
    from ddc._core.fec_grouping import FecGrouping
    payload = 1472 - wire.datagram_overhead(False, True)
    sizes = [1, payload * 3, payload * protect[0] * 5 + 17, 1 << 20, 70_000]
    frames = [item for size in sizes for item in (os.urandom(size), (wire.TYPE_HEARTBEAT, b"h" * 40))]
    grouping = FecGrouping(*protect)
    expected = []
    for size in sizes:
        expected += [(kind == "parity", block, index, block_size)
                     for kind, block, index, block_size, _ in grouping.deal(-(-size // payload))]
        block = grouping.control()
        expected += [(False, block, 0, 1)] + [(True, block, 1 + row, 1) for row in range(grouping.control_parity)]
    on_wire = [wire.decode_datagram(datagram) for datagram in sent_datagrams(frames, protect=protect)]
    assert [(header["type"] == wire.TYPE_PARITY, header["fec_block"], header["fec_index"], header["fec_count"])
            for header in on_wire] == expected


@pytest.mark.parametrize("protect", [(64, 16, 4), (16, 4, 4), (32, 8, 1), (128, 32, 2)])
def test_no_block_is_weaker_than_a_full_one_whatever_the_frame_sizes(protect):
    """Issue #21: a 1 MiB frame of 772 datagrams made three full groups and a 4 + 1 tail, which failed at 2 %
    loss. Now every block, a small frame's, a frame's last, a control datagram's, is at least as strong as a
    full block at the code's rated loss, and no block gets less than the configured share."""
    data, parity, interleave = protect
    loss = fec.rated_loss(data, parity)
    full = fec.block_failure_probability(data, parity, loss)
    payload = 1472 - 2 * (56 + 0) - 2
    sizes = [1, 10, 3000, payload * 4, payload * data + 1, payload * (data * interleave + 4), 1 << 20, 1 << 20]
    frames = [os.urandom(size) for size in sizes] + [(wire.TYPE_HEARTBEAT, b"h" * 40)]
    blocks = fec_blocks(sent_datagrams(frames, protect=protect))
    assert (4, 1) not in blocks.values() and len(blocks) > 2 * len(frames)
    for data_count, parity_count in blocks.values():
        assert parity_count >= -(-data_count * parity // data)
        assert fec.block_failure_probability(data_count, parity_count, loss) <= full * 1.000001
    assert max(data_count for data_count, _ in blocks.values()) <= data


def test_blocks_of_a_frame_are_sized_alike():
    """772 datagrams with 64 + 16 blocks dealt 4 at a time: 13 blocks of 59 or 60 in groups of 4, 3, 3 and 3,
    not three groups of 4 full blocks and a block of 4."""
    payload = 1472 - 2 * 56 - 2
    blocks = fec_blocks(sent_datagrams([os.urandom(payload * 772)], protect=(64, 16, 4)))
    assert sorted(data_count for data_count, _ in blocks.values()) == [59] * 8 + [60] * 5
    assert all(parity_count == 16 for _, parity_count in blocks.values())


def test_parity_beyond_the_configured_share_is_counted():
    from ddc._core.sender import DatagramSender

    receiving = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiving.bind(("127.0.0.1", 0))
    sending = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    address = struct.pack("=HH4s8x", socket.AF_INET, socket.htons(receiving.getsockname()[1]),
                          socket.inet_aton("127.0.0.1"))
    sender = DatagramSender(sending.fileno(), address, 7, 1472)
    sender.protect_with(64, 16, 4)
    sender.send_frame(b"x")  # one datagram: its share is 1, its block gets parity_by_block_size(64, 16)[1]
    assert sender.counters()["parity_sent"] == fec.parity_by_block_size(64, 16)[1] == 4
    assert sender.counters()["parity_beyond_share_sent"] == 3
    sender.send_frame(os.urandom(1358 * 64))  # one full block: exactly its share
    assert sender.counters()["parity_sent"] == 4 + 16 and sender.counters()["parity_beyond_share_sent"] == 3
    receiving.close()
    sending.close()


def test_control_datagrams_and_empty_frames_are_protected_too():
    heartbeat = (wire.TYPE_HEARTBEAT, b"h" * 40)
    datagrams = sent_datagrams([os.urandom(3000), heartbeat, b"", (wire.TYPE_SHUTDOWN, b"bye")], protect=(64, 16, 4))
    types = [wire.decode_datagram(datagram)["type"] for datagram in datagrams]
    # 64 + 16 is rated for 5.4 % loss: a block of one datagram needs 4 parity to be as strong as 64 + 16 there
    assert types == [wire.TYPE_DATA] * 3 + [wire.TYPE_PARITY] * 5 + [wire.TYPE_HEARTBEAT] + [wire.TYPE_PARITY] * 4 + [
        wire.TYPE_DATA] + [wire.TYPE_PARITY] * 4 + [wire.TYPE_SHUTDOWN] + [wire.TYPE_PARITY] * 4
    unprotected = {8, 13, 18}
    delivered, counters = deliver(datagrams, lambda position, _: position in unprotected)
    assert delivered[1] == b"" and len(delivered) == 2
    assert counters["heartbeats_received"] == 1 and counters["shutdowns_received"] == 1
    assert counters["datagrams_recovered"] == 3 and counters["datagrams_lost"] == 0 and accounted(counters)

    every_copy = {8, 9, 10, 11, 12}
    delivered, counters = deliver(datagrams, lambda position, _: position in every_copy)
    assert len(delivered) == 2 and counters["heartbeats_received"] == 0
    assert counters["datagrams_lost"] == 1 and counters["fec_blocks_unrecoverable"] == 0 and accounted(counters)


def test_sealed_datagrams_are_repaired_and_forged_parity_rebuilds_nothing():
    frames = [os.urandom(100_000) for _ in range(3)]
    datagrams = sent_datagrams(frames, protect=(16, 4, 2), key=KEY)
    dropped = {position for position in range(0, len(datagrams), 9) if not is_parity(datagrams[position])}
    delivered, counters = deliver(datagrams, lambda position, _: position in dropped, key=KEY)
    assert delivered == frames and counters["datagrams_recovered"] == len(dropped)

    forged = []
    for datagram in datagrams:
        if is_parity(datagram):
            tampered = bytearray(datagram)
            tampered[100] ^= 1
            tampered[8:12] = b"\0\0\0\0"
            tampered[8:12] = struct.pack(">I", wire.checksum(bytes(tampered)))
            forged.append(bytes(tampered))
        else:
            forged.append(datagram)
    delivered, counters = deliver(forged, lambda position, _: position in dropped, key=KEY)
    assert delivered == []
    assert counters["dropped_forged"] == sum(map(is_parity, datagrams))
    assert counters["datagrams_recovered"] == 0 and counters["fec_blocks_recovered"] == 0
    assert accounted(counters)


def test_repeated_parity_counts_as_duplicate_and_changes_nothing():
    frames = [os.urandom(1358 * 16)]
    data = sent_datagrams(frames, protect=(16, 4, 1))
    assert [wire.decode_datagram(datagram)["fec_block"] for datagram in data] == [0] * 20
    receiver = LinkReceiver()
    for datagram in data[2:16]:
        assert receiver.feed(datagram) == []
    assert receiver.feed(data[16]) == [] and receiver.feed(data[16]) == []
    assert receiver.counters()["dropped_duplicate"] == 1
    assert [bytes(frame) for frame in receiver.feed(data[17])] == frames
    counters = receiver.counters()
    assert counters["datagrams_recovered"] == 2 and counters["fec_blocks_recovered"] == 1
    assert counters["parity_received"] == 2 and accounted(counters)


def test_parity_for_a_block_that_lost_nothing_is_accepted_and_dropped_from_memory():
    frames = [os.urandom(50_000)]
    delivered, counters = deliver(sent_datagrams(frames, protect=(16, 4, 1)))
    assert delivered == frames and counters["datagrams_recovered"] == 0
    assert counters["fec_bytes_in_flight"] == 0 and accounted(counters)


def test_inconsistent_fec_fields_are_malformed():
    session = 1 << 32
    cases = [
        wire.encode_datagram(wire.TYPE_PARITY, session, wire.PARITY_SEQUENCE, b"x" * 100, fec_count=4, fec_index=2),
        wire.encode_datagram(wire.TYPE_PARITY, session, 5, b"x" * 100, fec_count=4, fec_index=4),
        wire.encode_datagram(wire.TYPE_PARITY, session, wire.PARITY_SEQUENCE, b"x" * 100, fec_count=0, fec_index=4),
        wire.encode_datagram(wire.TYPE_PARITY, session, wire.PARITY_SEQUENCE, b"x" * 20, fec_count=4, fec_index=4),
        wire.encode_datagram(wire.TYPE_PARITY, session, wire.PARITY_SEQUENCE, b"x" * 100, fec_count=129, fec_index=200),
        wire.encode_datagram(wire.TYPE_DATA, session, 0, b"abc", fec_count=4, fec_index=4),
        wire.encode_datagram(wire.TYPE_DATA, session, wire.PARITY_SEQUENCE, b"abc"),
    ]
    for datagram in cases:
        with pytest.raises(ValueError, match="malformed"):
            wire.decode_datagram(datagram)


def test_blocks_that_never_complete_stay_within_the_memory_budget():
    generator = random.Random(5)
    frames = [generator.randbytes(1400 * 100) for _ in range(40)]
    datagrams = sent_datagrams(frames, protect=(16, 4, 1))
    parity_positions = {position for position, datagram in enumerate(datagrams) if is_parity(datagram)}
    budget = 256 * 1024
    receiver = LinkReceiver(max_fec_bytes_in_flight=budget)
    peak = 0
    for position, datagram in enumerate(datagrams):
        if position not in parity_positions and position % 17 != 0:
            receiver.feed(datagram)
            peak = max(peak, receiver.counters()["fec_bytes_in_flight"])
    assert 0 < peak <= budget
    receiver.expire(everything=True)
    counters = receiver.counters()
    assert counters["fec_bytes_in_flight"] == 0 and counters["fec_blocks_unrecoverable"] > 0


FIRST_EPOCH, SECOND_EPOCH = (1 << 32) | 5, (2 << 32) | 5


def rekeyed_stream():
    """Sealed datagrams of three frames, a rekey, two more frames; and where the second epoch begins."""
    frames = [os.urandom(size) for size in (30_000, 100, 5_000)]
    later = [os.urandom(size) for size in (20_000, 7)]
    datagrams = sent_datagrams(frames + [SECOND_EPOCH] + later, protect=(16, 4, 2), key=KEY)
    epochs = [int.from_bytes(datagram[16:24], "big") for datagram in datagrams]
    assert epochs == sorted(epochs) and set(epochs) == {FIRST_EPOCH, SECOND_EPOCH}
    return frames + later, datagrams, epochs.index(SECOND_EPOCH)


def test_a_rekey_loses_nothing_under_loss_and_reordering():
    frames, datagrams, switch = rekeyed_stream()
    first_data = next(d for d in datagrams[switch:] if not is_parity(d))
    last_data = next(d for d in reversed(datagrams[:switch]) if not is_parity(d))
    assert int.from_bytes(first_data[24:32], "big") == int.from_bytes(last_data[24:32], "big") + 1, \
        "sequence numbers go on across the rekey"
    # the new epoch's first six datagrams overtake the old one's last six, and one in eleven is lost
    reordered = datagrams[:switch - 6] + datagrams[switch:switch + 6] + datagrams[switch - 6:switch] \
        + datagrams[switch + 6:]
    dropped = {position for position in range(3, len(reordered), 11) if not is_parity(reordered[position])}
    delivered, counters = deliver(reordered, lambda position, _: position in dropped, key=KEY)
    assert sorted(delivered) == sorted(frames)
    assert counters["sessions_started"] == 1 and counters["sessions_rekeyed"] == 1
    assert counters["frames_abandoned"] == 0 and counters["dropped_stale_session"] == 0
    assert counters["datagrams_lost"] == 0 and counters["fec_blocks_unrecoverable"] == 0 and accounted(counters)


def test_a_frame_lost_whole_just_before_a_rekey_is_counted():
    frames, datagrams, switch = rekeyed_stream()
    last_frame = wire.decode_datagram(next(d for d in reversed(datagrams[:switch]) if not is_parity(d)))["frame_id"]
    lost = {position for position, datagram in enumerate(datagrams[:switch])
            if is_parity(datagram) or wire.decode_datagram(datagram)["frame_id"] == last_frame}
    delivered, counters = deliver(datagrams, lambda position, _: position in lost, key=KEY)
    assert delivered == frames[:2] + frames[3:]
    assert counters["frames_lost"] == 1 and counters["datagrams_lost"] > 0


def kafka_shaped_frames(seed: int) -> list[bytes]:
    """What a Kafka link sends in two bursts of production (issue #21): full 1 MiB runs, each burst's last,
    partial run, and small frames from the trickle around the bursts (linger-sized, a few records each)."""
    generator = random.Random(seed)
    noise = os.urandom(1 << 20)
    sizes = []
    for _ in range(2):
        sizes += [generator.randint(60, 3000) for _ in range(15)]
        sizes += [1 << 20] * 6 + [generator.randint(1, 1 << 20)]
        sizes += [generator.randint(60, 40_000) for _ in range(15)]
    return [noise[:size] for size in sizes]


@pytest.mark.parametrize("loss", [0.02, 0.05])
def test_kafka_shaped_traffic_loses_no_frame_at_the_loss_the_code_is_rated_for(loss):
    """Issue #21's failure, in process: 25 % FEC, bursty Kafka-shaped frames, 2 % and 5 % random loss, 40
    seeds each. The layout is checked by its expected number of unrecoverable blocks per run (it was 0.31 at
    2 % before: tails of 4 + 1), and the seeded losses by what the receiver delivers."""
    frames = kafka_shaped_frames(21)
    datagrams = sent_datagrams(frames, protect=(64, 16, 4))
    expected_failures = sum(fec.block_failure_probability(data_count, parity_count, loss)
                            for data_count, parity_count in fec_blocks(datagrams).values())
    assert expected_failures < 1e-3
    for seed in range(40):
        generator = random.Random(seed)
        dropped = {position for position in range(len(datagrams)) if generator.random() < loss}
        delivered, counters = deliver(datagrams, lambda position, _: position in dropped)
        assert counters["fec_blocks_unrecoverable"] == 0 and counters["datagrams_lost"] == 0, seed
        assert delivered == frames and accounted(counters)


def burst_losses(count: int, rate: float, length: int, generator: random.Random) -> set[int]:
    """Positions lost to bursts of `length` consecutive datagrams, each starting with probability `rate`
    at any datagram not already lost (ddc diode-sim's --burst-rate / --burst-length)."""
    lost, position = set(), 0
    while position < count:
        if generator.random() < rate:
            lost.update(range(position, min(position + length, count)))
            position += length
        else:
            position += 1
    return lost


def block_positions(datagrams) -> dict:
    positions = {}
    for position, datagram in enumerate(datagrams):
        header = wire.decode_datagram(datagram)
        if header["fec_count"]:
            positions.setdefault(header["fec_block"], []).append(position)
    return positions


@pytest.mark.parametrize("protect", [(64, 16, 4, 10), (64, 16, 1, 10), (16, 4, 4, 10), (128, 32, 2, 31),
                                     (32, 8, 3, 1)])
def test_every_block_survives_two_bursts_of_the_configured_length_anywhere(protect):
    """With loss_burst L, no window of L consecutive datagrams on the wire holds more than half of any
    block's parity: two bursts, wherever they fall, leave every block rebuildable. Read off the wire, not
    from the sender's formula, over frames of every size and the control datagrams between them."""
    length = protect[3]
    generator = random.Random(5)
    payload = 1472 - 2 * 56 - 2
    frames = [os.urandom(size) for size in [1, 10, payload * 3, payload * protect[0] - 5, payload * 5 * protect[0],
                                            1 << 20] + [generator.randint(1, 200_000) for _ in range(30)]]
    items = [item for frame in frames for item in (frame, (wire.TYPE_HEARTBEAT, b"h" * 40))]
    datagrams = sent_datagrams(items, protect=protect)
    blocks = fec_blocks(datagrams)
    for block, positions in block_positions(datagrams).items():
        worst = max(sum(1 for other in positions[index:] if other < start + length)
                    for index, start in enumerate(positions))
        assert 2 * worst <= blocks[block][1], (block, blocks[block], worst)
    assert max(parity for _, parity in blocks.values()) <= max(protect[1], 2 * length + 2)


def expected_failures_under_bursts(datagrams, rate: float, length: int, runs: int) -> float:
    """Unrecoverable blocks per run, estimated over `runs` seeded runs of the layout alone."""
    blocks = fec_blocks(datagrams)
    owner = [wire.decode_datagram(datagram)["fec_block"] for datagram in datagrams]
    failures = 0
    for seed in range(runs):
        lost_per_block = {}
        for position in burst_losses(len(datagrams), rate, length, random.Random(seed)):
            lost_per_block[owner[position]] = lost_per_block.get(owner[position], 0) + 1
        failures += sum(1 for block, lost in lost_per_block.items() if lost > blocks[block][1])
    return failures / runs


def test_kafka_shaped_traffic_loses_no_frame_to_bursts_of_ten_at_two_percent():
    """Issue #21's shape under bursts of 10 consecutive losses at 2 % loss: a small frame's lone block (4 + 6)
    fell to one burst, about one block per run with loss_burst = 0. With the default loss_burst = 10 the expected
    number per run is far below one (the estimate over 300 runs of the layout), and 40 seeded runs through
    the receiver deliver every frame."""
    frames = kafka_shaped_frames(21)
    heartbeats = [(wire.TYPE_HEARTBEAT, b"h" * 40)] * 20
    items = frames[:20] + heartbeats[:10] + frames[20:50] + heartbeats[10:] + frames[50:]
    rate = 0.02 / 10
    assert expected_failures_under_bursts(sent_datagrams(items, protect=(64, 16, 4, 0)), rate, 10, 300) > 0.3
    datagrams = sent_datagrams(items, protect=(64, 16, 4, 10))
    assert expected_failures_under_bursts(datagrams, rate, 10, 300) < 0.02
    for seed in range(40):
        dropped = burst_losses(len(datagrams), rate, 10, random.Random(1000 + seed))
        delivered, counters = deliver(datagrams, lambda position, _: position in dropped)
        assert counters["fec_blocks_unrecoverable"] == 0 and counters["datagrams_lost"] == 0, seed
        assert delivered == frames and accounted(counters)


def test_a_control_datagram_with_more_parity_than_the_burst_leaves_paced():
    """With loss_burst = 31 a heartbeat is 63 datagrams; at 1 Mbit/s the sender's burst (two datagrams) is a
    quarter of that, and the rest must follow at the rate, not back-to-back in one sendmmsg."""
    import threading
    import time

    from ddc._core.sender import DatagramSender

    receiving = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiving.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    receiving.bind(("127.0.0.1", 0))
    receiving.settimeout(5)
    arrivals = []

    def receive():
        for _ in range(63):
            arrivals.append((time.monotonic(), len(receiving.recv(65536))))

    receiver = threading.Thread(target=receive)
    receiver.start()
    sending = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    address = struct.pack("=HH4s8x", socket.AF_INET, socket.htons(receiving.getsockname()[1]),
                          socket.inet_aton("127.0.0.1"))
    rate = 125_000.0
    sender = DatagramSender(sending.fileno(), address, 7, 1472, rate, 0.0, 0.0, False)
    sender.protect_with(64, 16, 4, 31)
    sender.send_control(wire.TYPE_HEARTBEAT, b"h" * 400)
    receiver.join(10)
    receiving.close()
    sending.close()
    assert len(arrivals) == 63 == sender.counters()["datagrams_sent"]
    block = sum(length for _, length in arrivals)
    assert block > 4 * 2 * 1472
    spread = arrivals[-1][0] - arrivals[0][0]
    assert spread > 0.5 * (block - 2 * 1472) / rate, f"{block} bytes left within {spread * 1000:.1f} ms"
