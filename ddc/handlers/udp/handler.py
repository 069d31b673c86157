"""UDP streams (syslog, StatsD, telemetry): one datagram in, one record, one datagram out.

The record metadata is the sender's address as ASCII "host:port" ("[host]:port"
for IPv6), kept so that logs and later filters can name where a datagram came
from. The source receives in C straight into the link's record ring.
"""

import logging
import os
import socket

from ddc._core.wire import MAX_DATAGRAM_BYTES as MAX_PAYLOAD
from ddc.handlers.base import Sink, Source
from ddc.handlers.udp.datagrams import DatagramReceiver, send_batch_values, send_values
from ddc.transport.sockets import KernelDrops, open_bound, resolve, set_buffer, socket_address_bytes

log = logging.getLogger("ddc.handlers.udp")

POLL_SECONDS = 0.1  # how often a quiet source looks at whether it should stop


class UdpSource(Source):
    default_when_full = "drop"

    def open(self) -> None:
        self.socket = open_bound(self.config.listen, receive_buffer=self.config.receive_buffer)
        self.socket.setblocking(False)
        self.datagrams_received = 0
        self.bytes_received = 0
        self.datagrams_dropped = 0
        self.kernel_drops = KernelDrops(self.socket)
        self.receiver = DatagramReceiver()

    def run(self, output, stopping) -> None:
        """Drains the socket straight into the link's ring (recvmmsg in datagrams.pyx)."""
        descriptor = self.socket.fileno()
        while not stopping.is_set():
            try:
                datagrams, size, dropped = self.receiver.receive(output, descriptor, POLL_SECONDS)
            except OSError as error:
                log.warning(f"link {self.link_name}: UDP source receive failed: {error.strerror}",
                            extra={"fields": {"link": self.link_name, "errno": error.errno}})
                stopping.wait(POLL_SECONDS)
                continue
            self.datagrams_received += datagrams
            self.bytes_received += size
            self.datagrams_dropped += dropped

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
    takes_value_views = True  # values go out from the received frame with sendmmsg (datagrams.pyx)
    takes_batches = True

    def open(self) -> None:
        family, target = resolve(self.config.target)
        self.address = socket_address_bytes(family, target)
        self.socket = socket.socket(family, socket.SOCK_DGRAM)
        set_buffer(self.socket, "send", self.config.send_buffer)
        self.datagrams_sent = 0
        self.bytes_sent = 0
        self.send_errors = 0
        self.records_too_large = 0

    def write(self, records) -> None:
        self._account(*send_values(self.socket.fileno(), [value for _, value in records], self.address,
                                   MAX_PAYLOAD))

    def write_batch(self, batch) -> int:
        count, *outcome = send_batch_values(self.socket.fileno(), batch, self.address, MAX_PAYLOAD)
        self._account(*outcome)
        return count

    def _account(self, sent: int, size: int, too_large: int, failed: int, error: int) -> None:
        self.datagrams_sent += sent
        self.bytes_sent += size
        if too_large:
            self.records_too_large += too_large
            log.warning(f"link {self.link_name}: {too_large} records larger than one UDP datagram "
                        f"({MAX_PAYLOAD} bytes) were not sent", extra={"fields": {"link": self.link_name,
                                                                                    "records": too_large}})
        if failed:
            self.send_errors += failed
            log.warning(f"link {self.link_name}: UDP sink send to {self.config.target} failed for {failed} "
                        f"datagrams: {os.strerror(error)}",
                        extra={"fields": {"link": self.link_name, "errno": error, "datagrams": failed}})

    def close(self) -> None:
        self.socket.close()

    def counters(self) -> dict:
        return {"sink_datagrams_sent": self.datagrams_sent, "sink_bytes_sent": self.bytes_sent,
                "sink_send_errors": self.send_errors, "sink_records_too_large": self.records_too_large}
