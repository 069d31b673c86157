"""Chaos: real `ddc run` processes (and real brokers) across `ddc diode-sim`, a seeded hostile link.

Each scenario ends by comparing what arrived with what was sent: byte for byte
for files, record by record (key, value, headers, timestamp, source
coordinates) for Kafka.
"""

import os
import time

import pytest

from conftest import free_udp_port
from kafka_harness import (KafkaPair, SteadyProducer, assert_reports_exact, assert_same_records, link_stats,
                           varied_records)
from test_streams import stream_configs

pytestmark = pytest.mark.timeout(300)


def topic_with_records(kafka_clusters, prefix: str, count: int, seed: int) -> tuple[str, list]:
    source, destination = kafka_clusters
    topic = source.new_topic(prefix, partitions=3)
    destination.create_topic(topic, partitions=3)
    records = varied_records(count, 3, seed=seed)
    source.produce(topic, records)
    return topic, records


def with_transport(config: str, extra: str) -> str:
    return config.replace("[links.bytes.transport]\n", "[links.bytes.transport]\n" + extra + "\n")


def file_across_the_simulator(start_ddc, diode_sim, tmp_path, size: int, rate: str, *impairments: str):
    """A one-shot file transfer (1 472-byte datagrams, fec = "25%") through `ddc diode-sim` with these
    impairments; both proxies must exit 0 and the file arrive whole. Returns (ingress, egress, relay counters)."""
    data = os.urandom(size)
    (tmp_path / "in.bin").write_bytes(data)
    link_port = free_udp_port()
    simulator = diode_sim(link_port, *impairments)
    ingress_config, egress_config = stream_configs(link_port, tmp_path / "in.bin", tmp_path / "out.bin")
    ingress_config = ingress_config.replace(f"127.0.0.1:{link_port}", f"127.0.0.1:{simulator.port}")
    ingress_config = ingress_config.replace("datagram_size = 65507", "datagram_size = 1472")
    ingress_config = with_transport(ingress_config.replace('rate = "2Gbit/s"', f'rate = "{rate}"'), 'fec = "25%"')
    egress = start_ddc("egress", egress_config)
    egress.wait_until_ready()
    ingress = start_ddc("ingress", ingress_config)
    assert ingress.process.wait(120) == 0
    assert egress.process.wait(60) == 0
    link = simulator.stop()
    assert (tmp_path / "out.bin").read_bytes() == data
    return ingress, egress, link


def test_a_file_crosses_a_lossy_reordering_duplicating_link_intact(start_ddc, diode_sim, tmp_path):
    ingress, egress, link = file_across_the_simulator(start_ddc, diode_sim, tmp_path, 12 << 20, "100Mbit/s",
                                                      "--loss", "5%", "--reorder", "2%", "--duplicate", "1%",
                                                      "--seed", "5")
    summary = egress.summary("bytes")
    assert link["lost_random"] > 100 and link["reordered"] > 0 and link["duplicated"] > 0
    assert summary["datagrams_recovered"] > 0 and summary["fec_blocks_unrecoverable"] == 0
    assert summary["datagrams_lost"] == 0 and summary["sink_bytes_missing"] == 0
    assert summary["datagrams_received"] == link["forwarded"]
    assert ingress.summary("bytes")["parity_sent"] > 0


def test_a_one_shot_egress_waits_for_the_shutdown_copies_still_on_the_link(start_ddc, diode_sim, tmp_path):
    """A slow link spaces the three shutdown copies tens of milliseconds apart: an egress that stopped at the
    first would count the other two as lost."""
    ingress, egress, link = file_across_the_simulator(start_ddc, diode_sim, tmp_path, 8 << 10, "2Gbit/s",
                                                      "--rate", "100kbit/s")
    summary = egress.summary("bytes")
    assert summary["shutdowns_received"] == 3 and summary["datagrams_lost"] == 0
    assert summary["datagrams_received"] == link["forwarded"] == ingress.summary("bytes")["datagrams_sent"]


@pytest.mark.apache_kafka_too
@pytest.mark.timeout(600)
def test_kafka_records_cross_a_lossy_corrupting_link_complete(start_ddc, kafka_clusters, diode_sim):
    source, destination = kafka_clusters
    topic, records = topic_with_records(kafka_clusters, "hostile", 20_000, seed=21)
    link_port = free_udp_port()
    simulator = diode_sim(link_port, "--loss", "5%", "--duplicate", "1%", "--corrupt", "0.5%", "--seed", "8")
    pair = KafkaPair(start_ddc, kafka_clusters, [topic], rate="100Mbit/s", link_port=link_port,
                     send_to_port=simulator.port, transport_extra='fec = "25%"\nbatch_max_bytes = "256KiB"')
    destination.wait_for_records(topic, len(records), timeout=180)
    ingress_summary, egress_summary = pair.stop()
    link = simulator.stop()
    assert_same_records(source.read_all(topic), destination.read_all(topic), topic)
    assert pair.missing_reports() == []
    assert link["lost_random"] > 0 and link["corrupted"] > 0
    assert egress_summary["datagrams_recovered"] > 0 and egress_summary["datagrams_lost"] == 0
    damaged = ("bad_checksum", "bad_magic", "unknown_version", "truncated", "malformed", "unknown_type")
    assert sum(egress_summary[f"dropped_{reason}"] for reason in damaged) >= link["corrupted"]
    assert egress_summary["dropped_bad_checksum"] > 0
    assert egress_summary["kafka_records_written"] == len(records)


@pytest.mark.apache_kafka_too
@pytest.mark.timeout(600)
@pytest.mark.parametrize("loss, seed", [(["--loss", "2%"], 31), (["--loss", "5%"], 32),
                                        (["--burst-rate", "0.2%", "--burst-length", "10"], 33)],
                         ids=["2%", "5%", "2% in bursts of 10"])
def test_bursty_kafka_production_with_small_frames_crosses_lossy_link_whole(start_ddc, kafka_clusters, diode_sim,
                                                                            loss, seed):
    """Issue #21: two bursts of production with a trickle between them make full frames, frame tails and
    small frames; at 2 % and 5 % random loss, and 2 % in bursts of 10 consecutive datagrams, with
    fec = "25%" no block may be the weak one."""
    source, destination = kafka_clusters
    topic = source.new_topic("bursty", partitions=4)
    destination.create_topic(topic, partitions=4)
    records = varied_records(20_000, 4, seed=seed)
    for record in records[::1000]:
        record["value"] = os.urandom(200_000)
    link_port = free_udp_port()
    simulator = diode_sim(link_port, *loss, "--seed", str(seed))
    pair = KafkaPair(start_ddc, kafka_clusters, [topic], rate="30Mbit/s", link_port=link_port,
                     send_to_port=simulator.port, transport_extra='fec = "25%"')
    source.produce(topic, records[:9_000])
    trickle = SteadyProducer(source, topic, records[9_000:9_400], seconds=3)
    trickle.start()
    trickle.join()
    source.produce(topic, records[9_400:])
    destination.wait_for_records(topic, len(records), timeout=240)
    ingress_summary, egress_summary = pair.stop()
    link = simulator.stop()
    assert_same_records(source.read_all(topic), destination.read_all(topic), topic)
    assert pair.missing_reports() == []
    assert link["lost_random"] + link["lost_burst"] > 0 and egress_summary["datagrams_recovered"] > 0
    assert egress_summary["fec_blocks_unrecoverable"] == 0 and egress_summary["datagrams_lost"] == 0
    assert egress_summary["kafka_records_written"] == len(records)
    assert ingress_summary["parity_beyond_share_sent"] > 0


@pytest.mark.timeout(600)
def test_kafka_loss_beyond_what_fec_repairs_is_reported_exactly(start_ddc, kafka_clusters, diode_sim):
    source, destination = kafka_clusters
    topic, records = topic_with_records(kafka_clusters, "beyond-fec", 30_000, seed=23)
    link_port = free_udp_port()
    # Gilbert-Elliott bursts of 20 datagrams on average: more than a 16 + 2 block can rebuild.
    simulator = diode_sim(link_port, "--gilbert-enter", "0.3%", "--gilbert-leave", "5%", "--loss", "1%",
                          "--seed", "4")
    pair = KafkaPair(start_ddc, kafka_clusters, [topic], rate="40Mbit/s", link_port=link_port,
                     send_to_port=simulator.port,
                     transport_extra='fec = { data = 16, parity = 2, interleave = 1 }\nbatch_max_bytes = "64KiB"')
    pair.ingress.wait_for(lambda line: line.get("kafka_records_consumed") == len(records)
                          and line.get("kafka_records_unacknowledged") == 0, timeout=180)
    time.sleep(5)  # position announcements reveal a lost tail; partial frames time out
    ingress_summary, egress_summary = pair.stop()
    link = simulator.stop()
    source_messages = source.read_all(topic)
    arrived = destination.read_all(topic)
    reports = pair.missing_reports()
    assert link["lost_gilbert"] > 0
    assert egress_summary["fec_blocks_unrecoverable"] > 0 and egress_summary["datagrams_recovered"] > 0
    assert reports and len(arrived) < len(records)
    assert_reports_exact(source_messages, arrived, reports, topic)
    delivered = {(topic, message.partition(), message.offset()) for message in arrived}
    assert len(delivered) == len(arrived), "a record was written twice"


@pytest.mark.timeout(600)
def test_an_egress_paused_for_ten_seconds_mid_stream_loses_nothing(start_ddc, kafka_clusters):
    """Issue #21: a paused egress (SIGSTOP: a stalled VM, a debugger, a long GC in a neighbour) reads nothing
    for 10 s; what arrives meanwhile waits in its receive buffer (64 MiB here, more than 10 s at 30 Mbit/s
    holds), and nothing is lost or written twice once it runs again."""
    import signal

    source, destination = kafka_clusters
    topic = source.new_topic("paused", partitions=3)
    destination.create_topic(topic, partitions=3)
    records = varied_records(30_000, 3, seed=41)
    pair = KafkaPair(start_ddc, kafka_clusters, [topic], rate="30Mbit/s")
    producer = SteadyProducer(source, topic, records, seconds=15)
    producer.start()
    pair.egress.wait_for(lambda line: line.get("kafka_records_written", 0) > 1_000, timeout=60)
    os.kill(pair.egress.process.pid, signal.SIGSTOP)
    try:
        sent_before = link_stats(pair.ingress).get("records_sent", 0)
        time.sleep(10)
        sent_while_paused = link_stats(pair.ingress).get("records_sent", 0) - sent_before
    finally:
        os.kill(pair.egress.process.pid, signal.SIGCONT)
    producer.join()
    destination.wait_for_records(topic, len(records), timeout=180)
    ingress_summary, egress_summary = pair.stop()
    assert_same_records(source.read_all(topic), destination.read_all(topic), topic)
    assert pair.missing_reports() == []
    assert sent_while_paused > 5_000, "the ingress sent little while the egress was paused; nothing was tested"
    assert egress_summary["kernel_receive_drops"] == 0 and egress_summary["datagrams_lost"] == 0
    assert egress_summary["kafka_records_duplicate"] == 0
