"""Chaos: the source broker, then the destination broker, is SIGKILLed mid-stream and started again.

Both brokers keep their data in an S3 server (moto) rather than in memory, so
a killed broker comes back with its topics, records and committed offsets, as
a Kafka broker comes back with its log directory. The stream keeps flowing
through the outage: a live producer writes the source throughout, the ingress
and egress ride the restart out, and the destination must end with exactly the
source's records.

The destination broker is killed while the egress is paused for a moment (so
between two of its produce requests, never inside one): Tansu's S3 engine is
not crash-safe for an idempotent producer's in-flight batch. Killed while
storing one, it comes back having kept the producer's sequence number but not
the records, answers the retry "duplicate", and the records are gone although
acknowledged (seen in about one kill in three). A Kafka broker keeps both or
neither. Every other moment of the egress's run, including its queue and its
spool filling during the outage, is as it would be in production.
"""

import os
import signal
import time

import pytest

from kafka_harness import (Cluster, KafkaPair, ObjectStore, SteadyProducer, TansuBroker, assert_same_records,
                           link_stats, tansu_binary, varied_records, wait_for_stats)

pytestmark = pytest.mark.timeout(300)

OUTAGE_SECONDS = 8


@pytest.fixture(scope="module")
def object_store(tmp_path_factory):
    if os.environ.get("DDC_TEST_KAFKA_BOOTSTRAP") or tansu_binary() is None:
        pytest.skip("needs local Tansu brokers this test may kill")
    store = ObjectStore(tmp_path_factory.mktemp("s3") / "moto.log")
    yield store
    store.stop()


@pytest.fixture
def durable_brokers(object_store, tmp_path):
    """(source, destination): Tansu brokers of the test's own, each storing in a bucket of its own."""
    brokers = [TansuBroker(tansu_binary(), tmp_path / f"{name}-broker.log", storage=object_store.new_bucket(),
                           environment=object_store.environment) for name in ("source", "destination")]
    yield brokers
    for broker in brokers:
        if broker.process.poll() is None:
            broker.stop()


def restart(broker: TansuBroker) -> None:
    broker.stop()
    time.sleep(OUTAGE_SECONDS)
    broker.start()


def run_through(start_ddc, brokers, tmp_path, restarted: str, outage):
    """Streams 30 000 records over 30 s through a link pair with a spool, runs `outage` once records
    flow, and checks the destination against the source record by record, and the log of the client of the
    `restarted` broker ("source" or "destination") for the outage and the recovery."""
    source, destination = (Cluster(broker.bootstrap) for broker in brokers)
    topic = source.new_topic("restart", partitions=3)
    destination.create_topic(topic, partitions=3)
    pair = KafkaPair(start_ddc, (source, destination), [topic],
                     egress_tables=f'[links.kafka.spool]\npath = "{tmp_path / "spool"}"\n')
    producer = SteadyProducer(source, topic, varied_records(30_000, 3, seed=31), 30)
    producer.start()
    wait_for_stats(pair.egress, lambda stats: stats.get("kafka_records_delivered", 0) >= 3000, 60)
    outage(pair)
    assert producer.is_alive(), "the stream ended before the broker came back; make it longer"
    producer.join()
    source_messages = source.read_all(topic)
    # A producer retry across the restart may have written a record twice into the source: count what is there.
    wait_for_stats(pair.egress, lambda stats: stats.get("kafka_records_delivered", 0) >= len(source_messages), 180)
    ingress_summary, egress_summary = pair.stop()
    assert_same_records(source_messages, destination.read_all(topic), topic)
    assert pair.missing_reports() == []
    assert egress_summary["kafka_delivery_failures"] == 0
    process, role = (pair.ingress, "consumer") if restarted == "source" else (pair.egress, "producer")
    lines = process.lines()
    messages = [line.get("message", "") for line in lines]
    # By its error code: librdkafka's own text counts oddly ("1/1", "2/2", even "0/2 brokers are down").
    down = [index for index, line in enumerate(lines)
            if line.get("kafka_error") == "_ALL_BROKERS_DOWN" and f"Kafka {role}:" in line.get("message", "")]
    back = [index for index, message in enumerate(messages) if f"Kafka {role}: brokers reachable again" in message]
    assert down, f"the {role} never noticed its broker was down"
    assert back and back[-1] > down[-1], f"the {role} never said its broker was back"
    assert pair.ingress.unparsed_or_tracebacks() == [] and pair.egress.unparsed_or_tracebacks() == []
    return ingress_summary, egress_summary


def test_source_broker_sigkilled_and_restarted_mid_stream(start_ddc, durable_brokers, tmp_path):
    def outage(pair):
        consumed = link_stats(pair.ingress).get("kafka_records_consumed", 0)
        restart(durable_brokers[0])
        wait_for_stats(pair.ingress, lambda stats: stats.get("kafka_records_consumed", 0) > consumed + 1000, 60)

    ingress_summary, _ = run_through(start_ddc, durable_brokers, tmp_path, "source", outage)
    assert ingress_summary["kafka_records_consumed"] >= 30_000


def test_destination_broker_sigkilled_and_restarted_mid_stream(start_ddc, durable_brokers, tmp_path):
    def outage(pair):
        os.kill(pair.egress.process.pid, signal.SIGSTOP)
        try:
            time.sleep(0.5)  # Tansu answers what it has received; the egress sends nothing more
            durable_brokers[1].stop()
        finally:
            os.kill(pair.egress.process.pid, signal.SIGCONT)
        written = link_stats(pair.egress).get("kafka_records_written", 0)
        time.sleep(OUTAGE_SECONDS)
        durable_brokers[1].start()
        wait_for_stats(pair.egress, lambda stats: stats.get("kafka_records_delivered", 0) > written + 1000, 60)

    _, egress_summary = run_through(start_ddc, durable_brokers, tmp_path, "destination", outage)
    assert egress_summary["kafka_records_duplicate"] == 0
