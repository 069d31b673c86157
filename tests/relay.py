"""A UDP relay between ingress and egress that drops the datagrams of chosen frames and can keep copies."""

import socket
import threading

from ddc._core import wire
from ddc.transport.sockets import set_buffer


class FrameDroppingRelay(threading.Thread):
    """Forwards every datagram from its port to `target`, except data datagrams of frames `should_drop` picks."""

    def __init__(self, target_port: int, should_drop=lambda frame_id: False, keep: int = 0):
        """keep: how many of the first datagrams to copy into `kept`, for replaying them later."""
        super().__init__(daemon=True)
        self.should_drop = should_drop
        self.target = ("127.0.0.1", target_port)
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        set_buffer(self.socket, "receive", 32 << 20)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.sending = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.dropped_frames: set[int] = set()
        self.keep = keep
        self.kept: list[bytes] = []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            try:
                data = self.socket.recv(65535)
            except socket.timeout:
                continue
            if len(self.kept) < self.keep:
                self.kept.append(data)
            try:
                header = wire.decode_datagram(data)
            except ValueError:
                header = None
            if header and header["type"] == wire.TYPE_DATA and self.should_drop(header["frame_id"]):
                self.dropped_frames.add(header["frame_id"])
                continue
            self.sending.sendto(data, self.target)

    def close(self):
        self.stopping.set()
        self.join(2)
        self.socket.close()
        self.sending.close()
