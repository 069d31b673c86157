import json
import tomllib

import pytest

from ddc.config import ConfigError, load_settings, settings_from_mapping
from conftest import REPOSITORY, run_ddc as ddc

GOOD_INGRESS = """
role = "ingress"
[links.logs.source]
type = "udp"
listen = "127.0.0.1:5514"
[links.logs.transport]
destination = "127.0.0.1:7001"
"""

GOOD_EGRESS = """
role = "egress"
[links.logs.transport]
listen = "127.0.0.1:7001"
[links.logs.sink]
type = "udp"
target = "127.0.0.1:5515"
"""

KAFKA_INGRESS = """
role = "ingress"
[links.orders.source]
type = "kafka"
topics = ["orders"]
[links.orders.source.properties]
"bootstrap.servers" = "127.0.0.1:9092"
"sasl.password" = "hunter2"
[links.orders.transport]
destination = "127.0.0.1:7001"
"""

KAFKA_EGRESS = """
role = "egress"
[links.orders.transport]
listen = "127.0.0.1:7001"
[links.orders.sink]
type = "kafka"
[links.orders.sink.properties]
"bootstrap.servers" = "127.0.0.1:9093"
"""


BROKEN = [
    ("not toml", "role = \n", "not valid TOML"),
    ("no role", GOOD_INGRESS.replace('role = "ingress"', ""), "role: required key is missing"),
    ("unknown role", GOOD_INGRESS.replace('"ingress"', '"sideways"'), "role: 'sideways' is not a role"),
    ("typo in key", GOOD_INGRESS.replace("destination", "destinaton"), "links.logs.transport.destinaton: unknown key"),
    ("bad address", GOOD_INGRESS.replace('"127.0.0.1:5514"', '"localhost"'), "links.logs.source.listen"),
    ("port out of range", GOOD_EGRESS.replace("7001", "70010"), "links.logs.transport.listen: port 70010"),
    ("bad rate", GOOD_INGRESS + 'rate = "fast"\n', "links.logs.transport.rate: 'fast' is not a rate"),
    ("bad size", GOOD_INGRESS + 'send_buffer = "8 parsecs"\n', "links.logs.transport.send_buffer"),
    ("bad duration", GOOD_INGRESS + 'linger = "soon"\n', "links.logs.transport.linger"),
    ("datagram too large", GOOD_INGRESS + "datagram_size = 70000\n", "links.logs.transport.datagram_size"),
    ("datagram no larger than its header", GOOD_INGRESS + "datagram_size = 56\n",
     "links.logs.transport.datagram_size: datagram_size (56) leaves no room for a payload beside the 56-byte header"),
    ("unknown source type", GOOD_INGRESS.replace('type = "udp"', 'type = "carrier-pigeon"'),
     "links.logs.source.type"),
    ("no source type", GOOD_INGRESS.replace('type = "udp"\n', ""), "links.logs.source.type: required key is missing"),
    ("file options on a udp source", GOOD_INGRESS.replace('type = "udp"', 'type = "udp"\nchunk_size = "1MiB"'),
     "links.logs.source.chunk_size: unknown key"),
    ("egress key on ingress", GOOD_INGRESS + 'frame_timeout = "5s"\n', "links.logs.transport.frame_timeout: unknown key"),
    ("no links", 'role = "egress"\n', "links: required key is missing"),
    ("bad link name", GOOD_EGRESS.replace("links.logs", "links.Logs"), "link name 'Logs' is not allowed"),
    ("bad when_full", GOOD_EGRESS + '[links.logs.buffer]\nwhen_full = "panic"\n', "links.logs.buffer.when_full"),
    ("budget below frame", GOOD_EGRESS.replace('listen = "127.0.0.1:7001"',
                                               'listen = "127.0.0.1:7001"\nmax_bytes_in_flight = "1MiB"'),
     "max_bytes_in_flight (1048576) is smaller than max_frame_size"),
    ("wrong type", GOOD_EGRESS.replace('listen = "127.0.0.1:7001"',
                                       'listen = "127.0.0.1:7001"\nmax_frames_in_flight = "many"'),
     "links.logs.transport.max_frames_in_flight"),
    ("kafka without bootstrap", KAFKA_INGRESS.replace('"bootstrap.servers" = "127.0.0.1:9092"\n', ""),
     'links.orders.source.properties: "bootstrap.servers" is missing'),
    ("kafka with no topics", KAFKA_INGRESS.replace('["orders"]', "[]"), "links.orders.source.topics"),
    ("kafka bad topic pattern", KAFKA_INGRESS.replace('["orders"]', '["^orders(["]'),
     "topic pattern '^orders([' is not a regular expression"),
    ("kafka dropping when full", KAFKA_INGRESS + '[links.orders.buffer]\nwhen_full = "drop"\n',
     'buffer.when_full = "drop" loses records'),
    ("kafka buffer smaller than a record", KAFKA_INGRESS + '[links.orders.buffer]\nsize = "1MiB"\n',
     "make buffer.size at least 1114112"),
    ("kafka bad rename", KAFKA_EGRESS.replace('type = "kafka"', 'type = "kafka"\ntopic_rename = { a = "b c" }'),
     "links.orders.sink.topic_rename.a"),
    ("kafka bad rewrite", KAFKA_EGRESS.replace('type = "kafka"', 'type = "kafka"\n'
                                               'topic_rewrite = [{ pattern = "(", replacement = "x" }]'),
     "'(' is not a regular expression"),
    ("fec not a share", GOOD_INGRESS + 'fec = "lots"\n', "fec parity 'lots' is neither a count nor a percentage"),
    ("fec block too large", GOOD_INGRESS + "fec = { data = 200, parity = 4 }\n", "links.logs.transport.fec.data"),
    ("fec loss burst too long", GOOD_INGRESS + "fec = { parity = 16, loss_burst = 40 }\n",
     "links.logs.transport.fec.loss_burst"),
    ("fec in a tiny datagram", GOOD_INGRESS + 'datagram_size = 100\nfec = "10%"\n',
     "datagram_size (100) leaves no room for a payload beside the 56-byte header and the 58 bytes forward "
     "error correction adds; use at least 115"),
    ("kafka bad partitioning", KAFKA_EGRESS.replace('type = "kafka"', 'type = "kafka"\npartitioning = "random"'),
     "links.orders.sink.partitioning"),
    ("spool without a path", KAFKA_EGRESS + '[links.orders.spool]\nmax_size = "10GiB"\n',
     "links.orders.spool.path: required key is missing"),
    ("spool too small", KAFKA_EGRESS + '[links.orders.spool]\npath = "/tmp/s"\nmax_size = "64KiB"\n',
     "links.orders.spool.max_size"),
    ("spool on an ingress", GOOD_INGRESS + '[links.logs.spool]\npath = "/tmp/s"\n', "links.logs.spool: unknown key"),
]


@pytest.mark.parametrize("name, text, expected", BROKEN, ids=[case[0] for case in BROKEN])
def test_broken_file_gives_one_line_naming_the_key_and_exit_code_2(tmp_path, name, text, expected):
    path = tmp_path / "broken.toml"
    path.write_text(text)
    for command in ("check", "run"):
        result = ddc(command, str(path))
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines and all(line.startswith("ddc: ") for line in lines), result.stderr
        assert any(expected in line for line in lines), result.stderr


def test_missing_file_is_a_clear_error(tmp_path):
    result = ddc("check", str(tmp_path / "absent.toml"))
    assert result.returncode == 2
    assert "cannot read config file" in result.stderr and "No such file" in result.stderr


def test_check_prints_the_resolved_config(tmp_path):
    path = tmp_path / "ingress.toml"
    path.write_text(GOOD_INGRESS + 'rate = "800Mbit/s"\n')
    result = ddc("check", str(path))
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    assert resolved["links"]["logs"]["transport"]["rate"] == 100e6
    assert resolved["links"]["logs"]["transport"]["destination"] == "127.0.0.1:7001"


def test_environment_overrides_the_file(tmp_path):
    path = tmp_path / "ingress.toml"
    path.write_text(GOOD_INGRESS)
    result = ddc("check", str(path), environment={"DDC_LINKS__LOGS__TRANSPORT__RATE": "10Mbit/s",
                                                  "DDC_TELEMETRY__LOG_LEVEL": "debug"})
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    assert resolved["links"]["logs"]["transport"]["rate"] == 1.25e6
    assert resolved["telemetry"]["log_level"] == "debug"
    broken = ddc("check", str(path), environment={"DDC_LINKS__LOGS__TRANSPORT__RATE": "quick"})
    assert broken.returncode == 2 and "links.logs.transport.rate: 'quick'" in broken.stderr


@pytest.mark.parametrize("variable, value, expected", [
    ("DDC_TELEMETRY__HTTP__LISTEN", "0.0.0.0:9180", None),  # how the Helm chart opens the probes' port
    ("DDC_LINKS__LOGS__TRANSPORT__DESTINATION", "[::1]:7009", None),
    ("DDC_TELEMETRY__HTTP__LISTEN", "nonsense", "telemetry.http.listen: 'nonsense' is not an address"),
    ("DDC_LINKS__LOGS__FILTERS", "[{not json", "links.logs.filters: Input should be a valid list"),
])
def test_an_address_or_a_mistake_in_the_environment_is_read_not_a_traceback(tmp_path, variable, value, expected):
    """An address is not JSON, and pydantic-settings JSON-decodes a variable for any field of a compound type:
    DDC_TELEMETRY__HTTP__LISTEN=0.0.0.0:9180 ended in a raw JSONDecodeError traceback (issue #22, and the
    environment traceback a reviewer of #24 saw). A list or a table is still JSON."""
    path = tmp_path / "ingress.toml"
    path.write_text(GOOD_INGRESS)
    result = ddc("check", str(path), environment={variable: value})
    assert "Traceback" not in result.stderr, result.stderr
    if expected is None:
        assert result.returncode == 0, result.stderr
        assert value in result.stdout
    else:
        assert result.returncode == 2 and expected in result.stderr, result.stderr


def test_a_section_refused_whole_shows_its_secrets_masked(tmp_path):
    """The review of #22: with the role wrong (DDC_ROLE, or a Helm release of the other side), a whole Kafka
    source is an unknown key, and its error printed the table with sasl.password in clear."""
    path = tmp_path / "ingress.toml"
    path.write_text('role = "ingress"\n[links.a.source]\ntype = "kafka"\ntopics = ["t"]\ngroup_id = "g"\n'
                    '[links.a.source.properties]\n"bootstrap.servers" = "k:9092"\n"sasl.password" = "hunter2"\n'
                    '[links.a.transport]\ndestination = "127.0.0.1:7001"\n')
    result = ddc("check", str(path), environment={"DDC_ROLE": "egress"})
    assert result.returncode == 2 and "unknown key" in result.stderr
    assert "hunter2" not in result.stderr and "'sasl.password': '***'" in result.stderr


def test_secrets_are_masked_in_check_output_and_errors(monkeypatch):
    from ddc.config.loading import _describe, mask_secrets
    tree = {"sasl": {"password": "hunter2", "username": "ops"}, "ssl_key_file": "/etc/k", "api_token": "t"}
    masked = mask_secrets(tree)
    assert masked == {"sasl": {"password": "***", "username": "ops"}, "ssl_key_file": "***", "api_token": "***"}
    # every librdkafka property that can hold key material or a credential
    properties = {"ssl.key.pem": "-----BEGIN PRIVATE KEY-----", "sasl.oauthbearer.config": "clientSecret=s3",
                  "sasl.oauthbearer.extensions": "token=s3", "ssl.key.password": "s3", "sasl.jaas.config": "s3",
                  "sasl.oauthbearer.client.secret": "s3", "ssl.keystore.password": "s3",
                  "bootstrap.servers": "kafka:9092", "sasl.username": "ops", "ssl.key.location": "/etc/ddc/k.pem"}
    shown = mask_secrets({"properties": properties})["properties"]
    assert {name for name, value in shown.items() if value == "***"} == {
        name for name in properties if name not in ("bootstrap.servers", "sasl.username", "ssl.key.location")}
    line = _describe({"loc": ("links", "a", "password"), "type": "extra_forbidden", "msg": "", "input": "hunter2"})
    assert "hunter2" not in line and "***" in line


def test_examples_are_valid():
    ingress = load_settings(REPOSITORY / "examples" / "ingress.toml")
    egress = load_settings(REPOSITORY / "examples" / "egress.toml")
    assert set(ingress.links) == set(egress.links) == {"syslog", "statsd"}
    for name in ingress.links:
        assert ingress.links[name].transport.destination.port == egress.links[name].transport.listen.port


def test_two_links_cannot_share_a_port():
    with pytest.raises(ConfigError, match="both use listen address"):
        settings_from_mapping({"role": "egress", "links": {
            name: {"transport": {"listen": "127.0.0.1:7000"}, "sink": {"type": "udp", "target": "127.0.0.1:1"}}
            for name in ("a", "b")}})


def test_two_links_cannot_share_a_spool():
    sink = {"type": "udp", "target": "127.0.0.1:1"}
    with pytest.raises(ConfigError, match="both use spool path"):
        settings_from_mapping({"role": "egress", "links": {
            name: {"transport": {"listen": f"127.0.0.1:{port}"}, "sink": sink, "spool": {"path": "/var/spool/ddc"}}
            for name, port in (("a", 7000), ("b", 7001))}})
    spooled = settings_from_mapping(tomllib.loads(GOOD_EGRESS + '[links.logs.spool]\npath = "/var/spool/ddc"\n'))
    assert spooled.links["logs"].spool.max_size == 1 << 30


def test_a_kafka_sinks_spool_is_a_write_ahead_log_unless_set_otherwise_and_a_shared_producer_reports_for_all():
    kafka = settings_from_mapping(tomllib.loads(KAFKA_EGRESS + '[links.orders.spool]\npath = "/var/spool/o"\n'))
    assert kafka.links["orders"].write_ahead and kafka.links["orders"].spool.write_ahead is True
    udp = settings_from_mapping(tomllib.loads(GOOD_EGRESS + '[links.logs.spool]\npath = "/var/spool/ddc"\n'))
    assert not udp.links["logs"].write_ahead
    assert not settings_from_mapping(tomllib.loads(KAFKA_EGRESS)).links["orders"].write_ahead, "no spool, no log"
    sink = {"type": "kafka", "properties": {"bootstrap.servers": "127.0.0.1:9093"}}
    links = {name: {"transport": {"listen": f"127.0.0.1:{port}"}, "sink": dict(sink)}
             for name, port in (("a", 7000), ("b", 7001), ("c", 7002))}
    links["a"]["spool"] = {"path": "/var/spool/a"}
    links["c"]["sink"] = {"type": "kafka", "properties": {"bootstrap.servers": "127.0.0.1:9094"}}
    settings = settings_from_mapping({"role": "egress", "links": links})
    assert [settings.links[name].sink._report_deliveries for name in "abc"] == [True, True, False], \
        "b shares a's producer, which must report every delivery; c writes to another cluster"


def test_kafka_configs_check_and_mask_librdkafka_secrets(tmp_path):
    for name, text in (("ingress", KAFKA_INGRESS), ("egress", KAFKA_EGRESS)):
        path = tmp_path / f"{name}.toml"
        path.write_text(text)
        result = ddc("check", str(path))
        assert result.returncode == 0, result.stderr
        assert "hunter2" not in result.stdout
    resolved = json.loads(ddc("check", str(tmp_path / "ingress.toml")).stdout)
    assert resolved["links"]["orders"]["source"]["properties"]["sasl.password"] == "***"
    assert resolved["links"]["orders"]["buffer"]["when_full"] is None


def test_kafka_examples_are_valid():
    ingress = load_settings(REPOSITORY / "examples" / "kafka-ingress.toml")
    egress = load_settings(REPOSITORY / "examples" / "kafka-egress.toml")
    listener = load_settings(REPOSITORY / "examples" / "kafka-listener-ingress.toml")
    for high_side in (ingress, listener):
        assert set(high_side.links) == set(egress.links)
        for name in high_side.links:
            assert high_side.links[name].transport.destination.port == egress.links[name].transport.listen.port
    assert listener.links["orders"].source.type == "kafka_listener"


@pytest.mark.parametrize("value, expected", [
    ('"25%"', (64, 16, 4, 10)),
    ('"10%"', (64, 7, 4, 10)),
    ('{ data = 16, parity = "25%", interleave = 1, loss_burst = 0 }', (16, 4, 1, 0)),
    ("{ data = 32, parity = 3, loss_burst = 31 }", (32, 3, 4, 31)),
])
def test_fec_is_a_share_or_explicit_counts(value, expected):
    settings = settings_from_mapping(tomllib.loads(GOOD_INGRESS + f"fec = {value}\n"))
    fec = settings.links["logs"].transport.fec
    assert (fec.data, fec.parity, fec.interleave, fec.loss_burst) == expected
    off = settings_from_mapping(tomllib.loads(GOOD_INGRESS + 'fec = "off"\n'))
    assert off.links["logs"].transport.fec is None


@pytest.mark.parametrize("lines, expected", [
    ('rate = "1Mbit/s"\n', 1250),  # 10 ms of the rate; the sender raises it to two datagrams
    ('rate = "50Mbit/s"\n', 62_500),
    ('rate = "800Mbit/s"\n', 256 * 1024),  # capped
    ('rate = "unlimited"\n', 0),
    ('rate = "1Mbit/s"\nburst = "64KiB"\n', 64 * 1024),
])
def test_the_default_burst_is_ten_milliseconds_of_the_rate(lines, expected):
    transport = settings_from_mapping(tomllib.loads(GOOD_INGRESS + lines)).links["logs"].transport
    assert transport.burst_bytes == expected
    with pytest.raises(ConfigError, match='burst.*"auto"'):
        settings_from_mapping(tomllib.loads(GOOD_INGRESS + 'burst = "soon"\n'))


@pytest.mark.parametrize("first", ["ddc.handlers.kafka.codec", "ddc.handlers.kafka", "ddc.handlers.udp.config",
                                   "ddc.config.values", "ddc.telemetry.catalogue", "ddc.handlers", "ddc.config.links"])
def test_every_handler_type_is_known_whatever_is_imported_first(first):
    """Handlers' configs import the config's building blocks, and the config composes the handlers': an import
    cycle would leave a handler out of the schema (a Kafka link refused as an unknown type)."""
    import subprocess
    import sys

    program = (f"import {first}\nfrom ddc.config import settings_from_mapping\n"
               "settings = settings_from_mapping({'role': 'ingress', 'links': {'k': {'source': {'type': 'kafka', "
               "'topics': ['t'], 'properties': {'bootstrap.servers': 'b:9092'}}, 'transport': {'destination': "
               "'127.0.0.1:9'}}}})\nprint(type(settings.links['k'].source).__name__)")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "KafkaSourceConfig", result.stderr


@pytest.mark.parametrize("source, error", [
    ('type = "kafka_listener"\nlisten = "127.0.0.1:9092"\nstate_directory = "/tmp/x"',
     "the listener serves no topic"),
    ('type = "kafka_listener"\nlisten = "0.0.0.0:9092"\nstate_directory = "/tmp/x"\ntopics = { a = 1 }',
     "set advertised_listener"),
    ('type = "kafka_listener"\nlisten = "127.0.0.1:9092"\nstate_directory = "/tmp/x"\ntopics = { "a b" = 1 }',
     "topics"),
    ('type = "kafka_listener"\nlisten = "127.0.0.1:9092"\nstate_directory = "/tmp/x"\ntopics = { a = 0 }',
     "greater than or equal to 1"),
    ('type = "kafka_listener"\nlisten = "127.0.0.1:9092"\nstate_directory = "/tmp/x"\ntopics = { a = 1 }\n'
     '[links.logs.source.sasl]\nmechanisms = ["GSSAPI"]', "mechanisms"),
])
def test_kafka_listener_configs_that_cannot_work_are_refused_with_the_reason(source, error):
    text = GOOD_INGRESS.replace('type = "udp"\nlisten = "127.0.0.1:5514"', source)
    assert source in text
    with pytest.raises(ConfigError) as refused:
        settings_from_mapping(tomllib.loads(text))
    assert error in str(refused.value)
