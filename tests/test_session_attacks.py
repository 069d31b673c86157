"""Attacks on sessions, key epochs, restarts and shutdowns from the third review of #20 (each failed on 39cd8dc):
a restored snapshot of the ingress, replayed shutdowns, the state file's sync, a restart across a rekey."""

import os
import socket
import struct
import time

import pytest

from conftest import free_udp_port
from ddc._core import wire
from ddc._core.records import encode_batch
from test_hostile import KEY, NEWER, OLDER, authentic, delivered, keyed_receiver

TIME = time.time
SENDING_SOCKETS: list = []


def ingress_link(tmp_path, name="a", file_source=None):
    """A keyed ingress link with a state directory, whose sender sends to a local socket we read; its source
    listens for UDP, or reads file_source (a source that can wait)."""
    from ddc._core.sender import DatagramSender
    from ddc.config import load_settings
    from ddc.crypto import load_sealing_library
    from ddc.ingress import IngressLink

    load_sealing_library()
    key = tmp_path / "link.key"
    if not key.exists():
        key.write_bytes(KEY)
        key.chmod(0o600)
    source = (f'type = "file"\npath = "{file_source}"' if file_source
              else f'type = "udp"\nlisten = "127.0.0.1:{free_udp_port()}"')
    config = tmp_path / f"ingress-{name}.toml"
    config.write_text(f"""
role = "ingress"
[links.a.source]
{source}
[links.a.transport]
destination = "127.0.0.1:9"
key = {{ id = 3, file = "{key}" }}
state_directory = "{tmp_path / ('state-' + name)}"
""")
    link = IngressLink("a", load_settings(config).links["a"])
    receiving = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiving.bind(("127.0.0.1", 0))
    receiving.setblocking(False)
    address = struct.pack("=HH4s8x", socket.AF_INET, socket.htons(receiving.getsockname()[1]),
                          socket.inet_aton("127.0.0.1"))
    sending = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    link.sender = DatagramSender(sending.fileno(), address, link.session_id, 1472)
    link.sender.encrypt_with(KEY, 3)
    link.started = time.monotonic()
    link._test_sockets = (receiving, sending)
    return link, receiving


def arrived(receiving) -> list[dict]:
    out = []
    while True:
        try:
            out.append(wire.decode_datagram(receiving.recv(65536)))
        except BlockingIOError:
            return out


# ---- 1. a restored snapshot reuses (key, nonce) ----

def test_a_wall_clock_jump_starts_a_new_session_at_once(tmp_path, monkeypatch):
    """A restored snapshot of a running ingress would go on with nonces another copy may already have used."""
    link, _ = ingress_link(tmp_path)
    first = link.session_id
    link._rekey_if_due()
    assert link.session_id == first and link.rekeys == 0
    monkeypatch.setattr(time, "time", lambda: TIME() + 3600)  # NTP corrects a restored clock
    link._rekey_if_due()
    assert link.rekeys == 1 and link.session_id > first and link.sender.session_id == link.session_id
    # a new session, not the next key epoch: two copies of one snapshot would derive that same epoch
    assert link.session_id & 0xFFFFFFFF != first & 0xFFFFFFFF
    link._rekey_if_due()
    assert link.rekeys == 1, "one jump, one rekey"


def test_a_frame_taken_while_the_clock_jumped_is_not_sealed_under_the_old_key(tmp_path, monkeypatch):
    """docs/security.md: "A restored snapshot of a running ingress is caught when its wall clock jumps ... and it
    rekeys before it sends again". The transport thread of an idle or busy ingress spends its time blocked in
    buffer.take(); a snapshot restored there returns from take() with new records and sends them under the old
    key, with the sequence numbers the original instance also used after the snapshot."""
    link, receiving = ingress_link(tmp_path)
    first = link.session_id

    class Buffer:
        capacity_bytes, drained, calls, records_dropped = 1 << 20, False, 0, 0

        def take(self, limit, wait, linger):
            self.calls += 1
            if self.calls == 1:  # the snapshot is restored while the thread waits here
                monkeypatch.setattr(time, "time", lambda: TIME() + 3600)
                return b"records the original instance never saw", 1, 0
            self.drained = True
            return None

        def free_taken(self):
            pass

        def counters(self):
            return {"buffer_bytes": 0}

        def close(self):
            pass

    link.buffer = Buffer()
    link.source.open()
    link._transport_loop()
    link.source.close()
    data = [d for d in arrived(receiving) if d["type"] == wire.TYPE_DATA]
    assert link.rekeys == 1 and link.session_id > first
    assert data[0]["session_id"] == link.session_id, (
        f"the first frame after the jump went out under the old key epoch {data[0]['session_id']:016x} "
        f"at sequence {data[0]['sequence']}")


def test_two_copies_of_one_snapshot_never_rekey_to_the_same_key_epoch(tmp_path, monkeypatch):
    """Two VMs started from one snapshot (or the original and a copy restored in the second it rekeys) both see
    the clock jump and rekey: next_epoch() is deterministic (same second, same low half), so both seal with one
    session key and go on with the same sequence numbers: AES-GCM nonce reuse, which leaks the XOR of the
    plaintexts and the GHASH key (then anyone on the low side can forge datagrams under that epoch)."""
    import shutil

    original, received_a = ingress_link(tmp_path, "a")
    copy, received_b = ingress_link(tmp_path, "b")
    # make b an exact copy of a as the snapshot held it: same session, same state file, same sender position
    copy.session_id = original.session_id
    copy.sender = type(original.sender)(copy._test_sockets[1].fileno(),
                                        struct.pack("=HH4s8x", socket.AF_INET,
                                                    socket.htons(received_b.getsockname()[1]),
                                                    socket.inet_aton("127.0.0.1")), original.session_id, 1472)
    copy.sender.encrypt_with(KEY, 3)
    copy.session_state.close()
    shutil.copy(original.session_state.path, copy.session_state.path)
    from ddc.session_state import SessionState

    copy.session_state = SessionState(tmp_path / "state-b", "a", "ingress")
    copy._clock_offset = original._clock_offset
    monkeypatch.setattr(time, "time", lambda: TIME() + 3600)
    original._rekey_if_due()
    copy._rekey_if_due()
    original.sender.send_frame(b"frame of the first copy")
    copy.sender.send_frame(b"frame of the other copy")
    a, b = arrived(received_a)[0], arrived(received_b)[0]
    assert (a["session_id"], a["sequence"]) != (b["session_id"], b["sequence"]), (
        f"both copies sealed sequence {a['sequence']} under key epoch {a['session_id']:016x}; "
        f"payload XOR leaks: {bytes(x ^ y for x, y in zip(a['payload'], b['payload']))[:23]!r}")


# ---- 2. a replayed shutdown ends a one-shot egress before its transfer ----

def one_shot_egress(tmp_path, port, keyed=True):
    """An egress link writing a file that ends with its sender's shutdown; keyed, with a state directory."""
    from ddc.config import load_settings
    from ddc.egress import EgressLink

    keys = ""
    if keyed:
        key = tmp_path / "link.key"
        key.write_bytes(KEY)
        key.chmod(0o600)
        keys = f'keys = [{{ id = 3, file = "{key}" }}]\nstate_directory = "{tmp_path / "state"}"'
    config = tmp_path / "egress.toml"
    config.write_text(f"""
role = "egress"
[links.a.transport]
listen = "127.0.0.1:{port}"
{keys}
[links.a.sink]
type = "file"
path = "{tmp_path / 'out.bin'}"
stop_after_sender_shutdown = true
""")
    return EgressLink("a", load_settings(config).links["a"])


def test_a_replayed_shutdown_of_the_remembered_session_does_not_end_the_next_one_shot_transfer(tmp_path):
    """A one-shot egress (file sink, stop_after_sender_shutdown) was stopped before session OLDER's shutdown
    reached it; its state file holds (OLDER, 9). It is started again for the next transfer. The attacker plays
    back OLDER's recorded shutdown (sequence 10, never delivered, so above the floor): the egress takes it as
    the end of its transfer and finishes before the new sender has sent anything."""
    from protocol_reference import sealed

    from ddc.session_state import SessionState

    state = SessionState(tmp_path / "state", "a", "egress")
    state.save({"session_id": OLDER, "highest_sequence": 9, "highest_parity": None})  # what the first run left
    state.close()
    port = free_udp_port()
    link = one_shot_egress(tmp_path, port)
    link.start()
    try:
        recorded_shutdown = sealed(wire.encode_datagram(wire.TYPE_SHUTDOWN, OLDER, 10, wire.encode_peer_counters(
            {"datagrams_sent": 11})), KEY, 3)
        attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        attacker.sendto(recorded_shutdown, ("127.0.0.1", port))
        attacker.close()
        finished = link.finished.wait(2.0)
        assert not finished, ("the one-shot egress finished on a replayed shutdown of the session its previous "
                              "run was stopped in; the next transfer (a newer session) will never be received")
    finally:
        link.stop()


# ---- 3. a note() during the tick's fdatasync is marked durable but never synced ----

def test_a_record_written_while_the_tick_syncs_is_synced_later(tmp_path, monkeypatch):
    """The receive thread notes (pwrite) after every receive() call while the supervisor thread syncs: a note
    that lands while fdatasync runs sets _dirty, then sync() clears it when fdatasync returns, so that record is
    never made durable (until the fields change again: after the sender's last datagram, never). A power cut
    then loses more than "the last second", and replays of what it covered are delivered again."""
    import ddc.session_state as session_state

    state = session_state.SessionState(tmp_path, "a", "egress")
    durable = {}
    real = os.fdatasync

    def fdatasync_racing_the_receive_thread(descriptor):
        durable["record"] = os.pread(descriptor, 256, 0)  # what this fdatasync makes durable
        state.note({"session_id": NEWER, "highest_sequence": 200, "highest_parity": None})  # receive thread
        real(descriptor)

    state.note({"session_id": NEWER, "highest_sequence": 100, "highest_parity": None})
    monkeypatch.setattr(session_state.os, "fdatasync", fdatasync_racing_the_receive_thread)
    state.sync()  # the tick
    monkeypatch.setattr(session_state.os, "fdatasync",
                        lambda descriptor: durable.__setitem__("record", os.pread(descriptor, 256, 0)))
    state.sync()  # the next tick: nothing changed since, the sender has gone quiet
    assert b'"highest_sequence": 200' in durable["record"], \
        f"the durable record is still {durable['record'].strip()!r}"


# ---- 4. stop() hands the rest of a batch to the sink before the state file covers it ----

def test_frames_drained_at_stop_reach_the_sink_only_after_the_state_file_covers_them(tmp_path):
    """_note_session's promise: the state is written "before its frames reach the sink". stop() puts the frames of
    the rest of a batch into the buffer (the sink thread is still running and delivers them) and notes only after
    the loop and expire(): a SIGKILL in between (a stop that overran its timeout) leaves a floor below frames
    already delivered, whose replays the next run delivers again."""
    from ddc.config import load_settings
    from ddc.egress import EgressLink
    from ddc.session_state import RECORD_BYTES
    from ddc.transport.sockets import open_bound

    key = tmp_path / "link.key"
    key.write_bytes(KEY)
    key.chmod(0o600)
    port = free_udp_port()
    config = tmp_path / "egress.toml"
    config.write_text(f"""
role = "egress"
[links.a.transport]
listen = "127.0.0.1:{port}"
keys = [{{ id = 3, file = "{key}" }}]
state_directory = "{tmp_path / 'state'}"
max_frame_size = 1024
max_bytes_in_flight = 1048576
[links.a.sink]
type = "udp"
target = "127.0.0.1:9"
""")
    link = EgressLink("a", load_settings(config).links["a"])
    link.sink.open()
    link._socket = open_bound(link.config.transport.listen, receive_buffer=1 << 20)
    sending = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for sequence in range(40):
        sending.sendto(authentic(NEWER, sequence, bytes([sequence]) * 600), ("127.0.0.1", port))
    time.sleep(0.1)
    frames = link.receiver.receive(link._socket.fileno(), 100)  # the receive thread's last call
    link._note_session()
    link.buffer.put_many(frames)
    assert link.receiver.batch_pending
    handed = []
    put_many = link.buffer.put_many

    def put_many_watching_the_state(items, *args):
        record = os.pread(link.session_state._descriptor, RECORD_BYTES, 0).decode()
        import json

        floor = json.loads(record)["highest_sequence"]
        handed.extend((frame.frame_id, floor) for frame in items)
        return put_many(items, *args)

    link.buffer.put_many = put_many_watching_the_state
    link.stop()
    sending.close()
    assert handed, "stop() drained nothing"
    uncovered = [(frame_id, floor) for frame_id, floor in handed if frame_id > floor]
    assert not uncovered, f"frames handed to the sink above the saved floor (frame, floor): {uncovered[:5]}"


# ---- 5. a rekey across an egress restart loses the previous epoch's datagrams in flight ----

EPOCH_1, EPOCH_2 = (1000 << 32) | 0x1234, (1001 << 32) | 0x1234


def test_a_restart_that_resumes_in_a_later_epoch_still_takes_the_saved_epochs_datagrams_in_flight():
    """The egress saved (EPOCH_1, 9); the sender rekeyed at sequence 10. After the restart EPOCH_2's sequence 11
    arrives before EPOCH_1's sequence 10 (reordered): start_session() sets previous_epoch_id = 0, so sequence 10,
    never delivered, is dropped_stale_session and counted as lost. Without the restart it is delivered."""
    first_run = keyed_receiver()
    delivered(first_run, [authentic(EPOCH_1, sequence) for sequence in range(10)], 0)
    second_run = keyed_receiver()
    second_run.restore_session(*first_run.saved_session())
    frames = delivered(second_run, [authentic(EPOCH_2, 11), authentic(EPOCH_1, 10)], 0)
    counters = second_run.counters()
    assert len(frames) == 2, (frames, counters["dropped_stale_session"], counters["datagrams_lost"])


# ---- 6. counters that say something else than what happened ----

def test_shutdown_copies_arriving_in_order_are_not_counted_as_reordered():
    """reach_sequence() raises highest_sequence to the last copy, so copies 2 and 3, arriving in order, look
    like datagrams from behind the highest one."""
    from protocol_reference import sealed

    counters = wire.encode_peer_counters({"datagrams_sent": 8})
    shutdowns = [sealed(wire.encode_datagram(wire.TYPE_SHUTDOWN, NEWER, sequence, counters), KEY, 3)
                 for sequence in (5, 6, 7)]
    receiver = keyed_receiver()
    delivered(receiver, [authentic(NEWER, sequence) for sequence in range(5)] + shutdowns, 0)
    assert receiver.counters()["datagrams_reordered"] == 0


# ---- 7. the high half of a session id wraps ----

def test_the_last_session_id_there_is_is_a_clear_error_not_a_smaller_one():
    """_after() once masked a high half of 0xFFFFFFFF + 1 to 64 bits: the "next" id was the low half alone, which
    sender.rekey() refused (the transport stage failed) and every keyed egress refused as older."""
    from ddc.config import ConfigError
    from ddc.session_state import _after

    with pytest.raises(ConfigError, match="ffffffff00001234 is the last there is"):
        _after(0xFFFFFFFF_00001234, 0x1234)


# ---- one-shot transfers still end ----

def capturing_sender(session_id: int, key: bool = False):
    """A DatagramSender whose datagrams wait on a local socket, for the test to forward, drop or replay."""
    from ddc._core.sender import DatagramSender

    capture = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    capture.bind(("127.0.0.1", 0))
    capture.setblocking(False)
    sending = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    address = struct.pack("=HH4s8x", socket.AF_INET, socket.htons(capture.getsockname()[1]),
                          socket.inet_aton("127.0.0.1"))
    sender = DatagramSender(sending.fileno(), address, session_id, 1472)
    if key:
        from ddc.crypto import load_sealing_library

        load_sealing_library()
        sender.encrypt_with(KEY, 3)
    SENDING_SOCKETS.append(sending)  # the sender's descriptor must outlive it
    return sender, capture


def captured(capture) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(capture.recv(65536))
        except BlockingIOError:
            return out


def shutdown_payload(frames_sent: int) -> bytes:
    return wire.encode_peer_counters({"datagrams_sent": 1, "frames_sent": frames_sent, "records_sent": frames_sent})


def test_a_one_shot_egress_ends_when_the_transfers_only_frame_was_lost(tmp_path):
    """A one-frame transfer whose frame was lost, then its shutdown: the egress must end (and report the gap),
    not wait for ever because it received nothing of the session (review of #21)."""
    port = free_udp_port()
    link = one_shot_egress(tmp_path, port, keyed=False)
    link.start()
    forward = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sender, capture = capturing_sender(0x1234_5678_9ABC)
        sender.send_frame(encode_batch([(struct.pack(">Q", 0), b"x" * 100)], 0))
        captured(capture)  # the frame: lost on the way
        sender.send_shutdown(shutdown_payload(1), 3)
        for datagram in captured(capture):
            forward.sendto(datagram, ("127.0.0.1", port))
        assert link.finished.wait(5.0), (
            f"the one-shot egress is still waiting {link.link_state!r} after its sender shut down; log says "
            "'this run received none of its frames'")
    finally:
        link.stop()
        forward.close()


def test_a_one_shot_egress_ends_after_a_clock_jump_between_the_last_frame_and_the_shutdown(tmp_path):
    """A clock jump after the last frame: the shutdown comes in a new session with no frame of its own and a
    frames_sent that counts the earlier session's (review of #21): the transfer is whole and must end."""
    from ddc.session_state import SessionState, next_session_id

    port = free_udp_port()
    link = one_shot_egress(tmp_path, port, keyed=True)
    link.start()
    forward = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        state = SessionState(tmp_path / "ingress-state", "a", "ingress")
        first = next_session_id(state, keyed=True)
        sender, capture = capturing_sender(first, key=True)
        sender.send_frame(encode_batch([(struct.pack(">Q", 0), b"the whole file")], 0))
        second = next_session_id(state, keyed=True, after=first)  # what _rekey_if_due does on a clock jump
        sender.rekey(second, KEY, True)
        sender.send_shutdown(shutdown_payload(1), 3)
        for datagram in captured(capture):
            forward.sendto(datagram, ("127.0.0.1", port))
        finished = link.finished.wait(5.0)
    finally:
        link.stop()
        forward.close()
    assert (tmp_path / "out.bin").read_bytes() == b"the whole file"
    assert finished, "the one-shot egress received the whole file and its sender's shutdown, and never finishes"


