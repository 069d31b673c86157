"""What a directory link does with what it should not trust: hostile names and forged descriptions from a sender
over a real link, symbolic links planted in the target, files still being written, links and devices in the
source folder; and the sink's rules for existing files, checksums and copies."""

import hashlib
import json
import os
import socket
import stat
import struct
import threading
import time

import pytest

from conftest import free_udp_port
from ddc._core.records import encode_batch
from ddc._core.ring import RecordRing
from ddc._core.sender import DatagramSender
from ddc.handlers.directory import chunks
from ddc.handlers.directory.config import DirectorySinkConfig, DirectorySourceConfig
from ddc.handlers.directory.sink import DirectorySink
from ddc.handlers.directory.source import DirectorySource
from directory_harness import PARTIAL, directory_configs


def file_records(path: bytes, data: bytes, *, file_id: int, sequence: int = 0, copy: int = 0,
                 digest: bytes | None = None, size: int | None = None, mode: int = 0o644,
                 mtime_ns: int = 1_600_000_000_000_000_000) -> list:
    """One file as a directory source sends it, in one chunk (what a hostile sender forges as easily)."""
    digest = digest if digest is not None else hashlib.sha256(data).digest()
    metadata = chunks.chunk(sequence, 10, chunks.LAST, copy, file_id, 0, len(data) if size is None else size,
                            mtime_ns, mode, path, digest)
    return [(metadata, data)]


def open_sink(tmp_path, **options) -> DirectorySink:
    sink = DirectorySink("files", DirectorySinkConfig(type="directory", path=str(tmp_path / "target"), **options))
    sink.open()
    return sink


HOSTILE_NAMES = [b"../escaped", b"/tmp/absolute", b"a/../../escaped", b"a/./b", b"a//b", b"", b".", b"..",
                 PARTIAL.encode() + b"/planted", b"bell\x07name", b"new\nline", b"x" * 256, b"nul\x00byte",
                 b"ok/" + b"y" * 256]


def test_a_hostile_sender_over_a_real_link_gets_every_unsafe_name_refused_and_counted(start_ddc, tmp_path):
    """The names a compromised or forged high side could send, through a real egress: none creates anything
    outside the target, a symbolic link planted in the target is not followed, and the good file sent among
    them still arrives."""
    target, outside = tmp_path / "target", tmp_path / "outside"
    target.mkdir()
    outside.mkdir()
    os.symlink(outside, target / "planted-link")
    port = free_udp_port()
    _, egress_config = directory_configs(port, tmp_path / "unused", target)
    egress = start_ddc("egress", egress_config)
    egress.wait_until_ready()
    records = []
    names = HOSTILE_NAMES + [b"planted-link/through-the-link", b"good/file.txt"]
    for file_id, name in enumerate(names, 1):
        records += file_records(name, b"payload " + name, file_id=file_id, sequence=file_id)
    records.append((b"\x01\x07garbage", b"x"))  # metadata no source writes
    records += file_records(b"lies-about-size", b"short", file_id=len(names) + 1, sequence=len(names) + 1,
                            size=1 << 50)  # larger than max_file_size
    records += file_records(b"wrong-digest", b"data", file_id=len(names) + 2, sequence=len(names) + 2,
                            digest=bytes(32))
    sending = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    address = struct.pack("=HH4s8x", socket.AF_INET, socket.htons(port), socket.inet_aton("127.0.0.1"))
    sender = DatagramSender(sending.fileno(), address, (1 << 40) | 5, 1472)
    sender.send_frame(encode_batch(records, time.time_ns()))
    sending.close()
    egress.wait_for(lambda line: line.get("directory_files_delivered") == 1, 20)
    assert egress.stop() == 0
    summary = egress.summary("files")
    assert (target / "good" / "file.txt").read_bytes() == b"payload good/file.txt"
    assert os.listdir(outside) == []
    assert sorted(os.listdir(target)) == sorted([PARTIAL, "planted-link", "good"])
    assert os.listdir(target / PARTIAL) == []
    assert summary["directory_files_refused_invalid_name"] == len(HOSTILE_NAMES)
    assert summary["directory_files_refused_unsafe_path"] == 1
    assert summary["directory_files_refused_malformed"] == 1
    assert summary["directory_files_quarantined_too_large"] == 1
    assert summary["directory_files_quarantined_checksum"] == 1
    assert egress.unparsed_or_tracebacks() == []


def test_existing_files_are_overwritten_kept_both_or_refused_as_configured(tmp_path):
    for existing, expected in (("overwrite", {"report.pdf": b"new"}),
                               ("keep_both", {"report.pdf": b"old", "report.1.pdf": b"new"}),
                               ("refuse", {"report.pdf": b"old"})):
        base = tmp_path / existing
        (base / "target").mkdir(parents=True)
        (base / "target" / "report.pdf").write_bytes(b"old")
        sink = open_sink(base, existing=existing, quarantine_directory=str(base / "quarantine"))
        sink.write(file_records(b"report.pdf", b"new", file_id=1))
        sink.close()
        found = {name: (base / "target" / name).read_bytes() for name in os.listdir(base / "target")
                 if name != PARTIAL}
        assert found == expected, existing
        assert sink.counters()["directory_files_quarantined_exists"] == (existing == "refuse")
        if existing == "refuse":
            assert os.listdir(base / "quarantine") == ["1-report.pdf"]


def test_a_folder_in_the_way_and_a_name_too_long_to_suffix_are_refused_not_lost_silently(tmp_path):
    (tmp_path / "target" / "taken").mkdir(parents=True)
    sink = open_sink(tmp_path)
    sink.write(file_records(b"taken", b"data", file_id=1) + file_records(b"plain", b"data", file_id=2, sequence=1))
    sink.close()
    assert sink.counters()["directory_files_quarantined_exists"] == 1
    assert (tmp_path / "target" / "plain").read_bytes() == b"data"
    assert (tmp_path / "target" / "taken").is_dir()


def test_modes_keep_no_setuid_bits_unless_asked_and_mtimes_are_kept_to_the_nanosecond(tmp_path):
    sink = open_sink(tmp_path)
    sink.write(file_records(b"tool", b"#!/bin/sh\n", file_id=1, mode=0o4755, mtime_ns=1_234_567_890_123_456_789))
    sink.close()
    status = os.stat(tmp_path / "target" / "tool")
    assert stat.S_IMODE(status.st_mode) == 0o755 and status.st_mtime_ns == 1_234_567_890_123_456_789


def test_a_copy_of_a_delivered_file_is_dropped_and_counted_and_a_changed_one_delivered(tmp_path):
    sink = open_sink(tmp_path, existing="keep_both")
    data = b"signature update"
    sink.write(file_records(b"av/update.sig", data, file_id=1))
    sink.write(file_records(b"av/update.sig", data, file_id=2, sequence=1, copy=1))
    sink.write(file_records(b"av/update.sig", b"newer", file_id=3, sequence=2, copy=1))
    sink.close()
    assert sink.counters()["directory_files_duplicate"] == 1
    assert sorted(os.listdir(tmp_path / "target" / "av")) == ["update.1.sig", "update.sig"]
    # A new egress run knows the copy by the file in place: same size and modification time.
    again = open_sink(tmp_path, existing="keep_both")
    again.write(file_records(b"av/update.sig", data, file_id=1, copy=2))
    again.close()
    assert again.counters()["directory_files_duplicate"] == 1


def test_chunks_out_of_order_and_repeated_make_the_file_and_holes_are_reported_as_byte_ranges(tmp_path):
    data = os.urandom(100_000)
    whole = hashlib.sha256(data).digest()

    def piece(file_id, path, offset, length, sequence, last=False):
        metadata = chunks.chunk(sequence, 4, chunks.LAST if last else 0, 0, file_id, offset, len(data), 1, 0o600,
                                path, whole if last else None)
        return metadata, data[offset:offset + length]

    sink = open_sink(tmp_path, quarantine_directory=str(tmp_path / "quarantine"),
                     report_file=str(tmp_path / "report.jsonl"))
    sink.write([piece(7, b"pieces.bin", 60_000, 40_000, 3, True), piece(7, b"pieces.bin", 0, 30_000, 1),
                piece(7, b"pieces.bin", 0, 30_000, 1), piece(7, b"pieces.bin", 30_000, 30_000, 2)])
    assert (tmp_path / "target" / "pieces.bin").read_bytes() == data
    sink.write([piece(8, b"holes.bin", 0, 10_000, 10), piece(8, b"holes.bin", 20_000, 10_000, 11),
                piece(8, b"holes.bin", 90_000, 10_000, 12, True)])
    sink.close()
    report = (tmp_path / "report.jsonl").read_text()
    assert '"file": "holes.bin"' in report and '"missing_ranges": [[10000, 19999], [30000, 89999]]' in report
    kept = (tmp_path / "quarantine" / "8-holes.bin").read_bytes()
    assert len(kept) == len(data) and kept[20_000:30_000] == data[20_000:30_000]
    assert not (tmp_path / "target" / "holes.bin").exists()


def test_a_file_overtaken_by_the_link_is_given_up_after_the_reorder_window_not_before(tmp_path):
    sink = open_sink(tmp_path, report_file=str(tmp_path / "report.jsonl"))
    sink.config._reorder_seconds = 0.3
    data = os.urandom(10_000)
    first = chunks.chunk(0, 2, 0, 0, 1, 0, len(data), 1, 0o600, b"stalled.bin")
    sink.write([(first, data[:5000])])
    sink.write([(chunks.position(3, 2), b"")])  # within the spread: its next chunk may still come
    time.sleep(0.4)
    sink.idle()
    assert sink.counters()["directory_files_in_progress"] == 1
    sink.write([(chunks.position(4, 2), b"")])  # beyond it: late or lost
    sink.idle()
    time.sleep(0.4)
    sink.next_check = 0
    sink.idle()
    assert sink.counters()["directory_files_quarantined_incomplete"] == 1
    assert "stalled.bin" in (tmp_path / "report.jsonl").read_text()
    sink.close()


def test_the_sink_holds_a_bounded_number_of_files_and_refuses_beyond_it(tmp_path):
    sink = open_sink(tmp_path, max_files_in_progress=3)
    for file_id in range(1, 6):
        metadata = chunks.chunk(file_id, 100, 0, 0, file_id, 0, 10, 1, 0o600, f"f{file_id}".encode())
        sink.write([(metadata, b"12345")])
    assert sink.counters()["directory_files_in_progress"] == 3
    assert sink.counters()["directory_files_refused_too_many_files"] == 2
    sink.close()


# ---- the source ----

def run_source(config: DirectorySourceConfig, seconds: float, name: str = "files", state=None):
    """Runs a source for a while into a ring; the records it put, acknowledged as the link would."""
    source = DirectorySource(name, config)
    source.open()
    ring = RecordRing(64 << 20, "block")
    stopping = threading.Event()
    thread = threading.Thread(target=source.run, args=(ring, stopping))
    thread.start()
    records = []
    deadline = time.monotonic() + seconds
    from ddc._core.records import decode_records
    while time.monotonic() < deadline and (thread.is_alive() or ring.counters()["buffer_bytes"]):
        taken = ring.take(1 << 24, 0.05)
        if taken is None:
            continue
        view, count, _ = taken
        records += [(chunks.read(metadata), bytes(value)) for metadata, value in decode_records(bytes(view), count)]
        ring.free_taken()
        source.acknowledge(count)
    stopping.set()
    thread.join(10)
    source.close()
    return source, records


def sent_files(records) -> dict:
    return {record.path.decode(): record for record, _ in records
            if record.kind == chunks.CHUNK and record.flags & chunks.LAST}


def test_the_source_skips_links_devices_and_ignored_names_and_counts_them(tmp_path):
    folder = tmp_path / "watched"
    folder.mkdir()
    (folder / "real.txt").write_text("real")
    (folder / ".hidden").write_text("hidden")
    (folder / "upload.part").write_text("partial")
    os.symlink("/etc/passwd", folder / "to-passwd")
    os.symlink(tmp_path, folder / "to-folder")
    os.mkfifo(folder / "pipe")
    config = DirectorySourceConfig(type="directory", path=str(folder), once=True)
    source, records = run_source(config, 10)
    assert set(sent_files(records)) == {"real.txt"}
    counters = source.counters()
    assert counters["directory_files_skipped_symlink"] == 2  # the link to a folder is not walked either
    assert counters["directory_files_skipped_special"] == 1


def test_a_file_still_being_written_is_sent_only_once_closed_and_whole(tmp_path):
    folder = tmp_path / "watched"
    folder.mkdir()
    config = DirectorySourceConfig(type="directory", path=str(folder), stable_after="10s")
    writer = open(folder / "growing.log", "wb")

    def write_slowly():
        for _ in range(5):
            writer.write(b"x" * 100_000)
            writer.flush()
            time.sleep(0.3)
        writer.close()

    thread = threading.Thread(target=write_slowly)
    thread.start()
    _, records = run_source(config, 3.5)
    thread.join()
    sent = sent_files(records)
    assert set(sent) == {"growing.log"} and sent["growing.log"].size == 500_000
    assert sum(record.kind == chunks.CHUNK for record, _ in records) == 1


def test_priority_patterns_go_first_and_parallel_files_take_turns(tmp_path):
    folder = tmp_path / "watched"
    folder.mkdir()
    for index in range(3):
        (folder / f"bulk-{index}.bin").write_bytes(os.urandom(40_000))
    (folder / "urgent.sig").write_bytes(b"sig")
    config = DirectorySourceConfig(type="directory", path=str(folder), once=True, priority=["*.sig"],
                                   chunk_size="8KiB", parallel_files=2)
    _, records = run_source(config, 10)
    order = [record.path.decode() for record, _ in records if record.kind == chunks.CHUNK]
    assert order[0] == "urgent.sig"
    # Two files in turn: no file sends two chunks in a row while another waits in the same turn.
    bulk = order[1:]
    assert bulk[:4] == ["bulk-0.bin", "bulk-1.bin", "bulk-0.bin", "bulk-1.bin"]
    sequences = [record.sequence for record, _ in records]
    assert sequences == list(range(len(sequences)))


def test_a_restarted_source_sends_only_what_it_had_not_sent_and_a_changed_file_again(tmp_path):
    folder, state = tmp_path / "watched", tmp_path / "state"
    folder.mkdir()
    for index in range(5):
        (folder / f"f{index}").write_bytes(b"%d" % index)
    config = DirectorySourceConfig(type="directory", path=str(folder), once=True, state_directory=str(state))
    _, first = run_source(config, 10)
    assert len(sent_files(first)) == 5
    (folder / "f2").write_bytes(b"changed")
    (folder / "f9").write_bytes(b"new")
    ledger = state / "files.directory-sent.jsonl"
    lines = ledger.read_text().splitlines(keepends=True)
    cut = json.loads(lines[-1])["name"]
    ledger.write_text("".join(lines[:-1]) + lines[-1][:12])  # the last line cut short by a crash
    _, second = run_source(config, 10)
    assert set(sent_files(second)) == {"f2", "f9", cut}
    _, third = run_source(config, 10)
    assert sent_files(third) == {}


@pytest.mark.parametrize("after_sent", ["move", "delete"])
def test_sent_files_are_moved_or_deleted_only_once_the_link_has_sent_them(tmp_path, after_sent):
    folder, sent = tmp_path / "watched", tmp_path / "sent"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.txt").write_text("a")
    config = DirectorySourceConfig(type="directory", path=str(folder), once=True, after_sent=after_sent,
                                   sent_directory=str(sent) if after_sent == "move" else None)
    _, records = run_source(config, 10)
    assert set(sent_files(records)) == {"sub/a.txt"}
    assert not (folder / "sub" / "a.txt").exists()
    assert (sent / "sub" / "a.txt").read_text() == "a" if after_sent == "move" else not sent.exists()


def test_directory_configs_refuse_what_cannot_work(tmp_path):
    from ddc.config import ConfigError, settings_from_mapping
    base = {"role": "ingress", "links": {"f": {"transport": {"destination": "127.0.0.1:9"},
                                               "source": {"type": "directory", "path": str(tmp_path)}}}}
    cases = [({"after_sent": "move"}, "needs sent_directory"),
             ({"path": [str(tmp_path)]}, "set once = true"),
             ({"chunk_size": "64MiB"}, "lower chunk_size")]
    for change, message in cases:
        data = {**base, "links": {"f": {**base["links"]["f"], "source": {**base["links"]["f"]["source"], **change}}}}
        with pytest.raises(ConfigError, match=message):
            settings_from_mapping(data)
    with pytest.raises(ConfigError, match='must be "block"'):
        settings_from_mapping({**base, "links": {"f": {**base["links"]["f"], "buffer": {"when_full": "drop"}}}})
