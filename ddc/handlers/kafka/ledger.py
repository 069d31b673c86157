"""What the destination already holds, per source partition: the basis of no-duplicates and missing-record reports.

For each source (topic, partition) the ledger keeps the highest source offset
handed to the destination and the ranges reported missing. A record at or below
that offset is a duplicate (a resend after an ingress restart or rebalance, or the
same record over a redundant link) unless it falls in a missing range, where it
is a repair. A record above it whose *previous offset* (the offset the ingress
consumer saw just before it) is also above it reveals a gap: everything after
the highest offset up to that previous offset existed in the source and did not
arrive; for a partition the destination holds nothing of yet, everything from
the start of the group's stream up to that previous offset. Offsets that never existed (compaction, transaction markers) lie between
a record and its previous offset and so are never reported. A position
announcement from the ingress ("sent everything up to offset N") reveals losses
at the end of a stream, where no later record would.

When the records of one source partition are spread over several destination
partitions by key (`key_hash`), each destination partition holds them in order,
but the highest offset across them says nothing about the others: a record at or
below it may never have reached its own partition (it was in the producer's
queue when the egress died, and comes again from the write-ahead log or a
resend). The ledger then also keeps the highest offset each destination
partition holds in order (`highs`, from the destination's tail and from writes
above `high`), and the offsets written below `high` since (`below`, which never
raise `highs`: replays of two links' logs arrive interleaved). A record below
`high` that its partition holds by neither is delivered. `highs` describe the
destination only while every write went through them under one partition count
(`highs_count`, and `spread_high`, the `high` they last accounted for): a write
without spreading (another link, before the topic existed) or under another
count makes them take everything up to `high` as held everywhere, as before
spreading was known.
"""

import bisect
from dataclasses import dataclass, field

UNKNOWN = -1
MAX_OFFSET = (1 << 63) - 1


@dataclass
class Admission:
    deliver: bool
    missing: tuple[int, int] | None = None   # a range newly found missing
    repaired: tuple[int, int] | None = None  # the part of a missing range this record settles


NEVER = object()


@dataclass
class PartitionLedger:
    high: int | None = None
    missing: list[list[int]] = field(default_factory=list)  # sorted, disjoint [first, last] ranges
    checked_at: object = NEVER  # the value of `high` when the destination was last read for this partition
    highs: dict[int, int] = field(default_factory=dict)  # destination partition -> highest offset, held in order
    highs_count: int = 0  # the partition count `highs` describe
    spread_high: int | None = None  # `high` when `highs` last accounted for every write
    below: list[list[int]] = field(default_factory=list)  # [first, last] ranges written below `high` while spreading

    def is_discontinuous(self, kind_is_position: bool, offset: int, previous_offset: int) -> bool:
        """Whether this record (or position) does not follow what this process delivered: a partition it has
        not written yet, or a gap. Another writer (the egress of another ingress of the consumer group, before
        a rebalance moved the partition here) may have filled it, so the destination is read before judging,
        once per value of `high`."""
        if self.checked_at is not NEVER and self.checked_at == self.high:
            return False
        if self.high is None:
            return True
        return (offset if kind_is_position else previous_offset) > self.high

    def admit(self, offset: int, previous_offset: int, stream_start: int = UNKNOWN,
              spread_to: int | None = None, spread_over: int = 0) -> Admission:
        """spread_to: the destination partition of a record whose source partition is spread over spread_over."""
        if spread_to is not None:
            self._follow(spread_over)
        admission = self._admit(offset, previous_offset, stream_start)
        if spread_to is None:
            return admission
        if admission.deliver:
            if admission.repaired is not None:
                self._note_below(offset)
            else:
                self.highs[spread_to] = max(self.highs.get(spread_to, UNKNOWN), offset)
        elif offset > self.highs.get(spread_to, UNKNOWN) and not self._is_below(offset):
            self._note_below(offset)  # below `high`, but its own partition does not hold it yet
            admission = Admission(True)
        self.spread_high = self.high
        return admission

    def deliver_spread(self, offset: int, partition: int, count: int) -> None:
        """The next record in order, written to destination partition `partition` of `count` (the fast path)."""
        self._follow(count)
        self.high = self.spread_high = offset
        if offset > self.highs.get(partition, UNKNOWN):
            self.highs[partition] = offset

    def _is_below(self, offset: int) -> bool:
        index = bisect.bisect_right(self.below, [offset, MAX_OFFSET]) - 1
        return index >= 0 and self.below[index][0] <= offset <= self.below[index][1]

    def _note_below(self, offset: int) -> None:
        """Ranges, not offsets: a rewind repairs long runs, which must not cost memory per record."""
        index = bisect.bisect_right(self.below, [offset, MAX_OFFSET])
        if index and self.below[index - 1][1] >= offset - 1:
            index -= 1
            self.below[index][1] = max(self.below[index][1], offset)
        else:
            self.below.insert(index, [offset, offset])
        if index + 1 < len(self.below) and self.below[index][1] + 1 >= self.below[index + 1][0]:
            self.below[index][1] = max(self.below[index][1], self.below.pop(index + 1)[1])

    def _follow(self, count: int) -> None:
        if count == self.highs_count and self.spread_high == self.high:
            return
        # Written without spreading, or under another partition count: take everything up to `high` as held in
        # every partition, as if the spreading were not known.
        if self.high is not None:
            for partition in range(count):
                self.highs[partition] = max(self.highs.get(partition, UNKNOWN), self.high)
        self.highs_count, self.spread_high = count, self.high

    def _admit(self, offset: int, previous_offset: int, stream_start: int) -> Admission:
        if self.high is None:
            # Nothing of this partition is in the destination: what the stream held before this record is missing.
            self.high = offset
            if UNKNOWN < stream_start <= previous_offset:
                self.missing.append([stream_start, previous_offset])
                return Admission(True, missing=(stream_start, previous_offset))
            return Admission(True)
        if offset > self.high:
            gap = None
            if previous_offset > self.high:
                gap = (self.high + 1, previous_offset)
                self.missing.append(list(gap))
            self.high = offset
            return Admission(True, missing=gap)
        return self._repair(offset, previous_offset)

    def admit_position(self, offset: int, stream_start: int = UNKNOWN) -> Admission:
        """The ingress has sent every record up to `offset`: whatever above `high` did not arrive is missing (and
        noted so: `highs` stay as exact as they were)."""
        following = self.spread_high == self.high
        admission = self._admit_position(offset, stream_start)
        if following:
            self.spread_high = self.high
        return admission

    def _admit_position(self, offset: int, stream_start: int) -> Admission:
        if self.high is None and not UNKNOWN < stream_start <= offset:
            self.high = offset
            return Admission(False)
        first = stream_start if self.high is None else self.high + 1
        if offset < first:
            return Admission(False)
        gap = (first, offset)
        self.missing.append(list(gap))
        self.high = offset
        return Admission(False, missing=gap)

    def _repair(self, offset: int, previous_offset: int) -> Admission:
        if not any(first <= offset <= last for first, last in self.missing):
            return Admission(False)
        # Nothing existed between the previous offset and this one, so that stretch is settled too.
        settled_from = previous_offset + 1 if UNKNOWN < previous_offset < offset else offset
        reported_from = min(max(first, settled_from) for first, last in self.missing
                            if first <= offset and last >= settled_from)
        self.note_repaired(settled_from, offset)
        return Admission(True, repaired=(reported_from, offset))

    def note_delivered(self, offset: int, partition: int | None = None, count: int = 0) -> None:
        """An offset found in destination partition `partition` of `count` (at start-up, or re-reading)."""
        following = self.spread_high == self.high and self.highs_count in (0, count)
        self.high = offset if self.high is None else max(self.high, offset)
        if partition is not None:
            self.highs[partition] = max(self.highs.get(partition, UNKNOWN), offset)
        if following and count:
            self.spread_high, self.highs_count = self.high, count

    def note_missing(self, first: int, last: int) -> None:
        """A range reported missing earlier (replayed from the missing-records topic at start-up)."""
        self.missing.append([first, last])
        self.missing.sort()

    def note_repaired(self, first: int, last: int) -> None:
        ranges = []
        for low, high in self.missing:
            if high < first or low > last:
                ranges.append([low, high])
                continue
            if low < first:
                ranges.append([low, first - 1])
            if high > last:
                ranges.append([last + 1, high])
        self.missing = ranges

    @property
    def missing_offsets(self) -> int:
        return sum(last - first + 1 for first, last in self.missing)


class Ledger:
    """All source partitions one destination cluster has seen, each incarnation of its topic apart.

    A topic deleted and created again, or a rebuilt source cluster, starts its offsets again under a new topic id:
    its records are judged against a ledger of their own, not taken as duplicates of the old topic's. A record
    or report without a topic id (a broker that has none, an ingress that could not ask, or written before DDC
    carried them) belongs to the partition's newest known incarnation, and the first id seen for a partition
    known only without one takes its ledger over (an upgrade keeps what the destination holds).
    """

    def __init__(self):
        self.partitions: dict[tuple[str, int, bytes | None], PartitionLedger] = {}
        self._topic_ids: dict[tuple[str, int], list] = {}  # the ids each partition has a ledger for, oldest first

    def __getitem__(self, source: tuple) -> PartitionLedger:
        """source is (topic, partition) or (topic, partition, topic id)."""
        topic, partition, topic_id = source if len(source) == 3 else (*source, None)
        ledger = self.partitions.get((topic, partition, topic_id))
        if ledger is not None:
            return ledger
        known = self._topic_ids.setdefault((topic, partition), [])
        if topic_id is None and known:
            return self.partitions[(topic, partition, known[-1])]
        if topic_id is not None and known == [None]:
            ledger = self.partitions.pop((topic, partition, None))
            known[0] = topic_id
        else:
            ledger = PartitionLedger()
            known.append(topic_id)
        self.partitions[(topic, partition, topic_id)] = ledger
        return ledger

    def topic_ids(self, topic: str, partition: int) -> list:
        """The topic ids this partition has a ledger for, oldest first (None: records without one)."""
        return list(self._topic_ids.get((topic, partition), ()))

    def open_ranges(self) -> int:
        return sum(len(ledger.missing) for ledger in self.partitions.values())
