"""The egress ledger and the record metadata codec, checked against every loss pattern Hypothesis finds."""

import time

import pytest
from confluent_kafka import KafkaError
from hypothesis import given
from hypothesis import strategies as st

from ddc.handlers.kafka import codec
from ddc.handlers.kafka.description import topic_id_from_text, topic_id_text
from ddc.handlers.kafka.ledger import UNKNOWN, Ledger, PartitionLedger
from ddc.handlers.kafka.topics import TopicMapping


@st.composite
def partition_stream(draw):
    """Existing offsets (with holes, as compaction and transaction markers leave) and which of them are lost."""
    gaps = draw(st.lists(st.integers(1, 4), min_size=1, max_size=60))
    offsets, offset = [], draw(st.integers(0, 5))
    for gap in gaps:
        offsets.append(offset)
        offset += gap
    lost = draw(st.lists(st.booleans(), min_size=len(offsets), max_size=len(offsets)))
    return offsets, lost


def send(ledger, offsets, lost, previous=UNKNOWN, start=None):
    """Feeds what the ingress sends: each record with its previous offset; lost ones never arrive."""
    start = offsets[0] if start is None else start
    delivered, reports = [], []
    for offset, is_lost in zip(offsets, lost):
        if not is_lost:
            admission = ledger.admit(offset, previous, start)
            if admission.deliver:
                delivered.append(offset)
            if admission.missing:
                reports.append(admission.missing)
        previous = offset
    admission = ledger.admit_position(offsets[-1], start)
    if admission.missing:
        reports.append(admission.missing)
    return delivered, reports


def covered(reports):
    return {offset for first, last in reports for offset in range(first, last + 1)}


@given(partition_stream())
def test_reports_name_exactly_the_lost_records(stream):
    offsets, lost = stream
    ledger = PartitionLedger()
    delivered, reports = send(ledger, offsets, lost)
    lost_offsets = {offset for offset, is_lost in zip(offsets, lost) if is_lost}
    assert set(delivered) == set(offsets) - lost_offsets
    assert covered(reports) & set(offsets) == lost_offsets
    assert not covered(reports) & set(delivered)
    assert ledger.missing_offsets == len(covered(reports))


@given(partition_stream())
def test_a_rewind_repairs_every_gap_and_duplicates_nothing(stream):
    offsets, lost = stream
    ledger = PartitionLedger()
    delivered, reports = send(ledger, offsets, lost)
    if not reports:
        return
    first_missing = min(first for first, _ in reports)
    # The operator rewinds the group to the first missing offset; the consumer resends from there on.
    resend = [offset for offset in offsets if offset >= first_missing]
    again, _ = send(ledger, resend, [False] * len(resend), previous=first_missing - 1, start=offsets[0])
    assert sorted(delivered + again) == offsets
    assert ledger.missing == []


@given(partition_stream())
def test_a_restarted_ingress_resending_everything_writes_nothing_twice(stream):
    offsets, _ = stream
    ledger = PartitionLedger()
    first, _ = send(ledger, offsets, [False] * len(offsets))
    second, reports = send(ledger, offsets, [False] * len(offsets), previous=offsets[0] - 1)
    assert first == offsets and second == [] and reports == []


def test_a_destination_holding_nothing_reports_from_the_stream_start():
    ledger = PartitionLedger()
    admission = ledger.admit(120, 119, 100)
    assert admission.deliver and admission.missing == (100, 119)
    fresh = PartitionLedger()
    assert fresh.admit_position(50, 40).missing == (40, 50)
    assert PartitionLedger().admit(7, UNKNOWN, 7).missing is None


def test_rebuilt_state_from_reports_and_repairs():
    ledger = PartitionLedger()
    ledger.note_delivered(100)
    ledger.note_missing(10, 20)
    ledger.note_missing(40, 45)
    ledger.note_repaired(15, 42)
    assert ledger.missing == [[10, 14], [43, 45]]
    assert ledger.admit(12, 9, 0).repaired == (10, 12)
    assert ledger.admit(50, 49, 0).deliver is False


@given(st.text(min_size=1, max_size=40), st.integers(-2**31, 2**31 - 1), st.integers(-1, 2**62),
       st.one_of(st.none(), st.binary(max_size=50)),
       st.one_of(st.none(), st.lists(st.tuples(st.text(max_size=10), st.one_of(st.none(), st.binary(max_size=20))),
                                     max_size=5)),
       st.booleans(), st.sampled_from(codec.KINDS), st.integers(0, 255),
       st.one_of(st.none(), st.binary(min_size=16, max_size=16)))
def test_metadata_round_trips(topic, partition, offset, key, headers, value_present, kind, assignment, topic_id):
    packed = codec.pack(kind, topic, partition, offset, offset - 1, 3, 1, 1_700_000_000_000, key, headers,
                                 value_present, assignment, topic_id)
    assert codec.unpack(packed) == (kind, topic, partition, offset, offset - 1, 3, 1, 1_700_000_000_000,
                                             key, list(headers or []), value_present, assignment, topic_id)
    assert codec.coordinates(packed) == (topic, partition, offset)


@given(st.binary(max_size=200))
def test_garbage_metadata_is_refused_cleanly(data):
    try:
        codec.unpack(data)
    except ValueError:
        pass


def test_truncated_metadata_is_refused_at_every_length():
    for topic_id in (None, bytes(range(16))):
        packed = codec.pack(0, "topic", 1, 2, 1, 0, 1, 5, b"key", [("h", b"v"), ("n", None)], True, 0,
                                     topic_id)
        for length in range(len(packed)):
            with pytest.raises(ValueError):
                codec.unpack(packed[:length])


def test_a_topic_id_is_sixteen_bytes_and_unknown_flags_are_refused():
    with pytest.raises(ValueError, match="a topic id has 16 bytes, not 15"):
        codec.pack(0, "topic", 1, 2, 1, 0, 1, 5, b"key", [], True, 0, bytes(15))
    packed = bytearray(codec.pack(0, "topic", 1, 2, 1, 0, 1, 5, b"key", [], True))
    packed[1] |= 8
    with pytest.raises(ValueError, match="unknown flags 0x0b"):
        codec.unpack(bytes(packed))
    packed[1] = 4 | 1 | 2  # a topic id announced, none there: the key length is read as part of it
    with pytest.raises(ValueError):
        codec.unpack(bytes(packed))


def test_topic_mapping_order_and_validation():
    class Rule:
        def __init__(self, pattern, replacement):
            self.pattern, self.replacement = pattern, replacement

    mapping = TopicMapping("dest_", {"orders": "orders-copy"}, [Rule(r"logs\.(.*)", r"archive.\1")])
    assert mapping.destination("orders") == "orders-copy"
    assert mapping.destination("logs.web") == "archive.web"
    assert mapping.destination("metrics") == "dest_metrics"
    with pytest.raises(ValueError, match="not a valid Kafka topic name"):
        TopicMapping(rename={"a": "bad name"}).destination("a")


def test_the_compiled_write_loop_routes_deduplicates_and_reports():
    """write_records with the sink's callbacks replaced by recorders: every path of the loop, exactly."""
    from ddc.handlers.kafka.ledger import Ledger

    ledger = Ledger()
    routes, assignments, produced, slow, undeliverable, waits = {}, {}, [], [], [], []
    full_once = {"pending": True}

    def route_for(topic, partition, topic_id):
        routes[(topic, partition, topic_id)] = codec.Route(topic, partition, "target", 7, ledger[(topic, partition)],
                                                           0, topic_id)
        return routes[(topic, partition, topic_id)]

    def admit(route, kind, offset, previous, start, assignment, target_partition):
        slow.append((kind, offset))
        assignments[(route.source_topic, route.source_partition)] = assignment
        admission = route.ledger.admit(offset, previous, start)
        return kind == codec.RECORD and admission.deliver

    def produce(topic, value, key, partition, callback, on_delivery, timestamp, headers):
        if full_once.pop("pending", False):
            raise BufferError
        if key == b"refused":
            raise ValueError("too big for the producer")
        produced.append((topic, value, key, partition, headers[-3:], timestamp))

    def record(offset, previous, key=b"k", value=b"v", kind=codec.RECORD, timestamp_type=1, assignment=0):
        return (codec.pack(kind, "t", 0, offset, previous, 0, timestamp_type, 1000 + offset, key, [],
                                    value is not None, assignment), value or b"")

    batch = [record(0, -1), record(1, 0), record(1, 0), record(4, 3, key=b"refused"), record(5, 4),
             record(6, 5, timestamp_type=2), record(7, 6, value=None), (b"garbage", b""),
             record(8, 7, assignment=2), record(9, 8, assignment=2)]
    writer = codec.RecordWriter(assignments, route_for, admit, produce, lambda *a: None,
                                lambda *arguments: undeliverable.append(arguments), lambda: waits.append(1), 1)
    written, malformed = writer.write(batch, routes)
    assert malformed == 1 and waits == [1]
    assert written == 7
    assert [entry[2] for entry in produced] == [b"k"] * 7
    assert [entry[4][2] for entry in produced] == [("sourceOffset", str(offset).encode())
                                                   for offset in (0, 1, 5, 6, 7, 8, 9)]
    assert produced[3][5] == 0 and produced[0][5] == 1000  # LogAppendTime is not copied; CreateTime is
    assert produced[4][1] is None  # a tombstone stays a tombstone
    assert [((route.source_topic, route.source_partition), offset, reason)
            for route, offset, reason in undeliverable] == [
        (("t", 0), 4, "too big for the producer")]
    # The first record, the duplicate, the one after a gap, and the first of a new assignment.
    assert slow == [(0, 0), (0, 1), (0, 4), (0, 8)]
    assert ledger[("t", 0)].missing == [[2, 3]]


def test_a_partition_is_checked_against_the_destination_once_per_discontinuity():
    ledger = PartitionLedger()
    assert ledger.is_discontinuous(False, 10, 9), "a partition this egress never wrote"
    ledger.checked_at = ledger.high
    assert not ledger.is_discontinuous(False, 10, 9), "checked already, nothing written since"
    ledger.admit(10, 9)
    ledger.admit(11, 10)
    assert not ledger.is_discontinuous(False, 12, 11) and not ledger.is_discontinuous(True, 11, 11)
    assert not ledger.is_discontinuous(False, 5, 4), "a resend below what was written is a plain duplicate"
    assert ledger.is_discontinuous(False, 20, 19) and ledger.is_discontinuous(True, 15, 15), "a gap"
    ledger.checked_at = ledger.high
    assert not ledger.is_discontinuous(False, 20, 19)


class ConsumedMessage:
    """What pack_messages reads of a confluent_kafka Message."""

    def __init__(self, topic, partition, offset, key=b"k", value=b"v", headers=None, error=None):
        self._fields = (topic, partition, offset, key, value, headers, error)

    def topic(self): return self._fields[0]
    def partition(self): return self._fields[1]
    def offset(self): return self._fields[2]
    def key(self): return self._fields[3]
    def value(self): return self._fields[4]
    def headers(self): return self._fields[5]
    def error(self): return self._fields[6]
    def timestamp(self): return (1, 1_700_000_000_000 + self._fields[2])


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "ü"]), st.integers(0, 2), st.integers(0, 40),
                          st.sampled_from(["small", "large", "error", "headers"])), max_size=40),
       st.dictionaries(st.tuples(st.sampled_from(["a", "b", "ü"]), st.integers(0, 2)), st.integers(0, 9),
                       max_size=3))
def test_packing_a_batch_chains_each_partitions_previous_offsets(consumed, known_previous):
    """Runs of one partition, interleaved with others, errors and oversized records: every record names the
    offset consumed before it in its own partition, and the dictionaries end as record-by-record bookkeeping
    would leave them."""
    messages, expected, previous, starts = [], [], dict(known_previous), {}
    for topic, partition, step, shape in consumed:
        coordinate = (topic, partition)
        offset = previous.get(coordinate, -1) + 1 + step
        if shape == "error":
            messages.append(ConsumedMessage(None, None, None, error="broker down"))
            continue
        headers = [("h", b"x"), ("h", None)] if shape == "headers" else None
        value = b"v" * (100 if shape == "large" else 3)
        messages.append(ConsumedMessage(topic, partition, offset, value=value, headers=headers))
        starts.setdefault(coordinate, offset)
        kind = codec.SKIPPED if shape == "large" else codec.RECORD
        expected.append((kind, topic, partition, offset, previous.get(coordinate, -1), starts[coordinate], 1,
                         1_700_000_000_000 + offset, None if kind == codec.SKIPPED else b"k",
                         [] if kind == codec.SKIPPED else list(headers or []),
                         kind == codec.RECORD, 4, None))
        previous[coordinate] = offset
    previous_offsets, packed_starts, next_offsets = dict(known_previous), {}, {}
    assignments = {coordinate: 4 for coordinate in previous} | {coordinate: 4 for coordinate in starts}
    records, errors, skipped, handled = codec.pack_messages(messages, previous_offsets, packed_starts,
                                                                     assignments, next_offsets, 50)
    assert handled == len(messages), "offsets only go up here: nothing stops the batch"
    assert [codec.unpack(metadata) for metadata, _ in records] == expected
    assert errors == ["broker down"] * sum(shape == "error" for *_, shape in consumed)
    assert [entry[:3] for entry in skipped] == [entry[1:4] for entry in expected if entry[0] == codec.SKIPPED]
    assert previous_offsets == previous and packed_starts == starts
    assert next_offsets == {coordinate: offset + 1 for coordinate, offset in previous.items() if coordinate in starts}


def test_a_frame_counts_as_delivered_once_every_record_of_it_and_of_every_frame_before_is_reported_on():
    """The write-ahead log's release point: delivery reports arrive in any order across partitions, failures
    count as reported (they are reported missing), and a frame with nothing produced is delivered at once."""
    from ddc.handlers.kafka.config import KafkaSinkConfig
    from ddc.handlers.kafka.ledger import Ledger
    from ddc.handlers.kafka.sink import KafkaSink

    sink = KafkaSink("test", KafkaSinkConfig(type="kafka", properties={"bootstrap.servers": "localhost:1"}))
    sink.track_deliveries()
    ledger, callbacks, failed = Ledger(), [], []

    def route_for(topic, partition, topic_id):
        return codec.Route(topic, partition, "target", partition, ledger[(topic, partition)])

    writer = codec.RecordWriter({}, route_for, lambda route, *rest: True, lambda *arguments: callbacks.append(arguments[4]),
                                lambda route, offset, *_: failed.append((route.source_topic, route.source_partition,
                                                                         offset)),
                                lambda *arguments: None, lambda: None, 1)

    def write(offsets: list[tuple[int, int]]) -> None:
        records = [(codec.pack(codec.RECORD, "t", partition, offset, offset - 1, 0, 1, 0, b"k",
                                        [], True, 0), b"v") for partition, offset in offsets]
        writer.write(records, {}, sink._frame)

    sink.start_frame("first")
    write([(0, 0), (1, 0), (0, 1)])
    sink.start_frame("filtered away")  # its records were all dropped by a filter: nothing to wait for
    sink.start_frame("third")
    write([(1, 1)])
    assert sink.delivered() is None
    callbacks[3](None, None)  # the third frame's record, first
    callbacks[0](None, None)
    callbacks[2](None, None)
    assert sink.delivered() is None, "one record of the first frame has no report yet"
    callbacks[1]("broker said no", None)
    assert failed == [("t", 1, 0)], "a failed delivery is still reported missing"
    assert sink.delivered() == "third"
    assert sink.delivered() is None, "nothing new since"


def test_a_missing_range_report_is_in_its_topic_before_the_record_that_revealed_it_is_produced():
    """Otherwise an egress killed between the two would come back with the record in the destination, the report
    lost, and a later repair of the range dropped as duplicates."""
    sink, calls, _, callbacks = recording_sink()
    sink.write([(codec.pack(codec.RECORD, "t", 0, offset, previous, 0, 1, 0, b"k", [], True, 0),
                 b"v") for offset, previous in ((0, -1), (5, 4))])
    assert [call[:3] for call in calls] == [("produce", "t", b"0"), ("produce", "missing", None), ("flush",),
                                            ("produce", "t", b"5")]
    assert sink.counters()["kafka_missing_offsets_reported"] == 4
    calls.clear()
    callbacks.clear()
    sink.write([(codec.pack(codec.RECORD, "t", 0, offset, offset - 1, 0, 1, 0, b"k", [], True, 0),
                 b"v") for offset in (2, 3)])
    assert [call[:3] for call in calls] == [("produce", "t", b"2"), ("produce", "t", b"3")], \
        "a repair's report must not close its range before its record is delivered: a kill between would lose it"
    callbacks[1](None, None)
    sink.idle()  # the poll that ran the callback is over
    assert [call[:3] for call in calls[2:]] == [("produce", "missing", None)], "offset 3 is in: its report goes"
    callbacks[0](KafkaError(KafkaError._MSG_TIMED_OUT), None)
    assert [call[:3] for call in calls[3:]] == [("produce", "missing", None)], \
        "offset 2 failed: it is reported missing again"
    assert sink.destination.ledger[("t", 0)].missing == [[1, 1], [2, 2], [4, 4]]
    assert sink.counters()["kafka_records_repaired"] == 1


def test_a_repair_record_by_record_is_reported_in_runs_and_a_failure_inside_one_splits_it():
    """A rewind resends a range in order: one report per run of repaired records a poll delivered, not one per
    record (a log line and a topic record each), and a record of the run whose delivery fails is reported
    missing after the run before it, never inside a range reported repaired."""
    import json

    sink, calls, reports, callbacks = recording_sink()
    sink.write([(codec.pack(codec.RECORD, "t", 0, offset, previous, 0, 1, 0, b"k", [], True, 0), b"v")
                for offset, previous in ((0, -1), (20, 19))])
    sink.write([(codec.pack(codec.RECORD, "t", 0, offset, offset - 1, 0, 1, 0, b"k", [], True, 0), b"v")
                for offset in range(1, 20)])
    delivery = dict(zip(range(1, 20), callbacks[-19:]))
    for offset in range(1, 8):
        delivery[offset](None, None)
    delivery[8](KafkaError(KafkaError._MSG_TIMED_OUT), None)
    for offset in range(9, 20):
        delivery[offset](None, None)
    sink.idle()
    events = [(report["event"], report["first_offset"], report["last_offset"]) for report in map(json.loads, reports)]
    assert events == [("missing", 1, 19), ("repaired", 1, 7), ("missing", 8, 8), ("repaired", 9, 19)]
    assert sink.destination.ledger[("t", 0)].missing == [[8, 8]]
    assert sink.counters()["kafka_records_repaired"] == 18


def test_a_link_stuck_on_its_destination_does_not_hold_up_another_that_stops(caplog):
    """A link whose destination is down waits in a report's flush holding the shared destination's lock; another
    link stopping meanwhile reports its repairs (log lines at least) and releases the destination in about
    CLOSE_LOCK_SECONDS, instead of waiting for the destination to come back."""
    import json
    import threading

    sink, calls, reports, callbacks = recording_sink()
    sink.write([(codec.pack(codec.RECORD, "t", 0, offset, previous, 0, 1, 0, b"k", [], True, 0), b"v")
                for offset, previous in ((0, -1), (5, 4))])
    sink.write([(codec.pack(codec.RECORD, "t", 0, offset, offset - 1, 0, 1, 0, b"k", [], True, 0), b"v")
                for offset in (1, 2, 3, 4)])
    for callback in callbacks[-4:]:
        callback(None, None)  # in another link's poll: the run waits for this link's next one
    stuck, release = threading.Event(), threading.Event()

    def stuck_writer():
        with sink.destination.lock:
            stuck.set()
            release.wait(30)

    writer = threading.Thread(target=stuck_writer)
    writer.start()
    stuck.wait(5)
    started = time.monotonic()
    with caplog.at_level("INFO", logger="ddc.handlers.kafka"):
        sink.close()
    took = time.monotonic() - started
    release.set()
    writer.join()
    assert 0.9 <= took < 5, f"close() took {took:.1f} s"
    assert calls[-1] == ("release",)
    assert [record.message.split(": ", 1)[1] for record in caplog.records if "repaired" in record.message] == [
        "records repaired: t[0] offsets 1..4"]
    assert [(report["event"], report["first_offset"], report["last_offset"])
            for report in map(json.loads, reports)] == [("missing", 1, 4), ("repaired", 1, 4)]


def test_a_source_partition_spread_over_destination_partitions_is_judged_per_destination_partition():
    ledger = PartitionLedger()
    for offset, partition in ((10, 0), (11, 1), (12, 0), (13, 2)):
        ledger.note_delivered(offset, partition, 3)  # what the destination's tail holds after a crash
    assert ledger.high == 13
    assert ledger.admit(11, 10, spread_to=1, spread_over=3).deliver is False, "partition 1 holds 11"
    assert ledger.admit(12, 11, spread_to=1, spread_over=3).deliver is True, "partition 1 never got 12"
    assert ledger.admit(12, 11, spread_to=1, spread_over=3).deliver is False, "now it holds it"
    assert ledger.admit(9, 8, spread_to=2, spread_over=3).deliver is False, "2 holds 13, so all it got before"
    admission = ledger.admit(20, 15, spread_to=0, spread_over=3)
    assert admission.deliver and admission.missing == (14, 15), "gaps are still found across partitions"
    assert ledger.admit(14, 13, spread_to=1, spread_over=3).deliver, "a repair"
    assert ledger.admit(14, 13, spread_to=1, spread_over=3).deliver is False, "a repair only once"


def test_records_replayed_below_the_highest_offset_do_not_vouch_for_older_ones_of_their_partition():
    """Two links' write-ahead logs replay interleaved: link A's offset 2 reaching partition 1 says nothing about
    link B's offset 1, which partition 1 never got either."""
    ledger = PartitionLedger()
    for offset, partition in ((0, 0), (3, 0)):
        ledger.note_delivered(offset, partition, 2)
    assert ledger.admit(2, 1, spread_to=1, spread_over=2).deliver
    assert ledger.admit(1, 0, spread_to=1, spread_over=2).deliver
    assert not ledger.admit(1, 0, spread_to=1, spread_over=2).deliver and not ledger.admit(2, 1, spread_to=1,
                                                                                          spread_over=2).deliver


def test_a_ledger_written_without_spreading_or_under_another_count_takes_everything_below_high_as_held():
    """A redundant link that placed records by librdkafka's choice (before the topic existed), or saw another
    partition count: `highs` no longer describe the destination, so a copy below `high` is a duplicate, as it was
    before spreading was known."""
    ledger = PartitionLedger()
    ledger.note_delivered(5, 0, 2)
    ledger.admit(6, 5)  # written without spreading: no destination partition noted
    assert not ledger.admit(6, 5, spread_to=1, spread_over=2).deliver
    ledger.deliver_spread(7, 1, 2)
    assert not ledger.admit(7, 6, spread_to=3, spread_over=4).deliver, "under another count"
    assert ledger.admit(8, 7, spread_to=3, spread_over=4).deliver, "above high: written"


TOPIC_A, TOPIC_B = bytes(range(16)), bytes(range(1, 17))


def test_packing_stops_where_a_partitions_offsets_go_back_and_carries_each_partitions_topic_id():
    """The ingress asks for the topic's id again before a record below its partition's last one is packed: the
    topic may have been created again, and its records must not go out under the old id."""
    messages = [ConsumedMessage("t", 0, 998), ConsumedMessage("t", 1, 50), ConsumedMessage("t", 0, 999),
                ConsumedMessage("t", 0, 0), ConsumedMessage("t", 0, 1)]
    previous, starts, next_offsets = {}, {}, {}
    ids = {("t", 0): TOPIC_A, ("t", 1): TOPIC_A}
    records, _, _, handled = codec.pack_messages(messages, previous, starts, {}, next_offsets, 1000, ids)
    assert handled == 3 and previous == {("t", 0): 999, ("t", 1): 50}
    assert [codec.unpack(metadata)[12] for metadata, _ in records] == [TOPIC_A] * 3
    ids[("t", 0)], previous[("t", 0)] = TOPIC_B, -1  # what the source does when the id changed
    del starts[("t", 0)]
    records, _, _, handled = codec.pack_messages(messages[3:], previous, starts, {}, next_offsets, 1000,
                                                          ids, True)
    assert handled == 2
    assert [codec.unpack(metadata)[3:6] + (codec.unpack(metadata)[12],)
            for metadata, _ in records] == [(0, -1, 0, TOPIC_B), (1, 0, 0, TOPIC_B)]
    records, _, _, handled = codec.pack_messages([ConsumedMessage("t", 0, 1)], previous, starts, {},
                                                          next_offsets, 1000, ids, True)
    assert handled == 1, "a rewind under the same id goes through once the source has looked"


def test_each_incarnation_of_a_source_topic_has_its_own_ledger():
    ledger = Ledger()
    old = ledger[("t", 0, None)]
    old.note_delivered(999)
    assert ledger[("t", 0, TOPIC_A)] is old, "the first id seen takes over a ledger built without ids"
    assert ledger[("t", 0)] is old and ledger[("t", 0, None)] is old, "no id: the one known incarnation"
    new = ledger[("t", 0, TOPIC_B)]
    assert new is not old and new.high is None and ledger.topic_ids("t", 0) == [TOPIC_A, TOPIC_B]
    assert new.admit(0, -1, 0).deliver, "offset 0 of the new topic is not a duplicate of the old one's"
    assert not old.admit(5, 4, 0).deliver, "the old topic's records are still judged by what it delivered"
    assert ledger[("t", 0, None)] is new, "two incarnations known: a record without an id is the newest's"
    assert ledger[("t", 1, TOPIC_B)] is not new


def test_a_record_of_a_new_topic_id_is_delivered_reported_and_counted():
    """Issue #21: a source topic created again (or a rebuilt source cluster) starts its offsets again; its records
    were all dropped as duplicates of the old topic's, silently."""
    sink, calls, _, _ = recording_sink()
    first = [(codec.pack(codec.RECORD, "t", 0, offset, offset - 1, 0, 1, 0, b"k", [], True, 0,
                                  TOPIC_A), b"old") for offset in range(1000)]
    sink.write(first)
    calls.clear()
    again = [(codec.pack(codec.RECORD, "t", 0, offset, offset - 1, 0, 1, 0, b"k", [], True, 0,
                                  TOPIC_B), b"new") for offset in range(500)]
    sink.write(again)
    assert [call[2] for call in calls] == [str(offset).encode() for offset in range(500)]
    assert {call[1] for call in calls} == {"t"}
    assert {call[3] for call in calls} == {topic_id_text(TOPIC_B).encode()}
    counters = sink.counters()
    assert counters["kafka_records_duplicate"] == 0 and counters["kafka_source_topic_id_changes"] == 1
    sink.write(again[:10] + first[-10:])
    assert counters["kafka_records_duplicate"] == 0 and sink.counters()["kafka_records_duplicate"] == 20, \
        "a resend of either topic's records is a duplicate of its own"
    assert sink.counters()["kafka_source_topic_id_changes"] == 1


def test_a_missing_range_report_names_its_topic_id_and_is_replayed_into_that_incarnation():
    import json

    from ddc.handlers.kafka.destination import source_coordinates

    sink, calls, reports, _ = recording_sink()
    sink.write([(codec.pack(codec.RECORD, "t", 0, offset, previous, 0, 1, 0, b"k", [], True, 0,
                                     TOPIC_A), b"v") for offset, previous in ((0, -1), (5, 4))])
    report = json.loads(reports[0])
    assert report["topic_id"] == topic_id_text(TOPIC_A) and (report["first_offset"], report["last_offset"]) == (1, 4)
    assert source_coordinates([("sourceTopic", b"t"), ("sourcePartition", b"0"), ("sourceOffset", b"5"),
                               ("sourceTopicId", topic_id_text(TOPIC_A).encode())]) == ("t", 0, 5, TOPIC_A)
    assert source_coordinates([("sourceTopic", b"t"), ("sourcePartition", b"0"), ("sourceOffset", b"5"),
                               ("sourceTopicId", b"not an id")]) == ("t", 0, 5, None)
    assert source_coordinates([("sourceTopic", b"t"), ("sourcePartition", b"0"), ("sourceOffset", b"5"),
                               ("sourceTopicId", "é".encode() * 11)]) == ("t", 0, 5, None), \
        "a header that is no id leaves the record's coordinates"
    assert topic_id_from_text(topic_id_text(TOPIC_B)) == TOPIC_B and topic_id_from_text("x" * 22 + "=") is None
    assert topic_id_from_text("A" * 22) is None, "the zero id is a broker's way of saying it has none"


def recording_sink():
    """A Kafka sink whose producer records what it is given: ("produce", topic, sourceOffset, sourceTopicId) per
    record and ("flush",), the values produced to the missing-records topic, and each record's delivery callback."""
    import threading

    from ddc.handlers.kafka.config import KafkaSinkConfig
    from ddc.handlers.kafka.client import ClientHealth
    from ddc.handlers.kafka.sink import KafkaSink

    calls, reports, callbacks = [], [], []

    class Producer:
        def produce(self, topic, value=None, key=None, partition=-1, callback=None, on_delivery=None, timestamp=0,
                    headers=None):
            found = dict(headers or ())
            calls.append(("produce", topic, found.get("sourceOffset"), found.get("sourceTopicId")))
            callbacks.append(callback or on_delivery)
            if topic == "missing":
                reports.append(value)

        def flush(self, timeout):
            calls.append(("flush",))
            return 0

        def poll(self, timeout):
            return 0

        def __len__(self):
            return 0

    class Destination:
        lock = threading.RLock()
        ledger = Ledger()
        producer = Producer()
        missing_topic_replayed = True
        health = ClientHealth("test", "producer", __import__("logging").getLogger("test"))

        def load_topic(self, topic, lookback):
            return False

        def read_tail(self, topic, partitions, lookback):
            return 0

        def partition_count(self, topic):
            return 1

        def release(self):
            calls.append(("release",))

    sink = KafkaSink("test", KafkaSinkConfig(type="kafka", properties={"bootstrap.servers": "localhost:1"},
                                             missing_records_topic="missing"))
    sink.destination = Destination()
    return sink, calls, reports, callbacks
