"""What deploys DDC (deploy/): the systemd unit and the notifications `ddc run` sends a service manager."""

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_udp_port

REPOSITORY = Path(__file__).resolve().parent.parent
EGRESS = """
role = "egress"
[telemetry]
log_format = "json"
[links.logs.transport]
listen = "127.0.0.1:{port}"
[links.logs.sink]
type = "udp"
target = "127.0.0.1:9"
"""


def notifications(sock: socket.socket, until, timeout: float = 20.0) -> list[dict]:
    """Each datagram the proxy sent, as {key: value}, until one satisfies until()."""
    received, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            data = sock.recv(4096)
        except socket.timeout:
            break
        received.append(dict(line.split("=", 1) for line in data.decode().splitlines()))
        if until(received[-1]):
            return received
    raise AssertionError(f"no such notification among {received}")


@pytest.mark.parametrize("abstract", [False, True])
def test_ddc_run_tells_the_service_manager_it_is_ready_alive_and_stopping(start_ddc, tmp_path, abstract):
    """Type=notify with WatchdogSec: READY=1 once the links run (not before: systemd starts what is ordered after
    the unit then), WATCHDOG=1 at half the watchdog timeout, STOPPING=1 on SIGTERM, with the links' state as
    STATUS; a path or an abstract socket ("@name"), as sd_notify(3) allows."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = f"@ddc-test-{tmp_path.name}" if abstract else str(tmp_path / "notify")
    sock.bind("\0" + address[1:] if abstract else address)
    egress = start_ddc("egress", EGRESS.format(port=free_udp_port()),
                       {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "600000"})
    ready = notifications(sock, lambda message: "READY" in message)[-1]
    # Started is not ready in /readyz's sense: an egress is ready once its sender's heartbeats arrive.
    assert ready == {"READY": "1", "STATUS": "1 link(s), link logs: no heartbeat received yet"}
    assert any("listening on" in line.get("message", "") for line in egress.lines()), "ready only once listening"
    started = time.monotonic()
    pings = notifications(sock, lambda message: "WATCHDOG" in message and time.monotonic() - started > 1.0)
    times = [message for message in pings if message.get("WATCHDOG") == "1"]
    assert len(times) >= 3, pings  # every 0.3 s, so 3 or more within a second
    egress.process.send_signal(signal.SIGTERM)
    stopping = notifications(sock, lambda message: "STOPPING" in message)[-1]
    assert stopping == {"STOPPING": "1", "STATUS": "stopping"}
    assert egress.process.wait(30) == 0
    sock.close()


def test_without_a_service_manager_nothing_is_sent_and_a_vanished_one_is_no_error(start_ddc, tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    egress = start_ddc("egress", EGRESS.format(port=free_udp_port()),
                       {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"})
    notifications(sock, lambda message: "READY" in message)
    sock.close()
    (tmp_path / "notify").unlink()
    time.sleep(1.0)
    assert egress.process.poll() is None, "a service manager that went away must not stop the proxy"
    assert sum("cannot notify the service manager" in line.get("message", "") for line in egress.lines()) == 1
    assert egress.stop() == 0


def test_the_systemd_unit_verifies():
    """systemd-analyze verify on deploy/systemd/ddc@.service, with ExecStart pointing at this ddc."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (Debian: apt-get install systemd)")
    unit = (REPOSITORY / "deploy" / "systemd" / "ddc@.service").read_text()
    assert "Type=notify" in unit and "ExecStart=/usr/local/bin/ddc run /etc/ddc/%i.toml" in unit
    executable = Path(sys.executable).with_name("ddc")
    directory = Path(subprocess.check_output(["mktemp", "-d"], text=True).strip())
    (directory / "ddc@.service").write_text(unit.replace("/usr/local/bin/ddc", str(executable)))
    result = subprocess.run([analyze, "verify", str(directory / "ddc@.service")], capture_output=True, text=True,
                            timeout=60)
    shutil.rmtree(directory)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def vector_pipeline(side: str) -> dict:
    import tomllib
    return tomllib.loads((REPOSITORY / "deploy" / "vector" / f"{side}.toml").read_text())


@pytest.mark.parametrize("side", ["ingress", "egress"])
def test_each_side_has_its_own_vector_pipeline_wired_once(side):
    """Issue #22: one pipeline per side of the diode, scraping nothing across it; metrics come in once (StatsD,
    not StatsD and a scrape), on a port of their own (not 8125, where a StatsD link listens); every component
    reads from one that exists."""
    config = vector_pipeline(side)
    components = {**config["sources"], **config.get("transforms", {})}
    for section in ("transforms", "sinks"):
        for name, component in config.get(section, {}).items():
            for upstream in component["inputs"]:
                assert upstream in components, f"{section}.{name} reads from unknown component {upstream!r}"
    assert not [name for name, source in config["sources"].items() if source["type"] == "prometheus_scrape"]
    assert config["sources"]["ddc_statsd"]["address"] == "127.0.0.1:9125"
    assert config["sinks"]["prometheus"]["inputs"] == ["ddc_metric_names", "ddc_log_levels"]
    assert side in config["sinks"]["ddc_logs"]["path"]


def test_the_vector_renaming_turns_every_name_ddc_emits_into_its_own_prometheus_name():
    """The remap's regular expression and label table, run (in Python) on the StatsD names a proxy really sends
    for every catalogue metric and a filter, give exactly the series DDC's own /metrics exposes."""
    import json
    import re

    from ddc.telemetry.catalogue import metrics_for
    from ddc.telemetry.config import StatsdConfig
    from ddc.telemetry.prometheus import LinkCollector
    from ddc.telemetry.statsd import StatsdEmitter

    source = vector_pipeline("ingress")["transforms"]["ddc_metric_names"]["source"]
    assert source == vector_pipeline("egress")["transforms"]["ddc_metric_names"]["source"]
    pattern = re.compile(re.search(r"parse_regex\(\.name, r'(.*?)'\)", source).group(1))
    label_keys = json.loads(re.search(r"label_keys = (\{.*?\})", source).group(1))

    class Link:
        def __init__(self, role):
            self.role, self.name = role, "site-syslog_1"

        def counters(self):
            return {**{metric.key: 3 for metric in metrics_for(self.role)},
                    "filter_drop-secrets_dropped": 2, "filter_drop-secrets_errors": 1}

    links = [Link("ingress"), Link("egress")]
    exposed = {(sample.name, frozenset(sample.labels.items())) for family in LinkCollector(links).collect()
               for sample in family.samples if family.name not in ("ddc_build_info", "ddc_delivery_latency_seconds")}
    renamed = set()
    emitter = StatsdEmitter(links, StatsdConfig(target="127.0.0.1:9"))
    for line in emitter.lines():
        name, kind = line.split(":")[0], line.rsplit("|", 1)[1]
        parts = pattern.match(name)
        if parts is None:  # the Rust DDC's summed names: ddc.ingress.packets_sent and the like
            assert name.count(".") <= 2, name
            continue
        labels = {"role": parts["role"], "link": parts["link"]}
        if parts["value"] is not None:
            assert parts["metric"] in label_keys, f"{name}: no label key for {parts['metric']!r} in the remap"
            labels[label_keys[parts["metric"]]] = parts["value"]
        renamed.add(("ddc_" + parts["metric"] + ("_total" if kind == "c" else ""), frozenset(labels.items())))
    emitter.socket.close()
    assert renamed == exposed, (sorted(renamed - exposed)[:5], sorted(exposed - renamed)[:5])
