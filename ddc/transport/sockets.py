"""UDP sockets for links and handlers: address resolution, binding and kernel buffer sizes.

Buffer sizes matter more on a diode than anywhere else: a receive buffer that
overflows is loss nobody can ask to have repeated. We ask for what the config
says, with the privileged *BUFFORCE options first (they pass the sysctl cap when
running as root or with CAP_NET_ADMIN), read back what the kernel granted, and
warn with the exact command that lifts the cap.
"""

import logging
import os
import random
import socket
import struct
from pathlib import Path

log = logging.getLogger("ddc.transport")

_BUFFER_OPTIONS = {
    "receive": (socket.SO_RCVBUF, 33, "net.core.rmem_max"),  # 33 = SO_RCVBUFFORCE
    "send": (socket.SO_SNDBUF, 32, "net.core.wmem_max"),  # 32 = SO_SNDBUFFORCE
}


class AddressError(OSError):
    """An endpoint that cannot be resolved or bound; the message says which and why, errno the system's reason
    (None where there is none)."""

    def __init__(self, message: str, reason: int | None = None):
        super().__init__(message)
        self.errno = reason


def resolve(endpoint, *, passive: bool = False):
    """(family, sockaddr) for a host:port endpoint; the first address the resolver returns."""
    try:
        infos = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_DGRAM,
                                   flags=socket.AI_PASSIVE if passive else 0)
    except socket.gaierror as error:
        raise AddressError(f"cannot resolve {endpoint}: {error.strerror}", error.errno) from None
    family, _, _, _, address = infos[0]
    return family, address


def socket_address_bytes(family: int, address) -> bytes:
    """The C sockaddr_in / sockaddr_in6 the Cython sender passes to sendmmsg."""
    if family == socket.AF_INET:
        host, port = address
        return struct.pack("=H", family) + struct.pack(">H", port) + socket.inet_pton(family, host) + bytes(8)
    host, port, flowinfo, scope_id = address
    return (struct.pack("=H", family) + struct.pack(">HI", port, flowinfo)
            + socket.inet_pton(family, host.split("%")[0]) + struct.pack("=I", scope_id))


def set_buffer(sock: socket.socket, direction: str, requested: int) -> int:
    """Sets the receive or send buffer; returns the size the kernel granted (it reports double)."""
    option, force_option, sysctl = _BUFFER_OPTIONS[direction]
    try:
        sock.setsockopt(socket.SOL_SOCKET, force_option, requested)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, option, requested)
    granted = sock.getsockopt(socket.SOL_SOCKET, option) // 2
    if granted < requested:
        log.warning(
            f"kernel capped the {direction} buffer at {granted} bytes (asked for {requested}); "
            f"raise the cap with: sysctl -w {sysctl}={requested}",
            extra={"fields": {"requested_bytes": requested, "granted_bytes": granted, "sysctl": sysctl}})
    return granted


def open_bound(endpoint, *, receive_buffer: int | None = None, send_buffer: int | None = None):
    """A UDP socket bound to endpoint (a listening source or the egress transport)."""
    family, address = resolve(endpoint, passive=True)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if receive_buffer:
            set_buffer(sock, "receive", receive_buffer)
        if send_buffer:
            set_buffer(sock, "send", send_buffer)
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise AddressError(f"cannot listen on {endpoint}: {error.strerror}", error.errno) from None
    return sock


def open_sending(endpoint, *, send_buffer: int):
    """An unbound UDP socket for sending to endpoint, and the packed destination address.

    The socket is deliberately not connected: a connected UDP socket turns ICMP
    "port unreachable" into send errors, which a real diode never produces and
    which would only make loopback tests behave differently from production.
    """
    family, address = resolve(endpoint)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    set_buffer(sock, "send", send_buffer)
    return sock, address, socket_address_bytes(family, address)


_handed_out_ports: set[int] = set()
_port_chooser = random.Random()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_udp_port(host: str = "127.0.0.1", kind: int = socket.SOCK_DGRAM) -> int:
    """A UDP port (a TCP port with kind=SOCK_STREAM) nothing is bound to right now, for demos, benchmarks and
    tests on loopback.

    Chosen below the kernel's ephemeral range and never twice in one process: a port the kernel itself
    handed out (bind to port 0) is free again once the probe closes, and the next unbound `sendto` of any
    process may take it before the test's proxy binds it, which fails that proxy with "Address already in
    use".
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    low = min(_ephemeral_low(), 32768)
    for _ in range(200):
        port = _port_chooser.randrange(max(1024, low - 12000), low)
        if port in _handed_out_ports:
            continue
        try:
            for probe_kind in {kind, socket.SOCK_DGRAM, socket.SOCK_STREAM}:
                with socket.socket(family, probe_kind) as probe:
                    probe.bind((host, port))
        except OSError:
            continue
        _handed_out_ports.add(port)
        return port
    raise AddressError(f"no free port found below {low} on {host}; free some ports or widen the range")


def free_tcp_port(host: str = "127.0.0.1") -> int:
    return free_udp_port(host, socket.SOCK_STREAM)


class KernelDrops:
    """Datagrams the kernel dropped on a socket because its receive buffer was full.

    Read from /proc/net/udp[6] (the same counter SO_RXQ_OVFL reports), so it costs
    nothing per datagram. The last value read is kept, so the count survives the
    socket being closed for a final summary.
    """

    def __init__(self, sock: socket.socket | None = None):
        self.socket = sock
        self.last = 0

    def read(self) -> int:
        current = self._from_proc() if self.socket is not None else None
        if current is not None:
            self.last = current
        return self.last

    def _from_proc(self) -> int | None:
        try:
            inode = str(os.fstat(self.socket.fileno()).st_ino)
        except (OSError, ValueError):
            return None
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            try:
                with open(table) as rows:
                    next(rows)
                    for row in rows:
                        fields = row.split()
                        if len(fields) >= 13 and fields[9] == inode:
                            return int(fields[-1])
            except OSError:
                continue
        return None
