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


def test_a_corrupt_frame_is_counted_and_skipped(tmp_path):
    buffer = spooled(tmp_path, segment_bytes=1 << 20)
    buffer.put_many([frame(n) for n in range(70)])
    killed(buffer)
    [segment] = segment_files(tmp_path)
    with open(tmp_path / segment, "r+b") as file:
        file.seek(2 * (1000 + ENTRY.size) + ENTRY.size + 500)
        file.write(b"\xff")
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
