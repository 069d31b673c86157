"""Kafka across the diode, end to end: real brokers, real `ddc run` processes, real sockets."""

import collections
import random
import time
import uuid

import pytest

from conftest import free_udp_port, kafka_pair_configs
from kafka_harness import comparable, source_of

pytestmark = pytest.mark.timeout(600)


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


def by_source_partition(messages) -> dict:
    grouped = collections.defaultdict(list)
    for message in messages:
        grouped[source_of(message)[:2]].append(message)
    return grouped


class KafkaPair:
    """An egress and an ingress carrying `topics` from the source cluster to the destination cluster."""

    def __init__(self, start_ddc, clusters, topics, **options):
        self.start_ddc = start_ddc
        self.source, self.destination = clusters
        self.group = f"ddc-test-{uuid.uuid4().hex[:8]}"
        self.link_port = free_udp_port()
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


def assert_same_records(source_messages, destination_messages, source_topic: str):
    """Destination holds exactly the source's records, each once, per-partition order kept, fields intact."""
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
    for coordinate, messages in by_source_partition(destination_messages).items():
        offsets = [source_of(message)[2] for message in messages]
        assert offsets == sorted(offsets), f"order not kept in {coordinate}"


def test_records_cross_complete_with_fidelity_and_source_headers(start_ddc, kafka_clusters):
    source, destination = kafka_clusters
    topic = source.new_topic("fidelity", partitions=3)
    destination.create_topic(topic, partitions=3)
    records = varied_records(200_000, 3)
    source.produce(topic, records)
    pair = KafkaPair(start_ddc, kafka_clusters, [topic])
    arrived = destination.wait_for_records(topic, len(records))
    ingress_summary, egress_summary = pair.stop()
    arrived = destination.read_all(topic)
    assert_same_records(source.read_all(topic), arrived, topic)
    for message in arrived:
        assert message.partition() == source_of(message)[1], "source partition not kept"
        headers = message.headers()
        assert [name for name, _ in headers[-3:]] == ["sourceTopic", "sourcePartition", "sourceOffset"]
    assert pair.missing_reports() == []
    assert egress_summary["kafka_records_written"] == len(records)
    assert egress_summary["kafka_records_duplicate"] == 0
    assert ingress_summary["kafka_records_consumed"] == len(records)
    assert pair.ingress.unparsed_or_tracebacks() == [] and pair.egress.unparsed_or_tracebacks() == []
