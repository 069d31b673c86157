"""The filter chain: each built-in filter, plugins, the error policy, and Kafka records filtered on either side."""

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddc.handlers.kafka import codec
from ddc.handlers.kafka.codec import FILTERED, POSITION, RECORD
from ddc.config import ConfigError, settings_from_mapping
from ddc.config.links import IngressLinkConfig
from ddc.filters import FilterChain
from ddc.filters.builtin import trie_pattern
from ddc.handlers.kafka.description import KafkaRecords
from test_kafka import KafkaPair, replicated_topic


def link_filters(*filters, source=None):
    """Validated filter configs, as a link config carries them."""
    source = source or {"type": "udp", "listen": "127.0.0.1:9"}
    return IngressLinkConfig(source=source, transport={"destination": "127.0.0.1:9"}, filters=list(filters)).filters


def values_kept(chain, values):
    return [value for _, value in chain.apply([(b"", value) for value in values])]


@settings(max_examples=200)
@given(st.lists(st.binary(min_size=1, max_size=6), min_size=1, max_size=40),
       st.lists(st.binary(max_size=60), min_size=1, max_size=20))
def test_the_keyword_trie_finds_exactly_what_a_naive_search_finds(words, values):
    pattern = re.compile(trie_pattern(sorted(set(words))))
    for value in values:
        assert (pattern.search(value) is not None) == any(word in value for word in words)


def test_keywords_hex_patterns_and_case():
    chain = FilterChain("l", link_filters({"type": "keyword", "keywords": ["secret", "TOP"], "hex_patterns": ["00ff"],
                                           "case_insensitive": True}))
    assert values_kept(chain, [b"public", b"a SECRET", b"top", b"x\x00\xffy", b"\x00\xfe"]) == [b"public", b"\x00\xfe"]
    assert chain.counters() == {"filter_keyword_dropped": 3, "filter_keyword_errors": 0}
    exact = FilterChain("l", link_filters({"type": "keyword", "keywords": ["secret"]}))
    assert values_kept(exact, [b"SECRET", b"secret"]) == [b"SECRET"]


def test_regex_deny_and_allow_and_max_size_in_order():
    chain = FilterChain("l", link_filters(
        {"type": "max_size", "max_bytes": 10},
        {"type": "regex", "pattern": r"^\d+$", "action": "allow", "name": "digits_only"},
        {"type": "regex", "pattern": "666"}))
    assert values_kept(chain, [b"123", b"12345678901", b"abc", b"16660"]) == [b"123"]
    assert chain.counters() == {"filter_max_size_dropped": 1, "filter_max_size_errors": 0,
                                "filter_digits_only_dropped": 1, "filter_digits_only_errors": 0,
                                "filter_regex_dropped": 1, "filter_regex_errors": 0}


def test_json_schema_inline_and_from_a_file(tmp_path):
    schema = {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    for source in ({"schema": schema}, {"schema_file": str(tmp_path / "schema.json")}):
        chain = FilterChain("l", link_filters({"type": "json_schema", **source}))
        assert values_kept(chain, [b'{"id": 1}', b'{"id": "1"}', b"not json", b"\xff\xfe", b'{"x": 1}']) == \
            [b'{"id": 1}']


def kafka_record(topic="orders", headers=None, value=b"v", kind=RECORD, offset=5):
    return codec.pack(kind, topic, 0, offset, offset - 1, 0, 1, 1, None, headers, True), value


def test_topic_and_header_lists_judge_kafka_records_and_leave_control_records_alone():
    kafka = KafkaRecords()
    configs = link_filters({"type": "topic", "allow": ["orders", "^metrics-.*"], "deny": ["metrics-secret"]},
                           {"type": "header", "deny": ["classified"]},
                           {"type": "keyword", "keywords": ["x"]},
                           source={"type": "kafka", "topics": ["t"], "properties": {"bootstrap.servers": "b:9092"}})
    chain = FilterChain("l", configs, kafka.coordinates, kafka.placeholder, kafka.describe)
    records = [kafka_record("orders"), kafka_record("metrics-cpu"), kafka_record("metrics-secret"),
               kafka_record("payroll"), kafka_record("orders", [("classified", b"1")]), kafka_record(value=b"x"),
               kafka_record("payroll", kind=POSITION, value=b""), kafka_record("orders", [("ok", None)])]
    out = chain.apply(records)
    assert len(out) == len(records), "every dropped Kafka record leaves a placeholder"
    kinds = [codec.unpack(metadata)[0] for metadata, _ in out]
    assert kinds == [RECORD, RECORD, FILTERED, FILTERED, FILTERED, FILTERED, POSITION, RECORD]
    assert all(value == b"" for (metadata, value), kind in zip(out, kinds) if kind == FILTERED)
    assert [codec.unpack(metadata)[3] for metadata, _ in out] == [5] * len(records)
    assert chain.records_dropped == 4


class Failing:
    def __init__(self, options):
        self.fail_on = options["fail_on"].encode()

    def accepts(self, value, view):
        if self.fail_on in value:
            raise RuntimeError("cannot judge this")
        return not value.startswith(b"drop")


@pytest.fixture
def plugin_installed(tmp_path, monkeypatch):
    """A real entry point in group ddc.filters, as `pip install` of a plugin package would leave it."""
    info = tmp_path / "ddc_test_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ddc-test-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[ddc.filters]\nfailing = test_filters:Failing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "failing"


def test_a_plugin_filter_and_the_error_policy(plugin_installed, caplog):
    closed = FilterChain("l", link_filters({"type": "plugin", "entry_point": plugin_installed,
                                            "options": {"fail_on": "boom"}}))
    assert values_kept(closed, [b"fine", b"drop me", b"boom"]) == [b"fine"]
    assert closed.counters() == {"filter_plugin_dropped": 2, "filter_plugin_errors": 1}
    assert any("failed on a record" in record.message and "RuntimeError" in record.message for record in caplog.records)
    open_chain = FilterChain("l", link_filters({"type": "plugin", "entry_point": plugin_installed, "on_error": "keep",
                                                "options": {"fail_on": "boom"}}))
    assert values_kept(open_chain, [b"boom", b"drop"]) == [b"boom"]
    with pytest.raises(ConfigError, match="'absent' is not installed.*failing"):
        FilterChain("l", link_filters({"type": "plugin", "entry_point": "absent"}))


@pytest.mark.parametrize("filters, message", [
    ([{"type": "topic", "deny": ["x"]}], "needs Kafka records"),
    ([{"type": "keyword"}], "at least one entry"),
    ([{"type": "regex", "pattern": "("}], "not a regular expression"),
    ([{"type": "json_schema", "schema": {"type": "no-such-type"}}], "not usable"),
    ([{"type": "json_schema"}], "exactly one of schema"),
    ([{"type": "max_size", "max_bytes": 1, "name": "a"}, {"type": "regex", "pattern": "x", "name": "a"}], "twice"),
    ([{"type": "header"}], "needs allow or deny"),
])
def test_filter_configuration_errors_name_the_problem(filters, message):
    with pytest.raises(ConfigError, match=message):
        settings_from_mapping({"role": "ingress", "links": {"l": {
            "source": {"type": "udp", "listen": "127.0.0.1:9"}, "transport": {"destination": "127.0.0.1:9"},
            "filters": filters}}})


@pytest.mark.timeout(300)
def test_kafka_records_filtered_on_either_side_are_counted_never_reported_missing(start_ddc, kafka_clusters):
    source, destination = kafka_clusters
    topic, records = replicated_topic(kafka_clusters, "filtered", 2, 2000, seed=31)
    marked = {index for index in range(0, 2000, 7)}
    for index in marked:
        records[index]["value"] = b"SECRET-" + str(index).encode()
    stamped = {index for index in range(3, 2000, 11)} - marked
    for index in stamped:
        records[index]["headers"] = [("classified", b"yes")]
    source.produce(topic, records)
    pair = KafkaPair(start_ddc, kafka_clusters, [topic],
                     source_extra='\n[[links.kafka.filters]]\ntype = "keyword"\nkeywords = ["secret"]\n'
                                  'case_insensitive = true\n',
                     sink_extra='\n[[links.kafka.filters]]\ntype = "header"\ndeny = ["classified"]\n')
    expected = 2 * 2000 - len(marked) - len(stamped)  # the topic holds the varied records, then these
    destination.wait_for_records(topic, expected)
    ingress_summary, egress_summary = pair.stop()
    arrived = destination.read_all(topic)
    assert len(arrived) == expected
    assert not any(b"SECRET" in (message.value() or b"") for message in arrived)
    assert not any(name == "classified" for message in arrived for name, _ in (message.headers() or [])
                   if name != "sourceTopic")
    assert ingress_summary["filter_keyword_dropped"] == len(marked)
    assert egress_summary["filter_header_dropped"] == len(stamped)
    assert egress_summary["kafka_records_filtered"] == len(marked) + len(stamped)
    assert pair.missing_reports() == []
    assert not pair.ingress.unparsed_or_tracebacks() and not pair.egress.unparsed_or_tracebacks()

