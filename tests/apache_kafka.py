"""A real Apache Kafka 4.x broker for the tests: one JVM, combined KRaft controller and broker, on loopback.

Why: the Kafka tests run against Tansu (tests/kafka_harness.py), a Kafka-compatible broker that is small
and quick but is not Kafka: its group coordinator, its Metadata answers and its storage differ. This
runs the broker that production runs, so a test can check DDC against it (issue #21), and, as Kafka
keeps its log on disk, kill it with SIGKILL and start it again on the same data.

How: `tests/apache_kafka/fetch.sh` (the Makefile's `apache-kafka` target) has Maven copy
org.apache.kafka:kafka_2.13 and every jar it needs at run time from Maven Central into
build/apache-kafka/lib (about 45 MB); nothing is built. `ApacheKafkaBroker` writes a server.properties
for free loopback ports (a PLAINTEXT listener for clients, a CONTROLLER listener for KRaft), formats a
storage directory once (`kafka.tools.StorageTool format --standalone`: a single-node dynamic quorum),
runs `java -cp 'lib/*' kafka.Kafka server.properties` with a small heap, and waits until a Metadata
request names the broker and the group coordinator answers (4.5 s from a new directory on this 2-core
machine, 4 s after a SIGTERM, 7 s after a SIGKILL; about 300 MB resident). The JVM gets SIGKILL should
the Python process that started it die first. DDC_APACHE_KAFKA_LIB names another jar directory
instead, such as the libs/ of an Apache Kafka distribution.
"""

import base64
import ctypes
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from ddc.transport.sockets import free_tcp_port

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LIB = ROOT / "build" / "apache-kafka" / "lib"
FETCHED_STAMP = ".fetched"  # written by tests/apache_kafka/fetch.sh once every jar is in place
FETCH_COMMAND = "tests/apache_kafka/fetch.sh (make apache-kafka)"

# Fast start-up over peak speed: a test broker lives for seconds to minutes and carries little data.
JVM_OPTIONS = ("-Xms64m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true")

LOG4J_CONFIG = """\
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
# Every client and config object prints all its settings at INFO.
logger.config.name = org.apache.kafka.common.config
logger.config.level = WARN
"""


def java_binary() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def java_major(java: str) -> int | None:
    try:
        shown = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', shown)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def apache_kafka_classpath() -> tuple[Path | None, str]:
    """(the directory of Kafka's jars, "") when a broker can run here, else (None, why not)."""
    named = os.environ.get("DDC_APACHE_KAFKA_LIB")
    lib = Path(named) if named else DEFAULT_LIB
    if named:
        if not list(lib.glob("kafka_2.13-*.jar")):
            return None, f"DDC_APACHE_KAFKA_LIB={named} holds no kafka_2.13-*.jar"
    elif not (lib / FETCHED_STAMP).exists():
        return None, f"Apache Kafka's jars are not fetched into {lib}: run {FETCH_COMMAND}"
    java = java_binary()
    if java is None:
        return None, "no java (Apache Kafka 4.x needs Java 17 or newer): set JAVA_HOME or put java on PATH"
    major = java_major(java)
    if major is None or major < 17:
        return None, f"{java} is Java {major}; Apache Kafka 4.x needs Java 17 or newer (set JAVA_HOME)"
    return lib, ""


def new_cluster_id() -> str:
    """A Kafka Uuid as Kafka prints one: 22 characters of URL-safe base64 (never starting with '-')."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


class ApacheKafkaBroker:
    """An Apache Kafka process: a single-node KRaft cluster whose log is data_dir (kept when it stops).

    Like TansuBroker it starts in its constructor and has `bootstrap` ("127.0.0.1:port"), `port`,
    `process`, `start()` and `stop()`; `kill()` is SIGKILL, and `start()` after `stop()` or `kill()` runs
    it again on the same ports and the same data. `properties` adds to or overrides server.properties."""

    def __init__(self, lib: str | Path, log_path: Path, data_dir: Path | None = None, *,
                 port: int | None = None, controller_port: int | None = None, heap: str = "512m",
                 properties: dict | None = None, start_timeout: float = 120.0):
        self.lib, self.log_path = Path(lib), Path(log_path)
        self.port = port or free_tcp_port()
        self.controller_port = controller_port or free_tcp_port()
        while self.controller_port == self.port:
            self.controller_port = free_tcp_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.data_dir = Path(data_dir) if data_dir else self.log_path.parent / f"kafka-{self.port}"
        self.config_dir = self.data_dir.parent / f"{self.data_dir.name}-config"
        self.heap, self.start_timeout = heap, start_timeout
        self.java = java_binary() or "java"
        self.process: subprocess.Popen | None = None
        self.log_file = None
        self.start_seconds: float | None = None
        self._write_config(properties or {})
        self.format()
        self.start()

    def _write_config(self, extra: dict) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        plain, controller = f"127.0.0.1:{self.port}", f"127.0.0.1:{self.controller_port}"
        properties = {
            "process.roles": "broker,controller",
            "node.id": 1,
            "listeners": f"PLAINTEXT://{plain},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{plain},CONTROLLER://{controller}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.quorum.bootstrap.servers": controller,
            "log.dirs": str(self.data_dir),
            "num.partitions": 1,
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": 1,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            # One partition each instead of 50: quicker to create and to load after a restart, and once one
            # group's coordinator answers, every group's does (wait_until_ready). Clients see no difference.
            "offsets.topic.num.partitions": 1,
            "transaction.state.log.num.partitions": 1,
            # After a SIGKILL the restarted broker's registration is refused (DUPLICATE_BROKER_REGISTRATION)
            # until the controller's session for the dead one runs out: 9 s by default, 4 s here.
            "broker.session.timeout.ms": 4000,
            "broker.heartbeat.interval.ms": 500,
            # The tests' records carry timestamps of 2023 (varied_records): with the default 7-day retention the
            # broker deletes them within minutes, and a rewind to offset 0 lands below the log start.
            "log.retention.ms": -1,
            **extra,
        }
        self.properties = properties
        self.config_path = self.config_dir / "server.properties"
        self.config_path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
        self.log4j_path = self.config_dir / "log4j2.properties"
        self.log4j_path.write_text(LOG4J_CONFIG)

    def _java(self, main: str, *arguments: str) -> list[str]:
        return [self.java, f"-Xmx{self.heap}", *JVM_OPTIONS, f"-Dlog4j2.configurationFile={self.log4j_path}",
                "-cp", str(self.lib / "*"), main, *arguments]

    @property
    def formatted(self) -> bool:
        return (self.data_dir / "meta.properties").exists()

    @property
    def cluster_id(self) -> str | None:
        """The cluster id that format() wrote into data_dir."""
        if not self.formatted:
            return None
        found = re.search(r"^cluster\.id=(\S+)$", (self.data_dir / "meta.properties").read_text(), re.MULTILINE)
        return found.group(1) if found else None

    def format(self) -> None:
        """Formats data_dir as a new single-node cluster, unless it already holds one."""
        if self.formatted:
            return
        with open(self.log_path, "ab") as log:
            result = subprocess.run(self._java("kafka.tools.StorageTool", "format", "--config",
                                               str(self.config_path), "--cluster-id", new_cluster_id(),
                                               "--standalone"),
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=120)
        if result.returncode != 0 or not self.formatted:
            raise RuntimeError(f"formatting {self.data_dir} failed ({result.returncode}); see {self.log_path}")

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "the broker is running"
        began = time.monotonic()
        self.log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(self._java("kafka.Kafka", str(self.config_path)),
                                        stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=self.log_file,
                                        preexec_fn=_die_with_parent)
        self.wait_until_ready(self.start_timeout)
        self.start_seconds = time.monotonic() - began

    def wait_until_ready(self, timeout: float) -> None:
        """Until a Metadata request answers with this broker in it (it then serves produce and fetch), and
        then until the group coordinator answers an OffsetFetch: on a new broker the first FindCoordinator
        creates __consumer_offsets, and until it is loaded (after a restart too) a commit fails with
        NOT_COORDINATOR or COORDINATOR_LOAD_IN_PROGRESS, which librdkafka does not retry for commits."""
        deadline = time.monotonic() + timeout
        # log_level 0: librdkafka's "connection refused" lines while the broker starts are expected.
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        while not self._answers(lambda: admin.list_topics(timeout=1).brokers, deadline):
            time.sleep(0.1)
        probe = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "apache-kafka-harness-ready",
                          "log_level": 0})
        try:
            while not self._answers(lambda: probe.committed([TopicPartition("apache-kafka-harness-ready", 0)],
                                                            timeout=2), deadline):
                time.sleep(0.1)
        finally:
            probe.close()

    def _answers(self, request, deadline: float) -> bool:
        if self.process.poll() is not None:
            self._closed()
            raise RuntimeError(f"Apache Kafka exited with {self.process.returncode}; see {self.log_path}")
        if time.monotonic() > deadline:
            self.kill()
            raise RuntimeError(f"Apache Kafka was not ready within {self.start_timeout} s; see {self.log_path}")
        try:
            return bool(request())
        except KafkaException:  # transport failure, time-out, a coordinator still loading
            return False

    def stop(self, timeout: float = 30.0) -> int:
        """A controlled shutdown (SIGTERM), then SIGKILL if it takes longer than timeout; its exit code
        (143 after a controlled shutdown, as for any JVM ended by SIGTERM; -9 if it had to be killed)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._closed()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: no controlled shutdown, no flush; the next start recovers the log from data_dir."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._closed()

    def restart(self, hard: bool = True) -> None:
        """Kills (hard) or stops the broker and starts it again on the same ports and data."""
        self.kill() if hard else self.stop()
        self.start()

    def rss_bytes(self) -> int | None:
        """Resident memory of the broker's JVM now, or None when it is not running."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except (OSError, AttributeError):
            return None
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        return int(found.group(1)) * 1024 if found else None

    def _closed(self) -> None:
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies (prctl PR_SET_PDEATHSIG, Linux), so
    that a crashed or killed test run leaves no broker behind."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
