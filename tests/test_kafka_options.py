"""Kafka link options end to end: topic and partition mapping, oversized records, librdkafka pass-through."""

import collections
import os
import uuid

import pytest

from conftest import free_udp_port, run_ddc
from ddc.transport.sockets import free_tcp_port
from kafka_harness import Cluster, TansuBroker, kafka_pair_configs, tansu_binary
from test_kafka import KafkaPair, assert_same_records, varied_records

pytestmark = pytest.mark.timeout(300)


def test_prefix_mapping_key_hash_partitions_and_an_oversized_record(start_ddc, kafka_clusters):
    source, destination = kafka_clusters
    topic = source.new_topic("mapped", partitions=3)
    destination.create_topic(f"dest_{topic}", partitions=2)  # fewer partitions: records are placed by key
    records = varied_records(3000, 3, seed=21)
    oversized_index = 1234
    records[oversized_index] = {"partition": oversized_index % 3, "key": b"big", "value": b"x" * 300_000}
    source.produce(topic, records)
    pair = KafkaPair(start_ddc, kafka_clusters, [topic], source_extra='max_record_size = "100KiB"',
                     sink_extra='topic_prefix = "dest_"')
    destination.wait_for_records(f"dest_{topic}", len(records) - 1)
    ingress_summary, egress_summary = pair.stop()
    source_messages = source.read_all(topic)
    oversized = next(message for message in source_messages if message.key() == b"big")
    arrived = destination.read_all(f"dest_{topic}")
    assert_same_records([message for message in source_messages if message is not oversized], arrived, topic)
    assert ingress_summary["kafka_records_skipped"] == 1 and egress_summary["kafka_records_skipped"] == 1
    assert pair.missing_reports() == []
    skipped_line = pair.ingress.wait_for(lambda line: "skipped a record" in line.get("message", ""))
    assert (skipped_line["topic"], skipped_line["partition"], skipped_line["offset"]) == \
        (topic, oversized.partition(), oversized.offset())
    by_key = collections.defaultdict(set)
    for message in arrived:
        if message.key():
            by_key[message.key()].add(message.partition())
    assert all(len(partitions) == 1 for partitions in by_key.values())
    assert {message.partition() for message in arrived} == {0, 1}


def test_rename_rewrite_and_a_topic_pattern(start_ddc, kafka_clusters):
    source, destination = kafka_clusters
    orders = source.new_topic("orders")
    metrics = source.new_topic("metrics")
    suffix = metrics.split("-", 1)[1]
    destination.create_topic(f"{orders}-copy")
    destination.create_topic(f"archive-{suffix}")
    for topic in (orders, metrics):
        source.produce(topic, varied_records(500, 1, seed=len(topic)))
    sink_extra = f'''topic_rename = {{ "{orders}" = "{orders}-copy" }}
topic_rewrite = [ {{ pattern = "metrics-(.*)", replacement = "archive-\\\\1" }} ]'''
    pair = KafkaPair(start_ddc, kafka_clusters, [orders, f"^metrics-{suffix}$"], sink_extra=sink_extra)
    destination.wait_for_records(f"{orders}-copy", 500)
    destination.wait_for_records(f"archive-{suffix}", 500)
    pair.stop()
    assert_same_records(source.read_all(orders), destination.read_all(f"{orders}-copy"), orders)
    assert_same_records(source.read_all(metrics), destination.read_all(f"archive-{suffix}"), metrics)


def test_sasl_properties_reach_librdkafka(start_ddc, tmp_path):
    if os.environ.get("DDC_TEST_KAFKA_BOOTSTRAP") or tansu_binary() is None:
        pytest.skip("needs a Tansu broker of its own, started with authentication required")
    broker = TansuBroker(tansu_binary(), tmp_path / "sasl-broker.log", "--authentication")
    try:
        ingress_config, _ = kafka_pair_configs(broker.bootstrap, broker.bootstrap, ["secured"], free_udp_port(),
                                               group="sasl-test")
        ingress_config = ingress_config.replace('"bootstrap.servers"', '''"security.protocol" = "SASL_PLAINTEXT"
"sasl.mechanism" = "SCRAM-SHA-256"
"sasl.username" = "ddc"
"sasl.password" = "not-the-password"
"bootstrap.servers"''')
        ingress = start_ddc("ingress", ingress_config)
        line = ingress.wait_for(lambda line: "SASL" in line.get("message", ""), timeout=30)
        assert "SCRAM" in line["message"] and "not-the-password" not in ingress.log_path.read_text()
        assert ingress.stop() == 0
        assert ingress.unparsed_or_tracebacks() == []
    finally:
        broker.stop()


def test_tls_properties_are_checked_by_librdkafka_and_refused_cleanly(tmp_path):
    ingress_config, _ = kafka_pair_configs("127.0.0.1:9", "127.0.0.1:9", ["secured"], free_udp_port(), group="tls")
    ingress_config = ingress_config.replace('"bootstrap.servers"', '''"security.protocol" = "SSL"
"ssl.ca.location" = "/nonexistent/ca.pem"
"bootstrap.servers"''')
    path = tmp_path / "ingress.toml"
    path.write_text(ingress_config)
    result = run_ddc("run", str(path), timeout=60)
    assert result.returncode == 1
    assert "ssl.ca.location" in result.stderr or "/nonexistent/ca.pem" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_a_source_broker_that_is_down_is_reported_and_recovered_from(start_ddc, kafka_clusters, tmp_path):
    if os.environ.get("DDC_TEST_KAFKA_BOOTSTRAP") or tansu_binary() is None:
        pytest.skip("needs a Tansu broker of its own, started late")
    _, destination = kafka_clusters
    port = free_tcp_port()
    topic = "late-" + uuid.uuid4().hex[:8]
    destination.create_topic(topic)
    ingress_config, egress_config = kafka_pair_configs(
        f"127.0.0.1:{port}", destination.bootstrap, [topic], free_udp_port(), group="late")
    ingress_config = ingress_config.replace('"bootstrap.servers"', '"topic.metadata.refresh.interval.ms" = 1000\n'
                                                                   '"bootstrap.servers"')
    egress = start_ddc("egress", egress_config)
    egress.wait_until_ready()
    ingress = start_ddc("ingress", ingress_config)
    ingress.wait_for(lambda line: "brokers are down" in line.get("message", ""))
    egress.wait_for(lambda line: line.get("peer_source_healthy") == 0)
    broker = TansuBroker(tansu_binary(), tmp_path / "late-broker.log", port=port)
    try:
        late = Cluster(broker.bootstrap)
        late.create_topic(topic)
        late.produce(topic, varied_records(1000, 1, seed=41))
        destination.wait_for_records(topic, 1000, timeout=60)
        ingress.wait_for(lambda line: "brokers reachable again" in line.get("message", ""))
        egress.wait_for(lambda line: line.get("peer_source_healthy") == 1)
        assert ingress.stop() == 0 and egress.stop() == 0
        assert_same_records(late.read_all(topic), destination.read_all(topic), topic)
    finally:
        broker.stop()
    assert ingress.unparsed_or_tracebacks() == [] and egress.unparsed_or_tracebacks() == []
