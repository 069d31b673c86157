"""Kafka sink: writes each record once to the destination cluster and reports what never arrived.

Records keep key, value, headers, timestamp and timestamp type; each also gets
the headers sourceTopic, sourcePartition and sourceOffset (UTF-8, as Confluent's
connector writes them), and sourceTopicId where the source has topic ids,
appended after its own. Each topic id of a source partition is judged on its
own: a topic created again starts its offsets again. The producer is idempotent
(acks=all), so librdkafka's retries never write twice; a record whose delivery
still fails is logged with its coordinates and reported missing, so that a
rewind of the ingress repairs it. When the producer's queue is full, the sink
waits: the egress buffer then fills and counts what it cannot hold, which the
ledger reports as missing ranges. Nothing is dropped without a report.

The ledger is shared by every link writing to the cluster, but only this link
knows when its ingress was given a partition (the assignment byte of its
records): from then on, another ingress of the group may have sent part of that
partition through another egress, so the destination is read again before the
first record after each new assignment is judged, and whenever the ingress
restarted.

Missing ranges and repairs are logged, counted, and written as JSON records to
`missing_records_topic` when it is set (key "topic:partition"); a repair once its
record is delivered, so that the report never closes a range whose record a kill
could still lose.
"""

import collections
import functools
import json
import logging
import time

from confluent_kafka import KafkaException

from ddc.handlers.base import Sink
from ddc.handlers.kafka.codec import FILTERED, POSITION, RECORD, SKIPPED, PendingFrame, RecordWriter, Route
from ddc.handlers.kafka.description import KafkaRecords, topic_id_text
from ddc.handlers.kafka.destination import Destination, DestinationUnavailable
from ddc.handlers.kafka.topics import TopicMapping

log = logging.getLogger("ddc.handlers.kafka")

QUEUE_FULL_WAIT_SECONDS = 0.05
RETRY_SECONDS = 2.0
REPORT_WAIT_SECONDS = 10.0
CLOSE_LOCK_SECONDS = 1.0
ROUTE_REFRESH_SECONDS = 30.0
TIMESTAMP_CREATE = 1
UNASSIGNED_PARTITION = -1


class KafkaSink(KafkaRecords, Sink):
    confirms_later = True

    def __init__(self, link_name: str, config):
        super().__init__(link_name, config)
        self.mapping = TopicMapping(config.topic_prefix, config.topic_rename, config.topic_rewrite)
        self.destination: Destination | None = None
        self.stopping = None
        self.records_written = 0
        self.records_duplicate = 0
        self.records_skipped = 0
        self.records_filtered = 0
        self.records_repaired = 0
        self.delivery_failures = 0
        self.missing_ranges_reported = 0
        self.missing_offsets_reported = 0
        self.report_failures = 0
        self.undecodable = 0
        self.queue_full_waits = 0
        self.destination_checks = 0
        self.topic_id_changes = 0
        self._topics_read_now: set = set()  # destination topics whose tail was read during this write()
        self._assignments: dict = {}  # (source topic, partition) -> the assignment byte its records last carried
        self._routes: dict = {}
        self._partition_counts: dict = {}  # destination topic -> partitions, rebuilt with the routes
        self._known_partition_counts: dict = {}  # the last counts the cluster gave, for when it cannot
        self._routes_built = 0.0
        self._tracking = False
        self._frames: collections.deque = collections.deque()  # PendingFrame, oldest first
        self._frame: PendingFrame | None = None
        self._writer: RecordWriter | None = None
        self._reporting_to: Destination | None = None  # once closed: the destination late callbacks report to
        self._repairs: dict = {}  # (topic, partition, topic id) -> runs [route, first, last] not reported yet
        self._reporting_repairs = False

    def track_deliveries(self) -> None:
        self._tracking = True

    def start_frame(self, position) -> None:
        self._frame = PendingFrame(position)
        self._frames.append(self._frame)

    def delivered(self):
        """Delivery reports arrive in any order across partitions: a frame counts once it and all before it are
        reported on, failures included (those are reported missing)."""
        frames, position = self._frames, None
        while frames and frames[0].outstanding <= 0:
            done = frames.popleft().position
            position = done if done is not None else position
        return position

    def open(self) -> None:
        try:
            self.destination = Destination.acquire(self.config.properties, self.link_name,
                                                   self._tracking or self.config._report_deliveries
                                                   or bool(self.config.missing_records_topic))
        except KafkaException as error:
            raise OSError(f"link {self.link_name}: Kafka producer settings rejected: {error.args[0].str()}") from None
        except (TypeError, ValueError) as error:
            raise OSError(f"link {self.link_name}: Kafka producer settings rejected: {error}") from None
        self._reporting_to = None

    def close(self) -> None:
        if self.destination is not None:
            # From now on each repair is reported as it comes. release() flushes a destination only for its last
            # user: with other links still on it, this link's delivery callbacks run in their polls, later.
            self._reporting_to = self.destination
            # Delivery callbacks run in whichever link's poll holds the lock; a link stuck on a destination that is
            # down holds it for good, and must not hold up the stop too.
            locked = self.destination.lock.acquire(timeout=CLOSE_LOCK_SECONDS)
            try:
                self._report_repairs(may_poll=locked)
            finally:
                if locked:
                    self.destination.lock.release()
            self.destination.release()
            self.destination = self._writer = None

    # ---- writing ----

    def write(self, records: list) -> None:
        destination = self.destination
        with destination.lock:
            self._topics_read_now = set()
            self._prepare()
            if self._writer is None:  # made with the producer it writes to
                self._writer = RecordWriter(self._assignments, self._route, self._admit_out_of_order,
                                            destination.producer.produce, self._failed, self._undeliverable,
                                            self._wait_for_room, TIMESTAMP_CREATE)
            written, malformed = self._writer.write(records, self._current_routes(), self._frame)
            self.records_written += written
            destination.producer.poll(0)
            self._report_repairs()
        if malformed:
            self.undecodable += malformed
            log.error(f"link {self.link_name}: {malformed} records had malformed Kafka metadata and were dropped",
                      extra={"fields": {"link": self.link_name, "records": malformed}})

    def idle(self) -> None:
        with self.destination.lock:
            self.destination.producer.poll(0)
            self._report_repairs()
            # librdkafka says when all brokers are down, not when they are back: an empty queue after an
            # outage means everything queued was delivered, so they are.
            if not self.destination.health.healthy and not self._in_flight():
                self.destination.health.on_success()

    def _wait_for_room(self) -> None:
        self.queue_full_waits += 1
        self.destination.producer.poll(QUEUE_FULL_WAIT_SECONDS)
        self._report_repairs()

    def sender_restarted(self) -> None:
        self._assignments.clear()

    def _admit_out_of_order(self, route, kind: int, offset: int, previous: int, start: int,
                            assignment: int, target_partition: int):
        """Everything but the next record in order: placeholders, positions, gaps, duplicates, repairs, and the
        first record after the ingress was given the partition. Returns whether to write the record, or for a
        record that repairs a reported range, what to call once it is delivered: the repair's report, which
        written before would close the range in the topic while a kill could still lose the record."""
        ledger = route.ledger
        coordinate = (route.source_topic, route.source_partition)
        reassigned = assignment != 0 and self._assignments.get(coordinate) != assignment
        if reassigned:
            self._assignments[coordinate] = assignment
        if reassigned and route.target not in self._topics_read_now:
            self._check_destination(route, "is newly assigned to its ingress")
        elif ledger.is_discontinuous(kind == POSITION, offset, previous):
            self._check_destination(route, "does not follow what this egress wrote")
        if kind == POSITION:
            admission = ledger.admit_position(offset, start)
        else:
            spread = route.target_partition == UNASSIGNED_PARTITION and route.partitions
            admission = ledger.admit(offset, previous, start, target_partition if spread else None, route.partitions)
        if admission.missing:
            self._report("missing", route, *admission.missing)
        if kind == SKIPPED:
            self.records_skipped += 1
        elif kind == FILTERED:
            self.records_filtered += 1
        elif kind == RECORD and not admission.deliver:
            self.records_duplicate += 1
        delivers = kind == RECORD and admission.deliver
        if admission.repaired and delivers and self.config.missing_records_topic:
            return functools.partial(self._repaired, route, *admission.repaired)
        if admission.repaired:  # a position or a placeholder settles the range itself; a log line can go now
            self._repaired(route, *admission.repaired)
        return delivers

    def _check_destination(self, route, reason: str) -> None:
        """Reads the tail of the destination partition(s) the source partition maps to, so that records another
        egress wrote meanwhile are neither written again nor reported missing."""
        partitions = None if route.target_partition == UNASSIGNED_PARTITION else [route.target_partition]
        started = time.monotonic()
        while True:
            try:
                read = self.destination.read_tail(route.target, partitions, self.config.deduplication_lookback)
                break
            except DestinationUnavailable as error:
                self._retry_later(error)
        self.destination_checks += 1
        before, route.ledger.checked_at = route.ledger.high, route.ledger.high
        log.info(f"link {self.link_name}: {route.source_topic}[{route.source_partition}] {reason}; read {read} "
                 f"records of {route.target} in {time.monotonic() - started:.2f} s: "
                 f"delivered up to offset {before if before is not None else 'none'}",
                 extra={"fields": {"link": self.link_name, "topic": route.source_topic,
                                   "partition": route.source_partition, "records": read}})

    def _current_routes(self) -> dict:
        """Routes are rebuilt now and then, so a destination topic that gains partitions is used fully."""
        now = time.monotonic()
        if now - self._routes_built > ROUTE_REFRESH_SECONDS:
            self._known_partition_counts.update(self._partition_counts)
            self._routes, self._partition_counts, self._routes_built = {}, {}, now
        return self._routes

    def _route(self, topic: str, partition: int, topic_id: bytes | None):
        """Where records of one source partition (of one incarnation of its topic) go, worked out once: the
        per-record path only looks it up."""
        # An invalid mapped name is a configuration error: it stops the proxy (exit 1) with the names in the
        # message, and the records not written are reported missing once the mapping is fixed.
        target = self.mapping.destination(topic)
        while True:
            try:
                if self.destination.load_topic(target, self.config.deduplication_lookback):
                    self._topics_read_now.add(target)
                break
            except DestinationUnavailable as error:
                self._retry_later(error)
        target_partition, count = self._partition(target, partition)
        ledgers = self.destination.ledger
        before = ledgers.topic_ids(topic, partition)
        id_text = topic_id_text(topic_id)
        route = Route(topic, partition, target, target_partition, ledgers[(topic, partition, topic_id)],
                      count or 0 if target_partition == UNASSIGNED_PARTITION else 0, topic_id, id_text)
        if topic_id is not None and topic_id not in before and any(before):
            self.topic_id_changes += 1
            log.warning(f"link {self.link_name}: {topic}[{partition}] comes with topic id {id_text}, not "
                        f"{topic_id_text([known for known in before if known][-1])}: the source topic was created "
                        "again or its cluster replaced; its offsets start again, and its records are judged as a new "
                        "topic's, not as duplicates", extra={"fields": {"link": self.link_name, "topic": topic,
                                                                        "partition": partition, "topic_id": id_text}})
        if target in self._topics_read_now:
            route.ledger.checked_at = route.ledger.high  # the destination was read for this very batch
        self._routes[(topic, partition, topic_id)] = route
        return route

    def _prepare(self) -> None:
        """Waits until the ledger can be trusted: never write what might already be in the destination."""
        destination = self.destination
        while self.config.missing_records_topic and not destination.missing_topic_replayed:
            try:
                destination.replay_missing(self.config.missing_records_topic)
            except DestinationUnavailable as error:
                self._retry_later(error)

    def _retry_later(self, error) -> None:
        log.error(f"link {self.link_name}: {error}; retrying in {RETRY_SECONDS:g} s (frames wait in the "
                  "egress buffer meanwhile)", extra={"fields": {"link": self.link_name}})
        time.sleep(RETRY_SECONDS)

    def _partition(self, target: str, source_partition: int) -> tuple[int, int | None]:
        """The destination partition, or -1 to let the key decide (murmur2, as Kafka's clients), with the
        destination topic's partition count (None: it does not exist yet, librdkafka's partitioner decides)."""
        mode = self.config.partitioning
        if mode == "source":
            return source_partition, None
        if target not in self._partition_counts:
            try:
                self._partition_counts[target] = self.destination.partition_count(target)
            except DestinationUnavailable:
                # A cluster that is down must not move records to other partitions: keep what it said last.
                self._partition_counts[target] = self._known_partition_counts.get(target)
        count = self._partition_counts[target]
        if mode == "auto" and count is not None and source_partition < count:
            return source_partition, count
        return UNASSIGNED_PARTITION, count

    def _failed(self, route: Route, offset: int, error, message) -> None:
        """A record's failed delivery, in librdkafka's callback: the report is neither waited for nor given room
        (no flush or poll here)."""
        self._undeliverable(route, offset, f"delivery failed: {error.str()}", wait=False)

    def _undeliverable(self, route: Route, offset: int, reason: str, wait: bool = True) -> None:
        self.delivery_failures += 1
        route.ledger.note_missing(offset, offset)
        self._report("missing", route, offset, offset, reason=reason, wait=wait)

    # ---- reports ----

    def _repaired(self, route: Route, first: int, last: int) -> None:
        """A repair comes record by record (a rewind resends a range in order): runs of them are reported as one
        range once the producer's poll that delivered them is over, where a full queue can be waited out."""
        key = (route.source_topic, route.source_partition, route.topic_id)
        if self.destination is None or self._reporting_to is not None:  # closed, or closing
            self._report_repairs(key, may_poll=False)
            self._report("repaired", route, first, last, wait=False)
            return
        runs = self._repairs.setdefault(key, [])
        if runs and runs[-1][1] <= first <= runs[-1][2] + 1:
            runs[-1][2] = max(runs[-1][2], last)
        else:
            runs.append([route, first, last])

    def _report_repairs(self, key: tuple | None = None, may_poll: bool = True) -> None:
        """The runs of repairs not reported yet (of one partition, or all), in the order they came. may_poll:
        outside librdkafka's callbacks, a full queue is waited out rather than a report lost."""
        if self._reporting_repairs:  # waiting for room inside a report: the runs that poll made go next time
            return
        if key is not None:
            runs = self._repairs.pop(key, [])
        else:
            runs = []
            while self._repairs:
                runs += self._repairs.popitem()[1]
        self._reporting_repairs = True
        try:
            for route, first, last in runs:
                self._report("repaired", route, first, last, wait=False, may_poll=may_poll)
        finally:
            self._reporting_repairs = False

    def _report(self, event: str, route: Route, first: int, last: int,
                reason: str = "offsets never arrived over the link", wait: bool = True,
                may_poll: bool | None = None) -> None:
        """wait: until the report is in the topic; may_poll (as wait when None): for room in the producer's queue."""
        topic, partition = route.source_topic, route.source_partition
        fields = {"link": self.link_name, "event": f"records {event}", "topic": topic, "partition": partition,
                  "first_offset": first, "last_offset": last}
        if route.topic_id is not None:
            fields["topic_id"] = topic_id_text(route.topic_id)
        if event == "missing":
            # a repaired record whose delivery failed: its report comes after the run before it
            self._report_repairs((topic, partition, route.topic_id), may_poll=wait)
            self.missing_ranges_reported += 1
            self.missing_offsets_reported += last - first + 1
            log.warning(f"link {self.link_name}: records missing: {topic}[{partition}] offsets {first}..{last} "
                        f"({reason}); to repair, rewind the ingress consumer group to offset {first} "
                        "(docs/kafka.md)", extra={"fields": {**fields, "reason": reason}})
        else:
            self.records_repaired += last - first + 1
            log.info(f"link {self.link_name}: records repaired: {topic}[{partition}] offsets {first}..{last}",
                     extra={"fields": fields})
        if self.config.missing_records_topic:
            report = {"event": event, "topic": topic, "partition": partition, "first_offset": first,
                      "last_offset": last, "link": self.link_name, "reason": reason if event == "missing" else "",
                      "reported_at_ms": int(time.time() * 1000), **({"topic_id": fields["topic_id"]}
                                                                     if "topic_id" in fields else {})}
            # A missing range is in the topic before the record that revealed it is produced (wait). A repair is
            # not waited for: its record is not delivered yet, and the report must not close the range before.
            self._write_report(event, report, fields, wait and event == "missing",
                               may_poll=wait if may_poll is None else may_poll)

    def _write_report(self, event: str, report: dict, fields: dict, wait: bool, may_poll: bool) -> None:
        """A restart rebuilds the ledger from the destination, so a range whose report died in the producer's queue
        while the records after it were delivered would be lost, and a later repair dropped as duplicates.
        Reports are rare (a loss beyond what FEC repairs), so waiting for everything queued costs little."""
        failed = []
        producer = (self.destination or self._reporting_to).producer

        def reported(error, message) -> None:
            if error is not None:
                failed.append(error)
                self._report_failed(event, error, fields)

        while True:
            try:
                producer.produce(
                    self.config.missing_records_topic, key=f"{report['topic']}:{report['partition']}",
                    value=json.dumps(report).encode(), on_delivery=reported)
                break
            except BufferError as error:
                if not may_poll:  # inside librdkafka's callback, which must not serve others
                    self._report_failed(event, f"the producer's queue is full ({error})", fields)
                    return
                self._wait_for_room()
            except KafkaException as error:
                self._report_failed(event, error.args[0], fields)
                return
        while wait and not failed and producer.flush(REPORT_WAIT_SECONDS):
            log.error(f"link {self.link_name}: waiting for the destination to take a report for "
                      f"{self.config.missing_records_topic}; records after it wait too", extra={"fields": fields})

    def _report_failed(self, event: str, error, fields: dict) -> None:
        self.report_failures += 1
        log.error(f"link {self.link_name}: could not write a {event} report to {self.config.missing_records_topic}: "
                  f"{error}; the log line above is the only record of it (kafka_report_failures)",
                  extra={"fields": fields})

    def _in_flight(self) -> int:
        return len(self.destination.producer) if self.destination else 0

    def counters(self) -> dict:
        ledger = self.destination.ledger if self.destination else None
        return {
            "kafka_records_written": self.records_written,
            "kafka_records_delivered": self.records_written - self.delivery_failures - self._in_flight(),
            "kafka_records_duplicate": self.records_duplicate, "kafka_records_skipped": self.records_skipped,
            "kafka_records_filtered": self.records_filtered, "kafka_records_repaired": self.records_repaired,
            "kafka_delivery_failures": self.delivery_failures,
            "kafka_missing_ranges_reported": self.missing_ranges_reported,
            "kafka_missing_offsets_reported": self.missing_offsets_reported,
            "kafka_missing_ranges_open": ledger.open_ranges() if ledger else 0,
            "kafka_report_failures": self.report_failures,
            "kafka_records_undecodable": self.undecodable, "kafka_producer_queue_full_waits": self.queue_full_waits,
            "kafka_destination_checks": self.destination_checks,
            "kafka_source_topic_id_changes": self.topic_id_changes,
            "kafka_client_errors": self.destination.health.errors if self.destination else 0,
        }
