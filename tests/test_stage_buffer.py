import threading
import time

import pytest

from ddc.stage_buffer import StageBuffer


def test_block_policy_waits_for_room_and_keeps_order():
    buffer = StageBuffer(100, "block")
    frames = [bytes([i]) * 40 for i in range(10)]
    producer = threading.Thread(target=buffer.put_many, args=(frames,))
    producer.start()
    taken = []
    while len(taken) < len(frames):
        taken += buffer.get_many(60, 1.0)
    producer.join(5)
    assert taken == frames
    assert buffer.counters()["buffer_records_dropped"] == 0
    assert buffer.counters()["buffer_peak_bytes"] <= 100


def test_an_oversized_frame_passes_when_the_buffer_is_empty():
    buffer = StageBuffer(10, "block")
    assert buffer.put_many([b"y" * 100]) == 1


def test_close_wakes_a_blocked_producer_and_consumers_drain():
    buffer = StageBuffer(50, "block")
    buffer.put_many([b"a" * 40])
    producer = threading.Thread(target=buffer.put_many, args=([b"b" * 40],))
    producer.start()
    time.sleep(0.05)
    buffer.close()
    producer.join(5)
    assert not producer.is_alive()
    assert buffer.get_many(1000, 0) == [b"a" * 40]
    assert buffer.drained
    assert buffer.get_many(1000, 1.0) == []


def test_get_many_times_out_empty():
    started = time.monotonic()
    assert StageBuffer(100, "drop").get_many(100, 0.05) == []
    assert time.monotonic() - started >= 0.04


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="when_full"):
        StageBuffer(100, "maybe")


def test_frames_dropped_from_a_full_buffer_count_as_the_records_they_hold():
    from ddc._core.records import batch_record_count, encode_batch
    frames = [encode_batch([(b"", b"v" * 100)] * 300) for _ in range(4)]
    buffer = StageBuffer(2 * len(frames[0]), "drop", records_in=batch_record_count)
    assert buffer.put_many(frames) == 2
    counters = buffer.counters()
    assert counters["buffer_items_in"] == 2
    assert counters["buffer_records_dropped"] == 2 * 300
    assert counters["buffer_bytes_dropped"] == 2 * len(frames[0])
    assert batch_record_count(b"short") == 0
