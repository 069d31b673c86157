"""Chaos: two ingresses share a consumer group, each with its own egress, and one is SIGKILLed mid-stream.

Its partitions move to the survivor, which resumes them from the last committed
offsets, so it resends what the dead ingress had sent but not committed. The
survivor's egress has never written those partitions: it must read the
destination before judging them, or it would write those records twice and
report the dead pair's records as missing.
"""

import pytest

from kafka_harness import KafkaPair, SteadyProducer, assert_same_records, link_stats, varied_records, wait_for_stats

pytestmark = pytest.mark.timeout(300)


def test_a_killed_ingress_hands_its_partitions_over_with_nothing_lost_or_written_twice(start_ddc, kafka_clusters):
    source, destination = kafka_clusters
    topic = source.new_topic("failover", partitions=4)
    destination.create_topic(topic, partitions=4)
    records = varied_records(30_000, 4, seed=41)
    # The first ingress commits only when the group takes partitions from it, so whatever it sends after the
    # last rebalance is still uncommitted when it is killed, and the survivor resends it.
    first = KafkaPair(start_ddc, kafka_clusters, [topic], commit_interval="1h")
    second = KafkaPair(start_ddc, kafka_clusters, [topic], group=first.group, commit_interval="1s")
    producer = SteadyProducer(source, topic, records, 24)
    producer.start()
    for pair in (first, second):
        wait_for_stats(pair.egress, lambda stats: stats.get("kafka_records_delivered", 0) > 500, 60)
    sent = link_stats(first.egress)["kafka_records_delivered"]
    wait_for_stats(first.egress, lambda stats: stats["kafka_records_delivered"] > sent, 30)
    first.ingress.kill()
    producer.join()
    wait_for_stats(second.egress, lambda stats: stats["kafka_records_delivered"]
                   + link_stats(first.egress)["kafka_records_delivered"] >= len(records), 120)
    assert link_stats(first.egress)["kafka_records_delivered"] == link_stats(first.egress)["kafka_records_written"]
    _, survivor = second.stop()
    assert first.egress.stop() == 0
    orphan = first.egress.summary("kafka")
    assert_same_records(source.read_all(topic), destination.read_all(topic), topic)
    assert first.missing_reports() == [] and second.missing_reports() == []
    assert survivor["kafka_records_duplicate"] > 0, "the survivor resent nothing: the kill came too late to test"
    assert survivor["kafka_destination_checks"] >= 2 and orphan["kafka_records_delivered"] > 0
