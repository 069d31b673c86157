"""A UDP relay between ingress and egress that drops the datagrams of chosen frames."""

import socket
import threading

from ddc._core import wire


class FrameDroppingRelay(threading.Thread):
    """Forwards every datagram from its port to `target`, except data datagrams of frames `should_drop` picks."""

    def __init__(self, target_port: int, should_drop=lambda frame_id: False):
        super().__init__(daemon=True)
        self.should_drop = should_drop
        self.target = ("127.0.0.1", target_port)
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.sending = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.dropped_frames: set[int] = set()
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            try:
                data = self.socket.recv(65535)
            except socket.timeout:
                continue
            try:
                header = wire.decode_datagram(data)
            except ValueError:
                header = None
            if header and header["type"] == wire.DATA and self.should_drop(header["frame_id"]):
                self.dropped_frames.add(header["frame_id"])
                continue
            self.sending.sendto(data, self.target)

    def close(self):
        self.stopping.set()
        self.join(2)
        self.socket.close()
        self.sending.close()
