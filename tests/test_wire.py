import errno
import os
import socket
import struct
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddc._core import wire
from ddc._core.receiver import LinkReceiver
from ddc._core.sender import DatagramSender
from protocol_reference import fragment

SO_NO_CHECK = getattr(socket, "SO_NO_CHECK", 11)  # Linux's value; Python names it only on some builds


def test_crc32c_matches_the_standard_check_value():
    assert wire.checksum(b"123456789") == 0xE3069283
    assert wire.checksum(b"") == 0


@given(st.binary(max_size=3000), st.integers(0, 7))
def test_crc32c_is_independent_of_alignment(data, shift):
    assert wire.checksum(data) == wire.checksum((b"x" * shift + data)[shift:])


def bitwise_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


@given(st.binary(max_size=300))
def test_every_crc32c_implementation_matches_the_definition(data):
    assert wire.checksum(data) == wire.checksum(data, portable=True) == bitwise_crc32c(data)


@settings(max_examples=50)
@given(st.binary(min_size=1000, max_size=70000))
def test_the_cpu_instruction_agrees_with_slice_by_8_on_datagram_sizes(data):
    assert wire.checksum(data) == wire.checksum(data, portable=True)


def test_the_crc32c_implementation_is_named():
    assert wire.checksum_implementation() in ("sse4.2", "armv8-crc", "slice-by-8")


def test_header_layout_is_the_documented_one():
    datagram = wire.encode_datagram(wire.TYPE_DATA, 0x1122334455667788, 9, b"abc", frame_id=5,
                                    fragment_index=1, fragment_count=2, frame_length=5)
    assert len(datagram) == wire.HEADER_BYTES + 3 == 59
    magic, version, kind, flags, key_id, payload_length = struct.unpack_from(">HBBBBH", datagram)
    assert (magic, version, kind, flags, key_id, payload_length) == (0xDD1C, 2, wire.TYPE_DATA, 0, 0, 3)
    session, sequence, frame_id, index, count, length = struct.unpack_from(">QQQIII", datagram, 16)
    assert (session, sequence, frame_id, index, count, length) == (0x1122334455667788, 9, 5, 1, 2, 5)
    assert datagram[56:] == b"abc"
    check = struct.unpack_from(">I", datagram, 8)[0]
    assert check == wire.checksum(datagram[:8] + b"\0\0\0\0" + datagram[12:])


def test_decode_round_trip():
    datagram = wire.encode_datagram(wire.TYPE_DATA, 7, 8, b"hello", frame_id=3, fragment_index=0,
                                    fragment_count=1, frame_length=5)
    decoded = wire.decode_datagram(datagram)
    assert decoded["session_id"] == 7 and decoded["sequence"] == 8 and decoded["frame_id"] == 3
    assert decoded["payload"] == b"hello"


VALID = wire.encode_datagram(wire.TYPE_DATA, 7, 8, b"hello", frame_id=3, fragment_index=0, fragment_count=1)


@pytest.mark.parametrize("datagram, reason", [
    (b"", "truncated"),
    (VALID[:20], "truncated"),
    (VALID[:-1], "truncated"),
    (VALID + b"x", "malformed"),
    (b"\x00" + VALID[1:], "bad_magic"),
    (VALID[:2] + b"\x03" + VALID[3:], "unknown_version"),
    (VALID[:-1] + bytes([VALID[-1] ^ 1]), "bad_checksum"),
    (wire.encode_datagram(9, 7, 8, b""), "unknown_type"),
    (wire.encode_datagram(wire.TYPE_DATA, 7, 8, b"ab", fragment_index=2, fragment_count=2, frame_length=4), "malformed"),
    (wire.encode_datagram(wire.TYPE_DATA, 7, 8, b"abc", fragment_index=0, fragment_count=2, frame_length=4), "malformed"),
    (wire.encode_datagram(wire.TYPE_DATA, 7, 8, b"a", fragment_index=0, fragment_count=0, frame_length=1), "malformed"),
    (wire.encode_datagram(wire.TYPE_DATA, 7, 8, b"", fragment_index=0, fragment_count=2, frame_length=0), "malformed"),
])
def test_every_bad_datagram_has_a_reason(datagram, reason):
    with pytest.raises(ValueError, match=reason):
        wire.decode_datagram(datagram)


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_random_bytes_never_parse(data):
    with pytest.raises(ValueError):
        wire.decode_datagram(data)


@settings(max_examples=200)
@given(st.integers(0, wire.HEADER_BYTES + 40), st.integers(0, 255))
def test_any_single_byte_corruption_is_rejected(position, flip):
    datagram = bytearray(wire.encode_datagram(wire.TYPE_DATA, 99, 1, b"0123456789" * 4, frame_id=1, fragment_count=1))
    position %= len(datagram)
    if flip == 0:
        flip = 0x80
    datagram[position] ^= flip
    with pytest.raises(ValueError):
        wire.decode_datagram(bytes(datagram))


def test_peer_counters_round_trip_and_tolerate_extra_fields():
    counters = {name: index * 1000 for index, name in enumerate(wire.PEER_COUNTER_FIELDS)}
    assert wire.decode_peer_counters(wire.encode_peer_counters(counters)) == counters
    longer = struct.pack(">H", len(counters) + 2) + wire.encode_peer_counters(counters)[2:] + bytes(16)
    assert wire.decode_peer_counters(longer) == counters
    with pytest.raises(ValueError):
        wire.decode_peer_counters(b"\x00\x05" + bytes(8))


def send_and_expect(datagram_path, frames, datagram_size, segmentation_offload=True, configure=None):
    """Sends frames through the C sender; returns it, the datagrams received and the reference datagrams."""
    receiver, sending, address = datagram_path()
    if configure:
        configure(sending)
    sender = DatagramSender(sending.fileno(), address, 0x5E55, datagram_size,
                            segmentation_offload=segmentation_offload)
    expected, sequence = [], 0
    for frame_id, frame in enumerate(frames):
        assert sender.send_frame(frame) == frame_id
        datagrams = fragment(frame, session_id=0x5E55, frame_id=frame_id, first_sequence=sequence,
                             datagram_size=datagram_size)
        sequence += len(datagrams)
        expected += datagrams
    receiver.settimeout(2)
    return sender, [receiver.recv(65535) for _ in expected], expected


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=5000), min_size=1, max_size=6), st.integers(57, 1500), st.booleans())
def test_c_sender_emits_exactly_the_reference_datagrams(datagram_path, frames, datagram_size, segmentation):
    """With segmentation offload the kernel cuts runs of equal datagrams apart: the wire must not change."""
    sender, got, expected = send_and_expect(datagram_path, frames, datagram_size, segmentation)
    assert got == expected
    assert sender.counters()["datagrams_sent"] == len(expected)
    runs = any(len(frame) > datagram_size - wire.HEADER_BYTES for frame in frames)  # two datagrams or more
    assert (sender.counters()["segmented_sends"] > 0) == (segmentation and runs)


def sent_datagrams(datagram_path, datagram_size, send, fec=None, key=None):
    """Every datagram one fresh sender emits for send(sender), in order."""
    receiver, sending, address = datagram_path(buffer_bytes=32 << 20)
    sender = DatagramSender(sending.fileno(), address, 0x5E55, datagram_size)
    if key:
        from ddc.crypto import load_sealing_library
        load_sealing_library()
        sender.encrypt_with(key, 1)
    if fec:
        sender.protect_with(*fec)
    send(sender)
    receiver.settimeout(0.2)
    datagrams = []
    while len(datagrams) < sender.counters()["datagrams_sent"]:
        datagrams.append(receiver.recv(65535))
    return datagrams


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=40_000), st.integers(0, 400), st.sampled_from([200, 1472, 8972]),
       st.sampled_from([None, (8, 3, 2)]), st.booleans())
def test_a_prefix_sent_apart_gives_the_very_datagrams_of_the_joined_frame(datagram_path, frame, cut, datagram_size,
                                                                          fec, sealed):
    """send_frame(body, prefix=head) spares the caller joining a batch header to a large value: the wire must
    be exactly that of send_frame(head + body), with FEC parity and sealing too; a prefix longer than a
    datagram's payload is joined instead."""
    cut = min(cut, len(frame))
    key = bytes(range(32)) if sealed else None
    joined = sent_datagrams(datagram_path, datagram_size, lambda sender: sender.send_frame(frame), fec, key)
    apart = sent_datagrams(datagram_path, datagram_size,
                           lambda sender: sender.send_frame(frame[cut:], prefix=frame[:cut]), fec, key)
    assert apart == joined


def test_a_kernel_that_refuses_segmentation_gets_a_datagram_per_message(datagram_path):
    """Linux refuses UDP segmentation offload on a socket without UDP checksums (SO_NO_CHECK), as it does
    for a segment above the path MTU: the batch that met the refusal and every later one go unsegmented."""
    frames = [os.urandom(30_000), os.urandom(20_000)]
    sender, got, expected = send_and_expect(
        datagram_path, frames, 1472, configure=lambda sock: sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1))
    assert got == expected
    counters = sender.counters()
    assert not sender.segmentation_offload
    assert counters["segmented_sends"] == 0 and counters["datagrams_failed"] == 0
    assert counters["datagrams_sent"] == len(expected)


def test_sender_paces_to_the_configured_rate(datagram_path):
    _, sending, address = datagram_path()
    rate = 20e6
    sender = DatagramSender(sending.fileno(), address, 1, 1472, rate, 64 * 1024)
    started = time.monotonic()
    sender.send_frame(bytes(2_000_000))
    elapsed = time.monotonic() - started
    # Correctness of the pacing maths, not a speed gate: 2 MB at 20 MB/s cannot finish in
    # less than (2 MB - burst) / rate, whatever the machine's load.
    assert elapsed >= (2_000_000 - 64 * 1024) / rate * 0.95
    assert sender.counters()["pacing_sleeps"] > 0


SO_TIMESTAMPNS = 35  # Linux; the kernel stamps each datagram as it arrives, whenever the test reads it


@pytest.mark.parametrize("burst, fewest, most", [("auto", 2, 4), ("64KiB", 14, 14)])
def test_a_slow_link_starts_at_its_rate_with_the_default_burst(datagram_path, burst, fewest, most):
    """At 1 Mbit/s a burst in bytes is seconds of traffic at once (256 KiB is 2 s): the pacing schedule lets
    at most burst + rate × τ bytes through in any τ. With "auto" (10 ms of the rate, at least two datagrams)
    no 20 ms holds more than 5 444 bytes, 3.7 datagrams, however late the sender wakes; 64 KiB lets the whole
    20 KB frame out at once (the busiest 20 ms: fewest to most datagrams). Kernel arrival stamps make this
    independent of when the test reads."""
    from ddc.config.transport import IngressTransportConfig
    transport = IngressTransportConfig(destination="127.0.0.1:9", rate="1Mbit/s", burst=burst)
    receiver, sending, address = datagram_path()
    try:
        receiver.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError as error:
        if error.errno != errno.ENOPROTOOPT or os.environ.get("DDC_TEST_UNDER_QEMU") != "1":
            raise
        pytest.skip("qemu-user refuses SO_TIMESTAMPNS: no kernel arrival stamps, the schedule is not measurable")
    sender = DatagramSender(sending.fileno(), address, 1, 1472, transport.rate, transport.burst_bytes,
                            segmentation_offload=False)
    sender.send_frame(bytes(14 * (1472 - wire.HEADER_BYTES)))
    receiver.settimeout(2)
    arrivals = []
    for _ in range(14):
        _, ancillary, _, _ = receiver.recvmsg(2048, 64)
        seconds, nanoseconds = struct.unpack("qq", ancillary[0][2][:16])
        arrivals.append(seconds + nanoseconds / 1e9)
    busiest = max(sum(1 for later in arrivals if first <= later < first + 0.020) for first in arrivals)
    assert fewest <= busiest <= most


def test_receiver_rejects_a_budget_that_cannot_hold_one_frame():
    with pytest.raises(ValueError, match="max_bytes_in_flight"):
        LinkReceiver(max_frame_bytes=1 << 20, max_bytes_in_flight=1 << 10)


def _receive_in_background(receiver, sock, expected_frames, timeout=60.0):
    frames = []

    def drain():
        deadline = time.monotonic() + timeout
        while len(frames) < expected_frames and time.monotonic() < deadline:
            frames.extend(bytes(frame) for frame in receiver.receive(sock.fileno(), 100))

    thread = threading.Thread(target=drain)
    thread.start()
    return thread, frames


def test_a_64_mib_frame_crosses_real_sockets_intact(datagram_path):
    frame = os.urandom(64 << 20)
    receiving, sending, address = datagram_path(64 << 20)
    receiver = LinkReceiver(max_frame_bytes=64 << 20, max_bytes_in_flight=128 << 20)
    thread, frames = _receive_in_background(receiver, receiving, 1)
    DatagramSender(sending.fileno(), address, 0x64, 8972, 200e6, 256 * 1024).send_frame(frame)
    thread.join(90)
    assert len(frames) == 1 and frames[0] == frame
    counters = receiver.counters()
    assert counters["frames_completed"] == 1 and counters["datagrams_lost"] == 0
    assert counters["peak_bytes_in_flight"] == 64 << 20


def test_the_link_works_over_ipv6(datagram_path):
    try:
        receiving, sending, address = datagram_path(host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    receiver = LinkReceiver()
    thread, frames = _receive_in_background(receiver, receiving, 2, timeout=10)
    sender = DatagramSender(sending.fileno(), address, 6, 1232)
    sender.send_frame(b"over six" * 1000)
    sender.send_frame(b"")
    thread.join(15)
    assert frames == [b"over six" * 1000, b""]


def test_heartbeats_interleave_with_a_slow_frame_and_count_exactly(datagram_path):
    receiving, sending, address = datagram_path()
    sender = DatagramSender(sending.fileno(), address, 9, 1472, 1e6, 16 * 1024, 0.05)
    sender.set_heartbeat(wire.encode_peer_counters({"heartbeat_interval_ms": 50}))
    sender.send_frame(bytes(500_000))  # half a second at 1 MB/s
    receiving.settimeout(1)
    heartbeats, data = [], 0
    for _ in range(sender.counters()["datagrams_sent"]):
        decoded = wire.decode_datagram(receiving.recv(65535))
        if decoded["type"] == wire.TYPE_HEARTBEAT:
            heartbeats.append(decoded)
        else:
            data += 1
    assert len(heartbeats) >= 6, len(heartbeats)
    assert sender.counters()["heartbeats_sent"] == len(heartbeats)
    for heartbeat in heartbeats:
        counters = wire.decode_peer_counters(heartbeat["payload"])
        assert counters["datagrams_sent"] == heartbeat["sequence"]
        assert counters["heartbeat_interval_ms"] == 50
    assert data == -(-500_000 // (1472 - wire.HEADER_BYTES))


def test_the_pacing_schedule_lets_a_burst_through_and_holds_the_long_run_rate_exactly():
    """The sender's schedule (ddc/_core/pacing.pxd), driven without a socket or a clock: a burst leaves at
    once, then each batch waits its share of the rate, and late wake-ups shorten the next wait, never the rate."""
    from ddc._core.pacing import PacingSchedule

    schedule = PacingSchedule(1e9, 64_000, least_burst_bytes=2 * 8972)  # 1 GB/s: a byte a nanosecond
    schedule.start_at(0.0)
    assert schedule.burst_bytes == 64_000
    assert [schedule.delay_ns(8_000, 0.0) <= 0 for _ in range(8)] == [True] * 8, "a whole burst leaves at once"
    assert schedule.delay_ns(8_000, 0.0) == 8_000, "beyond the burst, a batch waits its bytes at the rate"
    now, sent = 0.0, 0
    for batch in range(10_000):
        delay = schedule.delay_ns(8_000, now)
        now += max(delay, 0.0) + (3_000 if batch % 7 == 0 else 0)  # some wake-ups come 3 µs late
        sent += 8_000
    assert abs((sent - 72_000) / now - 1.0) < 1e-3, "the long-run rate stays exact"
    assert PacingSchedule(1e9, 1_000, least_burst_bytes=2 * 8972).burst_bytes == 2 * 8972
    assert PacingSchedule(0.0, 64_000).delay_ns(10**9, 0.0) == 0, "no rate: never a wait"
