"""The egress disk spool: order across memory and disk, bounds, restarts, torn and corrupt files."""

import os
import random

from ddc.spool import ENTRY, DiskSpool, SpooledBuffer, SpooledFrame
from ddc.stage_buffer import StageBuffer


def frame(number: int, size: int = 1000) -> SpooledFrame:
    made = SpooledFrame(number.to_bytes(4, "big") + random.Random(number).randbytes(size - 4))
    made.frame_id = number
    return made


def numbers(frames) -> list[int]:
    for taken in frames:
        assert taken == frame(taken.frame_id, len(taken)), "frame bytes changed on disk"
    return [taken.frame_id for taken in frames]


def spooled(directory, memory_bytes=64 * 1024, max_bytes=1 << 20, segment_bytes=16 * 1024) -> SpooledBuffer:
    memory = StageBuffer(memory_bytes, "block")
    return SpooledBuffer(memory, DiskSpool(directory, max_bytes, segment_bytes), "test", lambda item: 1)


def drain(buffer, settle=True) -> list[int]:
    taken = []
    while True:
        frames = buffer.get_many(10_000, 0.01)
        if not frames:
            return taken
        taken += numbers(frames)
        if settle:
            buffer.settle()


def segment_files(directory) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".spool"))


def test_frames_that_do_not_fit_in_memory_wait_on_disk_and_come_back_in_order(tmp_path):
    buffer = spooled(tmp_path)
    assert buffer.put_many([frame(n) for n in range(200)]) == 200
    counters = buffer.counters()
    assert counters["spool_frames_in"] == 200 - 65 and counters["spool_frames"] == 135
    assert len(segment_files(tmp_path)) > 1
    # while the spool holds frames, new ones queue behind them even though memory has room again
    assert numbers(buffer.get_many(5000, 0)) == [0, 1, 2, 3, 4]
    buffer.put_many([frame(200)])
    assert drain(buffer) == list(range(5, 201))
    counters = buffer.counters()
    assert counters["spool_frames"] == 0 and counters["spool_bytes"] == 0 and counters["spool_frames_out"] == 136
    assert segment_files(tmp_path) == []
    buffer.put_many([frame(201)])
    assert buffer.counters()["spool_frames_in"] == 136, "an empty spool is bypassed"
    assert drain(buffer) == [201]


def test_a_full_spool_drops_the_newest_frames_and_counts_them(tmp_path):
    buffer = spooled(tmp_path, max_bytes=50 * (1000 + ENTRY.size))
    buffer.put_many([frame(n) for n in range(200)])
    counters = buffer.counters()
    assert counters["spool_frames_in"] == 50 and counters["spool_records_dropped"] == 200 - 65 - 50
    assert counters["spool_bytes_dropped"] == 1000 * (200 - 65 - 50)
    assert counters["spool_bytes"] <= 50 * (1000 + ENTRY.size)
    assert drain(buffer) == list(range(115))
    buffer.put_many([frame(500)])
    assert drain(buffer) == [500]


def test_the_spool_survives_a_restart_and_replays_only_what_was_not_settled(tmp_path):
    buffer = spooled(tmp_path)
    buffer.put_many([frame(n) for n in range(100)])
    assert numbers(buffer.get_many(65 * 1000, 0)) == list(range(65))
    assert numbers(buffer.get_many(10_000, 0)) == list(range(65, 75))
    buffer.settle()
    assert numbers(buffer.get_many(5000, 0)) == list(range(75, 80))
    buffer.close()
    buffer.release()  # the process stops before frames 75..79 were delivered

    again = spooled(tmp_path)
    assert again.counters()["spool_frames"] == 25
    again.put_many([frame(100)])
    assert drain(again) == list(range(75, 101))


def test_frames_left_in_memory_at_shutdown_are_kept_for_the_next_start(tmp_path):
    buffer = spooled(tmp_path)
    buffer.put_many([frame(n) for n in range(10)])
    buffer.close()
    assert buffer.counters()["spool_frames"] == 0
    buffer.release()  # the sink never took them: the destination was down
    assert drain(spooled(tmp_path)) == list(range(10))


def killed(buffer) -> None:
    """What SIGKILL leaves: the files as written, nothing saved at shutdown."""
    buffer.spool.close()


def test_a_frame_torn_by_a_crash_is_cut_off_and_the_rest_is_kept(tmp_path):
    buffer = spooled(tmp_path, memory_bytes=64 * 1024, segment_bytes=1 << 20)
    buffer.put_many([frame(n) for n in range(80)])
    killed(buffer)
    [segment] = segment_files(tmp_path)
    path = tmp_path / segment
    size = path.stat().st_size
    os.truncate(path, size - 300)  # the last frame was half written when the process died
    again = spooled(tmp_path)
    assert again.counters()["spool_frames"] == 14
    assert path.stat().st_size == size - 1000 - ENTRY.size
    again.put_many([frame(80)])
    assert drain(again) == list(range(65, 79)) + [80]


def corrupt(directory, index: int) -> None:
    """Flips a byte of the index-th frame of the only segment, as a bad disk would."""
    [segment] = segment_files(directory)
    with open(directory / segment, "r+b") as file:
        file.seek(index * (1000 + ENTRY.size) + ENTRY.size + 500)
        file.write(b"\xff")


def test_a_corrupt_frame_is_counted_and_skipped(tmp_path):
    buffer = spooled(tmp_path, segment_bytes=1 << 20)
    buffer.put_many([frame(n) for n in range(70)])
    killed(buffer)
    corrupt(tmp_path, 2)
    again = spooled(tmp_path)
    assert drain(again) == [65, 66, 68, 69]
    assert again.counters()["spool_frames_corrupt"] == 1


def test_frames_in_memory_at_shutdown_go_in_front_of_the_spooled_ones(tmp_path):
    buffer = spooled(tmp_path, segment_bytes=8 * 1024)
    buffer.put_many([frame(n) for n in range(100)])
    assert numbers(buffer.get_many(60_000, 0)) == list(range(60))
    buffer.settle()
    buffer.close()
    buffer.release()  # the destination is down: frames 60..64 are still in memory
    again = spooled(tmp_path)
    assert again.counters()["spool_frames"] == 40
    assert numbers(again.get_many(3000, 0)) == [60, 61, 62]
    killed(again)  # ... and the restarted egress dies before delivering them
    assert drain(spooled(tmp_path)) == list(range(60, 100))


def test_an_unwritable_spool_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    try:
        DiskSpool(blocker / "spool", 1 << 20)
    except OSError as error:
        assert "spool directory" in str(error) and "spool.path" in str(error)
    else:
        raise AssertionError("no error")


# ---- the spool as a write-ahead log ----

def logged(directory, memory_bytes=64 * 1024, max_bytes=1 << 20, segment_bytes=16 * 1024) -> SpooledBuffer:
    memory = StageBuffer(memory_bytes, "block")
    return SpooledBuffer(memory, DiskSpool(directory, max_bytes, segment_bytes), "test", lambda item: 1,
                         write_ahead=True)


def take(buffer, max_bytes=10_000) -> list:
    frames = buffer.get_many(max_bytes, 0.01)
    numbers(frames)
    return frames


def deliver_all(buffer, max_bytes=10_000) -> list[int]:
    """What a sink that confirms each batch gets: the frame ids, in order."""
    delivered = []
    while frames := take(buffer, max_bytes):
        delivered += [taken.frame_id for taken in frames]
        buffer.settle(frames[-1].log_position)
    return delivered


def test_every_frame_is_logged_before_the_sink_sees_it_and_kept_until_delivered(tmp_path):
    buffer = logged(tmp_path)
    assert buffer.put_many([frame(n) for n in range(20)]) == 20
    counters = buffer.counters()
    assert counters["spool_frames_in"] == 20 and counters["spool_frames"] == 20
    assert counters["spool_frames_out"] == 0, "memory held every frame: nothing was read back"
    first = take(buffer)
    assert [f.frame_id for f in first] == list(range(10))
    buffer.settle(first[3].log_position)  # the sink confirmed frames 0..3 only
    assert buffer.counters()["spool_frames"] == 16
    buffer.settle(None)  # nothing new confirmed
    assert buffer.counters()["spool_frames"] == 16
    killed(buffer)  # frames 4..9 were handed to the sink, 10..19 still in memory: none delivered

    again = logged(tmp_path)
    assert again.counters()["spool_frames"] == 16
    again.put_many([frame(20)])
    assert deliver_all(again) == list(range(4, 21))
    assert again.counters()["spool_frames"] == 0 and segment_files(tmp_path) == []


def test_a_write_ahead_log_reads_back_from_the_first_frame_memory_refused_then_uses_memory_again(tmp_path):
    buffer = logged(tmp_path, memory_bytes=8 * 1000)
    assert buffer.put_many([frame(n) for n in range(30)]) == 30
    assert buffer.counters()["buffer_bytes"] == 8 * 1000
    taken, late = [], [frame(30), frame(31)]
    while frames := take(buffer, 3000):
        taken += frames
        buffer.settle()  # a sink that delivers as it writes
        if len(taken) > 8 and late:
            buffer.put_many(late)  # arrive while the sink reads the log: behind it, in order
            late = []
    assert [f.frame_id for f in taken] == list(range(32))
    assert buffer.counters()["spool_frames_out"] == 24
    buffer.put_many([frame(32)])
    assert [f.frame_id for f in take(buffer)] == [32]
    assert buffer.counters()["spool_frames_out"] == 24, "caught up: frames come from memory again"
    buffer.settle()
    assert buffer.counters()["spool_frames"] == 0


def test_released_segments_are_deleted_so_a_busy_log_stays_within_its_size(tmp_path):
    buffer = logged(tmp_path, max_bytes=1 << 20)
    for round_number in range(40):  # 40 × 100 KB through a 1 MiB log
        buffer.put_many([frame(round_number * 100 + n) for n in range(100)])
        assert deliver_all(buffer, 50_000) == [round_number * 100 + n for n in range(100)]
        assert buffer.counters()["spool_bytes"] <= 1 << 20
    counters = buffer.counters()
    assert counters["spool_records_dropped"] == 0 and counters["spool_frames_unlogged"] == 0
    assert counters["spool_frames"] == 0


def test_a_full_log_still_delivers_from_memory_and_says_those_frames_are_unprotected(tmp_path):
    buffer = logged(tmp_path, memory_bytes=64 * 1024, max_bytes=1 << 20)
    buffer.put_many([frame(n, 10_000) for n in range(110)])  # 1.1 MB: memory refuses from the 7th on
    counters = buffer.counters()
    assert counters["spool_frames_unlogged"] == 0
    assert counters["spool_records_dropped"] == 110 - 104, "what neither memory nor the log took is dropped"
    assert deliver_all(buffer, 100_000) == list(range(104))
    assert buffer.counters()["spool_frames"] == 0


def test_frames_a_full_log_cannot_take_still_go_to_memory_counted_as_unprotected(tmp_path):
    buffer = logged(tmp_path, memory_bytes=4 << 20, max_bytes=1 << 20)
    buffer.put_many([frame(n, 10_000) for n in range(110)])  # 1.1 MB: the log takes 104, memory all
    counters = buffer.counters()
    assert counters["spool_frames_unlogged"] == 6 and counters["spool_records_dropped"] == 0
    taken = take(buffer, 4 << 20)
    assert [f.frame_id for f in taken] == list(range(110))
    assert [f.frame_id for f in taken if f.log_position is None] == list(range(104, 110))
    buffer.settle(taken[103].log_position)
    assert buffer.counters()["spool_frames"] == 0
    buffer.put_many([frame(110, 10_000)])
    assert take(buffer)[0].log_position is not None, "the emptied log takes frames again"


def test_a_write_ahead_log_replays_around_a_corrupt_frame(tmp_path):
    buffer = logged(tmp_path, segment_bytes=1 << 20)
    buffer.put_many([frame(n) for n in range(10)])
    killed(buffer)
    corrupt(tmp_path, 4)
    again = logged(tmp_path)
    assert deliver_all(again) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert again.counters()["spool_frames_corrupt"] == 1 and again.counters()["spool_frames"] == 0


def test_a_spool_left_without_the_log_is_replayed_whole_by_one_with_it(tmp_path):
    buffer = spooled(tmp_path, segment_bytes=8 * 1024)
    buffer.put_many([frame(n) for n in range(100)])
    assert numbers(buffer.get_many(60_000, 0)) == list(range(60))
    buffer.settle()
    buffer.close()
    buffer.release()  # frames 60..64 saved in front of the spooled 65..99, in a segment numbered after theirs
    again = logged(tmp_path)
    assert deliver_all(again) == list(range(60, 100))
    assert again.counters()["spool_frames"] == 0 and segment_files(tmp_path) == []


def test_the_status_of_an_egress_with_a_spool_shows_its_buffer_fill(tmp_path):
    from ddc.config import settings_from_mapping
    from ddc.egress import EgressLink
    from conftest import free_udp_port

    settings = settings_from_mapping({"role": "egress", "links": {"logs": {
        "transport": {"listen": f"127.0.0.1:{free_udp_port()}"},
        "sink": {"type": "udp", "target": f"127.0.0.1:{free_udp_port()}"},
        "spool": {"path": str(tmp_path / "spool"), "write_ahead": True}}}})
    link = EgressLink("logs", settings.links["logs"])
    link.start()
    try:
        status = link.status()
        assert status["buffer_fill"] == 0 and status["counters"]["spool_frames"] == 0
    finally:
        assert link.stop(5)


def test_both_frame_buffers_offer_the_whole_frame_buffer_protocol(tmp_path):
    """The egress holds either; a member one of them lacks (as capacity_bytes once was) fails here, not in a
    running proxy's /status."""
    import inspect
    from ddc.stage_buffer import FrameBuffer

    memory = StageBuffer(1 << 20, "block")
    buffers = (memory, SpooledBuffer(memory, DiskSpool(tmp_path, 1 << 20, 64 << 10), "test", lambda item: 1))
    members = [name for name in dir(FrameBuffer) if not name.startswith("_")]
    assert "capacity_bytes" in FrameBuffer.__annotations__ and len(members) >= 8
    for buffer in buffers:
        assert isinstance(buffer, FrameBuffer), type(buffer).__name__
        assert buffer.capacity_bytes == 1 << 20
        for name in members:
            wanted = getattr(FrameBuffer, name)
            offered = getattr(type(buffer), name)
            assert isinstance(offered, property) == isinstance(wanted, property), (type(buffer).__name__, name)
            if callable(wanted):
                assert list(inspect.signature(offered).parameters)[:len(inspect.signature(wanted).parameters)] \
                    == list(inspect.signature(wanted).parameters), (type(buffer).__name__, name)


def test_frames_memory_refuses_while_the_sink_waits_are_not_read_before_the_older_ones_in_memory(tmp_path):
    """The receive thread's put_many lands between the sink's empty wait on memory and its look at the log (as a
    thread switch there does): the sink must still get the frames in memory first."""
    import threading

    memory = StageBuffer(4000, "block")
    buffer = SpooledBuffer(memory, DiskSpool(tmp_path, 1 << 20, 64 << 10), "test", lambda item: 1, write_ahead=True)
    waiting, put = threading.Event(), threading.Event()
    real_get = memory.get_many

    def get_then_let_the_receiver_in(max_bytes, timeout):
        taken = real_get(max_bytes, timeout)
        if not taken and not waiting.is_set():
            waiting.set()
            put.wait(5)
        return taken

    memory.get_many = get_then_let_the_receiver_in

    def receive():
        waiting.wait(5)
        buffer.put_many([frame(n) for n in range(6)])  # memory takes 0..3, the log alone 4 and 5
        put.set()

    receiver = threading.Thread(target=receive)
    receiver.start()
    first = buffer.get_many(1 << 20, 0.05)
    receiver.join()
    assert [f.frame_id for f in first + take(buffer, 1 << 20) + take(buffer, 1 << 20)] == list(range(6))


def test_a_full_disk_while_saving_the_logs_place_neither_stops_the_sink_nor_leaves_a_segment_without_file(
        tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    real_write_text = Path.write_text

    def disk_full(full: bool) -> None:
        def refuse(*arguments, **options):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(Path, "write_text", refuse if full else real_write_text)

    buffer = logged(tmp_path, memory_bytes=3000, segment_bytes=8000)
    buffer.put_many([frame(n) for n in range(7)])  # fills the first segment; memory holds two
    disk_full(True)
    assert buffer.put_many([frame(7)]) == 0, "a new segment cannot be queued: the frame is dropped, counted"
    assert buffer.counters()["spool_records_dropped"] == 1
    taken = take(buffer)
    buffer.settle(taken[-1].log_position)  # the queue file cannot be saved: logged, not raised
    disk_full(False)
    assert buffer.put_many([frame(8), frame(9)]) == 2
    assert [f.frame_id for f in taken] + deliver_all(buffer) == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    assert buffer.counters()["spool_frames"] == 0 and segment_files(tmp_path) == []


def test_a_corrupt_last_entry_of_the_log_is_released_with_the_frames_before_it(tmp_path):
    buffer = logged(tmp_path, segment_bytes=1 << 20)
    buffer.put_many([frame(n) for n in range(5)])
    killed(buffer)
    corrupt(tmp_path, 4)
    again = logged(tmp_path)
    assert deliver_all(again) == [0, 1, 2, 3]
    assert again.counters()["spool_frames"] == 0 and segment_files(tmp_path) == []
