"""`ddc repair` without a cluster: reading reports, and every input it must refuse before touching a group.

The rewind itself, against Tansu and Apache Kafka, is in tests/test_kafka.py."""

import json
import tomllib

import pytest

from conftest import run_ddc
from kafka_harness import topic_id_text
from ddc.handlers.kafka.repair import RepairError, by_partition, open_ranges, read_reports

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


def missing(topic="orders", partition=0, first=10, last=19, link="orders", event="missing", topic_id=None) -> str:
    return json.dumps({"event": event, "topic": topic, "partition": partition, "first_offset": first,
                       "last_offset": last, "link": link, "reason": "", "reported_at_ms": 1,
                       **({"topic_id": topic_id} if topic_id else {})})


def test_a_repair_of_a_topic_created_again_does_not_close_the_old_topics_range():
    old, new = "AAECAwQFBgcICQoLDA0ODw", "AQIDBAUGBwgJCgsMDQ4PEA"
    reports = read_reports("r", [missing(first=10, last=19, topic_id=old), missing(first=10, last=19, topic_id=new),
                                 missing(first=10, last=19, topic_id=new, event="repaired"),
                                 missing(first=30, last=30, topic_id="not an id")])
    assert open_ranges(reports) == {("orders", 0, old): [[10, 19]], ("orders", 0, None): [[30, 30]]}
    assert by_partition(open_ranges(reports)) == {("orders", 0): [[10, 19], [30, 30]]}


def test_reports_are_read_from_topic_records_json_log_lines_and_text_log_lines_alike():
    log_line = json.dumps({"level": "warning", "message": "link orders: records missing: orders[1] offsets 5..9 (x)",
                           "event": "records missing", "link": "orders", "topic": "orders", "partition": 1,
                           "first_offset": 5, "last_offset": 9})
    text = ("2026-12-06 10:00:00 WARNING ddc.handlers.kafka: link orders: records missing: audit.web[2] offsets "
            "100..199 (offsets never arrived over the link); to repair, ...")
    reports = read_reports("mixed", [missing(), "not a report", "{}", '{"event": ["x"]}', log_line, text, ""])
    assert [(r.topic, r.partition, r.first_offset, r.last_offset) for r in reports] == [
        ("orders", 0, 10, 19), ("orders", 1, 5, 9), ("audit.web", 2, 100, 199)]


def test_a_range_repaired_since_needs_no_rewind_and_a_part_repaired_leaves_the_rest():
    reports = read_reports("r", [
        missing(first=10, last=19), missing(first=40, last=49), missing(first=12, last=15, event="repaired"),
        missing(first=40, last=49, event="repaired"), missing(partition=3, first=0, last=0),
        missing(partition=3, first=0, last=0, event="repaired")])
    assert open_ranges(reports) == {("orders", 0, None): [[10, 11], [16, 19]]}


def test_reports_are_applied_in_the_order_they_were_made_when_they_all_say():
    def at(line: str, milliseconds: int) -> str:
        return line.replace('"reported_at_ms": 1', f'"reported_at_ms": {milliseconds}')

    newest_first = [at(missing(first=5, last=9, event="repaired"), 2000), at(missing(first=5, last=9), 1000)]
    assert open_ranges(read_reports("r", newest_first)) == {}, "the repair came after the loss"


@pytest.mark.parametrize("line, why", [
    (missing(first=20, last=10), "not a range"),
    (missing(partition=True), "whole number"),
    (missing(partition=1 << 40), "beyond what Kafka has"),
    (missing(first=0, last=1 << 63), "not a range of Kafka offsets"),
    (missing(partition=-1), "whole number"),
    (missing().replace('"partition": 0', '"partition": "\u0663"'), "whole number"),
    ('{"event": "missing", "a": ' + "[" * 100_000 + "]" * 100_000 + "}", "recursion"),
    (json.dumps({"event": "missing", "topic": "orders", "partition": "two", "first_offset": 1, "last_offset": 2,
                 "link": "orders"}), "whole number"),
    (json.dumps({"event": "missing", "topic": "orders", "partition": 0, "first_offset": 1, "link": "orders"}),
     "last_offset"),
])
def test_a_malformed_report_is_refused_with_its_line(line, why):
    with pytest.raises(RepairError, match=f"reports.jsonl:2: .*({why})"):
        read_reports("reports.jsonl", ["an unrelated log line", line])


def test_a_file_without_any_report_is_refused():
    with pytest.raises(RepairError, match="no missing-range report"):
        read_reports("empty.log", ["just", "log lines"])


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


def test_patterns_match_topics_as_librdkafka_subscribes_and_the_group_is_the_consumers():
    from ddc.config import settings_from_mapping
    from ddc.handlers.kafka.repair import topic_is_read
    from ddc.handlers.kafka.source import consumer_group

    assert topic_is_read("telemetry-eu", ["^tele"]) and topic_is_read("audit.web", ["^audit\\..*"])
    assert not topic_is_read("orders-eu", ["orders"])
    link = settings_from_mapping(tomllib.loads(INGRESS)).links["orders"]
    assert consumer_group("orders", link.source) == "ddc-orders"
    link.source.group_id = "mine"
    assert consumer_group("orders", link.source) == "mine"
    link.source.properties["group.id"] = "legacy"
    assert consumer_group("orders", link.source) == "legacy", "librdkafka takes the properties' group.id"


def test_ddc_repair_refuses_a_bad_timeout_an_endless_line_and_takes_reports_on_stdin(tmp_path):
    import subprocess
    import sys

    config = tmp_path / "ingress.toml"
    config.write_text(INGRESS)
    for timeout in ("0", "3000h", "soon"):
        result = run_ddc("repair", str(config), "/dev/null", "--timeout", timeout, timeout=30)
        assert result.returncode == 2 and "--timeout" in result.stderr, result.stderr
    result = run_ddc("repair", str(config), "/dev/zero", timeout=30)
    assert result.returncode == 2 and "a line longer than" in result.stderr, result.stderr
    fed = subprocess.run([sys.executable, "-m", "ddc", "repair", str(config), "-"],
                         input=b"\xff\xfe not utf-8\n" + missing(link="other").encode() + b"\n",
                         capture_output=True, timeout=30)
    assert fed.returncode == 2 and b"reports for link(s) 'other'" in fed.stderr, fed.stderr


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
    assert result.returncode == 1 and "on the source cluster at 127.0.0.1:9: " in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    result = run_ddc("repair", str(ingress), str(tmp_path / "absent"), timeout=30)
    assert result.returncode == 2 and "cannot read report" in result.stderr


@pytest.mark.apache_kafka_too
def test_ddc_repair_refuses_what_the_source_does_not_hold_and_changes_nothing(kafka_clusters, tmp_path):
    from confluent_kafka import TopicPartition

    source = kafka_clusters[0]
    topic = source.new_topic("orders-repair", partitions=1)
    source.produce(topic, [{"value": b"%d" % index, "partition": 0} for index in range(100)])
    group = "ddc-repair-test"
    config = tmp_path / "ingress.toml"
    config.write_text(INGRESS.replace('"orders", ', f'"{topic}", ').replace("127.0.0.1:1", source.bootstrap)
                      .replace('type = "kafka"', f'type = "kafka"\ngroup_id = "{group}"'))
    report = tmp_path / "report"

    def repair(first: int, last: int, *options, partition: int = 0, topic_id=None):
        report.write_text(missing(topic=topic, partition=partition, first=first, last=last, topic_id=topic_id) + "\n")
        return run_ddc("repair", str(config), str(report), *options)

    result = repair(55, 60)
    assert result.returncode == 1 and "no committed offset for any reported partition" in result.stderr
    result = repair(55, 60, "--force", "--dry-run")
    assert result.returncode == 0 and "no committed offset: set to 55" in result.stdout, result.stderr
    source.commit(group, topic, {0: 100})
    result = repair(1, 2, partition=3)
    assert result.returncode == 2 and "has 1 partition(s); the reports name partition(s) 3" in result.stderr
    result = repair(90, 150)
    assert result.returncode == 1 and "offsets up to 150 are beyond the partition's end (100)" in result.stderr
    result = repair(55, 60, topic_id="AAECAwQFBgcICQoLDA0ODw")
    assert result.returncode == 1 and "went missing from topic id AAECAwQFBgcICQoLDA0ODw" in result.stderr
    assert f"now has id {topic_id_text(source, topic)}" in result.stderr and "nothing was changed" in result.stderr
    result = repair(55, 60, "--dry-run", topic_id=topic_id_text(source, topic))
    assert result.returncode == 0 and "rewind from 100 to 55" in result.stdout, result.stderr
    assert source.committed(group, topic, 1) == {0: 100}
    admin = source.admin()
    try:
        [deleted] = admin.delete_records([TopicPartition(topic, 0, 50)], request_timeout=30).values()
        deleted.result(30)
    except Exception as error:  # Tansu has no DeleteRecords
        pytest.skip(f"the broker cannot delete records, so no log starts past 0 here: {error}")
    result = repair(10, 60)
    assert result.returncode == 1, result.stderr
    assert f"{topic}[0] offsets 10..49 are no longer in the source (the log now starts at 50)" in result.stderr
    assert "nothing was changed" in result.stderr and source.committed(group, topic, 1) == {0: 100}
    result = repair(55, 60)
    assert result.returncode == 0, result.stderr
    assert "rewind from 100 to 55: resends 45 records" in result.stdout
    assert source.committed(group, topic, 1) == {0: 55}
