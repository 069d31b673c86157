"""`ddc repair` without a cluster: reading reports, and every input it must refuse before touching a group.

The rewind itself, against Tansu and Apache Kafka, is in tests/test_kafka.py."""

import json

import pytest

from conftest import run_ddc
from ddc.handlers.kafka.repair import RepairError, open_ranges, read_reports

INGRESS = """
role = "ingress"
[links.orders.transport]
destination = "127.0.0.1:7001"
[links.orders.source]
type = "kafka"
topics = ["orders", "^audit\\\\..*"]
[links.orders.source.properties]
"bootstrap.servers" = "127.0.0.1:1"
"""


def missing(topic="orders", partition=0, first=10, last=19, link="orders", event="missing") -> str:
    return json.dumps({"event": event, "topic": topic, "partition": partition, "first_offset": first,
                       "last_offset": last, "link": link, "reason": "", "reported_at_ms": 1})


def test_reports_are_read_from_topic_records_json_log_lines_and_text_log_lines_alike():
    log_line = json.dumps({"level": "warning", "message": "link orders: records missing: orders[1] offsets 5..9 (x)",
                           "event": "records missing", "link": "orders", "topic": "orders", "partition": 1,
                           "first_offset": 5, "last_offset": 9})
    text = ("2026-12-06 10:00:00 WARNING ddc.handlers.kafka: link orders: records missing: audit.web[2] offsets "
            "100..199 (offsets never arrived over the link); to repair, ...")
    reports = read_reports("mixed", "\n".join([missing(), "not a report", "{}", log_line, text, ""]))
    assert [(r.topic, r.partition, r.first_offset, r.last_offset) for r in reports] == [
        ("orders", 0, 10, 19), ("orders", 1, 5, 9), ("audit.web", 2, 100, 199)]


def test_a_range_repaired_since_needs_no_rewind_and_a_part_repaired_leaves_the_rest():
    reports = read_reports("r", "\n".join([
        missing(first=10, last=19), missing(first=40, last=49), missing(first=12, last=15, event="repaired"),
        missing(first=40, last=49, event="repaired"), missing(partition=3, first=0, last=0),
        missing(partition=3, first=0, last=0, event="repaired")]))
    assert open_ranges(reports) == {("orders", 0): [[10, 11], [16, 19]]}


@pytest.mark.parametrize("line, why", [
    (missing(first=20, last=10), "not a range"),
    (json.dumps({"event": "missing", "topic": "orders", "partition": "two", "first_offset": 1, "last_offset": 2,
                 "link": "orders"}), "whole numbers"),
    (json.dumps({"event": "missing", "topic": "orders", "partition": 0, "first_offset": 1, "link": "orders"}),
     "last_offset"),
])
def test_a_malformed_report_is_refused_with_its_line(line, why):
    with pytest.raises(RepairError, match=f"reports.jsonl:2: .*{why}"):
        read_reports("reports.jsonl", "an unrelated log line\n" + line)


def test_a_file_without_any_report_is_refused():
    with pytest.raises(RepairError, match="no missing-range report"):
        read_reports("empty.log", "just\nlog lines\n")


@pytest.mark.parametrize("reports, error", [
    (missing(link="payments"), ("reports for link(s) 'payments', not 'orders'", "--report-link NAME")),
    (missing(topic="payments"), ("topic(s) 'payments', which link 'orders' does not read",)),
    ("nothing here", ("no missing-range report",)),
])
def test_ddc_repair_refuses_reports_that_are_not_for_this_link_before_touching_the_cluster(tmp_path, reports,
                                                                                           error):
    config = tmp_path / "ingress.toml"
    config.write_text(INGRESS)
    report = tmp_path / "report"
    report.write_text(reports + "\n")
    result = run_ddc("repair", str(config), str(report), timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert all(part in result.stderr for part in error), result.stderr


def test_ddc_repair_needs_the_ingress_config_and_a_reachable_cluster(tmp_path):
    egress = tmp_path / "egress.toml"
    egress.write_text('role = "egress"\n[links.orders.transport]\nlisten = "127.0.0.1:7001"\n'
                      '[links.orders.sink]\ntype = "udp"\ntarget = "127.0.0.1:9"\n')
    report = tmp_path / "report"
    report.write_text(missing() + "\n")
    result = run_ddc("repair", str(egress), str(report), timeout=30)
    assert result.returncode == 2 and "needs the ingress's config" in result.stderr
    ingress = tmp_path / "ingress.toml"
    ingress.write_text(INGRESS.replace("127.0.0.1:1", "127.0.0.1:9"))
    result = run_ddc("repair", str(ingress), str(report), "--dry-run", "--timeout", "2s", timeout=60)
    assert result.returncode == 1 and "cannot describe consumer group 'ddc-orders'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    result = run_ddc("repair", str(ingress), str(tmp_path / "absent"), timeout=30)
    assert result.returncode == 2 and "cannot read report" in result.stderr


@pytest.mark.apache_kafka_too
def test_ddc_repair_refuses_offsets_the_source_no_longer_holds_and_changes_nothing(kafka_clusters, tmp_path):
    from confluent_kafka import TopicPartition

    source = kafka_clusters[0]
    topic = source.new_topic("orders-repair", partitions=1)
    source.produce(topic, [{"value": b"%d" % index, "partition": 0} for index in range(100)])
    group = "ddc-repair-test"
    source.commit(group, topic, {0: 100})
    admin = source.admin()
    try:
        [deleted] = admin.delete_records([TopicPartition(topic, 0, 50)], request_timeout=30).values()
        deleted.result(30)
    except Exception as error:  # Tansu has no DeleteRecords
        pytest.skip(f"the broker cannot delete records, so no log starts past 0 here: {error}")
    config = tmp_path / "ingress.toml"
    config.write_text(INGRESS.replace('"orders", ', f'"{topic}", ').replace("127.0.0.1:1", source.bootstrap)
                      .replace('type = "kafka"', f'type = "kafka"\ngroup_id = "{group}"'))
    report = tmp_path / "report"
    report.write_text(missing(topic=topic, first=10, last=60) + "\n")
    result = run_ddc("repair", str(config), str(report))
    assert result.returncode == 1, result.stderr
    assert f"{topic}[0] offsets 10..49 (the log now starts at 50)" in result.stderr and "nothing was changed" in \
        result.stderr
    assert source.committed(group, topic, 1) == {0: 100}
    report.write_text(missing(topic=topic, first=55, last=60) + "\n")
    result = run_ddc("repair", str(config), str(report))
    assert result.returncode == 0, result.stderr
    assert "rewind from 100 to 55: resends 45 records" in result.stdout
    assert source.committed(group, topic, 1) == {0: 55}
