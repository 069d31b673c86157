"""Test traffic: paced UDP senders, payload generators and a collecting receiver."""

import collections
import hashlib
import os
import random
import socket
import threading
import time


class Collector(threading.Thread):
    """Drains the egress target socket and keeps a multiset of payload digests."""

    def __init__(self, sock):
        super().__init__(daemon=True)
        self.socket = sock
        self.socket.settimeout(0.2)
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
