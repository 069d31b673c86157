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
from ddc.handlers.directory.sink import ENTRY_BYTES, NAMES_BYTES, DirectorySink
from ddc.handlers.directory.source import DirectorySource
from directory_harness import PARTIAL, directory_configs


RUN = 0x5EED


def file_records(path: bytes, data: bytes, *, file_id: int, sequence: int = 0, copy: int = 0,
                 digest: bytes | None = None, size: int | None = None, mode: int = 0o644,
                 mtime_ns: int = 1_600_000_000_000_000_000) -> list:
    """One file as a directory source sends it, in one chunk (what a hostile sender forges as easily)."""
    digest = digest if digest is not None else hashlib.sha256(data).digest()
    metadata = chunks.chunk(RUN, sequence, 10, chunks.LAST, copy, file_id, 0, len(data) if size is None else size,
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
        metadata = chunks.chunk(RUN, sequence, 4, chunks.LAST if last else 0, 0, file_id, offset, len(data), 1, 0o600,
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
    first = chunks.chunk(RUN, 0, 2, 0, 0, 1, 0, len(data), 1, 0o600, b"stalled.bin")
    sink.write([(first, data[:5000])])
    sink.write([(chunks.position(RUN, 3, 2, 1), b"")])  # within the spread: its next chunk may still come
    time.sleep(0.4)
    sink.idle()
    assert sink.counters()["directory_files_in_progress"] == 1
    sink.write([(chunks.position(RUN, 4, 2, 1), b"")])  # beyond it: late or lost
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
        metadata = chunks.chunk(RUN, file_id, 100, 0, 0, file_id, 0, 10, 1, 0o600, f"f{file_id}".encode())
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


# ---- found by review: each reproduced first ----

def test_a_short_write_on_a_filling_disk_gives_the_file_up_never_delivers_it_wrong(tmp_path):
    """RLIMIT_FSIZE makes the kernel write short at the limit, as a full disk does."""
    import resource
    import signal as signals
    data = os.urandom(300_000)
    sink = open_sink(tmp_path, quarantine_directory=str(tmp_path / "quarantine"))
    previous_handler = signals.signal(signals.SIGXFSZ, signals.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))
    try:
        sink.write(file_records(b"too-big-for-the-disk", data, file_id=1))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signals.signal(signals.SIGXFSZ, previous_handler)
    sink.write(file_records(b"fits", b"small", file_id=2, sequence=1))
    sink.close()
    assert sink.counters()["directory_files_quarantined_write_failed"] == 1
    assert sorted(os.listdir(tmp_path / "target")) == [PARTIAL, "fits"]


def test_the_last_file_before_a_pause_is_reported_by_name_when_its_only_chunk_is_lost(tmp_path):
    sink = open_sink(tmp_path, report_file=str(tmp_path / "report.jsonl"))
    sink.config._reorder_seconds = 0.2
    sink.write(file_records(b"first", b"1", file_id=1, sequence=0))
    # File 2's one chunk is lost; its manifest and the idle source's positions arrive.
    sink.write([(chunks.manifest(RUN, 2, 10, [(2, b"the-lost-one")]), b""), (chunks.position(RUN, 3, 10, 2), b"")])
    time.sleep(0.3)
    sink.next_check = 0
    sink.idle()
    assert '"file": "the-lost-one"' in (tmp_path / "report.jsonl").read_text()
    assert sink.counters()["directory_files_quarantined_incomplete"] == 1
    sink.close()


def test_a_file_abandoned_before_its_first_chunk_is_not_reported_lost(tmp_path):
    sink = open_sink(tmp_path, report_file=str(tmp_path / "report.jsonl"))
    sink.config._reorder_seconds = 0.0
    abandoned = chunks.chunk(RUN, 1, 10, chunks.ABANDONED, 0, 2, 0, 5, 1, 0o600, b"changed-while-read")
    sink.write(file_records(b"first", b"1", file_id=1) + [(abandoned, b""), (chunks.position(RUN, 2, 10, 2), b"")])
    sink.close()
    assert not (tmp_path / "report.jsonl").read_text()
    assert sink.counters()["directory_files_interrupted"] == 0


def test_a_forged_jump_of_file_ids_makes_one_report_line_not_one_per_id(tmp_path):
    sink = open_sink(tmp_path, report_file=str(tmp_path / "report.jsonl"))
    sink.write(file_records(b"a", b"1", file_id=1) + file_records(b"b", b"2", file_id=1 << 40, sequence=1))
    for jump in range(2, 20):
        sink.write([(chunks.position(RUN, jump, 10, (1 << 40) + jump * 50_000), b"")])
    sink.close()
    lines = (tmp_path / "report.jsonl").read_text().splitlines()
    assert 1 <= len(lines) <= 3, lines[:5]
    assert len(sink.unseen) == 0


def test_a_new_source_run_drops_the_last_runs_partial_files_but_a_rekeyed_session_does_not(tmp_path):
    sink = open_sink(tmp_path)
    data = os.urandom(20_000)
    first_half = chunks.chunk(RUN, 0, 10, 0, 0, 1, 0, len(data), 1, 0o600, b"big")
    sink.write([(first_half, data[:10_000])])
    sink.sender_restarted()  # a rekey starts a new link session; the source's run goes on
    rest = chunks.chunk(RUN, 1, 10, chunks.LAST, 0, 1, 10_000, len(data), 1, 0o600, b"big",
                        hashlib.sha256(data).digest())
    sink.write([(rest, data[10_000:])])
    assert (tmp_path / "target" / "big").read_bytes() == data
    sink.write([(chunks.chunk(RUN, 2, 10, 0, 0, 2, 0, len(data), 1, 0o600, b"cut"), data[:10_000])])
    sink.write([(chunks.position(RUN + 1, 0, 10, 0), b"")])  # a restarted source
    assert sink.counters()["directory_files_interrupted"] == 1
    assert os.listdir(tmp_path / "target" / PARTIAL) == []
    sink.close()


def test_quarantined_files_of_two_runs_with_the_same_id_and_name_are_both_kept(tmp_path):
    sink = open_sink(tmp_path, quarantine_directory=str(tmp_path / "quarantine"))
    sink.config._reorder_seconds = 0.0
    for run in (1, 2):
        sink.write([(chunks.chunk(run, 0, 10, 0, 0, 1, 0, 100, 1, 0o600, "名前".encode() * 42), b"x" * 50)])
        for overtaking in (20, 21):  # the link moves on past it: given up, quarantined
            sink.write([(chunks.position(run, overtaking, 10, 1), b"")])
            sink.next_check = 0
            sink.idle()
    sink.close()
    kept = os.listdir(tmp_path / "quarantine")
    assert len(kept) == 2 and all(len(os.fsencode(name)) <= 255 for name in kept)


def test_a_manifest_larger_than_any_source_writes_is_refused(tmp_path):
    sink = open_sink(tmp_path)
    names = [(index, b"n" * 4000) for index in range(20)]
    sink.write([(chunks.manifest(RUN, 0, 10, names), b"")])
    sink.close()
    assert sink.counters()["directory_files_refused_malformed"] == 1 and not sink.names


def test_a_target_folder_configured_through_a_symbolic_link_is_used(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "target")
    sink = open_sink(tmp_path)
    sink.write(file_records(b"f", b"data", file_id=1))
    sink.close()
    assert (tmp_path / "real" / "f").read_bytes() == b"data"


def test_a_file_replaced_before_its_send_is_acknowledged_is_not_deleted_and_is_sent_again(tmp_path):
    folder = tmp_path / "watched"
    folder.mkdir()
    (folder / "data.csv").write_text("version 1")
    config = DirectorySourceConfig(type="directory", path=str(folder), after_sent="delete", stable_after="0s",
                                   scan_interval="0.2s")
    source = DirectorySource("files", config)
    source.open()
    ring = RecordRing(1 << 20, "block")
    stopping = threading.Event()
    thread = threading.Thread(target=source.run, args=(ring, stopping))
    thread.start()
    from ddc._core.records import decode_records
    seen, unacknowledged, replaced = [], 0, False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len([r for r in seen if r.flags & chunks.LAST]) < 2:
        taken = ring.take(1 << 20, 0.05)
        if taken is not None:
            view, count, _ = taken
            seen += [chunks.read(metadata) for metadata, _ in decode_records(bytes(view), count)]
            ring.free_taken()
            unacknowledged += count
        if not replaced and any(record.flags & chunks.LAST for record in seen):
            (folder / "new.tmp").write_text("version 2!")
            os.rename(folder / "new.tmp", folder / "data.csv")  # published over the one being sent
            replaced = True
            time.sleep(0.3)
        source.acknowledge(unacknowledged)
        unacknowledged = 0
    stopping.set()
    thread.join(10)
    source.close()
    sizes = [record.size for record in seen if record.flags & chunks.LAST]
    assert sizes == [len("version 1"), len("version 2!")]
    assert not (folder / "data.csv").exists()  # version 2 was deleted only after it was sent


def test_once_with_resend_sends_every_copy_before_it_finishes(tmp_path):
    folder = tmp_path / "watched"
    folder.mkdir()
    (folder / "a").write_bytes(os.urandom(3 << 20))
    config = DirectorySourceConfig(type="directory", path=str(folder), once=True, resend=2, resend_delay="0s",
                                   chunk_size="1MiB")
    _, records = run_source(config, 20)
    copies = sorted(record.copy for record, _ in records if record.flags & chunks.LAST)
    assert copies == [0, 1, 2]


def test_two_paths_that_would_arrive_under_one_name_are_refused(tmp_path):
    for folder in ("a/data", "b/data"):
        (tmp_path / folder).mkdir(parents=True)
    config = DirectorySourceConfig(type="directory", path=[str(tmp_path / "a/data"), str(tmp_path / "b/data")],
                                   once=True)
    with pytest.raises(OSError, match="would both arrive as 'data'"):
        DirectorySource("files", config).open()
    with pytest.raises(OSError, match="under a name of its own"):
        DirectorySource("files", DirectorySourceConfig(type="directory", path=["/"], once=True)).open()


# ---- found by the second review ----

def test_a_large_chunk_and_its_small_tail_in_one_write_hash_in_order(tmp_path):
    sink = open_sink(tmp_path)
    for file_id in range(1, 41):
        data = os.urandom(300_000 + 10)
        digest = hashlib.sha256(data).digest()
        sink.write([(chunks.chunk(RUN, 2 * file_id, 10, 0, 0, file_id, 0, len(data), 1, 0o600, b"f%d" % file_id),
                     data[:300_000]),
                    (chunks.chunk(RUN, 2 * file_id + 1, 10, chunks.LAST, 0, file_id, 300_000, len(data), 1, 0o600,
                                  b"f%d" % file_id, digest), data[300_000:])])
    sink.close()
    assert sink.counters()["directory_files_delivered"] == 40
    assert sink.counters()["directory_files_quarantined_checksum"] == 0


def test_a_file_whose_run_ended_is_reported_not_dropped_when_the_next_run_starts(tmp_path):
    sink = open_sink(tmp_path, report_file=str(tmp_path / "report.jsonl"))
    data = os.urandom(20_000)
    sink.write([(chunks.chunk(RUN, 0, 10, 0, 0, 1, 0, len(data), 1, 0o600, b"a.bin"), data[:10_000]),
                (chunks.position(RUN, 2, 10, 1, chunks.END), b"")])  # the last chunk was lost; the run ended
    sink.write([(chunks.position(RUN + 1, 0, 10, 0), b"")])  # the next `ddc send`
    sink.close()
    assert '"file": "a.bin"' in (tmp_path / "report.jsonl").read_text()
    assert sink.counters()["directory_files_interrupted"] == 0


def test_a_run_that_ended_gives_up_what_did_not_come_after_the_reorder_window(tmp_path):
    sink = open_sink(tmp_path, report_file=str(tmp_path / "report.jsonl"))
    sink.config._reorder_seconds = 0.2
    sink.write([(chunks.chunk(RUN, 0, 10, 0, 0, 1, 0, 100, 1, 0o600, b"tail-lost"), b"x" * 50),
                (chunks.position(RUN, 1, 10, 1, chunks.END), b"")])
    time.sleep(0.3)
    sink.next_check = 0
    sink.idle()
    assert sink.counters()["directory_files_quarantined_incomplete"] == 1
    sink.close()


def test_a_copy_finished_in_the_same_batch_as_its_original_is_a_duplicate_with_fsync(tmp_path):
    sink = open_sink(tmp_path, existing="keep_both", fsync=True)
    sink.write(file_records(b"report.csv", b"data", file_id=1) +
               file_records(b"report.csv", b"data", file_id=2, sequence=1, copy=1))
    sink.close()
    assert os.listdir(tmp_path / "target") == [PARTIAL, "report.csv"] or sorted(
        os.listdir(tmp_path / "target")) == sorted([PARTIAL, "report.csv"])
    assert sink.counters()["directory_files_duplicate"] == 1


def test_a_batch_of_files_in_thousands_of_folders_keeps_few_descriptors_open(tmp_path):
    import resource
    sink = open_sink(tmp_path, fsync=True)
    records = []
    for index in range(1, 1501):
        records += file_records(b"day%d/a.txt" % index, b"1", file_id=index, sequence=index)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(512, hard), hard))
    try:
        sink.write(records)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    sink.close()
    assert sink.counters()["directory_files_delivered"] == 1500


def test_names_from_manifests_are_bounded_by_their_count_too(tmp_path):
    sink = open_sink(tmp_path)
    for start in range(0, 400_000, 2000):
        sink.write([(chunks.manifest(RUN, start, 10, [(start + index, b"n") for index in range(2000)]), b"")])
    assert len(sink.names) * ENTRY_BYTES <= NAMES_BYTES
    sink.close()


def test_an_egress_that_starts_in_the_middle_of_a_run_reports_nothing_it_could_not_have_seen(tmp_path):
    """Its first records name files a previous egress may have delivered: a manifest, a position."""
    sink = open_sink(tmp_path, report_file=str(tmp_path / "report.jsonl"))
    sink.config._reorder_seconds = 0.0
    sink.write([(chunks.manifest(RUN, 50, 10, [(7, b"before"), (8, b"also-before")]), b""),
                (chunks.position(RUN, 51, 10, 8), b"")])
    sink.write(file_records(b"after", b"1", file_id=9, sequence=52))
    sink.next_check = 0
    sink.idle()
    sink.close()
    assert (tmp_path / "report.jsonl").read_text() == ""
    assert (tmp_path / "target" / "after").read_bytes() == b"1"
