"""The Kafka source's bookkeeping, without a broker: what it commits, and for which partitions."""

import types

from ddc.handlers.kafka.source import KafkaSource


class RecordingConsumer:
    """Stands in for confluent_kafka.Consumer where the source commits and rebalances."""

    def __init__(self):
        self.commits = []

    def commit(self, offsets, asynchronous):
        self.commits.append({(offset.topic, offset.partition): offset.offset for offset in offsets})
        return []

    def committed(self, partitions, timeout):
        return []


def source_owning(*coordinates) -> KafkaSource:
    config = types.SimpleNamespace(commit_interval=0.0, topics=["orders"], max_record_size=1 << 20,
                                   max_poll_records=500, group_id="g", properties={})
    source = KafkaSource("orders", config)
    source.consumer = RecordingConsumer()
    for coordinate in coordinates:
        source._assignments[coordinate] = 1
        source._start[coordinate] = 0
    return source


def test_records_of_a_revoked_partition_sent_after_the_revoke_are_never_committed_by_this_member():
    """Issue #21: a revoke that timed out left records of the revoked partitions in the link, which sent them
    later; their acknowledgement then committed offsets of a partition another member owned."""
    source = source_owning(("orders", 0), ("orders", 1))
    source._records_put = 10
    source._chunks.append((10, {("orders", 0): 50, ("orders", 1): 70}))
    partition = types.SimpleNamespace(topic="orders", partition=1)
    source._on_revoke(source.consumer, [partition])  # nothing acknowledged yet; no output, so no wait
    source.acknowledge(10)  # the link sends them after all
    source._commit_acknowledged(force=True, synchronous=True)
    assert source.consumer.commits[-1] == {("orders", 0): 50}
    assert all(("orders", 1) not in commit for commit in source.consumer.commits)


def test_records_of_a_revoked_partition_still_held_when_the_revoke_wait_ends_are_dropped_not_sent(monkeypatch):
    """Issue #21: the link's buffer stayed full through the revoke wait, so records taken from the revoked
    partition were still held; offered later, they would cross through this member's link after another member
    owns the partition. They are dropped, and the records kept still commit."""
    import time

    from ddc._core import kafka_metadata
    from ddc.handlers.kafka import source as source_module

    monkeypatch.setattr(source_module, "REVOKE_WAIT_SECONDS", 0.3)

    class FullLink:
        def put_many(self, records, timeout):
            time.sleep(min(timeout, 0.05))
            return 0

    def record(partition: int, offset: int):
        return (kafka_metadata.pack(kafka_metadata.RECORD, "orders", partition, offset, offset - 1, 0, 1, 0, b"k", [],
                                    True, 1), b"v")

    source = source_owning(("orders", 0), ("orders", 1))
    source._output = FullLink()
    source._records_put = 4  # in the link already, not yet sent
    source._chunks.append((4, {("orders", 0): 10, ("orders", 1): 20}))
    source._held = [record(partition, offset) for offset in range(3) for partition, offset in
                    ((0, 10 + offset), (1, 20 + offset))]
    source._records_put = 10
    source._chunks.append((10, {("orders", 0): 13, ("orders", 1): 23}))
    source._on_revoke(source.consumer, [types.SimpleNamespace(topic="orders", partition=1)])
    assert [kafka_metadata.coordinates(metadata)[1:] for metadata, _ in source._held] == [(0, 10), (0, 11), (0, 12)]
    assert source.counters()["kafka_records_unacknowledged"] == 7
    source.acknowledge(7)  # the link sends the four, then the three kept
    source._commit_acknowledged(force=True, synchronous=True)
    assert source.consumer.commits[-1] == {("orders", 0): 13}


def held_records(*coordinates):
    from ddc._core import kafka_metadata

    return [(kafka_metadata.pack(kafka_metadata.RECORD, "orders", partition, offset, offset - 1, 0, 1, 0, b"k", [],
                                 True, 1), b"v") for partition, offset in coordinates]


def test_dropping_held_records_at_close_never_commits_past_them():
    """close() revokes with the link done: the chunk of the dropped records must not commit their partition."""
    source = source_owning(("orders", 0), ("orders", 1))
    source._records_put = 4
    source._chunks.append((4, {("orders", 0): 10}))
    source._held = held_records((1, 20), (1, 21))
    source._records_put = 6
    source._chunks.append((6, {("orders", 1): 22}))
    source.acknowledge(4)
    source._output = None  # as close() does
    source._on_revoke(source.consumer, [types.SimpleNamespace(topic="orders", partition=p) for p in (0, 1)])
    assert source.consumer.commits == [{("orders", 0): 10}], "offsets 20 and 21 were never sent"


def test_a_partition_given_back_after_its_held_records_were_dropped_commits_only_what_is_sent_again(monkeypatch):
    from ddc.handlers.kafka import source as source_module

    monkeypatch.setattr(source_module, "REVOKE_WAIT_SECONDS", 0.05)

    class FullLink:
        def put_many(self, records, timeout):
            return 0

    source = source_owning(("orders", 0), ("orders", 1))
    source._output = FullLink()
    source._records_put = 4
    source._chunks.append((4, {("orders", 0): 10}))
    source._held = held_records((0, 10), (1, 20), (1, 21))
    source._records_put = 7
    source._chunks.extend([(5, {("orders", 0): 11}), (7, {("orders", 1): 22})])
    source._on_revoke(source.consumer, [types.SimpleNamespace(topic="orders", partition=1)])
    source._assignments[("orders", 1)] = 2  # the group gives it back; consumption resumes at the committed 20
    source.acknowledge(5)  # the four in the link and the kept record of partition 0
    source._commit_acknowledged(force=True, synchronous=True)
    assert all(("orders", 1) not in commit for commit in source.consumer.commits), source.consumer.commits
    assert source.consumer.commits[-1] == {("orders", 0): 11}
