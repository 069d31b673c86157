"""Byte streams across the link: files, stdin and stdout, in order, with exact gap reports."""

import hashlib
import io
import logging
import os
import subprocess
import sys
import threading
import types

import pytest

from ddc._core.records import decode_records
from ddc._core.ring import RecordRing
from ddc.handlers.stream.handler import OFFSET, FileSink, FileSource
from conftest import free_udp_port, run_on_terminal


def stream_configs(link_port: int, source_path: str, sink_path: str) -> tuple[str, str]:
    ingress = f"""
role = "ingress"
[telemetry]
log_format = "json"
[links.bytes.source]
type = "file"
path = "{source_path}"
chunk_size = "256KiB"
[links.bytes.transport]
destination = "127.0.0.1:{link_port}"
datagram_size = 65507
rate = "2Gbit/s"
"""
    egress = f"""
role = "egress"
[telemetry]
log_format = "json"
[links.bytes.transport]
listen = "127.0.0.1:{link_port}"
receive_buffer = "64MiB"
[links.bytes.sink]
type = "file"
path = "{sink_path}"
stop_after_sender_shutdown = true
"""
    return ingress, egress


@pytest.mark.timeout(120)
def test_a_file_crosses_and_both_proxies_stop_by_themselves(start_ddc, tmp_path):
    data = os.urandom(48 << 20) + b"tail that is not a whole chunk"
    (tmp_path / "in.bin").write_bytes(data)
    ingress_config, egress_config = stream_configs(free_udp_port(), tmp_path / "in.bin", tmp_path / "out.bin")
    egress = start_ddc("egress", egress_config)
    egress.wait_until_ready()
    ingress = start_ddc("ingress", ingress_config)
    assert ingress.process.wait(60) == 0
    assert egress.process.wait(30) == 0
    assert (tmp_path / "out.bin").read_bytes() == data
    summary = egress.summary("bytes")
    assert summary["sink_bytes_written"] == len(data)
    assert summary["sink_bytes_missing"] == 0 and summary["frames_lost"] == 0
    assert any("every link has finished" in line.get("message", "") for line in ingress.lines())


@pytest.mark.timeout(120)
def test_stdin_to_stdout_through_real_pipes(start_ddc, tmp_path):
    data = os.urandom(8 << 20)
    link_port = free_udp_port()
    ingress_config, egress_config = stream_configs(link_port, "-", "-")
    (tmp_path / "ingress.toml").write_text(ingress_config)
    (tmp_path / "egress.toml").write_text(egress_config)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DDC_")}
    with open(tmp_path / "received.bin", "wb") as received, open(tmp_path / "egress.log", "wb") as egress_log:
        egress = subprocess.Popen([sys.executable, "-m", "ddc", "run", str(tmp_path / "egress.toml")],
                                  stdin=subprocess.DEVNULL, stdout=received, stderr=egress_log, env=environment)
        try:
            while b"listening on" not in (tmp_path / "egress.log").read_bytes():
                assert egress.poll() is None, (tmp_path / "egress.log").read_text()
            ingress = subprocess.run([sys.executable, "-m", "ddc", "run", str(tmp_path / "ingress.toml")],
                                     input=data, capture_output=True, env=environment, timeout=60)
            assert ingress.returncode == 0, ingress.stderr.decode()[-2000:]
            assert egress.wait(30) == 0
        finally:
            if egress.poll() is None:
                egress.kill()
    assert hashlib.sha256((tmp_path / "received.bin").read_bytes()).digest() == hashlib.sha256(data).digest()


def sink(max_reorder_bytes=1 << 20):
    config = types.SimpleNamespace(path="-", max_reorder_bytes=max_reorder_bytes, stop_after_sender_shutdown=False)
    target = FileSink("bytes", config)
    target.open()
    target.stream = io.BytesIO()  # in place of stdout, which the sink does not own and never closes
    return target


def chunk(offset: int, data: bytes):
    return (OFFSET.pack(offset), data)


def test_the_sink_writes_in_offset_order_and_ignores_repeats():
    target = sink()
    target.write([chunk(6, b"ghi"), chunk(0, b"abc")])
    target.write([chunk(3, b"def"), chunk(0, b"abc")])
    assert target.stream.getvalue() == b"abcdefghi"
    assert target.counters()["sink_bytes_missing"] == 0


def test_a_gap_is_reported_with_its_exact_byte_range(caplog):
    target = sink(max_reorder_bytes=1 << 20)
    big = b"z" * (600 << 10)
    with caplog.at_level(logging.ERROR, logger="ddc"):
        target.write([chunk(0, b"abc"), chunk(10, big)])
        assert target.stream.getvalue() == b"abc"
        target.write([chunk(10 + len(big), big)])
    assert target.stream.getvalue() == b"abc" + big + big
    counters = target.counters()
    assert counters["sink_gaps"] == 1 and counters["sink_bytes_missing"] == 7
    gap = [record for record in caplog.records if "never arrived" in record.getMessage()]
    assert len(gap) == 1 and gap[0].fields["first_missing_offset"] == 3 and gap[0].fields["last_missing_offset"] == 9


def test_records_without_an_offset_are_counted_not_written():
    target = sink()
    target.write([(b"10.0.0.1:514", b"syslog line")])
    assert target.stream.getvalue() == b""
    assert target.counters()["sink_records_malformed"] == 1


def test_close_flushes_what_waits_behind_a_gap():
    target = sink()
    target.write([chunk(5, b"later")])
    target.close()
    assert target.stream.getvalue() == b"later"
    assert target.counters()["sink_bytes_missing"] == 5


def test_an_unreadable_source_file_is_a_clear_runtime_error(tmp_path):
    from conftest import run_ddc
    config = tmp_path / "ingress.toml"
    config.write_text(f"""
role = "ingress"
[links.bytes.source]
type = "file"
path = "{tmp_path / 'absent.bin'}"
[links.bytes.transport]
destination = "127.0.0.1:{free_udp_port()}"
""")
    result = run_ddc("run", str(config), timeout=30)
    assert result.returncode == 1
    assert f"cannot read source file '{tmp_path / 'absent.bin'}': No such file or directory" in result.stderr
    assert "Traceback" not in result.stderr


def file_source(tmp_path, data: bytes, chunk_size: int) -> FileSource:
    path = tmp_path / "input"
    path.write_bytes(data)
    source = FileSource("stream", types.SimpleNamespace(path=str(path), chunk_size=chunk_size, stop_at_end=True))
    source.open()
    return source


def test_the_file_source_reads_each_chunk_in_place_into_the_ring_with_its_offset(tmp_path):
    data = os.urandom(10_000)
    ring = RecordRing(1 << 20, "block")
    source = file_source(tmp_path, data, 4096)
    source.run(ring, threading.Event())
    source.close()
    run, count, _ = ring.take(1 << 20, 0)
    records = decode_records(run, count)
    assert [OFFSET.unpack(metadata)[0] for metadata, _ in records] == [0, 4096, 8192]
    assert b"".join(value for _, value in records) == data
    assert source.finished and source.counters() == {"source_bytes_read": 10_000, "source_chunks_read": 3}


def test_a_file_source_meeting_a_full_drop_ring_counts_the_chunks_it_loses_and_keeps_their_offsets(tmp_path):
    data = os.urandom(10_000)
    ring = RecordRing(5000, "drop")
    source = file_source(tmp_path, data, 4096)
    source.run(ring, threading.Event())
    run, count, _ = ring.take(1 << 20, 0)
    assert [OFFSET.unpack(metadata)[0] for metadata, _ in decode_records(run, count)] == [0]
    assert ring.counters()["buffer_records_dropped"] == 2
    assert ring.counters()["buffer_bytes_dropped"] == 10_000 - 4096
    assert source.offset == 10_000  # the egress sees the lost bytes as a gap with its exact range


def test_a_stream_from_stdin_shows_a_progress_bar_when_stderr_is_a_terminal(tmp_path):
    data = tmp_path / "in.bin"
    data.write_bytes(os.urandom(12 << 20))
    ingress_config, _ = stream_configs(free_udp_port(), "-", tmp_path / "unused")
    config = tmp_path / "ingress.toml"
    config.write_text(ingress_config.replace('rate = "2Gbit/s"', 'rate = "64Mbit/s"').replace(
        'log_format = "json"', 'log_format = "text"'))
    with open(data, "rb") as stdin:
        code, text = run_on_terminal(["run", str(config)], stdin=stdin, stdout_too=False)
    assert code == 0
    assert "━" in text and "read" in text and "12.0/12.0 MiB" in text, text[-2000:]
