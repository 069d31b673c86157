"""Chaos: the destination cluster stops answering mid-stream while records keep crossing the link.

The broker is frozen with SIGSTOP, not killed: Tansu keeps its data in memory,
so a killed broker would come back empty, and a frozen one is the harder case
for a client anyway (requests hang instead of being refused). The egress must
ride the outage out on its disk spool and deliver everything, in order, once
the broker answers again; with a spool too small for the outage, exactly the
records it could not hold are reported missing; an egress SIGKILLed during the
outage leaves its spool on disk for the next one, and with it every record it
had received: its spool is a write-ahead log that keeps each frame until the
destination has acknowledged its records.
"""

import collections

import os
import signal
import time

import pytest

from kafka_harness import (Cluster, KafkaPair, SteadyProducer, TansuBroker, assert_reports_exact,
                           assert_same_records, link_stats, source_of, tansu_binary, varied_records,
                           wait_for_stats)

pytestmark = pytest.mark.timeout(400)


@pytest.fixture
def frozen_destination(tmp_path):
    """A destination broker of the test's own, and a function that freezes it for some seconds."""
    binary = tansu_binary()
    if os.environ.get("DDC_TEST_KAFKA_BOOTSTRAP") or binary is None:
        pytest.skip("needs a local Tansu broker this test may stop")
    broker = TansuBroker(binary, tmp_path / "destination-broker.log")

    def thaw() -> None:
        os.kill(broker.process.pid, signal.SIGCONT)

    def freeze(seconds: float | None = None):
        """Frozen for `seconds`; without them, frozen until the function returned is called."""
        os.kill(broker.process.pid, signal.SIGSTOP)
        if seconds is None:
            return thaw
        try:
            time.sleep(seconds)
        finally:
            thaw()

    yield Cluster(broker.bootstrap), freeze
    os.kill(broker.process.pid, signal.SIGCONT)
    broker.stop()


def start_pair(start_ddc, kafka_clusters, destination, tmp_path, count: int, seconds: float, spool_size: str,
               write_ahead: bool = True, sink_extra: str = ""):
    source = kafka_clusters[0]
    topic = source.new_topic("outage", partitions=3)
    destination.create_topic(topic, partitions=3)
    records = varied_records(count, 3, seed=count)
    # A small producer queue and egress buffer, so the spool is reached within a second of the outage.
    pair = KafkaPair(start_ddc, (source, destination), [topic],
                     sink_properties={"queue.buffering.max.messages": 1000}, sink_extra=sink_extra,
                     egress_tables=f'[links.kafka.buffer]\nsize = "64KiB"\n'
                                   f'[links.kafka.spool]\npath = "{tmp_path / "spool"}"\nmax_size = "{spool_size}"\n'
                                   f'write_ahead = {str(write_ahead).lower()}\n')
    producer = SteadyProducer(source, topic, records, seconds)
    producer.start()
    return pair, topic, producer


def stop_when_all_crossed(pair, destination, topic: str, records: list):
    """Stops the pair once every record was sent and the egress holds nothing; returns the egress's summary,
    what the destination holds and the missing-record reports."""
    wait_for_stats(pair.ingress, lambda stats: stats.get("records_sent", 0) >= len(records), 120)
    wait_for_stats(pair.egress, lambda stats: stats.get("spool_frames") == 0 and stats.get("buffer_bytes") == 0, 120)
    time.sleep(3)  # the ingress's next position announcement reports a gap at the very end too
    _, egress_summary = pair.stop()
    return egress_summary, destination.read_all(topic), pair.missing_reports()


@pytest.mark.timeout(400)
def test_a_destination_down_for_60_s_is_ridden_out_on_the_spool(start_ddc, kafka_clusters, frozen_destination,
                                                                   tmp_path):
    destination, freeze = frozen_destination
    pair, topic, producer = start_pair(start_ddc, kafka_clusters, destination, tmp_path, 40_000, 75, "1GiB")
    wait_for_stats(pair.egress, lambda stats: stats.get("kafka_records_delivered", 0) >= 1000, 60)
    freeze(60)
    assert producer.is_alive(), "the stream ended before the outage did"
    assert link_stats(pair.egress)["spool_frames"] > 0
    producer.join()
    records = producer.records
    wait_for_stats(pair.egress, lambda stats: stats.get("kafka_records_delivered", 0) >= len(records), 180)
    ingress_summary, egress_summary = pair.stop()
    arrived = destination.read_all(topic)
    assert_same_records(kafka_clusters[0].read_all(topic), arrived, topic)
    assert pair.missing_reports() == []
    assert egress_summary["spool_frames_in"] >= egress_summary["spool_frames_out"] > 0
    assert egress_summary["spool_records_dropped"] == 0 and egress_summary["spool_frames"] == 0
    assert egress_summary["buffer_records_dropped"] == 0 and egress_summary["kafka_delivery_failures"] == 0
    assert not [name for name in os.listdir(tmp_path / "spool") if name.endswith(".spool")]
    assert any("spooling frames" in line.get("message", "") for line in pair.egress.lines())
    assert any("spool drained" in line.get("message", "") for line in pair.egress.lines())


@pytest.mark.timeout(300)
def test_a_spool_too_small_for_the_outage_reports_exactly_what_it_dropped(start_ddc, kafka_clusters,
                                                                          frozen_destination, tmp_path):
    destination, freeze = frozen_destination
    pair, topic, producer = start_pair(start_ddc, kafka_clusters, destination, tmp_path, 20_000, 30, "1MiB")
    wait_for_stats(pair.egress, lambda stats: stats.get("kafka_records_delivered", 0) >= 1000, 60)
    freeze(20)
    producer.join()
    records = producer.records
    egress_summary, arrived, reports = stop_when_all_crossed(pair, destination, topic, records)
    assert egress_summary["spool_records_dropped"] > 0 and reports
    assert len(arrived) < len(records)
    assert egress_summary["kafka_missing_offsets_reported"] == len(records) - len(arrived)
    assert_reports_exact(kafka_clusters[0].read_all(topic), arrived, reports, topic)
    assert any("spool at" in line.get("message", "") and "is full" in line.get("message", "")
               for line in pair.egress.lines())


@pytest.mark.timeout(300)
def test_an_egress_sigkilled_while_spooling_leaves_its_spool_to_the_next(start_ddc, kafka_clusters,
                                                                          frozen_destination, tmp_path):
    """What crossed the link while no egress listened is lost, and reported exactly; what the killed egress had
    received (spooled, in its buffer or in the producer's queue) is delivered by the next one, once."""
    destination, freeze = frozen_destination
    pair, topic, producer = start_pair(start_ddc, kafka_clusters, destination, tmp_path, 20_000, 30, "1GiB")
    wait_for_stats(pair.egress, lambda stats: stats.get("kafka_records_delivered", 0) >= 1000, 60)
    thaw = freeze()
    spooled = wait_for_stats(pair.egress, lambda stats: stats.get("spool_frames", 0) >= 20, 60)["spool_frames"]
    killed = pair.egress
    killed.kill()
    pair.egress = pair.start_egress()
    time.sleep(3)
    thaw()
    producer.join()
    records = producer.records
    egress_summary, arrived, reports = stop_when_all_crossed(pair, destination, topic, records)
    twice = [coordinate for coordinate, seen in collections.Counter(map(source_of, arrived)).items() if seen > 1]
    assert not twice, f"{len(twice)} records written twice, such as {twice[:5]}"
    assert egress_summary["spool_frames_out"] >= spooled, "the spool of the killed egress was not replayed"
    assert reports, "nothing crossed while no egress listened; was the egress killed?"
    assert egress_summary["kafka_missing_offsets_reported"] == len(records) - len(arrived)
    assert_reports_exact(kafka_clusters[0].read_all(topic), arrived, reports, topic)
    assert killed.unparsed_or_tracebacks() == [] and pair.egress.unparsed_or_tracebacks() == []


@pytest.mark.timeout(300)
@pytest.mark.parametrize("write_ahead, partitioning", [(True, "auto"), (False, "auto"), (True, "key_hash")],
                         ids=["write-ahead", "spool-only", "write-ahead-by-key"])
def test_an_egress_sigkilled_with_records_in_flight_loses_none_of_them(start_ddc, kafka_clusters, frozen_destination,
                                                                         tmp_path, write_ahead, partitioning):
    """Every record that reached the egress before a SIGKILL — in its buffer, its spool or librdkafka's queue — is
    delivered once by the next egress. The ingress is paused around the kill, so nothing crosses while no egress
    listens: with a write-ahead log nothing is missing; with a spool that only takes overflow, what the killed
    egress held in memory is lost and reported."""
    destination, freeze = frozen_destination
    pair, topic, producer = start_pair(start_ddc, kafka_clusters, destination, tmp_path, 20_000, 20, "1GiB",
                                       write_ahead)
    wait_for_stats(pair.egress, lambda stats: stats.get("kafka_records_delivered", 0) >= 1000, 60)
    thaw = freeze()
    held = wait_for_stats(pair.egress, lambda stats: stats.get("spool_frames_in", 0) >= 20
                          and stats.get("kafka_records_written", 0) > stats.get("kafka_records_delivered", 0), 60)
    os.kill(pair.ingress.process.pid, signal.SIGSTOP)
    try:
        time.sleep(1.5)  # the egress reads what is still on its way, then the link is quiet
        killed = pair.egress
        killed.kill()
        thaw()
        time.sleep(2)  # the broker takes what the killed producer had sent before it died
        pair.egress = pair.start_egress()
    finally:
        os.kill(pair.ingress.process.pid, signal.SIGCONT)
    producer.join()
    records = producer.records
    egress_summary, arrived, reports = stop_when_all_crossed(pair, destination, topic, records)
    twice = [coordinate for coordinate, seen in collections.Counter(map(source_of, arrived)).items() if seen > 1]
    assert not twice, f"{len(twice)} records written twice, such as {twice[:5]}"
    assert_reports_exact(kafka_clusters[0].read_all(topic), arrived, reports, topic)
    if write_ahead:
        assert reports == [], (f"records the killed egress held were lost (it had written "
                               f"{held['kafka_records_written']}, {held['kafka_records_delivered']} delivered)")
        assert_same_records(kafka_clusters[0].read_all(topic), arrived, topic, order_kept=partitioning != "key_hash")
        assert egress_summary["spool_frames_out"] > 0, "the killed egress's log was not replayed"
    else:
        assert reports, "the killed egress held nothing in memory; the test shows nothing"
    assert killed.unparsed_or_tracebacks() == [] and pair.egress.unparsed_or_tracebacks() == []
