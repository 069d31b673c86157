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

    from ddc.handlers.kafka import codec
    from ddc.handlers.kafka import source as source_module

    monkeypatch.setattr(source_module, "REVOKE_WAIT_SECONDS", 0.3)

    class FullLink:
        def put_many(self, records, timeout):
            time.sleep(min(timeout, 0.05))
            return 0

    def record(partition: int, offset: int):
        return (codec.pack(codec.RECORD, "orders", partition, offset, offset - 1, 0, 1, 0, b"k", [],
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
    assert [codec.coordinates(metadata)[1:] for metadata, _ in source._held] == [(0, 10), (0, 11), (0, 12)]
    assert source.counters()["kafka_records_unacknowledged"] == 7
    source.acknowledge(7)  # the link sends the four, then the three kept
    source._commit_acknowledged(force=True, synchronous=True)
    assert source.consumer.commits[-1] == {("orders", 0): 13}


def held_records(*coordinates):
    from ddc.handlers.kafka import codec

    return [(codec.pack(codec.RECORD, "orders", partition, offset, offset - 1, 0, 1, 0, b"k", [],
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


class Described:
    """What AdminClient.describe_topics answers: a topic id per topic, as confluent_kafka's Uuid."""

    def __init__(self, ids: dict):
        self.ids = ids

    def describe_topics(self, topics, request_timeout):
        from concurrent.futures import Future

        from confluent_kafka import Uuid

        futures = {}
        for topic in topics.topic_names:
            future = futures[topic] = Future()
            raw = self.ids[topic]
            future.set_result(types.SimpleNamespace(topic_id=Uuid(int.from_bytes(raw[:8], "big", signed=True),
                                                                  int.from_bytes(raw[8:], "big", signed=True))))
        return futures


class Consumed:
    def __init__(self, topic, partition, offset):
        self.fields = (topic, partition, offset)

    def topic(self): return self.fields[0]
    def partition(self): return self.fields[1]
    def offset(self): return self.fields[2]
    def key(self): return b"k"
    def value(self): return b"v"
    def headers(self): return None
    def error(self): return None
    def timestamp(self): return (1, 1_700_000_000_000)


OLD_ID, NEW_ID = bytes(range(16)), bytes(range(1, 17))


def test_offsets_going_back_under_a_new_topic_id_renew_the_consumer_for_every_partition_of_the_topic():
    """From review: partition 0 of a topic created again went back, partition 1 (whose new log was longer than
    the consumer's position) did not; switching partition 0 alone left partition 1 reading the new topic under
    the old id, from the old position, its new records below it never read. Now nothing past the first record of
    the new topic is packed, no offset of the topic is committed from the old one, and a new consumer reads the
    topic again."""
    from ddc.handlers.kafka import codec

    source = source_owning(("orders", 0), ("orders", 1), ("audit", 0))
    source._admin = Described({"orders": NEW_ID, "audit": OLD_ID})
    source._topic_ids = {("orders", 0): OLD_ID, ("orders", 1): OLD_ID, ("audit", 0): OLD_ID}
    source._known_topic_ids = {"orders": OLD_ID, "audit": OLD_ID}
    source._previous = {("orders", 0): 999, ("orders", 1): 49, ("audit", 0): 9}
    source._chunks.append((5, {("orders", 1): 50, ("audit", 0): 10}))
    source._take([Consumed("orders", 1, 50), Consumed("audit", 0, 10), Consumed("orders", 0, 1000),
                  Consumed("orders", 0, 0), Consumed("orders", 1, 51)])
    packed = [codec.unpack(metadata) for metadata, _ in source._held]
    assert [(fields[1], fields[2], fields[3], fields[12]) for fields in packed] == [
        ("orders", 1, 50, OLD_ID), ("audit", 0, 10, OLD_ID), ("orders", 0, 1000, OLD_ID)]
    assert source._consumer_stale and source.topic_id_changes == 1
    assert [offsets for _, offsets in source._chunks] == [{("audit", 0): 10}, {("audit", 0): 11}], \
        "no offset of the old orders topic may be committed for the new one"


def test_a_renewed_consumer_starts_unpaused_and_its_revoke_may_still_send_what_is_held(monkeypatch):
    """From review: the old consumer's close left the source paused with nothing held, and only offering held
    records resumes partitions: the new consumer's partitions stayed paused for good."""
    from ddc.handlers.kafka import source as source_module

    made = []

    class Consumer:
        def __init__(self, config):
            made.append(self)
            self.closed = False

        def subscribe(self, topics, **callbacks):
            self.callbacks = callbacks

        def close(self):
            self.closed = True

        def commit(self, offsets, asynchronous):
            return []

    monkeypatch.setattr(source_module, "Consumer", Consumer)
    monkeypatch.setattr(source_module, "AdminClient", lambda config: Described({}))
    source = source_owning(("orders", 0))
    old = source.consumer = Consumer({})
    source._output = output = object()
    source._paused, source._consumer_stale = True, True
    source._renew_consumer()
    assert old.closed and source.consumer is made[-1] and source.consumer is not old
    assert not source._paused and not source._consumer_stale and source._output is output


def test_an_offset_committed_for_the_topic_before_it_was_created_again_is_announced_not_skipped():
    """The group's offset for a topic name can outlive the topic (committed in the seconds before the ingress saw
    the new id): the consumer starts there, so the new topic's records below it are announced as part of the
    stream, and the egress reports them missing, instead of being skipped without a word."""
    from confluent_kafka import TopicPartition

    from ddc.handlers.kafka.description import topic_id_text

    class Assigning(RecordingConsumer):
        def committed(self, partitions, timeout):
            return [TopicPartition("orders", 0, 700, metadata=f"ddc-start=0 ddc-topic-id={topic_id_text(OLD_ID)}"),
                    TopicPartition("orders", 1, 300, metadata=f"ddc-start=5 ddc-topic-id={topic_id_text(NEW_ID)}"),
                    TopicPartition("orders", 2, 200, metadata="ddc-start=7")]

        def get_watermark_offsets(self, partition, timeout, cached):
            return 3, 1000

    source = source_owning()
    source._admin = Described({"orders": NEW_ID})
    source._known_topic_ids = {"orders": NEW_ID}
    consumer = source.consumer = Assigning()
    source._on_assign(consumer, [types.SimpleNamespace(topic="orders", partition=partition) for partition in range(3)])
    assert source._start == {("orders", 0): 3, ("orders", 1): 5, ("orders", 2): 7}
    assert source._previous == {("orders", 0): 699, ("orders", 1): 299, ("orders", 2): 199}
    assert source._start_metadata("orders", 1) == f"ddc-start=5 ddc-topic-id={topic_id_text(NEW_ID)}"


def test_offsets_going_back_to_a_first_known_id_renew_the_consumer_too():
    """From the second review: with no id known before (the describe at the assignment had failed), a new id
    broke the batch off without renewing the consumer, whose position was past the records dropped."""
    source = source_owning(("orders", 0))
    source._admin = Described({"orders": NEW_ID})
    source._topic_ids = {("orders", 0): None}
    source._previous = {("orders", 0): 99}
    source._take([Consumed("orders", 0, 100), Consumed("orders", 0, 0)])
    assert len(source._held) == 1 and source._consumer_stale


def test_an_assignment_whose_describe_fails_keeps_the_id_last_learned():
    """From the second review: a renewed consumer whose describe timed out took the group's offset for the old
    topic as its own, and sent the new topic's records without an id."""
    from confluent_kafka import TopicPartition

    from ddc.handlers.kafka.description import topic_id_text

    class Failing:
        def describe_topics(self, topics, request_timeout):
            raise ValueError("no answer")

    class Assigning(RecordingConsumer):
        def committed(self, partitions, timeout):
            return [TopicPartition("orders", 0, 10, metadata=f"ddc-start=4 ddc-topic-id={topic_id_text(OLD_ID)}")]

        def get_watermark_offsets(self, partition, timeout, cached):
            return 0, 5

    source = source_owning()
    source._admin = Failing()
    source._known_topic_ids = {"orders": NEW_ID}
    consumer = source.consumer = Assigning()
    source._on_assign(consumer, [types.SimpleNamespace(topic="orders", partition=0)])
    assert source._topic_ids == {("orders", 0): NEW_ID} and source._start == {("orders", 0): 0}
