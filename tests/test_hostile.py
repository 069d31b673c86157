"""Datagrams an attacker on the low side crafts to hurt the egress: each test is one attack that once worked.

Scenarios that crashed the egress before their fix run in a child process, so a crash fails the test
instead of ending the suite."""

import json
import socket
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ddc._core import wire
from ddc._core.receiver import COUNTER_NAMES, LinkReceiver
from forge import data_datagram, parity_for

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
    parity = [wire.encode_datagram(wire.TYPE_PARITY, 1 << 32, wire.PARITY_SEQUENCE | row, bytes(range(100)),
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
                halves = [wire.encode_datagram(wire.TYPE_DATA, 1 << 32, 2 * frame_id + i, b"ab"[i:i + 1], frame_id=frame_id,
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


# ---- replays of authentic datagrams ----

KEY = bytes(range(32))
OLDER, NEWER = (1000 << 32) | 5, (2000 << 32) | 3


def keyed_receiver(**options) -> LinkReceiver:
    from ddc.crypto import load_sealing_library

    load_sealing_library()
    receiver = LinkReceiver(**options)
    receiver.add_key(KEY, 3)
    return receiver


def authentic(session_id: int, sequence: int, payload: bytes = b"") -> bytes:
    from protocol_reference import sealed

    return sealed(data_datagram(sequence, payload or f"{session_id:x}/{sequence}".encode(), frame_id=sequence,
                                session_id=session_id), KEY, 3)


def delivered(receiver, datagrams, now_ns) -> list[bytes]:
    return [bytes(frame) for datagram in datagrams for frame in receiver.feed(datagram, now_ns)]


def test_a_recorded_older_session_never_replaces_the_live_one_however_long_it_is_silent():
    """The recording is of a session this egress never saw (it was recorded before the egress started, or more
    sessions ago than it remembers), and the attacker waits for the live sender to be silent."""
    receiver = keyed_receiver(session_takeover_seconds=10)
    recorded = [authentic(OLDER, sequence) for sequence in range(3)]
    assert len(delivered(receiver, [authentic(NEWER, 0)], 1_000_000_000)) == 1
    # an hour of silence (an ingress stopped for maintenance), then the recording is played back
    assert delivered(receiver, recorded, 3600 * 10**9) == []
    counters = receiver.counters()
    assert counters["dropped_stale_session"] == 3 and counters["sessions_started"] == 1
    assert receiver.session_id == NEWER
    assert len(delivered(receiver, [authentic(NEWER, 1)], 3601 * 10**9)) == 1, "the live sender is not locked out"
    assert len(delivered(receiver, [authentic(NEWER + (1 << 32) + 1, 0)], 3602 * 10**9)) == 1, "a restart is"


def test_after_an_egress_restart_older_sessions_and_delivered_datagrams_stay_refused():
    first_run = keyed_receiver()
    recorded_older = [authentic(OLDER, sequence) for sequence in range(3)]
    recorded_newer = [authentic(NEWER, sequence) for sequence in range(10)]
    delivered(first_run, recorded_older + recorded_newer, 0)
    assert first_run.saved_session() == (NEWER, 9, None)
    second_run = keyed_receiver()
    second_run.restore_session(*first_run.saved_session())
    assert delivered(second_run, recorded_older + recorded_newer, 0) == []
    counters = second_run.counters()
    assert counters["dropped_stale_session"] == 3 and counters["dropped_too_old"] == 10
    assert counters["frames_lost"] == 0 and counters["datagrams_lost"] == 0
    assert delivered(second_run, [authentic(NEWER, 10)], 0) == [f"{NEWER:x}/10".encode()]
    assert second_run.saved_session() == (NEWER, 10, None)
    third_run = keyed_receiver()
    third_run.restore_session(*second_run.saved_session())
    assert third_run.saved_session() == (NEWER, 10, None), "a run that received nothing keeps what it was given"


def test_replayed_parity_does_not_keep_a_silent_session_alive():
    """Without keys an older session may take over a silent one (a sender whose clock went back); a replayed
    parity datagram must not count as the live session being heard."""
    receiver = LinkReceiver(session_takeover_seconds=10)
    data = [data_datagram(sequence, b"d", frame_id=sequence, block=0, index=sequence, count=2, session_id=NEWER)
            for sequence in range(2)]
    parity = parity_for(data, 1, block=0, session_id=NEWER)
    delivered(receiver, data + parity, 0)
    delivered(receiver, parity, 9 * 10**9)  # a replay, nine seconds later
    restarted = data_datagram(0, b"clock went back", frame_id=0, session_id=OLDER)
    assert delivered(receiver, [restarted], 11 * 10**9) == [b"clock went back"]


def test_a_replay_from_behind_the_window_raises_no_false_loss():
    receiver = keyed_receiver()
    live = [authentic(NEWER, sequence) for sequence in range(70_000, 70_010)]
    delivered(receiver, live, 0)
    assert delivered(receiver, [authentic(NEWER, 5)], 0) == []
    counters = receiver.counters()
    assert counters["dropped_too_old"] == 1 and counters["datagrams_lost"] == 0 and counters["frames_lost"] == 0


def test_an_ingress_whose_clock_went_back_still_numbers_its_session_after_the_last(tmp_path, monkeypatch):
    import time

    from ddc.session_state import SessionState, next_session_id

    state = SessionState(tmp_path / "state", "syslog", "ingress")
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.5)
    first = next_session_id(state)
    assert first >> 32 == 2_000_000_000
    state.close()  # the ingress stops
    monkeypatch.setattr(time, "time", lambda: 1_000_000.0)  # a board without a clock, before NTP
    second = next_session_id(SessionState(tmp_path / "state", "syslog", "ingress"))
    assert second > first and second >> 32 == 2_000_000_001
    assert next_session_id(SessionState(None, "syslog", "ingress")) >> 32 == 1_000_000


def test_an_unreadable_state_file_is_a_clear_error(tmp_path):
    from ddc.config import ConfigError
    from ddc.session_state import SessionState

    for text, problem in (('{"session_id": -1, "highest_sequence": 3}',
                           r"session_id is -1, not a 64-bit unsigned integer.*delete it"), ("{", "cannot be read")):
        (tmp_path / "syslog.egress.json").write_text(text)
        state = SessionState(tmp_path, "syslog", "egress")
        with pytest.raises(ConfigError, match=problem):
            state.load("session_id", "highest_sequence")
        state.close()


# ---- found by review: each once broke a bound or a guarantee ----

def test_small_symbols_in_large_spare_buffers_are_charged_what_they_hold():
    """A 64 KiB symbol's buffer, given back when its block closed, once held a 1-byte symbol of a block that never
    completes while the budget counted 59 bytes: 2 000 rounds held 126 MB against a 1 MiB budget."""
    outcome = run_child("""
        import json
        from ddc._core.receiver import LinkReceiver
        from forge import data_datagram

        def rss():
            return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmRSS"))

        budget = 1 << 20
        receiver = LinkReceiver(max_fec_bytes_in_flight=budget)
        before, peak, sequence = rss(), 0, 0
        for round in range(2000):
            # scratch blocks all use place 255 of the block table, the 200 holder blocks places 0-199
            scratch, holder = 256 * round + 255, (1 << 30) + round % 200
            for payload, block, index, count in ((b"L" * 65000, scratch, 0, 2), (b"s", scratch, 1, 2),
                                                 (b"h", holder, round // 200, 128)):
                receiver.feed(data_datagram(sequence, payload, frame_id=sequence, block=block, index=index,
                                            count=count))
                sequence += 1
            peak = max(peak, receiver.counters()["fec_bytes_in_flight"])
        print(json.dumps({"peak": peak, "grown": rss() - before, "budget": budget}))
    """)
    assert outcome["peak"] <= outcome["budget"]
    assert outcome["grown"] < 24 << 20, outcome


def test_a_keyed_ingress_without_state_restarting_within_its_second_still_numbers_after_itself():
    from ddc.session_state import SessionState, next_session_id

    first = next_session_id(SessionState(None, "syslog", "ingress"), keyed=True)
    second = next_session_id(SessionState(None, "syslog", "ingress"), keyed=True)
    assert second >> 32 > first >> 32


def test_a_new_session_with_only_parity_so_far_is_what_a_restart_remembers():
    first_run = keyed_receiver()
    delivered(first_run, [authentic(OLDER, sequence) for sequence in range(3)], 0)
    parity_only = sealed_parity(NEWER)
    delivered(first_run, [parity_only], 0)
    assert first_run.saved_session() == (NEWER, None, 0)
    second_run = keyed_receiver()
    second_run.restore_session(*first_run.saved_session())
    assert delivered(second_run, [authentic(OLDER, sequence) for sequence in range(3)], 0) == []
    assert delivered(second_run, [authentic(NEWER, 0)], 0) == [f"{NEWER:x}/0".encode()]


def sealed_parity(session_id: int) -> bytes:
    from protocol_reference import sealed

    data = [data_datagram(0, b"p", frame_id=0, block=0, index=0, count=2, session_id=session_id),
            data_datagram(1, b"q", frame_id=1, block=0, index=1, count=2, session_id=session_id)]
    return sealed(parity_for(data, 1, block=0, session_id=session_id)[0], KEY, 3)


def test_what_the_sender_sent_while_the_egress_was_down_counts_as_lost():
    first_run = keyed_receiver()
    delivered(first_run, [authentic(NEWER, sequence) for sequence in range(10)], 0)
    second_run = keyed_receiver()
    second_run.restore_session(*first_run.saved_session())
    assert len(delivered(second_run, [authentic(NEWER, sequence) for sequence in range(100, 110)], 0)) == 10
    assert second_run.counters()["datagrams_lost"] == 90


def test_frames_completed_in_one_call_keep_the_session_they_belong_to():
    receiver = LinkReceiver()
    older = [data_datagram(0, b"A0", frame_id=0, session_id=OLDER)]
    halves = [wire.encode_datagram(wire.TYPE_DATA, OLDER, 1 + i, b"A1"[i:i + 1], frame_id=1, fragment_index=i,
                                   fragment_count=2, frame_length=2) for i in (0, 1)]
    newer = [data_datagram(0, b"B0", frame_id=0, session_id=NEWER)]
    receiving = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiving.bind(("127.0.0.1", 0))
    sending = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sending.connect(receiving.getsockname())
    for datagram in older + halves + newer:
        sending.send(datagram)
    import time
    time.sleep(0.05)
    frames = receiver.receive(receiving.fileno(), 100)
    assert [(bytes(frame), frame.session_id) for frame in frames] == [(b"A0", OLDER), (b"A1", OLDER),
                                                                      (b"B0", NEWER)]


def two_keyed_links(directory, first_key, second_key):
    """An egress config of links a and b with these key files, each holding the same key."""
    for key in (first_key, second_key):
        key.write_bytes(bytes(range(32)))
        key.chmod(0o600)
    config = directory / "egress.toml"
    config.write_text("role = \"egress\"\n" + "".join(f"""
[links.{name}.transport]
listen = "127.0.0.1:{port}"
keys = [{{ id = 1, file = "{key}" }}]
[links.{name}.sink]
type = "udp"
target = "127.0.0.1:9"
""" for name, port, key in (("a", 7001, first_key), ("b", 7002, second_key))))
    return config


def test_two_links_with_one_key_are_a_config_error(tmp_path):
    """Datagrams of one link are authentic on any link with the same key, so they could be replayed there."""
    from ddc.config import ConfigError, load_settings

    key = tmp_path / "shared.key"
    with pytest.raises(ConfigError, match=r"links 'a' and 'b' both use the key from file .*shared.key"):
        load_settings(two_keyed_links(tmp_path, key, key))


def test_an_egress_without_keys_keeps_no_session_state(tmp_path):
    """Without keys a forged datagram could write a session into the file and lock the sender out for good."""
    from ddc.config import load_settings
    from ddc.egress import EgressLink

    config = tmp_path / "egress.toml"
    config.write_text(f"""
role = "egress"
[links.a.transport]
listen = "127.0.0.1:7003"
state_directory = "{tmp_path / 'state'}"
[links.a.sink]
type = "udp"
target = "127.0.0.1:9"
""")
    link = EgressLink("a", load_settings(config).links["a"])
    assert link.session_state.path is None


def test_one_key_copied_into_two_files_is_refused_too(tmp_path):
    from conftest import run_ddc

    config = two_keyed_links(tmp_path, tmp_path / "a.key", tmp_path / "b.key")
    for command in ("check", "run"):
        result = run_ddc(command, str(config))
        assert result.returncode == 2, (command, result.stderr)
        assert "links 'a' and 'b' use the same key" in result.stderr and "Traceback" not in result.stderr


def test_two_proxies_cannot_share_one_link_state(tmp_path):
    from ddc.config import ConfigError
    from ddc.session_state import SessionState

    held = SessionState(tmp_path, "stream", "egress")
    with pytest.raises(ConfigError, match="another process holds the session state"):
        SessionState(tmp_path, "stream", "egress")
    assert SessionState(tmp_path, "other", "egress").path != held.path
    held.save({"session_id": 7, "highest_sequence": 9})
    held.close()
    assert SessionState(tmp_path, "stream", "egress").load("session_id") == {"session_id": 7, "highest_sequence": 9}


def test_shutdown_copies_lost_at_the_very_end_count_as_lost():
    """No later datagram shows a gap after the last one: each shutdown copy says where the session ends."""
    from ddc._core.sender import DatagramSender

    receiving = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiving.bind(("127.0.0.1", 0))
    receiving.setblocking(False)
    address = struct.pack("=HH4s8x", socket.AF_INET, socket.htons(receiving.getsockname()[1]),
                          socket.inet_aton("127.0.0.1"))
    sending = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = DatagramSender(sending.fileno(), address, OLDER, 1472)
    sender.send_frame(b"a frame")
    sender.send_shutdown(wire.encode_peer_counters({"datagrams_sent": 0, "frames_sent": 1}), 3)
    datagrams = []
    while True:
        try:
            datagrams.append(receiving.recv(65536))
        except BlockingIOError:
            break
    assert len(datagrams) == 4
    for lost_at_end in (0, 1, 2):
        receiver = LinkReceiver()
        delivered(receiver, datagrams[:len(datagrams) - lost_at_end], 0)
        counters = receiver.counters()
        assert counters["datagrams_lost"] == lost_at_end and counters["shutdowns_received"] == 3 - lost_at_end
        assert wire.decode_peer_counters(wire.decode_datagram(datagrams[1])["payload"])["datagrams_sent"] == 4
    receiving.close()
    sending.close()


def test_parity_replayed_after_a_restart_raises_no_false_alarm():
    """Replayed parity the earlier run saw would reopen blocks that can never complete, and time them out as
    unrecoverable: an alarm that says "raise the parity" for a link that lost nothing."""
    from protocol_reference import sealed

    data = [data_datagram(index, bytes([index]) * 50, frame_id=index, block=0, index=index, count=4,
                          session_id=NEWER) for index in range(4)]
    stream = [sealed(datagram, KEY, 3) for datagram in data + parity_for(data, 2, block=0, session_id=NEWER)]
    first_run = keyed_receiver()
    assert len(delivered(first_run, stream, 0)) == 4
    assert first_run.saved_session() == (NEWER, 3, 1)
    second_run = keyed_receiver()
    second_run.restore_session(*first_run.saved_session())
    assert delivered(second_run, stream, 0) == []
    second_run.expire(everything=True)
    counters = second_run.counters()
    assert counters["dropped_too_old"] == 6 and counters["fec_blocks_unrecoverable"] == 0
    assert counters["fec_bytes_in_flight"] == 0 and accounted(counters)


def test_a_state_directory_that_stops_taking_writes_is_reported_not_fatal(tmp_path):
    """A full disk or a read-only remount, hours after start: the ingress still rekeys, the egress says so."""
    import os

    from ddc.config import load_settings
    from ddc.egress import EgressLink
    from ddc.session_state import SessionState, next_epoch

    def read_only(state):
        os.close(state._descriptor)
        state._descriptor = os.open(state.path, os.O_RDONLY)

    state = SessionState(tmp_path / "ingress-state", "a", "ingress")
    read_only(state)
    assert next_epoch(state, OLDER) > OLDER
    key = tmp_path / "link.key"
    key.write_bytes(KEY)
    key.chmod(0o600)
    config = tmp_path / "egress.toml"
    config.write_text(f"""
role = "egress"
[links.a.transport]
listen = "127.0.0.1:7013"
keys = [{{ id = 3, file = "{key}" }}]
state_directory = "{tmp_path / 'egress-state'}"
[links.a.sink]
type = "udp"
target = "127.0.0.1:9"
""")
    link = EgressLink("a", load_settings(config).links["a"])
    read_only(link.session_state)
    link.receiver.feed(authentic(NEWER, 0))
    link._note_session()
    link.save_session()  # the supervisor's tick: nothing it syncs may hide the failure
    assert any("cannot save the session state" in problem for problem in link.problems())
