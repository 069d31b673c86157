"""The Kafka listener (#23): real producers write to a real `ddc run` ingress over the Kafka protocol, and a real
egress writes their records into a Tansu destination."""

import collections
import json
import socket
import threading
import time
import uuid

import pytest
from confluent_kafka import Producer

from ddc.transport.sockets import free_tcp_port, free_udp_port
from kafka_harness import SOURCE_HEADERS


class ListenerPair:
    """An ingress whose source is a Kafka listener, and an egress writing to the destination cluster."""

    def __init__(self, start_ddc, tmp_path, destination, topics: dict, *, source_extra: str = "",
                 transport_extra: str = "", buffer_size: str = "64MiB", rate: str = "2Gbit/s",
                 environment: dict | None = None):
        self.start_ddc, self.destination = start_ddc, destination
        self.port, self.link_port = free_tcp_port(), free_udp_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.state = tmp_path / "listener-state"
        self.environment = environment
        topic_table = "\n".join(f'"{name}" = {partitions}' for name, partitions in topics.items())
        self.ingress_config = f"""
role = "ingress"
[telemetry]
log_format = "json"
stats_interval = "1s"
[links.front.source]
type = "kafka_listener"
listen = "{self.bootstrap}"
state_directory = "{self.state}"
{source_extra}
[links.front.source.topics]
{topic_table}
[links.front.transport]
destination = "127.0.0.1:{self.link_port}"
heartbeat_interval = "200ms"
rate = "{rate}"
{transport_extra}
[links.front.buffer]
size = "{buffer_size}"
"""
        self.egress_config = f"""
role = "egress"
[telemetry]
log_format = "json"
stats_interval = "1s"
[links.front.transport]
listen = "127.0.0.1:{self.link_port}"
receive_buffer = "64MiB"
[links.front.sink]
type = "kafka"
[links.front.sink.properties]
"bootstrap.servers" = "{destination.bootstrap}"
"""
        self.egress = start_ddc("egress", self.egress_config)
        self.egress.wait_until_ready()
        self.ingress = self.start_ingress()

    def start_ingress(self):
        ingress = self.start_ddc("ingress", self.ingress_config, self.environment)
        ingress.wait_for(lambda line: "Kafka listener on" in line.get("message", ""))
        return ingress

    def producer(self, **properties) -> Producer:
        return Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5, **properties})

    def stop(self):
        assert self.ingress.stop() == 0
        self.egress.wait_for(lambda line: "sender shut down" in line.get("message", ""))
        assert self.egress.stop() == 0
        return self.ingress.summary("front"), self.egress.summary("front")


def produce(pair: ListenerPair, topic: str, records: list, **properties) -> list:
    """Produces records, returning the (partition, offset) each delivery report gave, in produce order."""
    producer = pair.producer(**properties)
    reports = [None] * len(records)

    def delivered(index):
        def report(error, message):
            assert error is None, f"record {index}: {error}"
            reports[index] = (message.partition(), message.offset())
        return report

    for index, record in enumerate(records):
        while True:
            try:
                producer.produce(topic, on_delivery=delivered(index), **record)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0
    return reports


def arrived(destination, topic: str, count: int) -> dict:
    """(partition, offset) -> (key, value, headers without the source's, timestamp) of the destination's records,
    which must say the listener's topic and hold each source offset once."""
    messages = destination.wait_for_records(topic, count, timeout=60)
    found = {}
    for message in messages:
        headers = dict(message.headers())
        assert headers["sourceTopic"] == topic.encode()
        coordinate = (int(headers["sourcePartition"]), int(headers["sourceOffset"]))
        assert coordinate not in found, f"{coordinate} arrived twice"
        found[coordinate] = (message.key(), message.value(),
                             [header for header in message.headers() if header[0] not in SOURCE_HEADERS],
                             message.timestamp()[1])
    return found


def varied(count: int, partitions: int) -> list[dict]:
    records = []
    for index in range(count):
        choice = index % 7
        record = {"partition": index % partitions, "timestamp": 1_700_000_000_000 + index,
                  "key": None if choice == 0 else (b"" if choice == 1 else f"key-{index}".encode()),
                  "value": None if choice == 2 else (b"" if choice == 3 else uuid.uuid4().bytes * (index % 5 + 1))}
        if choice in (4, 5):
            record["headers"] = [("h", b"first"), ("h", b"second"), ("null", None), ("ünï", b"\xff")]
        records.append(record)
    return records


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_confluent_kafka_records_cross_with_every_field_and_compression(start_ddc, tmp_path, kafka_clusters,
                                                                       compression):
    _, destination = kafka_clusters
    topic = f"front-{uuid.uuid4().hex[:8]}"
    pair = ListenerPair(start_ddc, tmp_path, destination, {topic: 3})
    records = varied(600, 3)
    reports = produce(pair, topic, records, **{"compression.type": compression})
    found = arrived(destination, topic, len(records))
    assert sorted(reports) == sorted(found)
    for record, coordinate in zip(records, reports):
        assert found[coordinate] == (record["key"], record["value"],
                                     [(name, value) for name, value in record.get("headers", [])],
                                     record["timestamp"])
    ingress, egress = pair.stop()
    assert pair.ingress.unparsed_or_tracebacks() == [] and pair.egress.unparsed_or_tracebacks() == []
    assert not [line for line in pair.egress.lines() if line.get("event") == "records missing"]
    per_partition = {}
    for partition, offset in reports:
        per_partition.setdefault(partition, []).append(offset)
    assert {partition: sorted(offsets) for partition, offsets in per_partition.items()} == \
        {partition: list(range(len(offsets))) for partition, offsets in per_partition.items()}
    json.dumps(ingress)


class CuttingRelay(threading.Thread):
    """A TCP relay in front of the listener whose connections can be cut, as a flapping network does."""

    def __init__(self, target_port: int):
        super().__init__(daemon=True)
        self.target = ("127.0.0.1", target_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.pairs: list = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.cuts = 0

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.pairs.append((client, upstream))
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    @staticmethod
    def _pipe(source, target) -> None:
        try:
            while data := source.recv(1 << 16):
                target.sendall(data)
        except OSError:
            pass
        for end in (source, target):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            for end in pair:
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.cuts += bool(pairs)

    def stop(self) -> None:
        self.stopping.set()
        self.cut()
        self.server.close()


def contiguous_offsets(found: dict) -> bool:
    per_partition = collections.defaultdict(list)
    for partition, offset in found:
        per_partition[partition].append(offset)
    return all(sorted(offsets) == list(range(len(offsets))) for offsets in per_partition.values())


def produce_in_background(bootstrap: str, topic: str, values: list, partitions: int, **properties):
    """A thread producing values (one record each) at an even pace; .errors holds failed deliveries."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **properties})
    errors, delivered = [], []

    def report(error, message):
        (errors if error is not None else delivered).append(error or message.value())

    def run():
        for index, value in enumerate(values):
            while True:
                try:
                    producer.produce(topic, value=value, partition=index % partitions, on_delivery=report)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            if index % 100 == 99:
                time.sleep(0.05)
        producer.flush(120)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.errors, thread.delivered, thread.producer = errors, delivered, producer
    return thread


def test_idempotent_retries_over_cut_connections_are_answered_with_their_offsets_not_sent_twice(
        start_ddc, tmp_path, kafka_clusters):
    _, destination = kafka_clusters
    topic = f"front-{uuid.uuid4().hex[:8]}"
    pair = ListenerPair(start_ddc, tmp_path, destination, {topic: 2}, rate="4Mbit/s")
    relay = CuttingRelay(pair.port)
    relay.start()
    # The producer reaches the listener through the relay: bootstrap and the advertised address both.
    pair.ingress.stop()
    pair.ingress_config = pair.ingress_config.replace(
        f'listen = "{pair.bootstrap}"', f'listen = "{pair.bootstrap}"\nadvertised_listener = "127.0.0.1:{relay.port}"')
    pair.ingress = pair.start_ingress()
    values = [f"value-{index}".encode() * 40 for index in range(3000)]
    producing = produce_in_background(f"127.0.0.1:{relay.port}", topic, values, 2, **{"enable.idempotence": True})
    while producing.is_alive():
        time.sleep(0.3)
        relay.cut()
    relay.stop()
    assert producing.errors == []
    assert sorted(producing.delivered) == sorted(values)
    found = arrived(destination, topic, len(values))
    assert sorted(value for _, value, _, _ in found.values()) == sorted(values)
    assert contiguous_offsets(found)
    ingress, egress = pair.stop()
    assert relay.cuts >= 3
    assert ingress["kafka_listener_retries_answered"] > 0, "no retry reached the listener: the test proves nothing"
    assert egress["kafka_records_duplicate"] == 0
    assert not [line for line in pair.egress.lines() if line.get("event") == "records missing"]


def test_an_ingress_killed_and_restarted_continues_its_offsets_and_sends_no_retry_twice(
        start_ddc, tmp_path, kafka_clusters):
    _, destination = kafka_clusters
    topic = f"front-{uuid.uuid4().hex[:8]}"
    pair = ListenerPair(start_ddc, tmp_path, destination, {topic: 2}, rate="8Mbit/s")
    values = [f"value-{index}".encode() * 30 for index in range(6000)]
    producing = produce_in_background(pair.bootstrap, topic, values, 2, **{"enable.idempotence": True,
                                                                           "message.timeout.ms": 120000})
    pair.ingress.wait_for(lambda line: line.get("event") == "link stats"
                          and line.get("kafka_listener_records_in", 0) > 1000)
    pair.ingress.kill()
    time.sleep(1.0)
    pair.ingress = pair.start_ingress()
    producing.join(150)
    assert not producing.is_alive()
    assert producing.errors == []
    found = arrived(destination, topic, len(values))
    assert sorted(value for _, value, _, _ in found.values()) == sorted(values), "a record lost or written twice"
    assert contiguous_offsets(found), "offsets went back or skipped after the restart"
    ingress, egress = pair.stop()
    assert egress["kafka_missing_ranges_open"] == 0
    # A clean restart continues too: the next records follow the last offsets.
    pair.ingress = pair.start_ingress()
    reports = produce(pair, topic, [{"value": b"after", "partition": 0}])
    assert reports == [(0, max(offset for partition, offset in found if partition == 0) + 1)]
