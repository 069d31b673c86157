"""`ddc repair`: from the egress's missing-range reports to the rewind of the ingress's consumer group.

A one-way link cannot ask for a resend, so a range the egress reports missing is
repaired on the high side: the ingress's consumer group is rewound to the first
missing offset of each partition, and the ingress, started again, sends that
part once more; the egress writes what it lacks and drops the rest as duplicates.
This module turns the reports an operator carried across (the JSON records of
`missing_records_topic`, or the egress's log lines, JSON or text) into that
rewind, with the checks a manual `kafka-consumer-groups --reset-offsets` skips:
the reports must be for this link and for topics it reads, the group must have no
active member, and every missing offset must still be in the source topic.
Anything wrong stops it before it changes anything.

Reports are read in order: a range reported missing and later repaired needs no
rewind. The offsets are committed with librdkafka's AdminClient
(AlterConsumerGroupOffsets), which Apache Kafka and Tansu both accept for a group
without members.
"""

import json
import re
from dataclasses import dataclass, field

from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from ddc.handlers.kafka.client import CONSUMER_ONLY, PRODUCER_ONLY, as_librdkafka

TIMEOUT_SECONDS = 30.0
TEXT_REPORT = re.compile(r"link (?P<link>\S+): records (?P<event>missing|repaired): (?P<topic>\S+)\[(?P<partition>\d+)\] "
                         r"offsets (?P<first_offset>\d+)\.\.(?P<last_offset>\d+)")
JSON_EVENTS = {"missing": "missing", "repaired": "repaired", "records missing": "missing",
               "records repaired": "repaired"}
IDLE_STATES = (ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD)


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


def read_reports(name: str, text: str) -> list[Report]:
    """Every report in a file of JSON records, JSON log lines or text log lines; other lines are skipped."""
    reports = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        try:
            report = _report(line)
        except (ValueError, TypeError, KeyError) as error:
            raise RepairError(f"{name}:{number}: not a readable missing-range report ({error}): {line[:200]}",
                              usage=True) from None
        if report is not None:
            reports.append(report)
    if not reports:
        raise RepairError(f"{name}: no missing-range report in it; give the JSON records of missing_records_topic "
                          "or the egress's log lines", usage=True)
    return reports


def _report(line: str) -> Report | None:
    if line.startswith("{"):
        try:
            fields = json.loads(line)
        except json.JSONDecodeError:
            return None
        event = JSON_EVENTS.get(fields.get("event")) if isinstance(fields, dict) else None
        if event is None:
            return None
    else:
        found = TEXT_REPORT.search(line)
        if found is None:
            return None
        fields, event = found.groupdict(), found["event"]
    numbers = [fields[key] for key in ("partition", "first_offset", "last_offset")]
    if not all(isinstance(value, int) or (isinstance(value, str) and value.isdigit()) for value in numbers):
        raise ValueError("partition and offsets must be whole numbers")
    partition, first, last = map(int, numbers)
    if not isinstance(fields["topic"], str) or not isinstance(fields["link"], str):
        raise TypeError("topic and link must be text")
    if first > last or first < 0:
        raise ValueError(f"offsets {first}..{last} are not a range")
    return Report(event, fields["link"], fields["topic"], partition, first, last)


def open_ranges(reports: list[Report]) -> dict[tuple[str, int], list[list[int]]]:
    """Per (topic, partition), the offset ranges reported missing and not repaired since, in order."""
    ranges: dict[tuple[str, int], list[list[int]]] = {}
    for report in reports:
        current = ranges.setdefault((report.topic, report.partition), [])
        kept = []
        for first, last in current:  # cut the report's range out of what is open
            if last < report.first_offset or first > report.last_offset:
                kept.append([first, last])
                continue
            if first < report.first_offset:
                kept.append([first, report.first_offset - 1])
            if last > report.last_offset:
                kept.append([report.last_offset + 1, last])
        if report.event == "missing":
            kept.append([report.first_offset, report.last_offset])
        ranges[report.topic, report.partition] = sorted(kept)
    return {coordinate: spans for coordinate, spans in ranges.items() if spans}


@dataclass
class PartitionPlan:
    topic: str
    partition: int
    missing: list[list[int]]
    committed: int | None  # None: the group has no offset for it
    log_start: int
    rewind_to: int | None = field(default=None)  # None: nothing to change

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
    return any(re.fullmatch(pattern[1:], topic) if pattern.startswith("^") else pattern == topic
               for pattern in topics)


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
    """The consumer group's side: its state, committed offsets, the topics' log starts, and the rewind."""

    def __init__(self, properties: dict, group: str, timeout: float = TIMEOUT_SECONDS):
        config = {key: as_librdkafka(value) for key, value in properties.items()
                  if key not in PRODUCER_ONLY and key not in CONSUMER_ONLY}
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
        except Exception as error:  # librdkafka's timeouts arrive as other exception types
            raise RepairError(f"cannot {what} on the source cluster at {self.bootstrap}: {error}") from None

    def check_idle(self) -> None:
        description = self._wait(self.admin.describe_consumer_groups([self.group])[self.group],
                                 f"describe consumer group {self.group!r}")
        if description.state not in IDLE_STATES:
            members = len(description.members or [])
            raise RepairError(f"consumer group {self.group!r} is {description.state.name.lower()}"
                              + (f" with {members} member(s)" if members else "")
                              + ": stop every ingress of the group (and wait for its session to end), then repair")

    def plan(self, ranges: dict) -> list[PartitionPlan]:
        partitions = [TopicPartition(topic, partition) for topic, partition in sorted(ranges)]
        listed = self._wait(self.admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(self.group, partitions)])[self.group],
            f"read the offsets of consumer group {self.group!r}")
        committed = {(found.topic, found.partition): found.offset if found.offset >= 0 else None
                     for found in listed.topic_partitions}
        starts = self.admin.list_offsets({partition: OffsetSpec.earliest() for partition in partitions},
                                         request_timeout=self.timeout)
        plans, lost = [], []
        for partition, future in starts.items():
            coordinate = (partition.topic, partition.partition)
            log_start = self._wait(future, f"read where {partition.topic}[{partition.partition}] starts").offset
            missing = ranges[coordinate]
            plan = PartitionPlan(partition.topic, partition.partition, missing, committed.get(coordinate), log_start)
            first = missing[0][0]
            if first < log_start:
                lost.append(f"{partition.topic}[{partition.partition}] offsets {first}.."
                            f"{min(log_start - 1, missing[-1][1])} (the log now starts at {log_start})")
            if plan.committed is None or plan.committed > first:
                plan.rewind_to = first
            plans.append(plan)
        if lost:
            raise RepairError("records no longer in the source cannot be resent: " + "; ".join(lost)
                              + "; nothing was changed")
        return sorted(plans, key=lambda plan: (plan.topic, plan.partition))

    def rewind(self, plans: list[PartitionPlan]) -> None:
        offsets = [TopicPartition(plan.topic, plan.partition, plan.rewind_to) for plan in plans
                   if plan.rewind_to is not None]
        if not offsets:
            return
        result = self._wait(self.admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(self.group, offsets)])[self.group],
            f"rewind consumer group {self.group!r}")
        failed = [f"{found.topic}[{found.partition}]: {found.error.str()}" for found in result.topic_partitions
                  if found.error is not None]
        if failed:
            raise RepairError(f"the source cluster refused part of the rewind of {self.group!r}: {'; '.join(failed)}")


def repair(settings, report_files: list[tuple[str, str]], link: str | None, report_link: str | None,
           dry_run: bool, say, timeout: float = TIMEOUT_SECONDS) -> None:
    """Reads, checks, plans and (unless dry_run) rewinds; say(line) prints the plan. Raises RepairError."""
    link_name, link_config = select_link(settings, link)
    source = link_config.source
    reports = [report for name, text in report_files for report in read_reports(name, text)]
    check_reports(reports, link_name, report_link, source.topics)
    ranges = open_ranges(reports)
    group = source.group_id or f"ddc-{link_name}"
    if not ranges:
        say(f"link {link_name}: every range reported missing was repaired since; nothing to do")
        return
    rewind = GroupRewind(source.properties, group, timeout)
    rewind.check_idle()
    plans = rewind.plan(ranges)
    say(f"link {link_name}, consumer group {group!r} on {rewind.bootstrap}:")
    for plan in plans:
        say("  " + plan.describe())
    if dry_run:
        say("dry run: nothing was changed")
        return
    rewind.check_idle()  # an ingress may have started while the plan was made
    rewind.rewind(plans)
    say(f"rewound {sum(plan.rewind_to is not None for plan in plans)} partition(s); start the ingress to resend")
