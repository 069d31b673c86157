"""`ddc repair`: from the egress's missing-range reports to the rewind of the ingress's consumer group.

A one-way link cannot ask for a resend, so a range the egress reports missing is
repaired on the high side: the ingress's consumer group is rewound to the first
missing offset of each partition, and the ingress, started again, sends that
part once more; the egress writes what it lacks and drops the rest as duplicates.
This module turns the reports an operator carried across (the JSON records of
`missing_records_topic`, or the egress's log lines, JSON or text) into that
rewind, with the checks a manual `kafka-consumer-groups --reset-offsets` skips:
the reports must be for this link, for topics it reads and for partitions and
offsets the source holds, the group must have no active member, and every
missing offset must still be in the source. Anything wrong stops it before it
changes anything.

Reports are applied in time order where every report says when it was made (the
records and JSON log lines do), else in the order given: a range reported
missing and later repaired needs no rewind. The offsets are committed with
librdkafka's AdminClient (AlterConsumerGroupOffsets), which Apache Kafka and
Tansu both accept for a group without members.
"""

import datetime
import json
import logging
import re
from dataclasses import dataclass

from confluent_kafka import (ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaException, TopicCollection,
                             TopicPartition)
from confluent_kafka.admin import AdminClient, OffsetSpec

from ddc.handlers.kafka.client import CONSUMER_ONLY, PRODUCER_ONLY, as_librdkafka
from ddc.handlers.kafka.description import topic_id_bytes, topic_id_from_text, topic_id_text
from ddc.handlers.kafka.source import consumer_group

TIMEOUT_SECONDS = 30.0
MAX_TIMEOUT_SECONDS = 3600.0
MAX_PARTITION = (1 << 31) - 1
MAX_OFFSET = (1 << 63) - 1
TEXT_REPORT = re.compile(r"link (?P<link>\S+): records (?P<event>missing|repaired): (?P<topic>\S+)\[(?P<partition>[0-9]+)\] "
                         r"offsets (?P<first_offset>[0-9]+)\.\.(?P<last_offset>[0-9]+)", re.ASCII)
JSON_EVENTS = {"missing": "missing", "repaired": "repaired", "records missing": "missing",
               "records repaired": "repaired"}
IDLE_STATES = (ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD)
QUIET = logging.getLogger("ddc.repair.librdkafka")  # librdkafka's own lines would break the one-line errors
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False


class RepairError(Exception):
    """Bad input or a state in which a rewind would be wrong; `usage` marks what the operator's input got wrong
    (exit 2) rather than the clusters' state (exit 1)."""

    def __init__(self, message: str, usage: bool = False):
        super().__init__(message)
        self.usage = usage


@dataclass
class Report:
    event: str  # "missing" or "repaired"
    link: str
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    made_at_ms: int | None  # None: the report does not say (text log lines)
    topic_id: str | None = None  # the source topic's id when the range went missing; None: not said


def read_reports(name: str, lines) -> list[Report]:
    """Every report among lines of JSON records, JSON log lines or text log lines; other lines are skipped."""
    reports = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        try:
            report = _report(line)
        except (ValueError, TypeError, KeyError, RecursionError) as error:
            raise RepairError(f"{name}:{number}: not a readable missing-range report ({error}): {line[:200]}",
                              usage=True) from None
        if report is not None:
            reports.append(report)
    if not reports:
        raise RepairError(f"{name}: no missing-range report in it; give the JSON records of missing_records_topic "
                          "or the egress's log lines", usage=True)
    return reports


def _report(line: str) -> Report | None:
    made_at = None
    if line.startswith("{"):
        try:
            fields = json.loads(line)
        except json.JSONDecodeError:
            return None
        event = fields.get("event") if isinstance(fields, dict) else None
        event = JSON_EVENTS.get(event) if isinstance(event, str) else None
        if event is None:
            return None
        made_at = _milliseconds(fields.get("reported_at_ms"), fields.get("time"))
        topic_id = fields.get("topic_id") if topic_id_from_text(fields.get("topic_id")) else None
    else:
        found = TEXT_REPORT.search(line)
        if found is None:
            return None
        fields, event, topic_id = found.groupdict(), found["event"], None
    partition, first, last = (_whole(fields[key], key) for key in ("partition", "first_offset", "last_offset"))
    if partition > MAX_PARTITION:
        raise ValueError(f"partition {partition} is beyond what Kafka has")
    if first > last or last > MAX_OFFSET:
        raise ValueError(f"offsets {first}..{last} are not a range of Kafka offsets")
    if not isinstance(fields["topic"], str) or not isinstance(fields["link"], str):
        raise TypeError("topic and link must be text")
    return Report(event, fields["link"], fields["topic"], partition, first, last, made_at, topic_id)


def _whole(value, key: str) -> int:
    if type(value) is int and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        return int(value)
    raise ValueError(f"{key} must be a whole number of at least 0, not {value!r}")


def _milliseconds(reported_at_ms, time) -> int | None:
    if type(reported_at_ms) is int:
        return reported_at_ms
    if isinstance(time, str):
        try:
            return int(datetime.datetime.fromisoformat(time.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            return None
    return None


def open_ranges(reports: list[Report]) -> dict[tuple[str, int, str | None], list[list[int]]]:
    """Per (topic, partition, topic id), the offset ranges reported missing and not repaired since: a topic
    created again has offsets of its own."""
    if all(report.made_at_ms is not None for report in reports):
        reports = sorted(reports, key=lambda report: report.made_at_ms)
    ranges: dict[tuple[str, int, str | None], list[list[int]]] = {}
    for report in reports:
        key = (report.topic, report.partition, report.topic_id)
        kept = []
        for first, last in ranges.get(key, []):  # cut the report's range out
            if last < report.first_offset or first > report.last_offset:
                kept.append([first, last])
                continue
            if first < report.first_offset:
                kept.append([first, report.first_offset - 1])
            if last > report.last_offset:
                kept.append([report.last_offset + 1, last])
        if report.event == "missing":
            kept.append([report.first_offset, report.last_offset])
        ranges[key] = sorted(kept)
    return {coordinate: spans for coordinate, spans in ranges.items() if spans}


def by_partition(ranges: dict) -> dict[tuple[str, int], list[list[int]]]:
    """open_ranges() per (topic, partition), once the topic ids are checked."""
    merged: dict[tuple[str, int], list[list[int]]] = {}
    for (topic, partition, _), spans in ranges.items():
        merged.setdefault((topic, partition), []).extend(spans)
    return {coordinate: sorted(spans) for coordinate, spans in merged.items()}


@dataclass
class PartitionPlan:
    topic: str
    partition: int
    missing: list[list[int]]
    committed: int | None  # None: the group has no offset for it
    rewind_to: int | None  # None: nothing to change

    def describe(self) -> str:
        spans = ", ".join(f"{first}..{last}" for first, last in self.missing)
        count = sum(last - first + 1 for first, last in self.missing)
        where = f"{self.topic}[{self.partition}]"
        if self.rewind_to is None:
            return (f"{where}: {count} missing ({spans}); the group is at {self.committed}, before them already: "
                    "nothing to rewind")
        if self.committed is None:
            return f"{where}: {count} missing ({spans}); no committed offset: set to {self.rewind_to}"
        return (f"{where}: {count} missing ({spans}); rewind from {self.committed} to {self.rewind_to}: resends "
                f"{self.committed - self.rewind_to} records, the egress drops those it holds as duplicates")


def topic_is_read(topic: str, topics: list[str]) -> bool:
    """As librdkafka subscribes: a name starting with ^ is a regular expression searched in the topic name."""
    return any(re.search(pattern, topic) if pattern.startswith("^") else pattern == topic for pattern in topics)


def select_link(settings, name: str | None):
    """The ingress link with a Kafka source that the reports are for."""
    if settings.role != "ingress":
        raise RepairError("ddc repair needs the ingress's config (the high side, where the consumer group is); "
                          f"this one is an {settings.role}'s", usage=True)
    kafka = [link_name for link_name, link in settings.links.items() if link.source.type == "kafka"]
    if name is not None:
        if name not in kafka:
            raise RepairError(f"link {name!r} is not a Kafka link of this config (its Kafka links: "
                              f"{', '.join(kafka) or 'none'})", usage=True)
        return name, settings.links[name]
    if len(kafka) != 1:
        raise RepairError(f"this config has {len(kafka)} Kafka links ({', '.join(kafka) or 'none'}); choose one "
                          "with --link", usage=True)
    return kafka[0], settings.links[kafka[0]]


def check_reports(reports: list[Report], link_name: str, report_link: str | None, topics: list[str]) -> None:
    expected = report_link or link_name
    others = sorted({report.link for report in reports if report.link != expected})
    if others:
        raise RepairError(f"reports for link(s) {', '.join(map(repr, others))}, not {expected!r}: give only the "
                          f"reports of this link" + ("" if report_link else ", or, if its egress names the link "
                                                     "otherwise, pass --report-link NAME"), usage=True)
    unread = sorted({report.topic for report in reports if not topic_is_read(report.topic, topics)})
    if unread:
        raise RepairError(f"reports for topic(s) {', '.join(map(repr, unread))}, which link {link_name!r} does not "
                          f"read (its topics: {', '.join(topics)})", usage=True)


class GroupRewind:
    """The consumer group's side: its state, committed offsets, the topics' extent, and the rewind."""

    def __init__(self, properties: dict, group: str, timeout: float = TIMEOUT_SECONDS):
        config = {key: as_librdkafka(value) for key, value in properties.items()
                  if key not in PRODUCER_ONLY and key not in CONSUMER_ONLY}
        config["logger"] = QUIET
        self.bootstrap = properties.get("bootstrap.servers")
        self.group = group
        self.timeout = timeout
        self.admin = AdminClient(config)

    def _wait(self, future, what: str):
        try:
            return future.result(self.timeout)
        except KafkaException as error:
            raise RepairError(f"cannot {what} on the source cluster at {self.bootstrap}: {error.args[0].str()}") \
                from None
        except Exception as error:  # librdkafka's timeouts arrive as other exception types, often without text
            raise RepairError(f"cannot {what} on the source cluster at {self.bootstrap}: "
                              f"{error or f'no answer within {self.timeout:g} s'}") from None

    def check_idle(self) -> None:
        description = self._wait(self.admin.describe_consumer_groups([self.group])[self.group],
                                 f"describe consumer group {self.group!r}")
        if description.state not in IDLE_STATES:
            members = len(description.members or [])
            raise RepairError(f"consumer group {self.group!r} is {description.state.name.lower()}"
                              + (f" with {members} member(s)" if members else "")
                              + ": stop every ingress of the group (and wait for its session to end), then repair")

    def check_topic_ids(self, ranges: dict, force: bool) -> None:
        """A range reported under another topic id than the topic's now went missing from a topic since deleted
        (or a cluster since rebuilt): its records are gone, and rewinding the new topic would resend others."""
        topics = sorted({topic for topic, _, topic_id in ranges if topic_id is not None})
        if not topics or force:
            return
        described = self.admin.describe_topics(TopicCollection(topics),
                                               request_timeout=max(1, int(self.timeout * 1000)) / 1000)
        current = {topic: topic_id_text(topic_id_bytes(self._wait(future, f"describe topic {topic!r}").topic_id))
                   for topic, future in described.items()}
        stale = [f"{topic}[{partition}] offsets {spans[0][0]}..{spans[-1][1]} went missing from topic id {topic_id}, "
                 f"and {topic} now has id {current.get(topic)}" for (topic, partition, topic_id), spans in ranges.items()
                 if topic_id is not None and current.get(topic) not in (None, topic_id)]
        if stale:
            raise RepairError("; ".join(stale) + ": the topic was created again or its cluster rebuilt since, so those "
                              "records are gone, and rewinding would resend other records (--force rewinds anyway); "
                              "nothing was changed")

    def check_partitions(self, ranges: dict) -> None:
        """Every reported topic and partition exists in the source."""
        for topic in sorted({topic for topic, _ in ranges}):
            try:
                metadata = self.admin.list_topics(topic, timeout=self.timeout).topics.get(topic)
            except KafkaException as error:
                raise RepairError(f"cannot read the metadata of {topic!r} on the source cluster at {self.bootstrap}: "
                                  f"{error.args[0].str()}") from None
            if metadata is None or metadata.error is not None:
                raise RepairError(f"topic {topic!r} is not in the source cluster at {self.bootstrap}: a report of "
                                  "another cluster?", usage=True)
            beyond = sorted(partition for name, partition in ranges if name == topic
                            and partition not in metadata.partitions)
            if beyond:
                raise RepairError(f"topic {topic!r} has {len(metadata.partitions)} partition(s); the reports name "
                                  f"partition(s) {', '.join(map(str, beyond))}: a report of another cluster?",
                                  usage=True)

    def _offsets(self, partitions: list, spec, what: str) -> dict:
        futures = self.admin.list_offsets({partition: spec for partition in partitions},
                                          request_timeout=max(1, int(self.timeout * 1000)) / 1000)
        return {(partition.topic, partition.partition): self._wait(
            future, f"read where {partition.topic}[{partition.partition}] {what}").offset
            for partition, future in futures.items()}

    def plan(self, ranges: dict, force: bool) -> list[PartitionPlan]:
        partitions = [TopicPartition(topic, partition) for topic, partition in sorted(ranges)]
        listed = self._wait(self.admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(self.group, partitions)])[self.group],
            f"read the offsets of consumer group {self.group!r}")
        committed = {(found.topic, found.partition): found.offset if found.offset >= 0 else None
                     for found in listed.topic_partitions}
        if not force and all(committed.get(coordinate) is None for coordinate in ranges):
            raise RepairError(f"consumer group {self.group!r} has no committed offset for any reported partition: "
                              "is it the ingress's group (group_id, or group.id among its properties)? Pass --force "
                              "to set the offsets anyway")
        starts = self._offsets(partitions, OffsetSpec.earliest(), "starts")
        ends = self._offsets(partitions, OffsetSpec.latest(), "ends")
        plans, refused = [], []
        for coordinate, missing in sorted(ranges.items()):
            topic, partition = coordinate
            first, last = missing[0][0], missing[-1][1]
            # Tansu's end is the base offset of the last batch: what the group has consumed existed too. With
            # --force, the end the cluster states is not trusted either.
            end = max(ends[coordinate], committed.get(coordinate) or 0)
            if first < starts[coordinate]:
                refused.append(f"{topic}[{partition}] offsets {first}..{min(starts[coordinate] - 1, last)} are no "
                               f"longer in the source (the log now starts at {starts[coordinate]})")
            if last >= end and not force:
                refused.append(f"{topic}[{partition}] offsets up to {last} are beyond the partition's end ({end}): "
                               "a report of another cluster, or of a topic since recreated?")
            rewind_to = first if committed.get(coordinate) is None or committed[coordinate] > first else None
            plans.append(PartitionPlan(topic, partition, missing, committed.get(coordinate), rewind_to))
        if refused:
            raise RepairError("; ".join(refused) + "; nothing was changed")
        return plans

    def rewind(self, plans: list[PartitionPlan]) -> list[str]:
        """Commits the plan's offsets; returns the partitions rewound. A partial refusal says which were."""
        offsets = [TopicPartition(plan.topic, plan.partition, plan.rewind_to) for plan in plans
                   if plan.rewind_to is not None]
        if not offsets:
            return []
        result = self._wait(self.admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(self.group, offsets)])[self.group],
            f"rewind consumer group {self.group!r} (it may be rewound all the same: run `ddc repair` again to see "
            "where it is; a second run is harmless)")
        failed = [f"{found.topic}[{found.partition}]: {found.error.str()}" for found in result.topic_partitions
                  if found.error is not None]
        done = [f"{found.topic}[{found.partition}]" for found in result.topic_partitions if found.error is None]
        if failed:
            raise RepairError(f"the source cluster refused part of the rewind of {self.group!r}: {'; '.join(failed)}"
                              f"; rewound: {', '.join(done) or 'none'}; running `ddc repair` again is harmless")
        return done


def repair(settings, report_files: list[tuple[str, object]], link: str | None, report_link: str | None,
           dry_run: bool, say, timeout: float = TIMEOUT_SECONDS, force: bool = False) -> None:
    """Reads (name, lines) report files, checks, plans and (unless dry_run) rewinds; say(line) prints the plan.
    Raises RepairError."""
    if not 0 < timeout <= MAX_TIMEOUT_SECONDS:
        raise RepairError(f"--timeout must be more than 0 and at most 1h, not {timeout:g} s", usage=True)
    link_name, link_config = select_link(settings, link)
    source = link_config.source
    reports = [report for name, lines in report_files for report in read_reports(name, lines)]
    check_reports(reports, link_name, report_link, source.topics)
    ranges = open_ranges(reports)
    group = consumer_group(link_name, source)
    if not ranges:
        say(f"link {link_name}: every range reported missing was repaired since; nothing to do")
        return
    rewind = GroupRewind(source.properties, group, timeout)
    rewind.check_topic_ids(ranges, force)
    ranges = by_partition(ranges)
    rewind.check_partitions(ranges)
    rewind.check_idle()
    plans = rewind.plan(ranges, force)
    say(f"link {link_name}, consumer group {group!r} on {rewind.bootstrap}:")
    for plan in plans:
        say("  " + plan.describe())
    if dry_run:
        say("dry run: nothing was changed")
        return
    rewind.check_idle()  # an ingress may have started while the plan was made
    done = rewind.rewind(plans)
    say(f"rewound {len(done)} partition(s); start the ingress to resend")
