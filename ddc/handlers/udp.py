"""UDP streams (syslog, StatsD, telemetry): one datagram in, one record, one datagram out.

The record metadata is the sender's address as ASCII "host:port", kept so that
logs and later filters can name where a datagram came from.
"""

import errno
import logging
import select
import socket

from ddc.handlers.base import Sink, Source
from ddc.transport.sockets import KernelDrops, open_bound, resolve, set_buffer

log = logging.getLogger("ddc.handlers.udp")

MAX_DATAGRAM = 65535
DATAGRAMS_PER_BURST = 512
MAX_SEND_RETRIES = 100


def format_address(address) -> bytes:
    host, port = address[0], address[1]
    return (f"[{host}]:{port}" if ":" in host else f"{host}:{port}").encode("ascii")


class UdpSource(Source):
    default_when_full = "drop"

    def open(self) -> None:
        self.socket = open_bound(self.config.listen, receive_buffer=self.config.receive_buffer)
        self.socket.setblocking(False)
        self.datagrams_received = 0
        self.bytes_received = 0
        self.datagrams_dropped = 0
        self.kernel_drops = KernelDrops(self.socket)

    def run(self, output, stopping) -> None:
        poller = select.poll()
        poller.register(self.socket, select.POLLIN)
        receive = self.socket.recvfrom
        while not stopping.is_set():
            if not poller.poll(100):
                continue
            burst = []
            try:
                while len(burst) < DATAGRAMS_PER_BURST:
                    payload, address = receive(MAX_DATAGRAM)
                    burst.append((format_address(address), payload))
            except BlockingIOError:
                pass
            except OSError as error:
                log.warning(f"link {self.link_name}: UDP source receive failed: {error.strerror}",
                            extra={"fields": {"link": self.link_name, "errno": error.errno}})
            if burst:
                self.datagrams_received += len(burst)
                self.bytes_received += sum(len(value) for _, value in burst)
                self.datagrams_dropped += len(burst) - output.put_many(burst)

    def close(self) -> None:
        self.kernel_drops.read()
        self.socket.close()

    def healthy(self) -> bool:
        return self.socket.fileno() >= 0

    def coordinates(self, metadata: bytes) -> dict:
        return {"source_address": metadata.decode("ascii", "replace")}

    def counters(self) -> dict:
        return {"source_datagrams_received": self.datagrams_received,
                "source_bytes_received": self.bytes_received,
                "source_datagrams_dropped": self.datagrams_dropped,
                "source_kernel_drops": self.kernel_drops.read()}


class UdpSink(Sink):
    def open(self) -> None:
        family, self.target = resolve(self.config.target)
        self.socket = socket.socket(family, socket.SOCK_DGRAM)
        set_buffer(self.socket, "send", self.config.send_buffer)
        self.datagrams_sent = 0
        self.bytes_sent = 0
        self.send_errors = 0
        self.records_too_large = 0

    def write(self, records) -> None:
        for _, value in records:
            if len(value) > MAX_DATAGRAM - 28:
                self.records_too_large += 1
                log.warning(f"link {self.link_name}: record of {len(value)} bytes is too large for one UDP datagram",
                            extra={"fields": {"link": self.link_name, "bytes": len(value)}})
                continue
            if self._send(value):
                self.datagrams_sent += 1
                self.bytes_sent += len(value)

    def _send(self, value) -> bool:
        for _ in range(MAX_SEND_RETRIES):
            try:
                self.socket.sendto(value, self.target)
                return True
            except OSError as error:
                if error.errno in (errno.ENOBUFS, errno.EAGAIN):
                    select.select([], [self.socket], [], 0.01)
                    continue
                self.send_errors += 1
                log.warning(f"link {self.link_name}: UDP sink send to {self.config.target} failed: {error.strerror}",
                            extra={"fields": {"link": self.link_name, "errno": error.errno}})
                return False
        self.send_errors += 1
        return False

    def close(self) -> None:
        self.socket.close()

    def counters(self) -> dict:
        return {"sink_datagrams_sent": self.datagrams_sent, "sink_bytes_sent": self.bytes_sent,
                "sink_send_errors": self.send_errors, "sink_records_too_large": self.records_too_large}
