"""One destination cluster as the egress sees it: its producer, and what it already holds.

Links of one egress process that write to the same cluster share a Destination,
so records arriving over redundant links are written once. The ledger of
delivered source offsets is rebuilt from the destination itself, never from a
local file that could disagree with it: the first time a destination topic is
used, the tail of each of its partitions is read and the `sourceOffset` headers
found there are noted as delivered. The missing-records topic, when set, is
replayed at start-up so that ranges reported before a restart can still be
repaired after it.

Tansu (the test broker) reports a partition's high watermark as the base offset
of its last batch. A partition is read until its end, or until past the
watermark read at the start together with the rest of that fetch (so a
partition another egress is still writing does not keep the read going); both
work with Tansu and Apache Kafka alike.
"""

import json
import logging
import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from ddc.handlers.kafka.codec import SOURCE_OFFSET_HEADER as SOURCE_OFFSET
from ddc.handlers.kafka.codec import SOURCE_PARTITION_HEADER as SOURCE_PARTITION
from ddc.handlers.kafka.codec import SOURCE_TOPIC_HEADER as SOURCE_TOPIC
from ddc.handlers.kafka.codec import SOURCE_TOPIC_ID_HEADER as SOURCE_TOPIC_ID

from ddc.handlers.kafka.client import CONSUMER_ONLY, PRODUCER_ONLY, ClientHealth, client_config
from ddc.handlers.kafka.description import topic_id_from_text
from ddc.handlers.kafka.ledger import Ledger

log = logging.getLogger("ddc.handlers.kafka")


METADATA_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 60.0

PRODUCER_DEFAULTS = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "delivery.report.only.error": True,  # successes are counted from what left the queue, not one call each
    "partitioner": "murmur2_random",  # the Java client's partitioner: same keys, same partitions as Kafka tools
    "message.timeout.ms": 0,  # an outage of the destination makes records wait (then spool), not fail
}


class DestinationUnavailable(Exception):
    """The destination cluster could not be read; the sink retries and never writes without its ledger."""


class Destination:
    _shared: dict = {}
    _shared_lock = threading.Lock()

    @classmethod
    def acquire(cls, properties: dict, link_name: str, report_deliveries: bool = False) -> "Destination":
        """The destination for these producer properties, shared; report_deliveries asks librdkafka to report
        every delivery, not only failures (a write-ahead log releases frames by them). Links sharing a
        destination ask alike (ddc/config.py sees to it)."""
        key = tuple(sorted((str(k), str(v)) for k, v in properties.items())) + (report_deliveries,)
        with cls._shared_lock:
            destination = cls._shared.get(key)
            if destination is None:
                destination = cls._shared[key] = Destination(properties, link_name, report_deliveries)
            destination.users += 1
            return destination

    def release(self) -> None:
        with self._shared_lock:
            self.users -= 1
            if self.users:
                return
            self._shared.pop(next(key for key, value in self._shared.items() if value is self), None)
        remaining = self.producer.flush(READ_TIMEOUT_SECONDS)
        if remaining:
            log.error(f"{remaining} records were still undelivered to Kafka at shutdown; their offsets are "
                      "reported missing when the egress restarts", extra={"fields": {"records": remaining}})

    def __init__(self, properties: dict, link_name: str, report_deliveries: bool = False):
        self.properties = properties
        self.users = 0
        self.lock = threading.RLock()  # held around ledger decisions and produce calls, so order is kept
        self.ledger = Ledger()
        self.health = ClientHealth(link_name, "producer", log)
        config = client_config(properties, PRODUCER_DEFAULTS, self.health, leave_out=CONSUMER_ONLY)
        if report_deliveries:
            config["delivery.report.only.error"] = False
        self.producer = Producer(config)
        self._loaded_topics: set[str] = set()
        self.missing_topic_replayed = False

    # ---- reading the destination ----

    def _reader(self) -> Consumer:
        defaults = {"group.id": "ddc-egress-ledger", "enable.auto.commit": False, "enable.partition.eof": True,
                    "auto.offset.reset": "earliest"}
        try:
            return Consumer(client_config(self.properties, defaults, self.health, leave_out=PRODUCER_ONLY))
        except KafkaException as error:
            raise DestinationUnavailable(f"cannot create a reader of the destination: {error.args[0].str()}") \
                from None

    def _partitions(self, reader: Consumer, topic: str) -> list[int] | None:
        metadata = reader.list_topics(topic, timeout=METADATA_TIMEOUT_SECONDS).topics.get(topic)
        if metadata is None or (metadata.error is not None
                                and metadata.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
            return None
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        return sorted(metadata.partitions)

    def _read(self, reader: Consumer, topic: str, partitions: list[int], lookback: int | None, on_message) -> int:
        """Reads each partition from `lookback` records before its end (or from its start) to its end."""
        assignment = []
        ends = {}
        for partition in partitions:
            low, high = reader.get_watermark_offsets(TopicPartition(topic, partition),
                                                     timeout=METADATA_TIMEOUT_SECONDS)
            if high > low:
                start = low if lookback is None else max(low, high - lookback)
                assignment.append(TopicPartition(topic, partition, start))
                ends[partition] = high
        if not assignment:
            return 0
        reader.assign(assignment)
        waiting = set(ends)
        deadline = time.monotonic() + READ_TIMEOUT_SECONDS
        count = 0
        while waiting:
            if time.monotonic() > deadline:
                raise DestinationUnavailable(f"reading {topic} to its end took longer than {READ_TIMEOUT_SECONDS:g} s")
            reached = set()
            for message in reader.consume(10000, 0.5):
                error = message.error()
                if error is None:
                    on_message(message)
                    count += 1
                    if message.offset() >= ends[message.partition()]:
                        reached.add(message.partition())
                elif error.code() == KafkaError._PARTITION_EOF:
                    waiting.discard(message.partition())
                else:
                    raise KafkaException(error)
            # Past the watermark read at the start, with the rest of that fetch (Tansu's watermark is the first
            # offset of the last batch): a partition still being written never reports its end.
            waiting -= reached
        reader.unassign()
        return count

    def load_topic(self, topic: str, lookback: int) -> bool:
        """Notes the source offsets already in `topic` (once per topic and process); True if it read now."""
        if topic in self._loaded_topics:
            return False
        started = time.monotonic()
        read = self.read_tail(topic, None, lookback)
        self._loaded_topics.add(topic)
        log.info(f"destination topic {topic}: read {read} records at its tail in "
                 f"{time.monotonic() - started:.2f} s to know what it already holds",
                 extra={"fields": {"topic": topic, "records": read}})
        return True

    def read_tail(self, topic: str, partitions: list[int] | None, lookback: int) -> int:
        """Notes the source offsets in the last `lookback` records of some partitions of `topic` (all: None)."""
        reader = self._reader()
        try:
            every = partitions is None
            if every:
                partitions = self._partitions(reader, topic) or []
            count = len(partitions) if every else 0  # reading them all tells what each holds

            def note(message) -> None:
                source = source_coordinates(message.headers())
                if source is not None:
                    self.ledger[(source[0], source[1], source[3])].note_delivered(source[2], message.partition(),
                                                                                  count)

            return self._read(reader, topic, partitions, lookback, note)
        except KafkaException as error:
            raise DestinationUnavailable(f"cannot read the tail of destination topic {topic!r}: "
                                         f"{error.args[0].str()}") from None
        finally:
            reader.close()

    def replay_missing(self, topic: str) -> None:
        """Rebuilds the open missing ranges from the reports written before a restart."""
        reader = self._reader()

        def apply(message):
            try:
                report = json.loads(message.value())
                ledger = self.ledger[(report["topic"], int(report["partition"]),
                                      topic_id_from_text(report.get("topic_id")))]
                first, last = int(report["first_offset"]), int(report["last_offset"])
            except (TypeError, ValueError, KeyError):
                return
            (ledger.note_missing if report.get("event") == "missing" else ledger.note_repaired)(first, last)

        try:
            partitions = self._partitions(reader, topic)
            read = self._read(reader, topic, partitions or [], None, apply)
        except KafkaException as error:
            raise DestinationUnavailable(f"cannot read missing-records topic {topic!r}: "
                                         f"{error.args[0].str()}") from None
        finally:
            reader.close()
        self.missing_topic_replayed = True
        log.info(f"missing-records topic {topic}: replayed {read} reports, {self.ledger.open_ranges()} ranges "
                 "still open", extra={"fields": {"topic": topic, "records": read,
                                                  "open_ranges": self.ledger.open_ranges()}})

    def partition_count(self, topic: str) -> int | None:
        """Partitions of a destination topic, None if it does not exist yet (one metadata request);
        DestinationUnavailable if the cluster cannot say."""
        try:
            metadata = self.producer.list_topics(topic, timeout=METADATA_TIMEOUT_SECONDS).topics.get(topic)
        except KafkaException as error:
            raise DestinationUnavailable(f"no metadata for destination topic {topic!r}: {error.args[0].str()}") \
                from None
        if metadata is None or (metadata.error is not None
                                and metadata.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
            return None
        if metadata.error is not None:
            raise DestinationUnavailable(f"no metadata for destination topic {topic!r}: {metadata.error.str()}")
        return len(metadata.partitions)


def source_coordinates(headers) -> tuple[str, int, int, bytes | None] | None:
    """(sourceTopic, sourcePartition, sourceOffset, sourceTopicId as bytes or None) from a destination record's
    headers; the last of each wins."""
    found = {}
    for name, value in headers or ():
        if name in (SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET, SOURCE_TOPIC_ID) and value is not None:
            found[name] = value
    try:
        topic_id = found.get(SOURCE_TOPIC_ID)
        return (found[SOURCE_TOPIC].decode("utf-8"), int(found[SOURCE_PARTITION]), int(found[SOURCE_OFFSET]),
                topic_id_from_text(topic_id.decode("ascii", "replace")) if topic_id is not None else None)
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
