"""The Kafka listener (#23): real producers write to a real `ddc run` ingress over the Kafka protocol, and a real
egress writes their records into a Tansu destination."""

import collections
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from conftest import certificate_authority
from ddc.transport.sockets import free_tcp_port, free_udp_port
from kafka_harness import SOURCE_HEADERS, listener_pair_configs


class ListenerPair:
    """An ingress whose source is a Kafka listener, and an egress writing to the destination cluster."""

    def __init__(self, start_ddc, tmp_path, destination, topics: dict, *, source_extra: str = "",
                 transport_extra: str = "", buffer_size: str = "64MiB", rate: str = "2Gbit/s",
                 environment: dict | None = None, port: int | None = None):
        self.start_ddc, self.destination = start_ddc, destination
        self.port, self.link_port = port or free_tcp_port(), free_udp_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.state = tmp_path / "listener-state"
        self.environment = environment
        self.ingress_config, self.egress_config = listener_pair_configs(
            self.port, self.link_port, self.state, topics, destination.bootstrap, source_extra=source_extra,
            transport_extra=transport_extra, rate=rate, buffer_size=buffer_size)
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


COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")


def test_confluent_kafka_records_cross_with_every_field_and_compression(start_ddc, tmp_path, kafka_clusters):
    """Each compression to a topic of its own, idempotent for every other one; offsets from 0 in each partition."""
    _, destination = kafka_clusters
    topics = {compression: f"front-{compression}-{uuid.uuid4().hex[:8]}" for compression in COMPRESSIONS}
    pair = ListenerPair(start_ddc, tmp_path, destination, dict.fromkeys(topics.values(), 3))
    records = varied(600, 3)
    for index, (compression, topic) in enumerate(topics.items()):
        reports = produce(pair, topic, records, **{"compression.type": compression,
                                                   "enable.idempotence": index % 2 == 1})
        found = arrived(destination, topic, len(records))
        assert sorted(reports) == sorted(found), compression
        assert contiguous_offsets(found), compression
        for record, coordinate in zip(records, reports):
            assert found[coordinate] == (record["key"], record["value"],
                                         [(name, value) for name, value in record.get("headers", [])],
                                         record["timestamp"]), compression
    ingress, _ = pair.stop()
    assert ingress["kafka_listener_records_in"] == len(records) * len(topics)
    assert pair.ingress.unparsed_or_tracebacks() == [] and pair.egress.unparsed_or_tracebacks() == []
    assert not [line for line in pair.egress.lines() if line.get("event") == "records missing"]


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
    port = free_tcp_port()
    relay = CuttingRelay(port)
    relay.start()
    # The producer reaches the listener through the relay: bootstrap and the advertised address both.
    pair = ListenerPair(start_ddc, tmp_path, destination, {topic: 2}, rate="4Mbit/s", port=port,
                        source_extra=f'advertised_listener = "127.0.0.1:{relay.port}"')
    values = [f"value-{index}".encode() * 40 for index in range(3000)]
    producing = produce_in_background(f"127.0.0.1:{relay.port}", topic, values, 2, **{
        "enable.idempotence": True, "reconnect.backoff.max.ms": 100, "retry.backoff.max.ms": 100})
    while producing.is_alive():
        time.sleep(0.3)
        if producing.delivered:  # cuts before the producer id is given only delay the start
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
    repaired = [line for line in pair.egress.lines() if line.get("event") == "records repaired"]
    assert sum(line["last_offset"] - line["first_offset"] + 1 for line in repaired) == egress["kafka_records_repaired"]
    assert len(repaired) <= 1 + egress["kafka_records_repaired"] // 10, "repairs are reported in runs, not by record"
    # A clean restart continues too: the next records follow the last offsets.
    pair.ingress = pair.start_ingress()
    reports = produce(pair, topic, [{"value": b"after", "partition": 0}])
    assert reports == [(0, max(offset for partition, offset in found if partition == 0) + 1)]


REPOSITORY = Path(__file__).resolve().parent.parent


def java_producer(bootstrap: str, topic: str, count: int) -> list:
    lib = REPOSITORY / "build" / "apache-kafka" / "lib"
    if not shutil.which("java") or not list(lib.glob("kafka-clients-*.jar")):
        pytest.skip("the Java client needs Java 17 and the jars of `make apache-kafka`")
    done = subprocess.run(["java", "-cp", f"{lib}/*", str(REPOSITORY / "tests" / "clients" / "JavaProducer.java"),
                           bootstrap, topic, str(count), "zstd"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return [f"java-{index}" for index in range(count)], [tuple(map(int, line.split()))
                                                          for line in done.stdout.split("\n") if line]


def python_producer(bootstrap: str, topic: str, count: int) -> list:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type="gzip", acks="all")
    futures = [producer.send(topic, key=f"key-{index}".encode(), value=f"python-{index}".encode(),
                             partition=index % 2, timestamp_ms=1_700_000_000_000 + index,
                             headers=[("client", b"python"), ("index", str(index).encode())])
               for index in range(count)]
    offsets = [(metadata.partition, metadata.offset) for metadata in (future.get(30) for future in futures)]
    producer.close()
    return [f"python-{index}" for index in range(count)], offsets


def kcat_producer(bootstrap: str, topic: str, count: int) -> list:
    if not shutil.which("kcat"):
        pytest.skip("kcat is not installed (apt-get install kcat; `make test` installs it as root)")
    lines = "".join(f"key-{index}:kcat-{index}\n" for index in range(count))
    done = subprocess.run(["kcat", "-P", "-b", bootstrap, "-t", topic, "-p", "0", "-K:", "-H", "client=kcat",
                           "-z", "lz4", "-X", "enable.idempotence=true"], input=lines, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [f"kcat-{index}" for index in range(count)], None


@pytest.mark.parametrize("client", ["java", "kafka-python", "kcat"])
def test_other_clients_write_through_the_listener(start_ddc, tmp_path, kafka_clusters, client):
    """The Java client (the reference implementation, idempotent by default), kafka-python (a protocol of its own)
    and kcat (an older librdkafka)."""
    _, destination = kafka_clusters
    topic = f"front-{uuid.uuid4().hex[:8]}"
    pair = ListenerPair(start_ddc, tmp_path, destination, {topic: 2})
    produce_with = {"java": java_producer, "kafka-python": python_producer, "kcat": kcat_producer}[client]
    values, offsets = produce_with(pair.bootstrap, topic, 500)
    found = arrived(destination, topic, len(values))
    assert sorted(value.decode() for _, value, _, _ in found.values()) == sorted(values)
    for (partition, offset), (key, value, headers, timestamp) in found.items():
        index = int(value.decode().rsplit("-", 1)[1])
        assert key == f"key-{index}".encode()
        assert headers[0] == ("client", client.split("-")[-1].encode())
        if client != "kcat":
            assert headers[1] == ("index", str(index).encode()) and timestamp == 1_700_000_000_000 + index
            assert partition == index % 2
    if offsets is not None:
        assert sorted(offsets) == sorted(found), "the offsets the producer was told are the offsets that crossed"
    assert contiguous_offsets(found)
    pair.stop()
    assert pair.ingress.unparsed_or_tracebacks() == []


def test_tls_with_scram_and_plain_lets_known_users_in_and_keeps_others_out(start_ddc, tmp_path, kafka_clusters):
    _, destination = kafka_clusters
    ca, certificate, key = certificate_authority(tmp_path, "listener")
    users = tmp_path / "users"
    users.write_text("# user:password\nalice:wonder-land-42\nbob:b:with:colons\n")
    topic = f"front-{uuid.uuid4().hex[:8]}"
    pair = ListenerPair(start_ddc, tmp_path, destination, {topic: 1}, source_extra=f"""
[links.front.source.tls]
certificate = "{certificate}"
key = "{key}"
[links.front.source.sasl]
mechanisms = ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]
users_file = "{users}"
""")
    secure = {"security.protocol": "SASL_SSL", "ssl.ca.location": ca}
    produce(pair, topic, [{"value": b"scram-512"}], **secure, **{"sasl.mechanism": "SCRAM-SHA-512",
                                                                "sasl.username": "alice",
                                                                "sasl.password": "wonder-land-42"})
    produce(pair, topic, [{"value": b"scram-256"}], **secure, **{"sasl.mechanism": "SCRAM-SHA-256",
                                                                "sasl.username": "bob",
                                                                "sasl.password": "b:with:colons"})
    produce(pair, topic, [{"value": b"plain"}], **secure, **{"sasl.mechanism": "PLAIN", "sasl.username": "alice",
                                                            "sasl.password": "wonder-land-42"})
    failures = []
    for mechanism in ("SCRAM-SHA-512", "PLAIN"):
        producer = pair.producer(**secure, **{"sasl.mechanism": mechanism, "sasl.username": "alice",
                                              "sasl.password": "not-her-password", "message.timeout.ms": 1000})
        producer.produce(topic, value=b"intruder", on_delivery=lambda error, message: failures.append(error))
        producer.flush(10)
    assert len(failures) == 2 and all(failure is not None for failure in failures)
    plaintext = pair.producer(**{"message.timeout.ms": 1000})
    plaintext.produce(topic, value=b"plaintext", on_delivery=lambda error, message: failures.append(error))
    plaintext.flush(10)
    assert len(failures) == 3 and failures[-1] is not None
    # Before it has logged in, a client may not claim a request larger than Kafka's 512 KiB for SASL.
    context = ssl.create_default_context(cafile=ca)
    with context.wrap_socket(socket.create_connection(("127.0.0.1", pair.port)), server_hostname="127.0.0.1") as raw:
        raw.sendall(struct.pack(">i", 600_000))
        raw.settimeout(5)
        assert raw.recv(1) == b""
    found = arrived(destination, topic, 3)
    assert sorted(value for _, value, _, _ in found.values()) == [b"plain", b"scram-256", b"scram-512"]
    ingress, _ = pair.stop()
    assert ingress["kafka_listener_connections_closed_unauthenticated"] >= 2
    assert ingress["kafka_listener_connections_closed_oversized"] == 1
    log_text = pair.ingress.log_path.read_text()
    assert "not-her-password" not in log_text and "wonder-land-42" not in log_text
    assert "user 'alice' or its password is wrong" in log_text


def test_mutual_tls_takes_producers_with_a_certificate_the_client_ca_signed(start_ddc, tmp_path, kafka_clusters):
    _, destination = kafka_clusters
    ca, certificate, key = certificate_authority(tmp_path, "listener")
    client_ca, client_certificate, client_key = certificate_authority(tmp_path, "producer")
    stranger_ca, stranger_certificate, stranger_key = certificate_authority(tmp_path, "stranger")
    topic = f"front-{uuid.uuid4().hex[:8]}"
    pair = ListenerPair(start_ddc, tmp_path, destination, {topic: 1}, source_extra=f"""
[links.front.source.tls]
certificate = "{certificate}"
key = "{key}"
client_ca = "{client_ca}"
""")
    produce(pair, topic, [{"value": b"with a certificate"}], **{
        "security.protocol": "SSL", "ssl.ca.location": ca, "ssl.certificate.location": client_certificate,
        "ssl.key.location": client_key})
    failures = []
    for extra in ({}, {"ssl.certificate.location": stranger_certificate, "ssl.key.location": stranger_key}):
        producer = pair.producer(**{"security.protocol": "SSL", "ssl.ca.location": ca, "message.timeout.ms": 1000},
                                 **extra)
        producer.produce(topic, value=b"without", on_delivery=lambda error, message: failures.append(error))
        producer.flush(10)
    assert len(failures) == 2 and all(failure is not None for failure in failures)  # not `None in`: KafkaError's ==
    assert [value for _, value, _, _ in arrived(destination, topic, 1).values()] == [b"with a certificate"]
    pair.stop()
    assert pair.ingress.unparsed_or_tracebacks() == []


def test_a_full_link_makes_producers_wait_and_loses_nothing(start_ddc, tmp_path, kafka_clusters):
    """At 8 Mbit/s with a small buffer and max_pending_bytes, producers writing as fast as they can are slowed to
    the link's pace by late answers and unread requests, never by dropped records."""
    _, destination = kafka_clusters
    topic = f"front-{uuid.uuid4().hex[:8]}"
    pair = ListenerPair(start_ddc, tmp_path, destination, {topic: 2}, rate="8Mbit/s", buffer_size="160KiB",
                        source_extra='max_record_size = "64KiB"\nmax_pending_bytes = "1MiB"')
    values = [bytes([index % 251]) * 1000 + str(index).encode() for index in range(3000)]
    started = time.monotonic()
    producers = [produce_in_background(pair.bootstrap, topic, values[part::3], 2, **{"linger.ms": 50,
                                                                                      "batch.size": 200000})
                 for part in range(3)]
    for producing in producers:
        producing.join(120)
        assert producing.errors == []
    assert time.monotonic() - started > 2.5, "the producers were answered faster than the link sends"
    found = arrived(destination, topic, len(values))
    assert sorted(value for _, value, _, _ in found.values()) == sorted(values)
    ingress, _ = pair.stop()
    assert ingress["buffer_records_dropped"] == 0
    assert ingress["buffer_full_events"] > 0
    assert ingress["kafka_listener_backpressure_seconds"] > 0, "max_pending_bytes never held a request back"
