"""Kafka across the diode, end to end: real brokers, real `ddc run` processes, real sockets."""

import json
import time
import uuid

import pytest

from conftest import free_udp_port, run_ddc
from kafka_harness import (KafkaPair, assert_reports_exact, assert_same_records, kafka_pair_configs, offsets_in,
                           source_of, topic_id_text, varied_records)
from relay import FrameDroppingRelay

pytestmark = pytest.mark.timeout(600)


def replicated_topic(clusters, prefix: str, partitions: int, count: int, seed: int) -> tuple[str, list]:
    """A new source topic holding varied records, and its empty namesake in the destination."""
    source, destination = clusters
    topic = source.new_topic(prefix, partitions)
    destination.create_topic(topic, partitions)
    records = varied_records(count, partitions, seed)
    source.produce(topic, records)
    return topic, records


@pytest.mark.apache_kafka_too
def test_records_cross_complete_with_fidelity_and_source_headers(start_ddc, kafka_clusters):
    source, destination = kafka_clusters
    topic, records = replicated_topic(kafka_clusters, "fidelity", 3, 200_000, seed=7)
    pair = KafkaPair(start_ddc, kafka_clusters, [topic])
    arrived = destination.wait_for_records(topic, len(records))
    ingress_summary, egress_summary = pair.stop()
    arrived = destination.read_all(topic)
    assert_same_records(source.read_all(topic), arrived, topic)
    topic_id = topic_id_text(source, topic).encode()
    for message in arrived:
        assert message.partition() == source_of(message)[1], "source partition not kept"
        headers = message.headers()
        assert [name for name, _ in headers[-4:]] == ["sourceTopic", "sourcePartition", "sourceOffset",
                                                      "sourceTopicId"]
        assert headers[-1][1] == topic_id, "the source topic's id, as Kafka's tools print it"
    assert pair.missing_reports() == []
    assert egress_summary["kafka_records_written"] == len(records)
    assert egress_summary["kafka_records_duplicate"] == 0
    assert ingress_summary["kafka_records_consumed"] == len(records)
    assert pair.ingress.unparsed_or_tracebacks() == [] and pair.egress.unparsed_or_tracebacks() == []


def test_sigkilled_paused_ingress_restarts_without_loss_or_duplicates(start_ddc, kafka_clusters):
    source, destination = kafka_clusters
    topic, records = replicated_topic(kafka_clusters, "ingress-kill", 3, 60_000, seed=11)
    # A small buffer: the link is slower than the consumer, which must pause instead of piling records up.
    pair = KafkaPair(start_ddc, kafka_clusters, [topic], rate="12Mbit/s", buffer_size="256KiB",
                     source_extra='max_record_size = "192KiB"')
    destination.wait_for_records(topic, 15_000)
    paused = pair.ingress.wait_for(lambda line: line.get("buffer_full_events", 0) > 0)
    assert paused["buffer_peak_bytes"] <= 256 * 1024 + 1024
    pair.ingress.kill()
    assert len(destination.read_all(topic)) < len(records), "the stream ended before the kill; slow it down"
    pair.ingress = pair.start_ingress()
    destination.wait_for_records(topic, len(records), timeout=180)
    ingress_summary, egress_summary = pair.stop()
    assert_same_records(source.read_all(topic), destination.read_all(topic), topic)
    assert pair.missing_reports() == []
    assert pair.egress.unparsed_or_tracebacks() == []


@pytest.mark.apache_kafka_too
def test_sigkilled_egress_reports_the_gap_and_ddc_repair_repairs_it(start_ddc, kafka_clusters, tmp_path):
    source, destination = kafka_clusters
    topic, records = replicated_topic(kafka_clusters, "egress-kill", 3, 60_000, seed=12)
    missing_topic = destination.new_topic("missing")
    # The egress keeps a write-ahead log: what it had received when killed is delivered by the next one, and only
    # what crossed while no egress listened is missing.
    pair = KafkaPair(start_ddc, kafka_clusters, [topic], rate="12Mbit/s",
                     sink_extra=f'missing_records_topic = "{missing_topic}"',
                     egress_tables=f'[links.kafka.spool]\npath = "{tmp_path / "spool"}"\n')
    destination.wait_for_records(topic, 15_000)
    pair.egress.kill()
    time.sleep(1.0)  # datagrams sent now reach no one, as through a diode whose receiver is down
    first_egress = pair.egress
    pair.egress = pair.start_egress()
    pair.ingress.wait_for(lambda line: line.get("kafka_records_consumed") == len(records)
                          and line.get("kafka_records_unacknowledged") == 0, timeout=180)
    time.sleep(3)  # position announcements reveal losses at the end of each partition
    ingress_config = pair.ingress.config_path
    live = run_ddc("repair", str(ingress_config), str(pair.egress.log_path))
    assert live.returncode == 1 and "stop every ingress of the group" in live.stderr, live.stderr
    ingress_summary, egress_summary = pair.stop()
    source_messages = source.read_all(topic)
    arrived = destination.read_all(topic)
    reports = pair.missing_reports()
    assert reports, "killing the egress mid-stream lost nothing; was it killed?"
    assert len(arrived) < len(records)
    assert_reports_exact(source_messages, arrived, reports, topic)
    written = [message.value().decode() for message in destination.read_all(missing_topic)]
    assert sorted((r["topic"], r["partition"], r["first_offset"], r["last_offset"]) for r in map(json.loads, written)
                  if r["event"] == "missing") == sorted(reports)

    # The repair: `ddc repair` rewinds the stopped ingress's group to the first missing offset of each partition,
    # from the records of the missing-records topic or from the egress's log alike.
    rewind = {}
    for _, partition, first, _ in reports:
        rewind[partition] = min(first, rewind.get(partition, first))
    committed = source.committed(pair.group, topic, 3)
    (tmp_path / "missing.jsonl").write_text("\n".join(written) + "\n")
    planned = run_ddc("repair", str(ingress_config), str(tmp_path / "missing.jsonl"), "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert "dry run: nothing was changed" in planned.stdout
    for partition, first in rewind.items():
        assert f"{topic}[{partition}]: " in planned.stdout and f"to {first}:" in planned.stdout, planned.stdout
    assert source.committed(pair.group, topic, 3) == committed, "a dry run changed the group's offsets"
    repaired = run_ddc("repair", str(ingress_config), str(pair.egress.log_path))
    assert repaired.returncode == 0, repaired.stderr
    assert repaired.stdout.splitlines()[:-1] == planned.stdout.splitlines()[:-1], \
        "the log and the topic's records gave different plans"
    after = source.committed(pair.group, topic, 3)
    assert after == {partition: rewind.get(partition, offset) for partition, offset in committed.items()}
    pair.egress = pair.start_egress()
    pair.ingress = pair.start_ingress()
    destination.wait_for_records(topic, len(records), timeout=180)
    pair.ingress.wait_for(lambda line: line.get("kafka_records_unacknowledged") == 0
                          and line.get("kafka_records_consumed", 0) > 0, timeout=60)
    ingress_summary, egress_summary = pair.stop()
    assert_same_records(source_messages, destination.read_all(topic), topic, order_kept=False)
    assert egress_summary["kafka_missing_ranges_open"] == 0
    assert egress_summary["kafka_records_duplicate"] > 0, "the rewind resent records already delivered"
    reported = [json.loads(message.value()) for message in destination.read_all(missing_topic)]
    assert any(report["event"] == "repaired" for report in reported)
    assert egress_summary["spool_frames"] == 0
    assert first_egress.unparsed_or_tracebacks() == [] and pair.egress.unparsed_or_tracebacks() == []


@pytest.mark.apache_kafka_too
@pytest.mark.timeout(400)
@pytest.mark.parametrize("recreated", ["cluster rebuilt", "topic deleted"])
def test_a_rebuilt_source_cluster_whose_offsets_start_again_is_delivered_not_dropped(start_ddc, kafka_clusters,
                                                                                     recreated):
    """Issue #21: 1 000 records across a running link, then the source broker replaced by an empty one at the
    same address and 500 new records produced under the same topic name: the egress took all 500 for
    duplicates of the old topic's offsets 0..499 and wrote none, without a word. Records carry the source topic's
    id now, and a new id is a new topic to the egress. The same for the topic deleted and created again in the
    same cluster (on Apache Kafka: Tansu's deletion crashes librdkafka's consumer, docs/kafka.md)."""
    from kafka_harness import TansuBroker

    source, destination = kafka_clusters
    if recreated == "topic deleted" and isinstance(source.broker, TansuBroker):
        pytest.skip("librdkafka 2.16's consumer segfaults when a topic it reads is deleted on Tansu (docs/kafka.md)")
    topic = source.new_topic("rebuilt", 2)
    destination.create_topic(topic, 2)
    first = varied_records(1_000, 2, seed=51)
    source.produce(topic, first)
    old_id = topic_id_text(source, topic)
    # librdkafka looks for a subscribed topic that did not exist at its last rebalance every 5 min by default
    pair = KafkaPair(start_ddc, kafka_clusters, [topic], source_properties={"topic.metadata.refresh.interval.ms": 2000})
    destination.wait_for_records(topic, len(first))
    if recreated == "cluster rebuilt":
        source.replace_with_an_empty_broker()
    else:
        admin = source.admin()
        admin.delete_topics([topic])[topic].result(30)
        time.sleep(2)
    source.create_topic(topic, 2)
    new_id = topic_id_text(source, topic)
    assert new_id != old_id
    second = varied_records(500, 2, seed=52)
    source.produce(topic, second)
    arrived = destination.wait_for_records(topic, len(first) + len(second), timeout=240)
    pair.egress.wait_for(lambda line: line.get("kafka_source_topic_id_changes", 0) == 2, timeout=30)
    ingress_summary, egress_summary = pair.stop()
    by_id = {}
    for message in arrived:
        by_id.setdefault(dict(message.headers())["sourceTopicId"].decode(), []).append(message)
    assert {key: len(messages) for key, messages in by_id.items()} == {old_id: 1_000, new_id: 500}
    assert_same_records(source.read_all(topic), by_id[new_id], topic)
    assert egress_summary["kafka_records_duplicate"] == 0 and pair.missing_reports() == []
    assert egress_summary["kafka_source_topic_id_changes"] == 2, "one warning per source partition"
    assert ingress_summary["kafka_source_topic_id_changes"] == 1
    warnings = [line for line in pair.egress.lines() if "comes with topic id" in line.get("message", "")]
    assert len(warnings) == 2 and all(new_id in line["message"] and old_id in line["message"] for line in warnings)
    assert pair.ingress.unparsed_or_tracebacks() == [] and pair.egress.unparsed_or_tracebacks() == []


@pytest.mark.apache_kafka_too
def test_frames_lost_on_the_link_are_reported_exactly(start_ddc, kafka_clusters):
    source, destination = kafka_clusters
    topic = source.new_topic("lossy", partitions=3)
    destination.create_topic(topic, partitions=3)
    missing_topic = destination.new_topic("missing")
    dropping = {"all": False}
    chosen = {4, 9, 10, 17}
    link_port = free_udp_port()
    relay = FrameDroppingRelay(link_port, lambda frame_id: dropping["all"] or frame_id in chosen)
    relay.start()
    try:
        records = varied_records(30_000, 3, seed=13)
        source.produce(topic, records)
        pair = KafkaPair(start_ddc, kafka_clusters, [topic], rate="40Mbit/s", link_port=link_port,
                         send_to_port=relay.port, transport_extra='batch_max_bytes = "64KiB"',
                         sink_extra=f'missing_records_topic = "{missing_topic}"')
        pair.ingress.wait_for(lambda line: line.get("kafka_records_consumed") == len(records)
                              and line.get("kafka_records_unacknowledged") == 0, timeout=120)
        # The end of a stream: these records are lost and only the position announcements reveal it.
        dropping["all"] = True
        dropped_before = len(relay.dropped_frames)
        source.produce(topic, [{"partition": 1, "key": b"tail", "value": b"lost"}] * 50)
        pair.ingress.wait_for(lambda line: line.get("kafka_records_consumed") == len(records) + 50
                              and line.get("kafka_records_unacknowledged") == 0, timeout=60)
        dropping["all"] = False
        assert len(relay.dropped_frames) > dropped_before
        time.sleep(5)  # at least two position announcements
        ingress_summary, egress_summary = pair.stop()
    finally:
        relay.close()
    assert chosen <= relay.dropped_frames
    source_messages = source.read_all(topic)
    arrived = destination.read_all(topic)
    reports = pair.missing_reports()
    assert_reports_exact(source_messages, arrived, reports, topic)
    assert (topic, 1, max(m.offset() for m in source_messages if m.partition() == 1)) in offsets_in(reports)
    written = [json.loads(message.value()) for message in destination.read_all(missing_topic)]
    assert sorted((r["topic"], r["partition"], r["first_offset"], r["last_offset"]) for r in written) \
        == sorted(reports)
    assert egress_summary["kafka_missing_ranges_reported"] == len(reports)


def test_transactional_source_gaps_are_not_reported(start_ddc, kafka_clusters):
    source, destination = kafka_clusters
    topic = source.new_topic("transactional", partitions=2)
    destination.create_topic(topic, partitions=2)
    producer = source.producer(**{"transactional.id": f"tx-{uuid.uuid4().hex[:8]}"})
    producer.init_transactions(30)
    for transaction in range(40):
        producer.begin_transaction()
        for index in range(25):
            producer.produce(topic, key=f"{transaction}-{index}".encode(), value=b"v", partition=index % 2)
        producer.commit_transaction(30)
    source_messages = source.read_all(topic)
    offsets = sorted(message.offset() for message in source_messages if message.partition() == 0)
    assert offsets[-1] - offsets[0] + 1 > len(offsets), "no transaction markers: the test proves nothing"
    pair = KafkaPair(start_ddc, kafka_clusters, [topic])
    destination.wait_for_records(topic, len(source_messages))
    time.sleep(3)  # position announcements: the last offset of each partition is a marker
    pair.stop()
    assert_same_records(source_messages, destination.read_all(topic), topic)
    assert pair.missing_reports() == []


@pytest.mark.apache_kafka_too
def test_redundant_links_write_each_record_once(start_ddc, kafka_clusters):
    """Two links carry the same topic (two consumer groups, two UDP paths) into one egress: no duplicates."""
    source, destination = kafka_clusters
    topic, records = replicated_topic(kafka_clusters, "redundant", 2, 20_000, seed=31)
    ingress_text, egress_text = "", ""
    for name in ("first", "second"):
        port = free_udp_port()
        ingress, egress = kafka_pair_configs(source.bootstrap, destination.bootstrap, [topic], port,
                                             group=f"ddc-{name}-{uuid.uuid4().hex[:6]}", link=name)
        if not ingress_text:
            ingress_text, egress_text = ingress, egress
            continue
        ingress_text += ingress.split("stats_interval = \"1s\"", 1)[1]
        egress_text += egress.split("stats_interval = \"1s\"", 1)[1]
    egress = start_ddc("egress", egress_text)
    egress.wait_until_ready()
    ingress = start_ddc("ingress", ingress_text)
    ingress.wait_until_ready()
    destination.wait_for_records(topic, len(records))
    for name in ("first", "second"):
        ingress.wait_for(lambda line, name=name: line.get("link") == name
                         and line.get("kafka_records_consumed") == len(records)
                         and line.get("kafka_records_unacknowledged") == 0, timeout=120)
    assert ingress.stop() == 0
    egress.wait_for(lambda line: "sender shut down" in line.get("message", ""))
    assert egress.stop() == 0
    assert_same_records(source.read_all(topic), destination.read_all(topic), topic)
    summaries = [egress.summary(name) for name in ("first", "second")]
    assert sum(summary["kafka_records_written"] for summary in summaries) == len(records)
    assert sum(summary["kafka_records_duplicate"] for summary in summaries) == len(records)
    assert not [line for line in egress.lines() if line.get("event") == "records missing"]


def test_frames_the_kernel_refuses_are_never_committed_and_cross_once_it_takes_them(start_ddc, kafka_clusters):
    """Issue #21: a datagram refused by sendmmsg (a firewall's EPERM, an interface down) was counted and skipped,
    its frame acknowledged and its offsets committed: the ingress consumed into nothing. Here the kernel refuses
    every datagram (loopback's broadcast address without SO_BROADCAST: EACCES): the frame is sent again and again and
    nothing is committed; an ingress of the same group with a destination that works then delivers all."""
    source, destination = kafka_clusters
    topic, records = replicated_topic(kafka_clusters, "refused", 2, 2_000, seed=13)
    group = f"ddc-test-{uuid.uuid4().hex[:8]}"
    link_port = free_udp_port()
    ingress_config, egress_config = kafka_pair_configs(source.bootstrap, destination.bootstrap, [topic], link_port,
                                                       group=group)
    refusing = start_ddc("refusing", ingress_config.replace(f'destination = "127.0.0.1:{link_port}"',
                                                            f'destination = "127.255.255.255:{link_port}"'))
    refusal = refusing.wait_for(lambda line: "refused to send" in line.get("message", ""))
    assert refusal["errno"] == 13 and "Permission denied" in refusal["message"]
    stats = refusing.wait_for(lambda line: line.get("frames_resent", 0) >= 3)
    assert stats["records_sent"] == 0 and stats["datagrams_failed"] > 0
    assert refusing.stop() == 1, "a stop that leaves records unsent is not clean"
    assert all(offset < 0 for offset in source.committed(group, topic, 2).values()), "committed what never left"
    assert any("stay unacknowledged" in line.get("message", "") for line in refusing.lines())

    egress = start_ddc("egress", egress_config)
    egress.wait_until_ready()
    ingress = start_ddc("ingress", ingress_config)
    ingress.wait_until_ready()
    destination.wait_for_records(topic, len(records))
    assert ingress.stop() == 0
    egress.wait_for(lambda line: "sender shut down" in line.get("message", ""))
    assert egress.stop() == 0
    assert_same_records(source.read_all(topic), destination.read_all(topic), topic)
    assert egress.summary("kafka")["kafka_records_duplicate"] == 0
