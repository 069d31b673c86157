"""`ddc doctor [FILE]`: checks this machine against what a config asks of it.

Each finding prints the exact command that fixes it. The checks are the ones
that silently cost data on a one-way link: socket buffers capped below what the
config asks for, datagrams larger than the route's MTU (IP fragmentation turns
one lost fragment into a lost datagram), a slow clock source (pacing reads
the clock for every batch), and, where a link has a key, a sealing library that
is missing or slower than the other one installed.
"""

import socket
import subprocess
from pathlib import Path

from ddc.config.links import IngressSettings

GOOD_CLOCKSOURCES = ("tsc", "arch_sys_counter", "kvm-clock")
IP_UDP_OVERHEAD = {socket.AF_INET: 28, socket.AF_INET6: 48}


SYSCTL_FILE = "/etc/sysctl.d/90-ddc.conf"


class Finding:
    def __init__(self, ok: bool, message: str, fixes: tuple[str, ...] = (), sysctl: tuple[str, int] | None = None):
        self.ok = ok
        self.message = message
        self.fixes = fixes
        self.sysctl = sysctl  # (name, the least value that fixes it), for one merged sysctl file

    def __str__(self):
        lines = [f"{'ok  ' if self.ok else 'WARN'}  {self.message}"]
        lines += [f"      fix: {fix}" for fix in self.fixes]
        return "\n".join(lines)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def check_buffer(direction: str, requested: int, where: str) -> Finding:
    sysctl = "net.core.rmem_max" if direction == "receive" else "net.core.wmem_max"
    cap_text = _read(f"/proc/sys/net/core/{sysctl.rsplit('.', 1)[1]}")
    if cap_text is None:
        return Finding(True, f"{where}: cannot read {sysctl}; skipped")
    cap = int(cap_text)
    if requested <= cap:
        return Finding(True, f"{where}: {direction} buffer {requested} bytes is within {sysctl} = {cap}")
    return Finding(False, f"{where}: asks for a {direction} buffer of {requested} bytes but {sysctl} = {cap} "
                          "(only root or CAP_NET_ADMIN gets more)", sysctl=(sysctl, requested))


def route_mtu(host: str) -> tuple[str, int] | None:
    try:
        family, _, _, _, address = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)[0]
        route = subprocess.run(["ip", "-o", "route", "get", address[0]], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError, socket.gaierror):
        return None
    words = route.stdout.split()
    if "dev" not in words:
        return None
    device = words[words.index("dev") + 1]
    mtu = _read(f"/sys/class/net/{device}/mtu")
    return (device, int(mtu)) if mtu else None


def check_mtu(link: str, destination, datagram_size: int) -> Finding:
    found = route_mtu(destination.host)
    if found is None:
        return Finding(True, f"link {link}: cannot tell the route MTU to {destination}; skipped")
    device, mtu = found
    overhead = IP_UDP_OVERHEAD[socket.AF_INET6 if ":" in destination.host else socket.AF_INET]
    if datagram_size + overhead <= mtu:
        return Finding(True, f"link {link}: datagram_size {datagram_size} fits the MTU {mtu} of {device}")
    return Finding(False, f"link {link}: datagram_size {datagram_size} + {overhead} header bytes exceeds the MTU {mtu} "
                          f"of {device} towards {destination}; the kernel fragments every datagram and one lost "
                          "fragment loses all of it",
                   (f"set links.{link}.transport.datagram_size = {mtu - overhead}",
                    f"or raise the MTU on both sides of the diode: ip link set dev {device} mtu 9000"))


def check_clocksource() -> Finding:
    current = _read("/sys/devices/system/clocksource/clocksource0/current_clocksource")
    if current is None:
        return Finding(True, "clock source: cannot read it; skipped")
    if current in GOOD_CLOCKSOURCES:
        return Finding(True, f"clock source {current} is fast to read")
    available = (_read("/sys/devices/system/clocksource/clocksource0/available_clocksource") or "").split()
    better = next((name for name in GOOD_CLOCKSOURCES if name in available), None)
    fixes = (f"echo {better} > /sys/devices/system/clocksource/clocksource0/current_clocksource",) if better else ()
    return Finding(False, f"clock source {current} is slow to read, which makes pacing coarse and costly", fixes)


def check_port(where: str, endpoint, what: str, kind: int = socket.SOCK_DGRAM) -> Finding:
    """Whether endpoint can be bound (UDP, or TCP for the telemetry server); where names its place in the config."""
    try:
        family, _, _, _, address = socket.getaddrinfo(endpoint.host, endpoint.port, type=kind,
                                                      flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind) as probe:
            probe.bind(address)
    except OSError as error:
        flag = "u" if kind == socket.SOCK_DGRAM else "t"
        return Finding(False, f"{where}: cannot bind the {what} {endpoint}: {error.strerror or error} "
                              "(another process, perhaps a running ddc, holds it)",
                       (f"ss -{flag}lpn 'sport = :{endpoint.port}'   # shows who holds it",))
    return Finding(True, f"{where}: {what} {endpoint} is free")


def check_sealing(preference: str) -> Finding:
    from ddc import crypto
    speeds = crypto.sealing_speeds()
    usable = {name: rate for name, rate in speeds.items() if not isinstance(rate, str)}
    chosen = next((name for name in (crypto.SEALING_ORDER if preference == "auto" else (preference,))
                   if name in usable), None)
    found = "; ".join(f"{name} {rate / 1e9:.2f} GB/s" if name in usable else rate for name, rate in speeds.items())
    if chosen is None:
        return Finding(False, f"sealing_library = {preference!r}: no usable library ({found})",
                       (f"install one: {crypto.PACKAGES}",))
    fastest = max(usable, key=usable.get)
    if fastest != chosen and usable[fastest] > 1.2 * usable[chosen]:
        return Finding(False, f"sealing with {chosen}, but {fastest} is faster here ({found})",
                       (f'set sealing_library = "{fastest}" at the top of the config',))
    return Finding(True, f"sealing with {chosen} ({found})")


def diagnose(settings=None) -> list[Finding]:
    findings = [check_clocksource()]
    if settings is not None and any(link.transport.key_configs for link in settings.links.values()):
        findings.append(check_sealing(settings.sealing_library))
    if settings is None:
        findings.append(check_buffer("receive", 32 << 20, "the default egress receive buffer"))
        findings.append(check_buffer("send", 8 << 20, "the default ingress send buffer"))
        return with_sysctl_fixes(findings)
    for name, link in settings.links.items():
        # Only a UDP source or sink has a socket buffer or a port of its own; a Kafka or file one has neither.
        if isinstance(settings, IngressSettings):
            if hasattr(link.source, "receive_buffer"):
                findings.append(check_buffer("receive", link.source.receive_buffer, f"link {name} source"))
            findings.append(check_buffer("send", link.transport.send_buffer, f"link {name} transport"))
            findings.append(check_mtu(name, link.transport.destination, link.transport.datagram_size))
            if hasattr(link.source, "listen"):
                findings.append(check_port(f"link {name}", link.source.listen, "source address"))
        else:
            findings.append(check_buffer("receive", link.transport.receive_buffer, f"link {name} transport"))
            if hasattr(link.sink, "send_buffer"):
                findings.append(check_buffer("send", link.sink.send_buffer, f"link {name} sink"))
            findings.append(check_port(f"link {name}", link.transport.listen, "listen address"))
    if settings.telemetry.http:
        findings.append(check_port("telemetry", settings.telemetry.http.listen, "HTTP address", socket.SOCK_STREAM))
    return with_sysctl_fixes(findings)


def with_sysctl_fixes(findings: list[Finding]) -> list[Finding]:
    """Each buffer finding's fix sets the largest value any finding needs, so that following the fixes in order
    never lowers a value again; the last finding lists them all as one file to keep after a reboot."""
    needed = {}
    for finding in findings:
        if finding.sysctl:
            name, value = finding.sysctl
            needed[name] = max(value, needed.get(name, 0))
    buffer_findings = [finding for finding in findings if finding.sysctl]
    for finding in buffer_findings:
        finding.fixes = (f"sysctl -w {finding.sysctl[0]}={needed[finding.sysctl[0]]}",)
    if buffer_findings:
        lines = "\\n".join(f"{name} = {value}" for name, value in sorted(needed.items()))
        buffer_findings[-1].fixes += (f"printf '{lines}\\n' > {SYSCTL_FILE}   # all of them, kept after a reboot",)
    return findings
