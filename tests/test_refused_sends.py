"""Frames the kernel refuses (#21), tried as a firewall or a flapping route would: the frame goes out once it
can, under the right key, and a one-shot transfer still ends whole. Each test failed on 8075054 (review of #21).

The refusal is a real one: datagrams to 127.255.255.255, loopback's broadcast address, are refused (EACCES) while
the socket's SO_BROADCAST is off and delivered on loopback once it is on; nothing leaves the host."""

import os
import socket
import struct
import threading
import time

import pytest

from ddc._core import wire
from ddc._core.receiver import LinkReceiver
from ddc._core.records import decode_batch, encode_batch
from ddc._core.sender import DatagramSender
from ddc.config import load_settings
from test_session_attacks import KEY, ingress_link

KEEP: list = []  # sockets whose descriptors a DatagramSender uses


def route(link, up: bool) -> None:
    if link._socket.fileno() >= 0:
        link._socket.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, int(up))


def egress_receives(listening, receiver) -> list[bytes]:
    frames = []
    while True:
        try:
            datagram = listening.recv(65536)
        except BlockingIOError:
            return frames
        frames += [bytes(frame) for frame in receiver.feed(datagram)]


# ---- a segment above the path MTU: EMSGSIZE, not EINVAL ----

def default_route_mtu():
    """(interface, MTU) of the IPv4 default route, or None."""
    try:
        with open("/proc/net/route") as table:
            for line in list(table)[1:]:
                fields = line.split()
                if fields[1] == "00000000":
                    return fields[0], int(open(f"/sys/class/net/{fields[0]}/mtu").read())
    except OSError:
        return None
    return None


def sender_beyond_the_default_route(datagram_size):
    """A DatagramSender to 203.0.113.1 (TEST-NET-3, documentation only: nothing answers there) out of the
    default route: that route's MTU, not loopback's 64 KiB, is what the kernel checks a segmented send against."""
    sending = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    KEEP.append(sending)
    address = struct.pack("=HH4s8x", socket.AF_INET, socket.htons(9), socket.inet_aton("203.0.113.1"))
    return DatagramSender(sending.fileno(), address, 5, datagram_size)


def test_a_segment_above_the_path_mtu_falls_back_to_a_datagram_per_message():
    """docs/configuration.md promises a fallback to a datagram per message for a datagram_size above the path
    MTU (the default 1472 on a 1400-byte VPN or overlay): Linux refuses such a segmented run with EMSGSIZE,
    which the sender did not fall back on, so a Kafka or file link resent its first frame for ever."""
    route_mtu = default_route_mtu()
    if route_mtu is None or route_mtu[1] + 100 > 65507:
        pytest.skip("no default route with an MTU below 64 KiB")
    interface, mtu = route_mtu
    size = mtu - 28 + 72
    sender = sender_beyond_the_default_route(size)
    if not sender.segmentation_offload:
        pytest.skip("this kernel has no UDP segmentation offload")
    sender.send_frame(os.urandom((size - wire.HEADER_BYTES) * 4))  # four full datagrams
    assert not sender.segmentation_offload
    assert sender.datagrams_failed == 0, (
        f"{sender.datagrams_failed} of {sender.counters()['datagrams_sent']} datagrams refused "
        f"({sender.last_send_error}); segmentation_offload still {sender.segmentation_offload}")


# ---- a snapshot restored while the ingress waits to resend ----

def test_a_frame_resent_after_a_clock_jump_is_not_sealed_under_the_old_key(tmp_path, monkeypatch):
    """A snapshot restored during the resend pause (up to 5 s per attempt) must not have the frame resent under
    the old key epoch (AES-GCM nonce reuse with the other copy): the clock is checked again before the resend."""
    (tmp_path / "in.bin").write_bytes(b"")
    link, _ = ingress_link(tmp_path, file_source=tmp_path / "in.bin")
    listening = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listening.bind(("0.0.0.0", 0))
    listening.setblocking(False)
    sending = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no SO_BROADCAST yet: refused (EACCES)
    address = struct.pack("=HH4s8x", socket.AF_INET, socket.htons(listening.getsockname()[1]),
                          socket.inet_aton("127.255.255.255"))
    link.sender = DatagramSender(sending.fileno(), address, link.session_id, 1472)
    link.sender.encrypt_with(KEY, 3)
    first = link.session_id
    real_time = time.time

    class RestoredWhileWaiting:
        """The pause: snapshot restored (clock jumps), route back."""

        def wait(self, seconds):
            monkeypatch.setattr(time, "time", lambda: real_time() + 3600)
            sending.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            return False

        def is_set(self):
            return False

    link._abandoning = RestoredWhileWaiting()
    link._rekey_if_due()  # what the transport loop does before and after take()
    assert link._send_until_it_leaves(encode_batch([(struct.pack(">Q", 0), b"resent")], 0), None, 1)
    link._rekey_if_due()  # the next frame: too late for the one just sent
    data = []
    while True:
        try:
            datagram = wire.decode_datagram(listening.recv(65536))
        except BlockingIOError:
            break
        if datagram["type"] == wire.TYPE_DATA:
            data.append(datagram)
    listening.close()
    sending.close()
    assert link.rekeys == 1 and link.session_id != first
    assert data and data[0]["session_id"] == link.session_id, (
        f"the frame resent after the clock jump went out under the old key epoch {data[0]['session_id']:016x} "
        f"at sequence {data[0]['sequence']}")


def test_a_file_crosses_whole_when_the_route_comes_back_after_a_moment(tmp_path):
    """A 0.3 s refusal (SO_BROADCAST set later) while the link drains a file already read into the ring (the
    supervisor's stop after the source finished): the drain waits for the route, the whole file and the
    shutdown cross, and the stop is clean. It once gave up at the first refusal, sent no shutdown, and said
    clean."""
    from ddc.ingress import IngressLink

    listening = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    listening.bind(("0.0.0.0", 0))
    listening.setblocking(False)
    data = os.urandom(1 << 20)
    (tmp_path / "in.bin").write_bytes(data)
    config = tmp_path / "ingress.toml"
    config.write_text(f"""
role = "ingress"
[links.a.source]
type = "file"
path = "{tmp_path / 'in.bin'}"
chunk_size = "64KiB"
[links.a.transport]
destination = "127.255.255.255:{listening.getsockname()[1]}"
datagram_size = 1200
rate = "100Mbit/s"
""")
    link = IngressLink("a", load_settings(config).links["a"])
    link.start()
    assert link.finished.wait(5.0)  # the file is in the ring: the supervisor now stops the link
    threading.Timer(0.3, route, (link, True)).start()
    clean = link.stop()
    receiver = LinkReceiver()
    time.sleep(0.2)
    frames = egress_receives(listening, receiver)
    listening.close()
    shutdowns = receiver.counters()["shutdowns_received"]
    assert link.records_sent == 16 and shutdowns > 0, (
        f"{link.records_sent} of 16 chunks sent, {shutdowns} shutdowns; stop() said clean={clean}")
    assert clean and link.frames_resent > 0
    assert b"".join(bytes(value) for frame in frames for _, value in decode_batch(frame)) == data
