"""The Kafka sink in-process against a real destination broker, fed exact record sequences.

Two sinks with different producer properties stand for the egresses of two
ingresses of one consumer group: they share the destination and nothing else.
"""

import pytest

from ddc._core import kafka_metadata
from ddc._core.kafka_metadata import RECORD
from ddc.config import KafkaSinkConfig
from ddc.handlers.kafka.sink import KafkaSink
from kafka_harness import source_of

pytestmark = pytest.mark.timeout(120)


def records(topic: str, offsets: range, assignment: int) -> list:
    return [(kafka_metadata.pack(RECORD, topic, 0, offset, offset - 1, 0, 1, 1_700_000_000_000 + offset,
                                 b"key", [], True, assignment), b"value-%d" % offset) for offset in offsets]


def open_sink(name: str, bootstrap: str) -> KafkaSink:
    sink = KafkaSink(name, KafkaSinkConfig(type="kafka", properties={"bootstrap.servers": bootstrap,
                                                                       "client.id": f"egress-{name}"}))
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
