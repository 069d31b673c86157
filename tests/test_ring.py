"""The ingress's record ring (ddc/_core/ring.pyx): order, policies, wrap-around, waking, in-place writes."""

import random
import select
import socket
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddc._core.records import batch_header, decode_records, encode_batch, record_size
from ddc._core.ring import RecordRing
from ddc.handlers.udp.datagrams import DatagramReceiver
from ddc.config import Endpoint
from ddc.stage_buffer import StageBuffer


def format_address(address) -> bytes:
    """What the ring's C formats as a datagram's sender: the config's host:port notation."""
    return str(Endpoint(*address[:2])).encode("ascii")


def take_all(ring: RecordRing, max_bytes: int = 1 << 30) -> list:
    records = []
    while (taken := ring.take(max_bytes, 0)) is not None:
        run, count, _ = taken
        records += decode_records(run, count)
        ring.free_taken()
    return records


def test_a_taken_run_behind_a_batch_header_is_the_batch_of_its_records():
    ring = RecordRing(1 << 16, "block")
    records = [(b"10.0.0.%d:514" % n, bytes([n]) * n * 7) for n in range(40)]
    assert ring.put_many(records) == 40
    run, count, taken_in_ns = ring.take(1 << 16, 0)
    assert count == 40
    assert abs(taken_in_ns - time.time_ns()) < 60e9
    assert batch_header(count, taken_in_ns) + run == encode_batch(records, taken_in_ns)
    assert run.readonly


@pytest.mark.parametrize("make, drain", [
    (lambda: RecordRing(1024, "drop"), take_all),  # the ingress's ring
    (lambda: StageBuffer(1024, "drop", size_of=record_size), lambda buffer: buffer.get_many(1 << 20, 0)),  # the egress's buffer
])
def test_drop_policy_refuses_the_newest_and_counts_them(make, drain):
    """The counters the two stage buffers share (buffer_counters) mean the same in both."""
    buffer = make()
    records = [(b"", b"x" * 300)] * 5
    assert buffer.put_many(records) == 3
    counters = buffer.counters()
    assert counters["buffer_records_dropped"] == 2
    assert counters["buffer_bytes_dropped"] == 2 * record_size(records[0])
    assert counters["buffer_full_events"] == 2
    assert drain(buffer) == records[:3]


def test_a_run_stops_at_max_bytes_but_a_larger_record_comes_alone():
    ring = RecordRing(1 << 16, "block")
    ring.put_many([(b"", b"a" * 100)] * 3 + [(b"", b"b" * 5000)])
    run, count, _ = ring.take(250, 0)
    assert (len(run), count) == (216, 2)
    ring.free_taken()
    assert ring.take(250, 0)[1] == 1
    ring.free_taken()
    run, count, _ = ring.take(250, 0)
    assert (len(run), count) == (5008, 1)


def test_a_record_larger_than_the_ring_is_refused_even_when_blocking():
    ring = RecordRing(1024, "block")
    assert ring.put_many([(b"", b"y" * 2000), (b"", b"z")], timeout=5) == 1
    assert ring.counters()["buffer_records_dropped"] == 1
    assert take_all(ring) == [(b"", b"z")]


def test_take_before_freeing_the_previous_run_is_refused():
    ring = RecordRing(1024, "block")
    ring.put_many([(b"", b"q")] * 2)
    ring.take(9, 0)
    with pytest.raises(RuntimeError, match="free_taken"):
        ring.take(9, 0)


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(1024, 4096),
       steps=st.lists(st.tuples(st.lists(st.integers(0, 900), max_size=12), st.integers(1, 3000),
                                st.booleans()), min_size=1, max_size=40))
def test_records_come_out_whole_in_order_however_the_ring_wraps(capacity, steps):
    """Every record carries a unique number. What comes out is exactly the accepted records, each intact, in
    the order put, no run longer than max_bytes unless one record alone, and the ring never holds more than
    its capacity: nothing is lost, reordered or torn at a wrap."""
    ring = RecordRing(capacity, "drop")
    sent, taken, accepted_total, number = {}, [], 0, 0

    def take(max_bytes):
        got = ring.take(max_bytes, 0)
        if got is None:
            return False
        run, count, _ = got
        assert len(run) <= max_bytes or count == 1
        taken.extend(decode_records(run, count))
        ring.free_taken()
        return True

    for sizes, max_bytes, should_take in steps:
        batch = []
        for size in sizes:
            batch.append((number.to_bytes(4, "big"), bytes([number % 251]) * size))
            sent[number] = batch[-1]
            number += 1
        empty = ring.counters()["buffer_bytes"] == 0
        accepted = ring.put_many(batch)
        accepted_total += accepted
        if empty and batch and record_size(batch[0]) <= capacity:
            assert accepted >= 1  # an empty ring takes any record that fits in it
        counters = ring.counters()
        assert counters["buffer_items_in"] == accepted_total
        assert counters["buffer_items_in"] + counters["buffer_records_dropped"] == number
        assert counters["buffer_bytes"] <= capacity
        if should_take:
            take(max_bytes)
    while take(1 << 20):
        pass
    numbers = [int.from_bytes(metadata, "big") for metadata, _ in taken]
    assert numbers == sorted(set(numbers))
    assert taken == [sent[n] for n in numbers]
    assert len(taken) == accepted_total
    ring.close()
    assert ring.drained


def test_block_policy_carries_every_record_in_order_between_two_threads():
    generator = random.Random(7)
    records = [(n.to_bytes(4, "big"), bytes([n % 256]) * generator.randrange(0, 3000)) for n in range(20_000)]
    ring = RecordRing(64 * 1024, "block")
    received = []

    def consume():
        while True:
            taken = ring.take(16 * 1024, 5.0, 0.001)
            if taken is None:
                break
            run, count, _ = taken
            received.extend(decode_records(run, count))
            ring.free_taken()

    consumer = threading.Thread(target=consume)
    consumer.start()
    for start in range(0, len(records), 97):
        assert ring.put_many(records[start:start + 97]) == len(records[start:start + 97])
    ring.close()
    consumer.join(30)
    assert received == records
    counters = ring.counters()
    assert counters["buffer_records_dropped"] == 0
    assert counters["buffer_peak_bytes"] <= 64 * 1024
    assert counters["buffer_items_out"] == len(records)
    assert ring.drained


def test_an_idle_wait_sleeps_and_a_put_wakes_the_consumer():
    ring = RecordRing(4096, "block")
    cpu = time.process_time()
    assert ring.take(100, 0.3) is None
    assert time.process_time() - cpu < 0.1  # slept, did not spin

    threading.Timer(0.05, ring.put_many, args=([(b"", b"wake")],)).start()
    started = time.monotonic()
    run, count, _ = ring.take(100, 20.0)
    assert count == 1 and time.monotonic() - started < 10


def test_linger_waits_for_a_fuller_run_but_not_past_its_time():
    ring = RecordRing(1 << 16, "block")
    ring.put_many([(b"", b"a" * 92)])
    feeder = threading.Timer(0.05, ring.put_many, args=([(b"", b"b" * 92)] * 9,))
    feeder.start()
    run, count, _ = ring.take(1000, 1.0, linger=20.0)
    assert count == 10  # waited for max_bytes, well before the linger ran out
    ring.free_taken()
    ring.put_many([(b"", b"c")])
    started = time.monotonic()
    assert ring.take(1000, 1.0, linger=0.05)[1] == 1
    assert time.monotonic() - started >= 0.04


def test_close_wakes_a_blocked_producer_and_leaves_the_rest_to_take():
    ring = RecordRing(1024, "block")
    ring.put_many([(b"", b"a" * 900)])
    results = []
    producer = threading.Thread(target=lambda: results.append(ring.put_many([(b"", b"b" * 900)])))
    producer.start()
    time.sleep(0.05)
    assert producer.is_alive()
    ring.close()
    producer.join(5)
    assert results == [0]
    assert not ring.drained
    assert take_all(ring) == [(b"", b"a" * 900)]
    assert ring.drained
    assert ring.take(100, 5.0) is None


def test_a_timed_put_gives_up_with_a_prefix():
    ring = RecordRing(1024, "block")
    records = [(b"", bytes([n]) * 400) for n in range(4)]
    started = time.monotonic()
    assert ring.put_many(records, timeout=0.05) == 2
    assert time.monotonic() - started >= 0.04
    assert take_all(ring) == records[:2]


def test_reserve_writes_a_value_in_place_and_commit_publishes_what_was_written():
    ring = RecordRing(4096, "block")
    space = ring.reserve(b"meta", 1000)
    assert len(space) == 1000
    space[:5] = b"hello"
    ring.commit(5)
    assert ring.reserve(b"", 10) is not None
    ring.commit(0)  # abandoned: nothing published
    assert take_all(ring) == [(b"meta", b"hello")]
    space = ring.reserve(b"m", 10_000)
    assert len(space) == 4096 - 9  # as much as the ring holds
    with pytest.raises(ValueError, match="reserved"):
        ring.commit(5000)
    space[:] = b"z" * len(space)
    ring.commit(len(space))
    assert ring.reserve(b"", 10, timeout=0.05) is None  # full, and `block` gave up at the timeout
    assert take_all(ring) == [(b"m", b"z" * 4087)]


def test_a_full_drop_ring_reserves_nothing():
    ring = RecordRing(1024, "drop")
    ring.put_many([(b"", b"x" * 1000)])
    assert ring.reserve(b"", 500) is None
    ring.count_dropped(1, 500)
    assert ring.counters()["buffer_records_dropped"] == 1


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_datagrams_are_received_straight_into_the_ring_with_their_senders_address(family, host):
    try:
        receiver = socket.socket(family, socket.SOCK_DGRAM)
        receiver.bind((host, 0))
    except OSError:
        pytest.skip(f"no {host} on this machine")
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    receiver.setblocking(False)
    sender = socket.socket(family, socket.SOCK_DGRAM)
    sender.bind((host, 0))
    payloads = [bytes([n % 256]) * random.Random(n).randrange(0, 9000) for n in range(100)] + [b"x" * 65507]
    for payload in payloads:
        sender.sendto(payload, receiver.getsockname())
    ring = RecordRing(16 << 20, "drop")
    inbox = DatagramReceiver()
    received = size = 0
    while received < len(payloads):
        if not select.select([receiver], [], [], 5)[0]:
            break
        datagrams, length, dropped = inbox.receive(ring, receiver.fileno())
        assert dropped == 0
        received += datagrams
        size += length
    assert (received, size) == (len(payloads), sum(map(len, payloads)))
    assert inbox.receive(ring, receiver.fileno()) == (0, 0, 0)  # nothing waiting: no error
    address = format_address(sender.getsockname())
    assert take_all(ring) == [(address, payload) for payload in payloads]


def test_each_datagram_is_named_by_its_own_sender_when_senders_interleave():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    for sender in senders:
        sender.bind(("127.0.0.1", 0))
    expected = []
    for number in range(30):
        sender = senders[number * 7 % 3]
        sender.sendto(b"%d" % number, receiver.getsockname())
        expected.append((format_address(sender.getsockname()), b"%d" % number))
    time.sleep(0.05)
    ring = RecordRing(1 << 16, "drop")
    inbox = DatagramReceiver()
    assert inbox.receive(ring, receiver.fileno(), 1.0)[0] == 30
    assert take_all(ring) == expected


def test_datagrams_that_find_the_ring_full_are_counted_dropped():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(5):
        sender.sendto(b"d" * 400, receiver.getsockname())
    time.sleep(0.05)
    ring = RecordRing(1024, "drop")
    inbox = DatagramReceiver()
    assert inbox.receive(ring, receiver.fileno())[::2] == (5, 3)
    assert ring.counters()["buffer_records_dropped"] == 3
    with pytest.raises(OSError):
        inbox.receive(ring, 10_000)  # not a socket: a clear error, not a crash
