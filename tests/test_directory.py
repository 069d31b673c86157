"""Directory links end to end: trees of files across lossy links, crashes of either side, and the files that
cannot be completed reported by name; `ddc send` and `ddc receive`."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import free_udp_port, run_on_terminal, wait_until
from directory_harness import PARTIAL, directory_configs, listing, make_tree, write_file


class PartialWatcher(threading.Thread):
    """Looks at the target folder over and over while files arrive: any file under its real name must already
    be whole (its size the source's), or it was exposed half-written."""

    def __init__(self, target, expected_sizes: dict):
        super().__init__(daemon=True)
        self.target, self.expected_sizes = target, expected_sizes
        self.stop = threading.Event()
        self.exposed: list = []
        self.looks = 0

    def run(self):
        while not self.stop.is_set():
            try:
                for name, (size, *_) in listing(self.target, contents=False).items():
                    wanted = self.expected_sizes.get(name)
                    if wanted is not None and size != wanted:
                        self.exposed.append((name, size, wanted))
            except FileNotFoundError:
                pass  # a folder renamed or made while it was walked
            self.looks += 1
            time.sleep(0.05)


def report_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.timeout(240)
def test_a_tree_crosses_a_lossy_link_with_fec_whole_and_identical(start_ddc, diode_sim, tmp_path):
    """5 % loss, FEC: a tree with a 1 GiB file, files that appear during the transfer, one written slowly and one
    moved in from a temporary name, all arrive identical (names, contents, modes, modification times), and none
    is ever seen half-written under its name."""
    source, target, quarantine = tmp_path / "source", tmp_path / "target", tmp_path / "quarantine"
    make_tree(source, large_bytes=1 << 30)
    link_port = free_udp_port()
    ingress_config, egress_config = directory_configs(
        0, source, target,
        source_extra=f'state_directory = "{tmp_path / "state"}"\nstable_after = "1s"\nscan_interval = "2s"',
        sink_extra=f'quarantine_directory = "{quarantine}"\nreport_file = "{tmp_path / "report.jsonl"}"',
        transport_extra='datagram_size = 8972\nrate = "1200Mbit/s"\nfec = "25%"',
        egress_transport_extra="")
    egress = start_ddc("egress", egress_config.replace("127.0.0.1:0", f"127.0.0.1:{link_port}"))
    egress.wait_until_ready()
    simulator = diode_sim(link_port, "--loss", "5%", "--seed", "3")
    ingress = start_ddc("ingress", ingress_config.replace("127.0.0.1:0", f"127.0.0.1:{simulator.port}"))
    ingress.wait_until_ready()
    expected = listing(source)
    watcher = PartialWatcher(target, {name: entry[0] for name, entry in expected.items()})
    watcher.start()

    rng = random.Random(9)
    slow = source / "arriving" / "written-slowly.log"
    slow.parent.mkdir()
    with open(slow, "wb") as stream:
        for _ in range(4):
            stream.write(rng.randbytes(300_000))
            stream.flush()
            time.sleep(0.8)  # longer apart than nothing; shorter than stable_after (1 s)
    for index in range(30):
        write_file(source / "arriving" / f"new-{index}.dat", rng.randint(0, 200_000), rng)
    write_file(source / "arriving" / "moved.part", 500_000, rng)  # ignored by name until renamed
    os.rename(source / "arriving" / "moved.part", source / "arriving" / "moved.dat")
    expected = listing(source)
    watcher.expected_sizes = {name: entry[0] for name, entry in expected.items()}
    assert len(expected) == 200 + 10 + 1 + 7 + 1 + 1 + 30 + 1

    wait_until(lambda: listing(target, contents=False).keys() == expected.keys(), 150,
               f"every file in the target; log: {egress.log_path}")
    watcher.stop.set()
    watcher.join()
    assert listing(target) == expected
    assert watcher.looks > 20 and watcher.exposed == []
    assert not os.listdir(target / PARTIAL)
    assert not quarantine.exists() or not os.listdir(quarantine)
    assert report_lines(tmp_path / "report.jsonl") == []
    simulator_counters = simulator.stop()
    assert ingress.stop() == 0 and egress.stop() == 0
    egress_summary, ingress_summary = egress.summary("files"), ingress.summary("files")
    assert simulator_counters["lost_random"] > 100
    assert egress_summary["fec_blocks_recovered"] > 0
    assert egress_summary["directory_files_delivered"] == len(expected)
    assert ingress_summary["directory_files_sent"] == len(expected)
    assert ingress_summary["directory_files_abandoned"] == 0  # the slow writer's file was waited for, not read
    assert egress.unparsed_or_tracebacks() == [] and ingress.unparsed_or_tracebacks() == []


@pytest.mark.timeout(180)
def test_without_fec_exactly_the_damaged_files_are_reported_by_name(start_ddc, diode_sim, tmp_path):
    """5 % loss, no FEC: every file is either delivered identical or reported by its name (in the log and the
    report file), never both, never neither; the damaged ones wait in quarantine, with their missing ranges."""
    source, target, quarantine = tmp_path / "source", tmp_path / "target", tmp_path / "quarantine"
    make_tree(source, small_files=250)
    link_port = free_udp_port()
    report = tmp_path / "report.jsonl"
    ingress_config, egress_config = directory_configs(
        0, source, target, source_extra='once = true\nchunk_size = "16KiB"',
        sink_extra=f'quarantine_directory = "{quarantine}"\nreport_file = "{report}"\n'
                   "stop_after_sender_shutdown = true",
        transport_extra='datagram_size = 8972\nrate = "200Mbit/s"\nbatch_max_bytes = "32KiB"')
    egress = start_ddc("egress", egress_config.replace("127.0.0.1:0", f"127.0.0.1:{link_port}"))
    egress.wait_until_ready()
    simulator = diode_sim(link_port, "--loss", "5%", "--seed", "11")
    ingress = start_ddc("ingress", ingress_config.replace("127.0.0.1:0", f"127.0.0.1:{simulator.port}"))
    assert ingress.process.wait(60) == 0
    assert egress.process.wait(60) == 0
    simulator.stop()
    expected, arrived = listing(source), listing(target)
    reports = report_lines(report)
    reported = {line["file"] for line in reports}
    assert all(line["reason"] == "incomplete" for line in reports), reports
    assert not any(name.startswith("#") for name in reported), "a lost file was reported without its name"
    assert all(arrived[name] == expected[name] for name in arrived)  # what arrived is whole and identical
    assert reported.isdisjoint(arrived)
    assert reported | arrived.keys() == expected.keys()
    assert 10 < len(reported) < len(expected) - 50
    summary = egress.summary("files")
    assert summary["directory_files_quarantined_incomplete"] == len(reported)
    assert summary["directory_files_delivered"] == len(arrived)
    partly = [line for line in reports if line["quarantined_as"]]
    assert partly, "no file arrived in part"
    for line in partly:
        kept = listing(quarantine)[os.path.basename(line["quarantined_as"])]
        size = expected[line["file"]][0]
        assert kept[0] == size and line["missing_ranges"] and line["bytes_missing"] > 0
        assert all(0 <= first <= last < size for first, last in line["missing_ranges"])
    log_names = {line.get("file") for line in egress.lines() if "not delivered" in line.get("message", "")}
    assert log_names == reported
    assert not os.listdir(target / PARTIAL)


@pytest.mark.timeout(180)
def test_an_ingress_killed_mid_transfer_sends_what_was_in_flight_again_and_nothing_twice(start_ddc, tmp_path):
    source, target = tmp_path / "source", tmp_path / "target"
    make_tree(source, small_files=100, large_bytes=48 << 20)
    link_port = free_udp_port()
    ingress_config, egress_config = directory_configs(
        link_port, source, target,
        source_extra=f'state_directory = "{tmp_path / "state"}"\nstable_after = "0s"\nparallel_files = 2',
        sink_extra=f'report_file = "{tmp_path / "report.jsonl"}"',
        transport_extra='datagram_size = 65507\nrate = "100Mbit/s"')
    expected = listing(source)
    egress = start_ddc("egress", egress_config)
    egress.wait_until_ready()
    ingress = start_ddc("ingress", ingress_config)
    watcher = PartialWatcher(target, {name: entry[0] for name, entry in expected.items()})
    watcher.start()
    wait_until(lambda: 20 <= len(listing(target, contents=False)), 60, "some files delivered", 0.02)
    ingress.process.send_signal(signal.SIGKILL)
    ingress.process.wait(10)
    before = listing(target, contents=False)
    assert len(before) < len(expected)
    restarted = start_ddc("ingress", ingress_config)
    wait_until(lambda: listing(target, contents=False).keys() == expected.keys(), 90, "every file delivered")
    watcher.stop.set()
    watcher.join()
    assert listing(target) == expected
    assert watcher.exposed == []
    assert restarted.stop() == 0
    egress.wait_for(lambda line: "sender shut down" in line.get("message", ""))
    assert egress.stop() == 0
    summary = egress.summary("files")
    # What was delivered before the kill is not sent again: at most the files then in flight arrive twice.
    assert len(expected) <= summary["directory_files_delivered"] <= len(expected) + 2 + 2
    assert summary["directory_files_interrupted"] >= 1  # the partial the killed run left was dropped
    assert report_lines(tmp_path / "report.jsonl") == []
    assert not os.listdir(target / PARTIAL)


@pytest.mark.timeout(180)
def test_an_egress_killed_mid_transfer_leaves_no_partial_file_and_resent_copies_complete_the_tree(
        start_ddc, tmp_path):
    source, target = tmp_path / "source", tmp_path / "target"
    make_tree(source, small_files=120, large_bytes=32 << 20)
    link_port = free_udp_port()
    ingress_config, egress_config = directory_configs(
        link_port, source, target,
        source_extra=f'state_directory = "{tmp_path / "state"}"\nstable_after = "0s"\nresend = 1\n'
                     'resend_delay = "4s"',
        transport_extra='datagram_size = 65507\nrate = "100Mbit/s"')
    expected = listing(source)
    egress = start_ddc("egress", egress_config)
    egress.wait_until_ready()
    ingress = start_ddc("ingress", ingress_config)
    wait_until(lambda: len(os.listdir(target / PARTIAL)) if (target / PARTIAL).exists() else 0, 60,
               "a file in progress", 0.01)
    egress.process.send_signal(signal.SIGKILL)
    egress.process.wait(10)
    partials = os.listdir(target / PARTIAL)
    assert all(name.endswith(".part") for name in partials)
    delivered = listing(target)
    assert all(delivered[name] == expected[name] for name in delivered)  # nothing half-written under a name
    time.sleep(1.0)  # files sent while no egress listens are lost: their copies must make up for them
    restarted = start_ddc("egress", egress_config)
    restarted.wait_until_ready()
    wait_until(lambda: listing(target, contents=False).keys() == expected.keys(), 120, "every file delivered")
    assert listing(target) == expected
    wait_until(lambda: ingress.lines() and any(line.get("directory_copies_sent") == len(expected)
                                               for line in ingress.lines()), 60, "every copy sent")
    assert ingress.stop() == 0
    restarted.wait_for(lambda line: "sender shut down" in line.get("message", ""))
    assert restarted.stop() == 0
    summary = restarted.summary("files")
    assert summary["directory_files_delivered"] + summary["directory_files_duplicate"] >= len(expected)
    assert summary["directory_files_duplicate"] > 0  # copies of what the first run delivered were dropped
    assert not os.listdir(target / PARTIAL)
    assert any("partial file(s) an interrupted run left" in line.get("message", "") for line in restarted.lines())


def test_ddc_send_and_receive_carry_files_and_folders_with_progress_lines_and_a_summary(tmp_path):
    source, target = tmp_path / "source", tmp_path / "target"
    make_tree(source / "tree", small_files=30)
    write_file(source / "alone.bin", 6 << 20, random.Random(2))
    port = free_udp_port()
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DDC_")}
    receiver = subprocess.Popen([sys.executable, "-m", "ddc", "receive", str(target), "--listen",
                                 f"127.0.0.1:{port}", "--once"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=environment)
    time.sleep(1.0)
    sender = subprocess.run([sys.executable, "-m", "ddc", "send", str(source / "tree"), str(source / "alone.bin"),
                             "--to", f"127.0.0.1:{port}", "--rate", "20Mbit/s", "--datagram-size", "65507"],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, env=environment, timeout=60)
    out, err = receiver.communicate(timeout=30)
    assert sender.returncode == 0, sender.stderr
    assert receiver.returncode == 0, err
    expected = {f"tree/{name}": entry for name, entry in listing(source / "tree").items()}
    expected["alone.bin"] = listing(source)["alone.bin"]
    assert listing(target) == expected
    progress = [line for line in sender.stderr.splitlines() if line.startswith("ddc: sent ") and "in progress" in line]
    assert progress, sender.stderr  # a plain line every 2 s when stderr is not a terminal
    assert f"ddc: sent {len(expected)} files" in sender.stderr.splitlines()[-1]
    assert f"ddc: received {len(expected)} files" in err and "nothing lost" in err


def test_ddc_send_draws_progress_bars_on_a_terminal(tmp_path):
    source = tmp_path / "source"
    write_file(source / "one.bin", 4 << 20, random.Random(3))
    port = free_udp_port()
    code, text = run_on_terminal(["send", str(source), "--to", f"127.0.0.1:{port}", "--rate", "16Mbit/s"])
    assert code == 0
    assert "━" in text and "MiB" in text and "\x1b[" in text  # rich's bars, sizes and cursor moves
    assert "ddc: sent 1 files" in text


def test_ddc_receive_reports_losses_and_exits_1_when_files_are_missing(tmp_path, diode_sim):
    source, target = tmp_path / "source", tmp_path / "target"
    make_tree(source, small_files=40)
    port = free_udp_port()
    simulator = diode_sim(port, "--loss", "20%", "--seed", "5")
    receiver = subprocess.Popen([sys.executable, "-m", "ddc", "receive", str(target), "--listen",
                                 f"127.0.0.1:{port}", "--once"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    sender = subprocess.run([sys.executable, "-m", "ddc", "send", str(source), "--to", f"127.0.0.1:{simulator.port}",
                             "--chunk-size", "8KiB", "--rate", "50Mbit/s"], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=60)
    _, err = receiver.communicate(timeout=60)
    assert sender.returncode == 0, sender.stderr
    assert receiver.returncode == 1, err
    assert "files NOT delivered" in err and "not delivered (incomplete)" in err


def test_an_interrupted_ddc_send_exits_1_and_its_receiver_reports_what_it_did_not_get(tmp_path):
    source, target = tmp_path / "source", tmp_path / "target"
    make_tree(source, small_files=60)
    write_file(source / "zz-large.bin", 24 << 20, random.Random(4))
    port = free_udp_port()
    receiver = subprocess.Popen([sys.executable, "-m", "ddc", "receive", str(target), "--listen",
                                 f"127.0.0.1:{port}", "--once"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    sender = subprocess.Popen([sys.executable, "-m", "ddc", "send", str(source), "--to", f"127.0.0.1:{port}",
                               "--rate", "32Mbit/s"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)
    sender.send_signal(signal.SIGINT)
    _, sender_err = sender.communicate(timeout=30)
    _, receiver_err = receiver.communicate(timeout=30)
    assert sender.returncode == 1 and "files NOT sent" in sender_err, sender_err
    assert receiver.returncode == 1 and "NOT delivered" in receiver_err, receiver_err
    assert "its sender stopped before sending it whole" in receiver_err


def test_ddc_send_and_receive_that_cannot_start_say_why_in_one_line(tmp_path):
    from conftest import run_ddc
    cases = [(("send", str(tmp_path / "missing"), "--to", "127.0.0.1:9"), 1, "cannot read source path"),
             (("send", str(tmp_path), "--to", "nowhere"), 2, "is not an address"),
             (("send", str(tmp_path), "--to", "127.0.0.1:9", "--chunk-size", "lots"), 2, "--chunk-size"),
             (("receive", "/proc/not-a-folder", "--listen", f"127.0.0.1:{free_udp_port()}", "--once"), 1,
              "cannot write directory sink")]
    for arguments, code, message in cases:
        result = run_ddc(*arguments, timeout=60)
        assert result.returncode == code and message in result.stderr, (arguments, result.stderr)
        assert "Traceback" not in result.stderr
