"""The hostile-link emulator: seeded, and doing what each impairment says, over real sockets."""

import socket
import time

import pytest

from conftest import drain, run_ddc
from ddc.diode_sim import HostileLink, Impairments


def relay(impairments: Impairments, count: int = 4000) -> tuple[list[int], dict]:
    """Sends numbered datagrams through a HostileLink; returns the numbers that arrived, in order."""
    receiving = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiving.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    receiving.bind(("127.0.0.1", 0))
    link = HostileLink(("127.0.0.1", 0), receiving.getsockname(), impairments).start()
    sending = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for number in range(count):
        sending.sendto(number.to_bytes(4, "big") + bytes(60), ("127.0.0.1", link.port))
        if number % 200 == 199:
            time.sleep(0.002)
    deadline = time.monotonic() + 10
    while link.counters["received"] < count and time.monotonic() < deadline:
        time.sleep(0.01)
    counters = link.stop()
    arrived = drain(receiving, 0.3, 100)
    receiving.close()
    sending.close()
    assert counters["received"] == count
    return arrived, counters


def numbers(datagrams) -> list[int]:
    return [int.from_bytes(datagram[:4], "big") for datagram in datagrams]


def test_the_same_seed_loses_the_same_datagrams():
    impairments = dict(loss=0.05, burst_rate=0.002, burst_length=10, gilbert_enter=0.001, gilbert_leave=0.2)
    first, counters = relay(Impairments(seed=9, **impairments))
    second, _ = relay(Impairments(seed=9, **impairments))
    other, _ = relay(Impairments(seed=10, **impairments))
    assert numbers(first) == numbers(second) != numbers(other)
    lost = counters["lost_random"] + counters["lost_burst"] + counters["lost_gilbert"]
    assert len(first) == counters["forwarded"] == 4000 - lost
    assert 0.03 * 4000 < counters["lost_random"] < 0.07 * 4000


def test_bursts_lose_runs_of_exactly_their_length():
    arrived, counters = relay(Impairments(burst_rate=0.005, burst_length=10, seed=3))
    present = set(numbers(arrived))
    runs, run = [], 0
    for number in range(4000):
        if number in present:
            if run:
                runs.append(run)
            run = 0
        else:
            run += 1
    assert runs and all(length % 10 == 0 for length in runs)
    assert sum(runs) == counters["lost_burst"]


def test_reordering_duplication_and_corruption_are_what_they_say():
    arrived, counters = relay(Impairments(reorder=0.02, reorder_depth=5, duplicate=0.02, corrupt=0.02, seed=4))
    received = numbers(arrived)
    assert len(arrived) == 4000 + counters["duplicated"] == counters["forwarded"]
    assert counters["reordered"] > 0 and received != sorted(received)
    damaged = sum(1 for datagram in arrived if datagram[4:] != bytes(60) or int.from_bytes(datagram[:4], "big") >= 4000)
    assert 0 < damaged <= counters["corrupted"] * 2


def test_a_datagram_held_back_at_the_end_of_a_transfer_arrives_while_the_relay_runs():
    """Reordering delays, it does not lose: with nothing following, a held datagram goes after reorder_delay."""
    receiving = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiving.bind(("127.0.0.1", 0))
    link = HostileLink(("127.0.0.1", 0), receiving.getsockname(),
                       Impairments(reorder=1.0, reorder_depth=1000, reorder_delay=0.05)).start()
    sending = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for number in range(3):
        sending.sendto(number.to_bytes(4, "big"), ("127.0.0.1", link.port))
    started = time.monotonic()
    receiving.settimeout(2.0)
    arrived = [receiving.recv(4) for _ in range(3)]
    waited = time.monotonic() - started
    counters = link.stop()  # the relay counts a datagram after sendto returns: read its counters once it has stopped
    assert counters["reordered"] == 3 and counters["forwarded"] == 3
    assert sorted(numbers(arrived)) == [0, 1, 2] and 0.04 <= waited < 1.5
    receiving.close()
    sending.close()


def test_a_bandwidth_cap_with_a_small_queue_drops_the_excess():
    arrived, counters = relay(Impairments(rate=64 * 2000, queue_bytes=65536 * 2, latency=0.01, seed=5))
    assert counters["lost_queue_full"] > 0
    assert len(arrived) == counters["forwarded"] == 4000 - counters["lost_queue_full"]


@pytest.mark.parametrize("arguments, message", [
    (["--loss", "150%"], "'150%' is not between 0% and 100%"),
    (["--rate", "fast"], "'fast' is not a rate"),
    (["--burst-length", "0", "--burst-rate", "1%"], "burst_length (0)"),
])
def test_bad_options_are_one_line_errors(arguments, message):
    result = run_ddc("diode-sim", "127.0.0.1:9", "127.0.0.1:9", *arguments)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
