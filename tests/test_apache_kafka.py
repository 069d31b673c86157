"""The Apache Kafka test broker (tests/apache_kafka.py) works: records with keys, headers and timestamps go in
and come back, and they, the topic and a group's committed offsets survive a SIGKILL of the broker."""

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME

from apache_kafka import ApacheKafkaBroker, apache_kafka_classpath
from kafka_harness import Cluster, comparable, varied_records

PARTITIONS = 3


@pytest.fixture
def apache_kafka(tmp_path):
    lib, reason = apache_kafka_classpath()
    if lib is None:
        pytest.skip(reason)
    broker = ApacheKafkaBroker(lib, tmp_path / "kafka.log", tmp_path / "kafka-data")
    yield broker
    broker.stop()


def expected_by_partition(records: list[dict]) -> dict:
    expected = {partition: [] for partition in range(PARTITIONS)}
    for record in records:
        expected[record["partition"]].append((record["key"], record["value"], tuple(record.get("headers") or ()),
                                              (TIMESTAMP_CREATE_TIME, record["timestamp"])))
    return expected


def read_by_partition(cluster: Cluster, topic: str) -> dict:
    found = {partition: [] for partition in range(PARTITIONS)}
    for message in sorted(cluster.read_all(topic), key=lambda message: (message.partition(), message.offset())):
        found[message.partition()].append(comparable(message))
    return found


def test_records_and_offsets_survive_a_sigkilled_apache_kafka(apache_kafka):
    cluster = Cluster(apache_kafka.bootstrap)
    topic = cluster.new_topic("apache-smoke", PARTITIONS)
    records = varied_records(1000, PARTITIONS)
    cluster.produce(topic, records, **{"enable.idempotence": True})
    expected = expected_by_partition(records)
    assert read_by_partition(cluster, topic) == expected
    group = "apache-smoke-group"
    cluster.commit(group, topic, {0: 10, 1: 20, 2: 30})
    assert cluster.committed(group, topic, PARTITIONS) == {0: 10, 1: 20, 2: 30}
    first_start, rss = apache_kafka.start_seconds, apache_kafka.rss_bytes()

    pid = apache_kafka.process.pid
    apache_kafka.restart(hard=True)  # SIGKILL, then the same ports and data directory
    assert apache_kafka.process.pid != pid and apache_kafka.process.returncode is None

    assert read_by_partition(cluster, topic) == expected
    assert cluster.committed(group, topic, PARTITIONS) == {0: 10, 1: 20, 2: 30}
    print(f"\nApache Kafka: first start {first_start:.1f} s, restart after SIGKILL "
          f"{apache_kafka.start_seconds:.1f} s, RSS {rss / 2**20:.0f} MiB after 1000 records, "
          f"{apache_kafka.rss_bytes() / 2**20:.0f} MiB after the restart")
    assert apache_kafka.stop() == 143  # SIGTERM: a controlled shutdown, then the JVM's exit code 128 + 15
