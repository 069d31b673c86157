"""Datagrams an attacker on the low side crafts to hurt the egress: each test is one attack that once worked.

Scenarios that crashed the egress before their fix run in a child process, so a crash fails the test
instead of ending the suite."""

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from ddc._core import wire
from ddc._core.receiver import COUNTER_NAMES, LinkReceiver
from forge import data_datagram, nested_parity, parity_for

DROP_REASONS = [name for name in COUNTER_NAMES if name.startswith("dropped_")]
TESTS = Path(__file__).resolve().parent


def accounted(counters) -> bool:
    return (counters["datagrams_received"] + counters["datagrams_recovered"]
            == counters["datagrams_accepted"] + sum(counters[reason] for reason in DROP_REASONS))


def run_child(body: str, timeout: float = 120) -> dict:
    """Runs body in a fresh interpreter with the tests' helpers importable; it prints one JSON line."""
    script = f"import sys; sys.path.insert(0, {str(TESTS)!r})\n" + textwrap.dedent(body)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"the receiver died ({result.returncode}): {result.stderr[-2000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_blocks_that_all_complete_in_one_batch_never_overflow_the_completed_frames():
    """64 forged blocks of 127 one-byte frames, all their data lost, each one parity short; then one batch of
    64 parity datagrams completes every block at once: 8 128 frames from one receive()."""
    outcome = run_child("""
        import json, socket
        from ddc._core.receiver import LinkReceiver
        from forge import data_datagram, parity_for

        receiving = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiving.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        receiving.bind(("127.0.0.1", 0))
        sending = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sending.connect(receiving.getsockname())
        receiver = LinkReceiver()
        frames, last_parity, expected = [], [], set()
        for block in range(64):
            data = [data_datagram(block * 127 + index, bytes([index]), frame_id=block * 127 + index, block=block,
                                  index=index, count=127) for index in range(127)]
            expected.update((block * 127 + index, bytes([index])) for index in range(127))
            parity = parity_for(data, 127, block=block)
            for datagram in parity[:126]:
                sending.send(datagram)
            last_parity.append(parity[126])
            while receiver.receive(receiving.fileno(), 0) or receiver.counters()["parity_received"] < 126 * (block + 1):
                pass
        for datagram in last_parity:
            sending.send(datagram)
        calls = 0
        while len(frames) < len(expected) and calls < 1000:
            calls += 1
            frames += [(frame.frame_id, bytes(frame)) for frame in receiver.receive(receiving.fileno(), 100)]
        print(json.dumps({"delivered": sorted(frames) == sorted(expected), "frames": len(frames), "calls": calls,
                          "counters": receiver.counters()}))
    """)
    counters = outcome["counters"]
    assert outcome["delivered"], outcome["frames"]
    assert counters["fec_blocks_recovered"] == 64 and counters["datagrams_recovered"] == 64 * 127
    assert outcome["calls"] > 1, "8 128 frames must be handed over in more than one call"
    assert accounted(counters)


def test_a_rebuilt_datagram_that_is_parity_again_is_refused_not_followed():
    """One 60 KB datagram nests a thousand blocks, each rebuilding the next one's parity. It once needed
    4-5 MB of stack; it must be refused at the first level, on a thread with a small stack."""
    outcome = run_child("""
        import json, threading
        from ddc._core.receiver import LinkReceiver
        from forge import nested_parity

        datagram = nested_parity(1000)
        assert len(datagram) < 65507
        receiver, frames = LinkReceiver(), []
        threading.stack_size(256 * 1024)
        worker = threading.Thread(target=lambda: frames.extend(receiver.feed(datagram)))
        worker.start()
        worker.join()
        print(json.dumps({"frames": len(frames), "counters": receiver.counters()}))
    """)
    counters = outcome["counters"]
    assert outcome["frames"] == 0
    assert counters["fec_blocks_recovered"] == 1 and counters["datagrams_recovered"] == 1
    assert counters["dropped_inconsistent_rebuild"] == 1 and accounted(counters)


def test_a_rebuilt_datagram_must_be_the_one_its_block_lost():
    """Forged parity can rebuild well-formed datagrams; each must claim the block, index and count of the place
    it was rebuilt for, and the live session."""
    impostors = [
        data_datagram(1, b"other block", frame_id=1, block=9, index=1, count=3),
        data_datagram(1, b"other index", frame_id=1, block=0, index=2, count=3),
        data_datagram(1, b"other count", frame_id=1, block=0, index=1, count=4),
        data_datagram(1, b"other session", frame_id=1, block=0, index=1, count=3, session_id=(2 << 32) | 1),
    ]
    for impostor in impostors:
        first = data_datagram(0, b"first", frame_id=0, block=0, index=0, count=3)
        last = data_datagram(2, b"last", frame_id=2, block=0, index=2, count=3)
        parity = parity_for([first, impostor, last], 1, block=0)
        receiver = LinkReceiver()
        delivered = [bytes(frame) for datagram in (first, last, parity[0]) for frame in receiver.feed(datagram)]
        counters = receiver.counters()
        assert delivered == [b"first", b"last"], impostor
        assert counters["dropped_inconsistent_rebuild"] == 1 and counters["sessions_started"] == 1, impostor
        assert accounted(counters)
    honest = data_datagram(1, b"honest", frame_id=1, block=0, index=1, count=3)
    receiver = LinkReceiver()
    first, last = (data_datagram(s, p, frame_id=s, block=0, index=s, count=3) for s, p in ((0, b"a"), (2, b"c")))
    assert [bytes(frame) for datagram in (first, last, *parity_for([first, honest, last], 1, block=0))
            for frame in receiver.feed(datagram)] == [b"a", b"c", b"honest"]


def test_a_data_symbol_the_budget_refused_is_rebuilt_not_counted():
    """With a small FEC budget a large data datagram is delivered but not kept for its block. Counting it anyway
    once made the rebuild buffer one symbol short of what recover() wrote."""
    receiver = LinkReceiver(max_fec_bytes_in_flight=65536)
    parity = [wire.encode_datagram(wire.PARITY, 1 << 32, wire.PARITY_SEQUENCE | row, bytes(range(100)),
                                   fec_block=0, fec_index=4 + row, fec_count=4) for row in range(4)]
    for datagram in parity[:3]:
        receiver.feed(datagram)
    large = data_datagram(0, b"L" * 65400, frame_id=0, block=0, index=0, count=4, session_id=1 << 32)
    assert [bytes(frame) for frame in receiver.feed(large)] == [b"L" * 65400]
    assert receiver.counters()["fec_bytes_in_flight"] == 300
    receiver.feed(parity[3])
    counters = receiver.counters()
    # four places were empty, so four datagrams were rebuilt (garbage from forged parity, and refused)
    assert counters["fec_blocks_recovered"] == 1 and counters["datagrams_recovered"] == 4
    assert counters["fec_bytes_in_flight"] == 0 and accounted(counters)


def test_counters_read_during_receive_are_never_torn():
    """A metrics thread reads counters() while receive() runs without the GIL."""
    import threading
    import time

    receiving = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiving.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    receiving.bind(("127.0.0.1", 0))
    sending = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sending.connect(receiving.getsockname())
    receiver = LinkReceiver(max_frames_in_flight=64)
    stop, seen = threading.Event(), []

    def read():
        while not stop.is_set():
            counters = receiver.counters()
            seen.append((counters["frames_lost"], counters["datagrams_lost"]))
            time.sleep(0)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for frame_id in range(20_000):
            # every other frame in two fragments, the second sent first: frames open and close all the time
            if frame_id % 2:
                halves = [wire.encode_datagram(wire.DATA, 1 << 32, 2 * frame_id + i, b"ab"[i:i + 1], frame_id=frame_id,
                                               fragment_index=i, fragment_count=2, frame_length=2) for i in (1, 0)]
            else:
                halves = [data_datagram(2 * frame_id, b"x", frame_id=frame_id, session_id=1 << 32)]
            for datagram in halves:
                sending.send(datagram)
            if frame_id % 64 == 0:
                while receiver.receive(receiving.fileno(), 0):
                    pass
        while receiver.receive(receiving.fileno(), 10):
            pass
    finally:
        stop.set()
        reader.join()
    assert len(seen) > 100
    assert max(lost for lost, _ in seen) < 20_000 and max(lost for _, lost in seen) < 40_000
