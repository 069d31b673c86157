"""Test traffic: paced UDP senders, payload generators, a collecting receiver, and what the real sender puts on
the wire."""

import collections
import hashlib
import os
import random
import socket
import struct
import threading
import time


class Collector(threading.Thread):
    """Drains the egress target socket and keeps a multiset of payload digests; kernel_drops counts what its own
    socket dropped, so that a short count on a loaded machine is not blamed on DDC."""

    def __init__(self, sock):
        from ddc.transport.sockets import KernelDrops

        super().__init__(daemon=True)
        self.socket = sock
        self.socket.settimeout(0.2)
        self.kernel_drops = KernelDrops(sock)
        self.digests = collections.Counter()
        self.count = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                data = self.socket.recv(65535)
            except socket.timeout:
                continue
            self.received(data)
            self.count += 1

    def received(self, data: bytes) -> None:
        self.digests[hashlib.blake2b(data, digest_size=16).digest()] += 1

    def wait_for(self, count, timeout):
        deadline = time.monotonic() + timeout
        while self.count < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.count


def send_paced(port, payloads, bytes_per_second):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    started = time.monotonic()
    sent_bytes = 0
    for payload in payloads:
        while sent_bytes > (time.monotonic() - started) * bytes_per_second:
            time.sleep(0.0002)
        sock.sendto(payload, ("127.0.0.1", port))
        sent_bytes += len(payload) + 28
    sock.close()


def random_payloads(count, max_size, seed):
    chooser = random.Random(seed)
    noise = os.urandom(1 << 17)
    payloads = []
    for index in range(count):
        size = chooser.randint(1, max_size)
        offset = chooser.randrange(0, len(noise) - size)
        payload = bytearray(noise[offset:offset + size])
        payload[:min(size, 8)] = index.to_bytes(8, "big")[:min(size, 8)]
        payloads.append(bytes(payload))
    return payloads


def sent_datagrams(items, datagram_size=1472, protect=None, key=None, key_id=3, session_id=(1 << 32) | 5) -> list:
    """What a DatagramSender puts on the wire for these items, read back from a loopback socket: frames, (type,
    payload) control datagrams, or an int, the key epoch to rekey to."""
    from ddc._core.sender import DatagramSender
    from ddc.crypto import load_sealing_library

    receiving = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiving.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    receiving.bind(("127.0.0.1", 0))
    sending = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    address = struct.pack("=HH4s8x", socket.AF_INET, socket.htons(receiving.getsockname()[1]),
                          socket.inet_aton("127.0.0.1"))
    sender = DatagramSender(sending.fileno(), address, session_id, datagram_size)
    if key:
        load_sealing_library()
        sender.encrypt_with(key, key_id)
    if protect:
        sender.protect_with(*protect)
    out = []
    receiving.setblocking(False)
    for item in items:
        if isinstance(item, int):
            sender.rekey(item, key)
        elif isinstance(item, tuple):
            sender.send_control(*item)
        else:
            sender.send_frame(item)
        while True:
            try:
                out.append(receiving.recv(65536))
            except BlockingIOError:
                break
    receiving.close()
    sending.close()
    if len(out) != sender.counters()["datagrams_sent"]:
        raise RuntimeError("the loopback socket lost datagrams")
    return out
