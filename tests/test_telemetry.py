"""Metrics, StatsD, syslog, health endpoints, the link alarm and the operator CLI, on real processes."""

import http.client
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ddc.telemetry.catalogue import CATALOGUE, COUNTER, FILTER_METRICS, LATENCY, metrics_for
from ddc.transport.sockets import free_tcp_port
from conftest import REPOSITORY, certificate_authority, run_ddc, stop_pair, wait_until
from traffic import Collector, random_payloads, send_paced


def http_telemetry(port: int) -> str:
    return f'[telemetry.http]\nlisten = "127.0.0.1:{port}"\n'


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(port: int) -> dict:
    """{(name, frozenset(labels)): value} for every sample; names as exposed."""
    _, text = get(port, "/metrics")
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    matching = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(matching) == 1, (name, labels, matching)
    return matching[0]


@pytest.mark.timeout(120)
def test_prometheus_metrics_match_the_traffic_to_the_record(link_pair, tmp_path):
    ingress_port, egress_port = free_tcp_port(), free_tcp_port()
    spool = f'\n[links.stream.spool]\npath = "{tmp_path / "spool"}"\n'  # so that its metrics are exposed too
    source_port, _, collector, ingress, egress, _ = link_pair(
        ingress_telemetry=http_telemetry(ingress_port), egress_telemetry=http_telemetry(egress_port) + spool,
        egress_extra="alarm_after_missed_heartbeats = 3")
    count = 3000
    send_paced(source_port, random_payloads(count, 1500, seed=11), bytes_per_second=5e6)
    assert collector.wait_for(count, timeout=30) == count

    live = wait_until(lambda: (s := scrape(egress_port)) and value(s, "ddc_peer_records_sent") == count and s)
    assert value(live, "ddc_link_up", link="stream") == 1
    assert value(live, "ddc_peer_source_healthy") == 1
    assert 0 <= value(live, "ddc_peer_buffer_fill") <= 1
    assert get(egress_port, "/readyz")[0] == 200
    source_side = scrape(ingress_port)
    assert value(source_side, "ddc_records_in_total", link="stream", role="ingress") == count
    assert value(source_side, "ddc_records_out_total", role="ingress") == count
    for metric in metrics_for("ingress"):
        if metric.handler:
            continue
        exposed = f"ddc_{metric.name}_total" if metric.kind == COUNTER else f"ddc_{metric.name}"
        assert any(name == exposed for name, _ in source_side), exposed

    ingress_summary, egress_summary = stop_pair(ingress, egress)
    # After a clean stop of both, the summaries are final: the egress saw every datagram the ingress sent.
    assert egress_summary["datagrams_received"] == ingress_summary["datagrams_sent"]
    assert egress_summary["peer_datagrams_sent"] == ingress_summary["datagrams_sent"]
    assert value(live, "ddc_records_in_total", role="egress") == count
    assert value(live, "ddc_records_out_total", role="egress") == count
    assert value(live, "ddc_datagrams_lost") == 0
    assert value(live, "ddc_delivery_latency_seconds_count") == count
    assert 0 < value(live, "ddc_delivery_latency_seconds_sum") / count < 5
    for reason in ("truncated", "bad_checksum", "duplicate", "late_fragment", "stale_session"):
        assert value(live, "ddc_datagrams_dropped_total", reason=reason) == 0
    for metric in metrics_for("egress"):
        if metric.handler:
            continue
        exposed = f"ddc_{metric.name}_total" if metric.kind == COUNTER else f"ddc_{metric.name}"
        assert any(name == exposed for name, _ in live), exposed


def test_the_metrics_document_lists_the_whole_catalogue():
    document = (REPOSITORY / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(ddc_[a-z_]+)`", document, re.MULTILINE))
    expected = {f"ddc_{m.name}_total" if m.kind == COUNTER else f"ddc_{m.name}" for m in CATALOGUE}
    expected |= {f"ddc_{metric.name}_total" for metric, _ in FILTER_METRICS} | {f"ddc_{LATENCY.name}"}
    assert documented == expected


class LineCollector(Collector):
    """A real UDP listener that keeps every line it receives (StatsD, syslog)."""

    def __init__(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        super().__init__(sock)
        self.port = sock.getsockname()[1]
        self.lines: list[str] = []
        self.start()

    def received(self, data: bytes) -> None:
        self.lines += data.decode().split("\n")

    def close(self):
        self.stop.set()
        self.join(2)
        self.socket.close()


STATSD_LINE = re.compile(r"^(?P<name>[A-Za-z0-9_.()\-]+):(?P<value>-?[0-9]+(?:\.[0-9]+)?)\|(?P<kind>c|g)$")


@pytest.mark.timeout(120)
def test_statsd_lines_parse_and_add_up_to_the_final_counters(link_pair):
    statsd = LineCollector()
    try:
        table = f'[telemetry.statsd]\ntarget = "127.0.0.1:{statsd.port}"\ninterval = "200ms"\n'
        source_port, _, collector, ingress, egress, _ = link_pair(ingress_telemetry=table, egress_telemetry=table)
        count = 2000
        send_paced(source_port, random_payloads(count, 1000, seed=12), bytes_per_second=4e6)
        assert collector.wait_for(count, timeout=30) == count
        ingress_summary, egress_summary = stop_pair(ingress, egress)
        time.sleep(0.3)
    finally:
        statsd.close()
    sums, gauges = {}, {}
    for line in filter(None, statsd.lines):
        match = STATSD_LINE.match(line)
        assert match, line
        number = float(match["value"])
        if match["kind"] == "c":
            sums[match["name"]] = sums.get(match["name"], 0) + number
        else:
            gauges[match["name"]] = number
    assert sums["ddc.ingress.packets_sent"] == ingress_summary["datagrams_sent"]
    assert sums["ddc.ingress.bytes_sent"] == ingress_summary["bytes_sent"]
    assert sums["ddc.egress.packets_received"] == egress_summary["datagrams_received"]
    assert gauges["ddc.egress.packet_loss"] == 0
    assert sums["ddc.ingress.stream.records_in"] == count
    assert sums["ddc.egress.stream.records_out"] == count
    assert "ddc.dropped_packets" not in sums, "nothing was dropped, so no drop delta may be sent"
    assert gauges["ddc.egress.stream.link_up"] == 0


RFC5424 = re.compile(
    r"^<(?P<pri>\d{1,3})>1 (?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<host>[!-~]{1,255}) "
    r"(?P<app>[!-~]{1,48}) (?P<pid>[!-~]{1,128}) (?P<msgid>[!-~]{1,32}) "
    r"(?P<sd>-|(?:\[[^ \]=\"]{1,32}(?: [^ \]=\"]{1,32}=\"(?:[^\"\\\]]|\\[\"\\\]])*\")*\])+)"
    r"(?: (?P<message>.*))?$")


class TcpSyslogServer(threading.Thread):
    """A real TCP syslog server reading RFC 6587 octet-counted frames."""

    def __init__(self):
        super().__init__(daemon=True)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.1)
        self.port = self.server.getsockname()[1]
        self.lines: list[str] = []
        self.stop = threading.Event()
        self.start()

    def run(self):
        while not self.stop.is_set():
            try:
                connection, _ = self.server.accept()
            except socket.timeout:
                continue
            connection.settimeout(0.1)
            buffer = b""
            while not self.stop.is_set():
                try:
                    chunk = connection.recv(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    break
                buffer += chunk
                while b" " in buffer:
                    length, rest = buffer.split(b" ", 1)
                    if len(rest) < int(length):
                        break
                    self.lines.append(rest[:int(length)].decode())
                    buffer = rest[int(length):]
            connection.close()

    def close(self):
        self.stop.set()
        self.join(2)
        self.server.close()


@pytest.mark.timeout(120)
def test_syslog_lines_are_rfc5424_over_udp_and_tcp(link_pair):
    udp, tcp = LineCollector(), TcpSyslogServer()
    try:
        source_port, _, collector, ingress, egress, _ = link_pair(
            ingress_telemetry=f'[telemetry.syslog]\ntarget = "127.0.0.1:{tcp.port}"\nprotocol = "tcp"\n'
                              'facility = "local3"\napp_name = "ddc-high"\n',
            egress_telemetry=f'[telemetry.syslog]\ntarget = "127.0.0.1:{udp.port}"\n')
        send_paced(source_port, random_payloads(100, 100, seed=13), bytes_per_second=1e6)
        assert collector.wait_for(100, timeout=20) == 100
        stop_pair(ingress, egress)
        time.sleep(0.3)
    finally:
        udp.close()
        tcp.close()
    for lines, app, facility in ((list(filter(None, udp.lines)), "ddc", 16), (tcp.lines, "ddc-high", 19)):
        assert lines
        parsed = [RFC5424.match(line) for line in lines]
        assert all(parsed), [line for line, match in zip(lines, parsed) if not match]
        assert all(match["app"] == app and int(match["pri"]) // 8 == facility for match in parsed)
    link_up = [RFC5424.match(line) for line in udp.lines if "link up" in line]
    assert link_up and 'link="stream"' in link_up[0]["sd"] and link_up[0]["sd"].startswith("[ddc@32473 ")
    assert int(link_up[0]["pri"]) % 8 == 6
    # A sender's clean shutdown is the normal end, logged as information (6), not as a warning (4).
    interrupted = [RFC5424.match(line) for line in udp.lines if "link interrupted: sender shut down" in line]
    assert interrupted and int(interrupted[0]["pri"]) % 8 == 6
    assert any("summary" in line for line in tcp.lines)


@pytest.mark.timeout(120)
def test_a_silent_ingress_raises_the_alarm_in_time_and_a_restart_clears_it(link_pair, start_ddc):
    egress_port = free_tcp_port()
    source_port, _, collector, ingress, egress, ingress_config = link_pair(
        egress_telemetry=http_telemetry(egress_port), egress_extra="alarm_after_missed_heartbeats = 3")
    egress.wait_for(lambda line: line.get("message", "").endswith("link up"))
    assert get(egress_port, "/readyz")[0] == 200

    ingress.kill()
    killed = time.monotonic()
    wait_until(lambda: get(egress_port, "/readyz")[0] == 503, timeout=10, interval=0.02)
    noticed = time.monotonic() - killed
    # Heartbeats every 0.2 s, alarm after 3 missed: due 0.6 s after the last one, checked every 0.2 s.
    assert 0.4 <= noticed <= 2.5, noticed
    alarm = egress.wait_for(lambda line: "link interrupted" in line.get("message", ""))
    assert alarm["level"] == "warning" and alarm["link"] == "stream"
    ready = json.loads(get(egress_port, "/readyz")[1])
    assert ready == {"ready": False, "problems": ["link stream: link interrupted"]}
    assert value(scrape(egress_port), "ddc_link_up") == 0
    assert sum("link interrupted" in line.get("message", "") for line in egress.lines()) == 1

    restarted = start_ddc("ingress", ingress_config)
    egress.wait_for(lambda line: "link restored" in line.get("message", ""))
    assert get(egress_port, "/readyz")[0] == 200
    assert value(scrape(egress_port), "ddc_link_up") == 1
    status = json.loads(get(egress_port, "/status")[1])
    assert status["links"][0]["state"] == "up" and status["links"][0]["heartbeat_age_seconds"] < 1.0
    assert get(egress_port, "/healthz")[0] == 200
    assert get(egress_port, "/nowhere")[0] == 404

    shown = run_ddc("status", f"http://127.0.0.1:{egress_port}")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^stream +egress +up ", shown.stdout, re.MULTILINE), shown.stdout
    stop_pair(restarted, egress)


def test_status_of_an_unreachable_proxy_is_a_clear_error():
    result = run_ddc("status", f"http://127.0.0.1:{free_tcp_port()}")
    assert result.returncode == 1
    assert "cannot reach" in result.stderr and "Traceback" not in result.stderr


def test_doctor_prints_the_exact_fix_for_a_capped_buffer(tmp_path):
    cap = int(open("/proc/sys/net/core/rmem_max").read())
    config = tmp_path / "egress.toml"
    config.write_text(f"""
role = "egress"
[links.logs.transport]
listen = "127.0.0.1:{free_tcp_port()}"
receive_buffer = {cap * 2}
[links.logs.sink]
type = "udp"
target = "127.0.0.1:9"
""")
    result = run_ddc("doctor", str(config))
    assert result.returncode == 1
    assert f"fix: sysctl -w net.core.rmem_max={cap * 2}" in result.stdout
    assert "Traceback" not in result.stderr


def test_doctor_sets_each_buffer_once_to_the_largest_need_and_names_a_taken_telemetry_port(tmp_path):
    """Issue #22: fixes followed in order never lower a value again, one line writes every setting to the sysctl
    file (each fix used to overwrite it), the telemetry port is checked, and a Kafka ingress (no socket of its
    own on the source side) is diagnosed rather than crashing doctor."""
    cap = int(open("/proc/sys/net/core/rmem_max").read())
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    config = tmp_path / "egress.toml"
    config.write_text(f"""
role = "egress"
[telemetry.http]
listen = "127.0.0.1:{port}"
[links.big.transport]
listen = "127.0.0.1:{free_tcp_port()}"
receive_buffer = {cap * 4}
[links.big.sink]
type = "udp"
target = "127.0.0.1:9"
[links.small.transport]
listen = "127.0.0.1:{free_tcp_port()}"
receive_buffer = {cap * 2}
[links.small.sink]
type = "udp"
target = "127.0.0.1:9"
""")
    result = run_ddc("doctor", str(config))
    taken.close()
    fixes = [line.split("fix: ", 1)[1] for line in result.stdout.splitlines() if "fix: " in line]
    assert [fix for fix in fixes if fix.startswith("sysctl -w net.core.rmem_max")] == \
        [f"sysctl -w net.core.rmem_max={cap * 4}"] * 2
    files = [fix for fix in fixes if "/etc/sysctl.d/90-ddc.conf" in fix]
    assert len(files) == 1 and f"net.core.rmem_max = {cap * 4}\\n" in files[0]
    assert f"telemetry: cannot bind the HTTP address 127.0.0.1:{port}" in result.stdout
    kafka = run_ddc("doctor", str(REPOSITORY / "examples" / "kafka-ingress.toml"))
    assert kafka.returncode in (0, 1) and "Traceback" not in kafka.stderr and "problem" in kafka.stdout


def test_a_failing_request_is_logged_as_json_not_as_a_raw_traceback(capfd):
    import io
    import logging

    from ddc.telemetry.config import HttpConfig
    from ddc.telemetry.http import TelemetryServer
    from ddc.telemetry.logs import JsonFormatter

    class BrokenSupervisor:
        links = []

        def status(self):
            raise KeyError("a bug")

    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ddc.telemetry")
    logger.addHandler(handler)
    port = free_tcp_port()
    server = TelemetryServer(HttpConfig(listen=f"127.0.0.1:{port}"), BrokenSupervisor())
    server.start()
    try:
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5).read()
    finally:
        server.stop()
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert any("request from 127.0.0.1 failed" in line["message"] and "KeyError" in line["exception"]
               for line in lines)
    assert "Traceback" not in capfd.readouterr().err


def test_asyncio_warnings_and_unseen_task_errors_are_json_lines_too(capfd):
    """The Kafka listener runs on asyncio, whose own logger would otherwise print past the JSON log."""
    import asyncio
    import gc
    import io
    import logging

    from ddc.telemetry.logs import configure_logging

    loggers = [logging.getLogger(name) for name in ("ddc", "asyncio")]
    saved = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    captured = io.StringIO()
    try:
        configure_logging("info", "json", stream=captured)

        async def failing():
            raise ValueError("never awaited")

        async def main():
            asyncio.get_running_loop().create_task(failing())
            await asyncio.sleep(0.01)

        asyncio.run(main())
        gc.collect()
        logging.getLogger("asyncio").info("below warning: not shown")
    finally:
        for logger, (handlers, level, propagate) in zip(loggers, saved):
            logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert [(line["logger"], line["level"]) for line in lines] == [("asyncio", "error")], lines
    assert "never retrieved" in lines[0]["message"] and "ValueError: never awaited" in lines[0]["exception"]
    assert capfd.readouterr().err == ""


@pytest.mark.timeout(120)
def test_a_busy_slow_link_never_raises_a_false_alarm(link_pair):
    # 1 Mbit/s and 240 KB frames: each frame takes about 2 s to send, ten heartbeat intervals.
    source_port, _, collector, ingress, egress, _ = link_pair(
        ingress_extra='rate = "1Mbit/s"\nburst = "16KiB"\nbatch_max_bytes = "256KiB"\nlinger = "50ms"',
        egress_extra="alarm_after_missed_heartbeats = 3")
    egress.wait_for(lambda line: line.get("message", "").endswith("link up"))
    payloads = random_payloads(16, 60_000, seed=14)
    send_paced(source_port, payloads, bytes_per_second=50e6)
    assert collector.wait_for(len(payloads), timeout=60) == len(payloads)
    ingress_summary, egress_summary = stop_pair(ingress, egress)
    sending_seconds = ingress_summary["bytes_sent"] / 125_000
    assert sending_seconds > 3
    assert ingress_summary["heartbeats_sent"] >= sending_seconds / 0.2 * 0.8
    interruptions = [line for line in egress.lines() if "link interrupted" in line.get("message", "")]
    assert [line["reason"] for line in interruptions] == ["sender shut down"]


class QuietSupervisor:
    links = []

    def health(self):
        return True, []


def test_the_http_server_bounds_idle_connections_and_times_them_out():
    from ddc.telemetry.config import HttpConfig
    from ddc.telemetry.http import TelemetryServer

    port = free_tcp_port()
    server = TelemetryServer(HttpConfig(listen=f"127.0.0.1:{port}", max_connections=4, request_timeout="1s"),
                             QuietSupervisor())
    server.start()
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    try:
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", port))
        extra.settimeout(5)
        assert extra.recv(1) == b"", "a fifth connection is closed at once"
        started = time.monotonic()
        for connection in idle:
            connection.settimeout(5)
            assert connection.recv(1) == b""
        assert time.monotonic() - started < 3, "idle connections end after request_timeout"
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status == 200
    finally:
        for connection in idle:
            connection.close()
        server.stop()


def test_the_http_server_speaks_tls_and_asks_for_client_certificates(tmp_path):
    import ssl

    from ddc.telemetry.config import HttpConfig
    from ddc.telemetry.http import TelemetryServer

    server_ca, certificate, key = certificate_authority(tmp_path, "server")
    client_ca, client_certificate, client_key = certificate_authority(tmp_path, "client")
    _, stranger_certificate, stranger_key = certificate_authority(tmp_path, "stranger")
    port = free_tcp_port()
    server = TelemetryServer(HttpConfig(listen=f"127.0.0.1:{port}", certificate=certificate, private_key=key,
                                        client_ca=client_ca), QuietSupervisor())
    server.start()

    def get(client_pair):
        context = ssl.create_default_context(cafile=server_ca)
        if client_pair:
            context.load_cert_chain(*client_pair)
        return urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", timeout=5, context=context)

    try:
        assert get((client_certificate, client_key)).status == 200
        for refused in (None, (stranger_certificate, stranger_key)):
            with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
                get(refused).read()
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.RemoteDisconnected)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()
    finally:
        server.stop()


def test_half_a_tls_setting_is_a_clear_config_error():
    from pydantic import ValidationError

    from ddc.telemetry.config import HttpConfig

    with pytest.raises(ValidationError, match="certificate and private_key go together"):
        HttpConfig(listen="127.0.0.1:9180", certificate="/etc/ddc/http.pem")
    with pytest.raises(ValidationError, match="client_ca asks clients for certificates over TLS"):
        HttpConfig(listen="127.0.0.1:9180", client_ca="/etc/ddc/ca.pem")


def test_a_client_that_trickles_its_request_is_cut_off_at_the_deadline():
    from ddc.telemetry.config import HttpConfig
    from ddc.telemetry.http import TelemetryServer

    port = free_tcp_port()
    server = TelemetryServer(HttpConfig(listen=f"127.0.0.1:{port}", max_connections=2, request_timeout="1s"),
                             QuietSupervisor())
    server.start()
    slow = socket.create_connection(("127.0.0.1", port))
    try:
        started, cut = time.monotonic(), False
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n":
            try:
                slow.send(bytes([byte]))
            except OSError:
                cut = True
                break
            slow.settimeout(0.3)
            try:
                if slow.recv(1) == b"":
                    cut = True
                    break
            except TimeoutError:
                pass
        assert cut and time.monotonic() - started < 3, "a trickling client outlives request_timeout"
    finally:
        slow.close()
        server.stop()


def test_a_client_that_trickles_over_tls_is_cut_off_at_the_deadline(tmp_path):
    import ssl

    from ddc.telemetry.config import HttpConfig
    from ddc.telemetry.http import TelemetryServer

    server_ca, certificate, key = certificate_authority(tmp_path, "server")
    port = free_tcp_port()
    server = TelemetryServer(HttpConfig(listen=f"127.0.0.1:{port}", certificate=certificate, private_key=key,
                                        max_connections=2, request_timeout="1s"), QuietSupervisor())
    server.start()
    context = ssl.create_default_context(cafile=server_ca)
    slow = context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1")
    try:
        started, cut = time.monotonic(), False
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n":
            try:
                slow.send(bytes([byte]))
                slow.settimeout(0.3)
                if slow.recv(1) == b"":
                    cut = True
                    break
            except TimeoutError:
                pass
            except (OSError, ssl.SSLError):
                cut = True
                break
        assert cut and time.monotonic() - started < 3, "a trickling TLS client outlives request_timeout"
    finally:
        slow.close()
        server.stop()
