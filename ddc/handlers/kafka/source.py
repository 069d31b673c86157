"""Kafka source: a consumer-group member whose committed offsets follow what was sent.

At-least-once across a link that cannot acknowledge: an offset is committed only
after every record before it has been handed to the kernel in a frame (the link
acknowledges records in the order it took them from the buffer). A SIGKILL at
any moment therefore loses nothing; what was sent but not yet committed is sent
again after the restart, and the egress drops it as a duplicate. On a rebalance,
everything taken from the revoked partitions is sent and committed before they
are given up. When the link's buffer is full the assigned partitions are paused,
so memory stays bounded while the consumer keeps its group membership.

Every record carries the offset the consumer saw before it in its partition
(after an assignment: the committed offset minus one), so the egress can tell
compacted or transactional holes from records lost on the way, and the first
offset of the group's stream of that partition, kept in the commit metadata
("ddc-start=N") where the broker keeps it (Apache Kafka does, Tansu does not;
there the committed offset stands in). Every record also carries an assignment
byte, new each time the group gives this ingress the partition: when it
changes, the egress knows another ingress may have sent part of the partition
through another egress and reads the destination before trusting its ledger.
It starts at a random value, so a restarted ingress is unlikely (1 in 255) to
repeat the last byte its egress saw.

Every record carries its topic's id too (DescribeTopics, asked at each
assignment), so that a topic deleted and created again, or a source cluster
rebuilt, whose offsets start again, is a new topic at the egress rather than a
run of duplicates of the old one. When a partition's offsets go back, the id is
asked again before any record of it is packed: the records of the new topic go
out under the new id, those of a plain rewind under the old one. The ids of the
topics read so far are also asked every TOPIC_ID_CHECK_SECONDS: librdkafka (2.16)
keeps the old topic's leader epochs when a topic comes back with a new id and
ignores the new topic's metadata, so its consumer waits forever (librdkafka issue
#4898, seen against Apache Kafka); a changed id replaces the consumer with a new
one, which starts from the new topic's committed offsets.

One module, over 400 lines: the consumer's callbacks (assign, revoke, lost,
commit), the records held back and the topic-id checks all read and change the
same per-partition positions, under one lock and in one consumer thread; apart,
each part would reach into the others' state.
"""

import collections
import logging
import random
import threading
import time

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient

from ddc.handlers.kafka import codec
from ddc.handlers.kafka.codec import POSITION, UNKNOWN_OFFSET
from ddc.handlers.base import Source
from ddc.handlers.kafka.client import CONSUMER_ONLY, PRODUCER_ONLY, ClientHealth, client_config
from ddc.handlers.kafka.description import KafkaRecords, topic_id_bytes, topic_id_text

log = logging.getLogger("ddc.handlers.kafka")

POLL_SECONDS = 0.1
REVOKE_WAIT_SECONDS = 30.0
POSITION_INTERVAL_SECONDS = 2.0
PROBE_INTERVAL_SECONDS = 5.0
START_METADATA = "ddc-start="
COMMIT_TIMEOUT_SECONDS = 10.0
TOPIC_ID_TIMEOUT_SECONDS = 10.0
TOPIC_ID_CHECK_SECONDS = 10.0
TOPIC_ID_RETRIES = 3
TOPIC_ID_METADATA = "ddc-topic-id="


class KafkaSource(KafkaRecords, Source):
    default_when_full = "block"
    can_wait = True

    def __init__(self, link_name: str, config):
        super().__init__(link_name, config)
        self.health = ClientHealth(link_name, "consumer", log)
        self.consumer: Consumer | None = None
        self._held: list = []                # records consumed but not yet accepted by the buffer
        self._previous: dict = {}            # (topic, partition) -> offset of the last record taken
        self._start: dict = {}               # (topic, partition) -> first offset of the group's stream
        self._assignments: dict = {}         # (topic, partition) -> assignment byte
        self._assignment = random.randint(1, 255)
        self._topic_ids: dict = {}           # (topic, partition) -> the topic id its records carry (None: none)
        self._known_topic_ids: dict = {}     # topic -> its id when last asked, kept across rebalances
        self._topic_ids_checked = time.monotonic()
        self._consumer_stale = False         # a topic it reads has a new id: librdkafka's consumer would wait forever
        self._described_now: dict = {}       # topic -> its id, asked during this batch
        self._admin: AdminClient | None = None
        self._chunks = collections.deque()   # (records put when this chunk ends, {(topic, partition): next offset})
        self._records_put = 0
        self._acknowledged = 0
        self._acknowledged_changed = threading.Condition()
        self._committable: dict = {}
        self._committed: dict = {}
        self._last_commit = 0.0
        self._paused = False
        self._output = None
        self._positions_announced = 0.0
        self._last_probe = 0.0
        self.records_consumed = 0
        self.records_skipped = 0
        self.commits = 0
        self.commit_failures = 0
        self.rebalances = 0
        self.topic_id_changes = 0

    # ---- lifecycle ----

    def open(self) -> None:
        defaults = {"group.id": consumer_group(self.link_name, self.config), "auto.offset.reset": "earliest"}
        config = client_config(self.config.properties, defaults, self.health, leave_out=PRODUCER_ONLY)
        # DDC commits what the link has sent; librdkafka must neither commit nor store offsets by itself.
        config.update({"enable.auto.commit": "false", "enable.auto.offset.store": "false",
                       "on_commit": self._on_commit})
        try:
            self.consumer = Consumer(config)
        except KafkaException as error:
            raise OSError(f"link {self.link_name}: Kafka consumer settings rejected: {error.args[0].str()}") from None
        except (TypeError, ValueError) as error:
            raise OSError(f"link {self.link_name}: Kafka consumer settings rejected: {error}") from None
        self._admin = AdminClient(client_config(self.config.properties, {}, self.health,
                                                leave_out=PRODUCER_ONLY | CONSUMER_ONLY))
        self.consumer.subscribe(list(self.config.topics), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)

    def run(self, output, stopping) -> None:
        self._output = output
        while not stopping.is_set():
            self._commit_acknowledged()
            if time.monotonic() - self._topic_ids_checked >= TOPIC_ID_CHECK_SECONDS:
                self._check_topic_ids()
            if self._consumer_stale:
                self._renew_consumer()
                continue
            if self._held:
                self._offer_held(output)
                continue
            if time.monotonic() - self._positions_announced >= POSITION_INTERVAL_SECONDS:
                self._announce_positions()
                continue
            messages = self.consumer.consume(self.config.max_poll_records, POLL_SECONDS)
            if messages:
                self._take(messages)
            elif not self.health.healthy:
                self._probe_brokers()

    def _probe_brokers(self) -> None:
        """librdkafka reports brokers going down but not coming back; an idle source asks now and then."""
        now = time.monotonic()
        if now - self._last_probe < PROBE_INTERVAL_SECONDS:
            return
        self._last_probe = now
        try:
            self.consumer.list_topics(timeout=1.0)
        except KafkaException:
            return
        self.health.on_success()

    def close(self) -> None:
        """Commits everything the link has sent, then leaves the group."""
        if self.consumer is None:
            return
        self._commit_acknowledged(force=True, synchronous=True)
        self._output = None  # the link has sent all it will: the revoke in close() has nothing to wait for
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError) as error:
            log.warning(f"link {self.link_name}: Kafka consumer did not close cleanly: {error}",
                        extra={"fields": {"link": self.link_name}})
        self.consumer = None

    def healthy(self) -> bool:
        return self.health.healthy

    # ---- taking records in ----

    def _take(self, messages) -> None:
        offsets, records, errors, skipped = {}, [], [], []
        went_back = False
        self._described_now = {}
        while messages:
            packed, failed, too_large, handled = codec.pack_messages(
                messages, self._previous, self._start, self._assignments, offsets, self.config.max_record_size,
                self._topic_ids, went_back)
            records += packed
            errors += failed
            skipped += too_large
            messages = messages[handled:]
            if messages and self._offsets_went_back(messages[0]):
                # The new consumer reads the rest again; the old topic's offsets are not to be committed for it.
                for coordinate in [coordinate for coordinate in offsets if coordinate[0] == messages[0].topic()]:
                    del offsets[coordinate]
                break
            went_back = True
        for error in errors:
            if error.code() != KafkaError._PARTITION_EOF:
                self.health.on_error(error)
        for topic, partition, offset, size in skipped:
            self._skipped(topic, partition, offset, size)
        if records:
            self.health.on_success()
            self.records_consumed += len(records)
            self._records_put += len(records)
            self._chunks.append((self._records_put, offsets))
            self._held = records

    def _offsets_went_back(self, message) -> bool:
        """A partition's next record is at or below the last one taken: a rewind of the same topic (its records
        are duplicates the egress drops), or a new topic of the same name, or a new cluster, whose offsets
        started again. Returns True for a new topic: then the consumer is renewed and reads every partition of it
        again as the new topic's (another partition's records still in flight may be the old topic's)."""
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        coordinate = (topic, partition)
        carried = self._topic_ids.get(coordinate)
        if topic not in self._described_now:  # once per topic and batch: the id is the topic's, not a partition's
            current = self._current_topic_ids({topic}).get(topic)
            for _ in range(TOPIC_ID_RETRIES):
                if current is not None or carried is None:
                    break
                time.sleep(1.0)  # records of a new topic must not go out under the old id for want of an answer
                current = self._current_topic_ids({topic}).get(topic)
            self._described_now[topic] = current
        current = self._described_now[topic]
        fields = {"link": self.link_name, "topic": topic, "partition": partition, "offset": offset,
                  "previous_offset": self._previous.get(coordinate), "topic_id": topic_id_text(current)}
        if current is None or current == carried:
            log.warning(f"link {self.link_name}: {topic}[{partition}] went back from offset "
                        f"{self._previous.get(coordinate)} to {offset} under the same topic id "
                        f"({topic_id_text(carried) or 'unknown'}); records the destination holds are dropped as "
                        "duplicates", extra={"fields": fields})
            return False
        log.info(f"link {self.link_name}: {topic}[{partition}] went back from offset {self._previous.get(coordinate)} "
                 f"to {offset} under topic id {topic_id_text(current)}, not {topic_id_text(carried)}",
                 extra={"fields": fields})
        self._note_topic_ids({topic: current})
        self._consumer_stale = True  # also when no id was known before: what follows is read again
        self._forget_topics({topic})
        return True

    def _check_topic_ids(self) -> None:
        """A topic read so far that now has another id was created again, or its cluster rebuilt: librdkafka's
        consumer would wait for the old topic's leaders forever (module docstring), so a new one takes over."""
        self._topic_ids_checked = time.monotonic()
        if not self._known_topic_ids:
            return
        self._note_topic_ids(self._current_topic_ids(set(self._known_topic_ids), warn=False))

    def _renew_consumer(self) -> None:
        """A new consumer in place of one that read a topic now under a new id: librdkafka would not update its
        metadata (module docstring), and what it fetched ahead may be the old topic's."""
        log.info(f"link {self.link_name}: a new Kafka consumer takes over (librdkafka issue #4898: the old one would "
                 "wait for the old topic's leaders); it reads from the committed offsets",
                 extra={"fields": {"link": self.link_name}})
        self._consumer_stale = False
        self._commit_acknowledged(force=True, synchronous=True)
        try:
            self.consumer.close()  # its revoke sends what is held, as any rebalance does
        except (KafkaException, RuntimeError) as error:
            log.warning(f"link {self.link_name}: the Kafka consumer did not close cleanly: {error}",
                        extra={"fields": {"link": self.link_name}})
        self.consumer = None
        self._paused = False  # the new consumer's partitions start unpaused unless something is still held
        self.open()

    def _note_topic_ids(self, ids: dict) -> None:
        """Remembers the ids the cluster gave; logs and counts those that changed. No offset of the old topics is
        committed any more, and the consumer is renewed (module docstring)."""
        changed = {topic: topic_id for topic, topic_id in ids.items()
                   if topic_id is not None and self._known_topic_ids.get(topic, topic_id) != topic_id}
        if changed:
            self.topic_id_changes += len(changed)
            described = ", ".join(f"{topic} now has topic id {topic_id_text(topic_id)}, not "
                                  f"{topic_id_text(self._known_topic_ids[topic])}" for topic, topic_id in changed.items())
            log.warning(f"link {self.link_name}: {described}: created again or its cluster replaced; its records "
                        "go out as a new topic's", extra={"fields": {"link": self.link_name, "topics": sorted(changed)}})
            self._consumer_stale = True
            self._forget_topics(set(changed))
        self._known_topic_ids.update({topic: topic_id for topic, topic_id in ids.items() if topic_id is not None})

    def _forget_topics(self, topics: set) -> None:
        for coordinate in [coordinate for coordinate in self._topic_ids if coordinate[0] in topics]:
            self._forget_offsets(coordinate)

    def _forget_offsets(self, coordinate) -> None:
        """Offsets of a partition's old topic must never be committed for the new one (its records below them
        would be skipped)."""
        self._committable.pop(coordinate, None)
        self._committed.pop(coordinate, None)
        for _, offsets in self._chunks:
            offsets.pop(coordinate, None)

    def _current_topic_ids(self, topics: set, warn: bool = True) -> dict:
        """Each topic's id as the cluster says now; None where it has none or cannot say (then records go without
        one, and the egress takes them as the topic it knows)."""
        ids = dict.fromkeys(topics)
        try:
            futures = self._admin.describe_topics(TopicCollection(sorted(topics)),
                                                   request_timeout=TOPIC_ID_TIMEOUT_SECONDS)
        except (KafkaException, TypeError, ValueError) as error:
            futures, failure = {}, error
        else:
            failure = None
        for topic, future in futures.items():
            try:
                ids[topic] = topic_id_bytes(future.result(TOPIC_ID_TIMEOUT_SECONDS).topic_id)
            except Exception as error:  # librdkafka's timeouts come as other types, often without text
                failure = error
        if failure is not None and warn:
            log.warning(f"link {self.link_name}: cannot learn the topic ids of {', '.join(sorted(topics))}: "
                        f"{failure or 'no answer'}; records go without one until the next assignment",
                        extra={"fields": {"link": self.link_name}})
        return ids

    def _skipped(self, topic: str, partition: int, offset: int, size: int) -> None:
        self.records_skipped += 1
        limit = self.config.max_record_size
        log.warning(f"link {self.link_name}: skipped a record of {size} bytes at {topic}[{partition}]@{offset}, "
                    f"larger than max_record_size ({limit}); the egress reports it as skipped",
                    extra={"fields": {"link": self.link_name, "topic": topic, "partition": partition,
                                      "offset": offset, "record_bytes": size}})

    def _announce_positions(self) -> None:
        """Tells the egress how far each partition has been sent, so losses at a stream's end are reported too."""
        self._positions_announced = time.monotonic()
        positions = [codec.pack(POSITION, topic, partition, offset, offset,
                                         self._start.get((topic, partition), UNKNOWN_OFFSET), 0, -1, None, None,
                                         False, self._assignments.get((topic, partition), 0),
                                         self._topic_ids.get((topic, partition)))
                     for (topic, partition), offset in self._previous.items() if offset != UNKNOWN_OFFSET]
        if positions:
            self._records_put += len(positions)
            self._chunks.append((self._records_put, {}))
            self._held = [(metadata, b"") for metadata in positions]

    def _offer_held(self, output) -> None:
        accepted = output.put_many(self._held, timeout=POLL_SECONDS)
        del self._held[:accepted]
        if self._held and not self._paused:
            self._set_paused(True)
        elif not self._held and self._paused:
            self._set_paused(False)
        if self._held:
            # Serves group callbacks while paused; librdkafka discards what it prefetched for paused partitions.
            extra = self.consumer.consume(self.config.max_poll_records, 0)
            if extra:
                held, self._held = self._held, []
                self._take(extra)
                self._held = held + self._held

    def _set_paused(self, paused: bool) -> None:
        assignment = self.consumer.assignment()
        if assignment:
            (self.consumer.pause if paused else self.consumer.resume)(assignment)
        self._paused = paused

    # ---- acknowledgement and commits ----

    def acknowledge(self, count: int) -> None:
        """The link has handed the next `count` records taken from the buffer to the kernel (or settled them)."""
        with self._acknowledged_changed:
            self._acknowledged += count
            self._acknowledged_changed.notify_all()

    def _commit_acknowledged(self, force: bool = False, synchronous: bool = False) -> None:
        with self._acknowledged_changed:
            acknowledged = self._acknowledged
        while self._chunks and self._chunks[0][0] <= acknowledged:
            self._committable.update(self._chunks.popleft()[1])
        now = time.monotonic()
        if not force and now - self._last_commit < self.config.commit_interval:
            return
        self._last_commit = now
        # Only partitions this member owns: records of a revoked partition that the link sends after a revoke
        # that timed out are the new owner's to commit, never this member's (it would move the owner's position).
        for coordinate in [coordinate for coordinate in self._committable if coordinate not in self._assignments]:
            del self._committable[coordinate]
        offsets = [TopicPartition(topic, partition, offset, metadata=self._start_metadata(topic, partition))
                   for (topic, partition), offset in self._committable.items()
                   if self._committed.get((topic, partition)) != offset]
        if not offsets:
            return
        try:
            if synchronous:
                for result in self.consumer.commit(offsets=offsets, asynchronous=False) or ():
                    if result.error is not None:
                        raise KafkaException(result.error)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as error:
            self.commit_failures += 1
            log.warning(f"link {self.link_name}: committing offsets failed: {error.args[0]}; they are committed "
                        "with the next batch, and what was sent meanwhile is resent after a restart",
                        extra={"fields": {"link": self.link_name}})
            return
        for partition in offsets:
            self._committed[(partition.topic, partition.partition)] = partition.offset
        if synchronous:
            self.commits += 1

    def _start_metadata(self, topic: str, partition: int) -> str | None:
        """Commit metadata: where the group's stream of the partition starts, and the topic id it belongs to."""
        start = self._start.get((topic, partition))
        topic_id = topic_id_text(self._topic_ids.get((topic, partition)))
        if start is None:
            return None
        return f"{START_METADATA}{start}" + (f" {TOPIC_ID_METADATA}{topic_id}" if topic_id else "")

    def _on_commit(self, error, partitions) -> None:
        if error is None:
            self.commits += 1
            return
        self.commit_failures += 1
        log.warning(f"link {self.link_name}: an offset commit failed: {error}",
                    extra={"fields": {"link": self.link_name}})

    # ---- group membership ----

    def _on_assign(self, consumer, partitions) -> None:
        self.rebalances += 1
        self._assignment = self._assignment % 255 + 1
        try:
            committed = consumer.committed(partitions, timeout=COMMIT_TIMEOUT_SECONDS)
        except KafkaException:
            committed = []
        ids = self._current_topic_ids({partition.topic for partition in partitions}) if partitions else {}
        for partition in partitions:
            coordinate = (partition.topic, partition.partition)
            # A describe that failed now keeps the id last learned (a renewal's reason, at least).
            self._topic_ids[coordinate] = ids.get(partition.topic) or self._known_topic_ids.get(partition.topic)
        self._note_topic_ids(ids)
        for partition in committed:
            coordinate = (partition.topic, partition.partition)
            self._assignments[coordinate] = self._assignment
            if partition.offset == OFFSET_INVALID or partition.offset < 0:
                self._previous[coordinate] = UNKNOWN_OFFSET
                continue
            self._previous[coordinate] = partition.offset - 1
            fields = dict(field.partition("=")[::2] for field in (partition.metadata or "").split())
            start = fields.get(START_METADATA[:-1], "")
            start = int(start) if start.isascii() and start.isdigit() and len(start) <= 19 else partition.offset
            committed_for = fields.get(TOPIC_ID_METADATA[:-1])
            current = topic_id_text(self._topic_ids.get(coordinate))
            if committed_for and current and committed_for != current:
                start = self._committed_for_another_topic(consumer, partition, committed_for, current)
            self._start[coordinate] = min(start, partition.offset)
        if self._paused:
            consumer.pause(partitions)
        log.info(f"link {self.link_name}: assigned {_describe(partitions)}",
                 extra={"fields": {"link": self.link_name, "partitions": len(partitions)}})

    def _committed_for_another_topic(self, consumer, partition, committed_for: str, current: str) -> int:
        """The group's offset was committed for the topic of the same name before it was created again: the
        consumer starts there all the same, so everything below it in the new topic is announced as the stream
        (and reported missing by the egress, for `ddc repair`) rather than skipped without a word."""
        try:
            low, _ = consumer.get_watermark_offsets(TopicPartition(partition.topic, partition.partition),
                                                    timeout=COMMIT_TIMEOUT_SECONDS, cached=False)
        except KafkaException:
            low = 0
        log.warning(f"link {self.link_name}: {partition.topic}[{partition.partition}]: the group's offset "
                    f"{partition.offset} was committed for topic id {committed_for}, not {current}: the new topic's "
                    f"records from {low} up to it are reported missing; `ddc repair` resends them",
                    extra={"fields": {"link": self.link_name, "topic": partition.topic,
                                      "partition": partition.partition, "offset": partition.offset}})
        return low

    def _on_revoke(self, consumer, partitions) -> None:
        """Sends and commits everything taken from the revoked partitions before they go."""
        self.rebalances += 1
        deadline = time.monotonic() + REVOKE_WAIT_SECONDS
        while self._held and time.monotonic() < deadline and self._output is not None:
            accepted = self._output.put_many(self._held, timeout=POLL_SECONDS)
            del self._held[:accepted]
        with self._acknowledged_changed:
            while self._acknowledged < self._records_put and time.monotonic() < deadline and self._output is not None:
                self._acknowledged_changed.wait(POLL_SECONDS)
            unsent = self._records_put - self._acknowledged
        revoked = {(partition.topic, partition.partition) for partition in partitions}
        dropped = self._drop_held(revoked) if self._held else 0
        if unsent:
            log.warning(f"link {self.link_name}: {unsent} records were not sent before the rebalance ({dropped} "
                        "of the revoked partitions, still held, were dropped); the new owner of their partitions "
                        "sends them again", extra={"fields": {"link": self.link_name}})
        self._commit_acknowledged(force=True, synchronous=True)
        for coordinate in revoked:
            self._previous.pop(coordinate, None)
            self._start.pop(coordinate, None)
            self._assignments.pop(coordinate, None)
            self._topic_ids.pop(coordinate, None)
            self._committable.pop(coordinate, None)
            self._committed.pop(coordinate, None)
        log.info(f"link {self.link_name}: revoked {_describe(partitions)}",
                 extra={"fields": {"link": self.link_name, "partitions": len(partitions)}})

    def _drop_held(self, revoked: set) -> int:
        """Records of revoked partitions still held (the link's buffer stayed full through the revoke wait) are
        another member's to send now: sent later, through this member's link, they would reach the destination
        beside the new owner's. They are the newest taken, so the chunk counts after the ones already in the
        link are re-based on what is kept."""
        base = self._records_put - len(self._held)
        kept_before = [0]
        for metadata, _ in self._held:
            kept_before.append(kept_before[-1] + (codec.coordinates(metadata)[:2] not in revoked))
        dropped = len(self._held) - kept_before[-1]
        if not dropped:
            return 0
        self._held = [record for index, record in enumerate(self._held)
                      if kept_before[index + 1] > kept_before[index]]
        # A chunk that ended among the held records no longer vouches for the revoked partitions: its end may now
        # fall on records already in the link, and committing its offsets would skip the dropped ones.
        self._chunks = collections.deque(
            (end, offsets) if end <= base else
            (base + kept_before[end - base], {coordinate: offset for coordinate, offset in offsets.items()
                                              if coordinate not in revoked})
            for end, offsets in self._chunks)
        self._records_put = base + len(self._held)
        return dropped

    def _on_lost(self, consumer, partitions) -> None:
        log.warning(f"link {self.link_name}: lost {_describe(partitions)} without a clean revoke; "
                    "records not yet committed will be sent again by their new owner",
                    extra={"fields": {"link": self.link_name}})
        lost = {(partition.topic, partition.partition) for partition in partitions}
        if self._held:
            self._drop_held(lost)  # another member has them already
        for coordinate in lost:
            self._previous.pop(coordinate, None)
            self._assignments.pop(coordinate, None)
            self._topic_ids.pop(coordinate, None)
            self._forget_offsets(coordinate)  # nothing of them is this member's to commit any more

    def counters(self) -> dict:
        return {"kafka_records_consumed": self.records_consumed, "kafka_records_skipped": self.records_skipped,
                "kafka_commits": self.commits, "kafka_commit_failures": self.commit_failures,
                "kafka_rebalances": self.rebalances, "kafka_client_errors": self.health.errors,
                "kafka_source_topic_id_changes": self.topic_id_changes,
                "kafka_records_unacknowledged": self._records_put - self._acknowledged}


def consumer_group(link_name: str, config) -> str:
    """The group a link's consumer joins: group.id among the properties wins over group_id, as librdkafka sees
    the properties over DDC's defaults."""
    return str(config.properties.get("group.id") or config.group_id or f"ddc-{link_name}")


def _describe(partitions) -> str:
    return ", ".join(f"{partition.topic}[{partition.partition}]" for partition in partitions) or "no partitions"
