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
"""

import collections
import logging
import random
import threading
import time

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition

from ddc._core import kafka_metadata
from ddc._core.kafka_metadata import POSITION, UNKNOWN_OFFSET
from ddc.handlers.base import Source
from ddc.handlers.kafka.description import KafkaRecords
from ddc.handlers.kafka.client import PRODUCER_ONLY, ClientHealth, client_config

log = logging.getLogger("ddc.handlers.kafka")

POLL_SECONDS = 0.1
REVOKE_WAIT_SECONDS = 30.0
POSITION_INTERVAL_SECONDS = 2.0
PROBE_INTERVAL_SECONDS = 5.0
START_METADATA = "ddc-start="
COMMIT_TIMEOUT_SECONDS = 10.0


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
        self.consumer.subscribe(list(self.config.topics), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)

    def run(self, output, stopping) -> None:
        self._output = output
        while not stopping.is_set():
            self._commit_acknowledged()
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
        offsets = {}
        records, errors, skipped = kafka_metadata.pack_messages(messages, self._previous, self._start,
                                                                self._assignments, offsets,
                                                                self.config.max_record_size)
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
        positions = [kafka_metadata.pack(POSITION, topic, partition, offset, offset,
                                         self._start.get((topic, partition), UNKNOWN_OFFSET), 0, -1, None, None,
                                         False, self._assignments.get((topic, partition), 0))
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
        start = self._start.get((topic, partition))
        return None if start is None else f"{START_METADATA}{start}"

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
        for partition in committed:
            coordinate = (partition.topic, partition.partition)
            self._assignments[coordinate] = self._assignment
            if partition.offset == OFFSET_INVALID or partition.offset < 0:
                self._previous[coordinate] = UNKNOWN_OFFSET
                continue
            self._previous[coordinate] = partition.offset - 1
            metadata = partition.metadata or ""
            start = int(metadata[len(START_METADATA):]) if (
                metadata.startswith(START_METADATA) and metadata[len(START_METADATA):].isdigit()) else partition.offset
            self._start[coordinate] = min(start, partition.offset)
        if self._paused:
            consumer.pause(partitions)
        log.info(f"link {self.link_name}: assigned {_describe(partitions)}",
                 extra={"fields": {"link": self.link_name, "partitions": len(partitions)}})

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
            kept_before.append(kept_before[-1] + (kafka_metadata.coordinates(metadata)[:2] not in revoked))
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

    def counters(self) -> dict:
        return {"kafka_records_consumed": self.records_consumed, "kafka_records_skipped": self.records_skipped,
                "kafka_commits": self.commits, "kafka_commit_failures": self.commit_failures,
                "kafka_rebalances": self.rebalances, "kafka_client_errors": self.health.errors,
                "kafka_records_unacknowledged": self._records_put - self._acknowledged}


def consumer_group(link_name: str, config) -> str:
    """The group a link's consumer joins: group.id among the properties wins over group_id, as librdkafka sees
    the properties over DDC's defaults."""
    return str(config.properties.get("group.id") or config.group_id or f"ddc-{link_name}")


def _describe(partitions) -> str:
    return ", ".join(f"{partition.topic}[{partition.partition}]" for partition in partitions) or "no partitions"
