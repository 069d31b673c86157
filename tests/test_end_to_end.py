"""Two real `ddc run` processes on loopback: UDP in, across a real UDP link, UDP out."""

import collections
import hashlib
import os
import random
import re
import signal
import socket
import threading
import time

import pytest

from ddc._core import wire
from ddc._core.receiver import COUNTER_NAMES
from conftest import stop_pair, where_it_went
from traffic import random_payloads, send_paced

DROP_REASONS = tuple(name for name in COUNTER_NAMES if name.startswith("dropped_"))


def assert_no_loss(ingress_summary, egress_summary, count):
    assert ingress_summary["source_datagrams_received"] == count
    assert ingress_summary["records_sent"] == count
    assert ingress_summary["records_dropped"] == 0
    assert egress_summary["records_received"] == count
    assert egress_summary["sink_datagrams_sent"] == count
    assert egress_summary["datagrams_lost"] == 0
    assert egress_summary["frames_lost"] == 0
    assert egress_summary["frames_completed"] == ingress_summary["frames_sent"]
    assert egress_summary["peer_datagrams_sent"] == ingress_summary["datagrams_sent"]
    assert egress_summary["buffer_records_dropped"] == 0
    assert ingress_summary["source_kernel_drops"] == 0
    assert egress_summary["kernel_receive_drops"] == 0


@pytest.mark.timeout(600)
def test_100k_random_datagrams_arrive_exactly(link_pair):
    count = 100_000
    payloads = random_payloads(count, 60_000, seed=2)
    # Offered well below what the link does alone, with a buffer that absorbs scheduling stalls:
    # this test is about exactness on a shared 2-core machine, not speed (bench/ measures that).
    source_port, _, collector, ingress, egress, _ = link_pair(
        ingress_extra='rate = "2Gbit/s"\n[links.stream.buffer]\nsize = "256MiB"')
    send_paced(source_port, payloads, bytes_per_second=100e6)
    delivered = collector.wait_for(count, timeout=120)
    ingress_summary, egress_summary = stop_pair(ingress, egress)
    assert delivered == count, (where_it_went(ingress_summary, egress_summary)
                                + f"; the collector's socket dropped {collector.kernel_drops.read()}")
    expected = collections.Counter(hashlib.blake2b(p, digest_size=16).digest() for p in payloads)
    assert collector.digests == expected
    assert_no_loss(ingress_summary, egress_summary, count)
    assert all(egress_summary[reason] == 0 for reason in DROP_REASONS), egress_summary
    assert not ingress.unparsed_or_tracebacks() and not egress.unparsed_or_tracebacks()


def garbage_datagrams(session_id_seen_never):
    valid = wire.encode_datagram(wire.TYPE_DATA, session_id_seen_never, 0, b"0123456789" * 10, fragment_count=1)
    chooser = random.Random(5)
    kinds = collections.Counter()
    datagrams = []

    def add(kind, data):
        kinds[kind] += 1
        datagrams.append(data)

    for _ in range(300):
        add("dropped_truncated", valid[:chooser.randint(0, len(valid) - 1)])
        add("dropped_bad_magic", bytes([chooser.randrange(0, 0xDD)]) + os.urandom(chooser.randint(wire.HEADER_BYTES, 1400)))
        add("dropped_bad_magic", b"\x00" + os.urandom(65000))
        add("dropped_unknown_version", valid[:2] + bytes([chooser.choice([0, 1, 3, 255])]) + valid[3:])
        flipped = bytearray(valid)
        flipped[chooser.randrange(12, len(valid))] ^= 1 << chooser.randrange(8)
        add("dropped_bad_checksum", bytes(flipped))
        add("dropped_malformed", wire.encode_datagram(wire.TYPE_DATA, session_id_seen_never, 1, b"ab", fragment_index=3,
                                                      fragment_count=2, frame_length=4))
        add("dropped_unknown_type", wire.encode_datagram(77, session_id_seen_never, 2, b""))
    chooser.shuffle(datagrams)
    return datagrams, kinds


@pytest.mark.timeout(300)
def test_garbage_at_the_egress_port_is_counted_and_the_stream_survives(link_pair):
    count = 20_000
    payloads = random_payloads(count, 4000, seed=3)
    source_port, link_port, collector, ingress, egress, _ = link_pair()
    garbage, kinds = garbage_datagrams(session_id_seen_never=0x0BADBADBADBAD)

    def attack():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for datagram in garbage:
            sock.sendto(datagram, ("127.0.0.1", link_port))
            time.sleep(0.0005)
        sock.close()

    attacker = threading.Thread(target=attack)
    attacker.start()
    send_paced(source_port, payloads, bytes_per_second=20e6)
    attacker.join()
    delivered = collector.wait_for(count, timeout=60)
    ingress_summary, egress_summary = stop_pair(ingress, egress)
    assert delivered == count, where_it_went(ingress_summary, egress_summary)
    expected = collections.Counter(hashlib.blake2b(p, digest_size=16).digest() for p in payloads)
    assert collector.digests == expected
    assert_no_loss(ingress_summary, egress_summary, count)
    for reason in DROP_REASONS:
        assert egress_summary[reason] == kinds.get(reason, 0), (reason, egress_summary)
    assert egress_summary["sessions_started"] == 1
    assert not egress.unparsed_or_tracebacks()


@pytest.mark.timeout(300)
def test_a_killed_ingress_is_recognised_as_a_new_session(link_pair, start_ddc):
    source_port, _, collector, ingress, egress, ingress_config = link_pair()
    first = random_payloads(2000, 2000, seed=4)
    send_paced(source_port, first, bytes_per_second=10e6)
    assert collector.wait_for(len(first), timeout=30) == len(first)
    first_session = egress.wait_for(lambda line: "receiving session" in line.get("message", ""))["session_id"]

    ingress.kill()
    restarted = start_ddc("ingress", ingress_config)
    restarted.wait_until_ready()
    second = random_payloads(2000, 2000, seed=5)
    send_paced(source_port, second, bytes_per_second=10e6)
    assert collector.wait_for(len(first) + len(second), timeout=30) == len(first) + len(second)

    event = egress.wait_for(lambda line: "new sender session" in line.get("message", ""))
    assert event["previous_session_id"] == first_session
    assert event["session_id"] != first_session
    assert egress.process.poll() is None, "the egress must keep running across an ingress restart"
    ingress_summary, egress_summary = stop_pair(restarted, egress)
    assert egress_summary["sessions_started"] == 2
    assert egress_summary["records_received"] == len(first) + len(second)
    expected = collections.Counter(hashlib.blake2b(p, digest_size=16).digest() for p in first + second)
    assert collector.digests == expected


@pytest.mark.timeout(120)
@pytest.mark.parametrize("rate, count", [("2Mbit/s", 500), ("300kbit/s", 40)])
def test_an_egress_stopped_with_its_ingress_takes_what_the_ingress_drains(link_pair, rate, count):
    """Both proxies of a pair stopped at once (both releases removed together, one systemd stopping both): the
    ingress drains its buffer at the link's rate, which takes 0.4 to 1 s here, and counts it sent. The egress
    goes on receiving until the sender's shutdown, so it loses none of it; on a slow link too, where the
    sender's batches come 80 ms apart."""
    from datetime import datetime

    source_port, _, collector, ingress, egress, _ = link_pair(ingress_extra=f'rate = "{rate}"')
    payloads = random_payloads(count, 1000, seed=12)
    send_paced(source_port, payloads, bytes_per_second=100e6)
    time.sleep(0.1)  # the ingress has read them all from its socket, and sent a few
    for proxy in (ingress, egress):
        proxy.process.send_signal(signal.SIGTERM)
    # Each exits on its own; DdcProcess.stop() signals again, which kills a process already in its interpreter's
    # shutdown (the handlers are gone by then).
    egress.process.wait(30)
    assert ingress.stop() == 0 and egress.stop() == 0
    ingress_summary, egress_summary = ingress.summary("stream"), egress.summary("stream")
    assert ingress_summary["records_sent"] == count, where_it_went(ingress_summary, egress_summary)
    assert egress_summary["records_received"] == count, where_it_went(ingress_summary, egress_summary)
    assert collector.wait_for(count, timeout=10) == count
    stamps = {line["message"]: datetime.fromisoformat(line["time"]) for line in ingress.lines()
              if line.get("message") in ("received SIGTERM, shutting down", "link stream: drained and sent shutdown")}
    drained = stamps["link stream: drained and sent shutdown"] - stamps["received SIGTERM, shutting down"]
    assert drained.total_seconds() > 0.2, f"the ingress drained in {drained}: the egress had little to wait for"


@pytest.mark.timeout(120)
def test_heartbeats_carry_the_ingress_counters_while_idle(link_pair):
    source_port, _, collector, ingress, egress, _ = link_pair()
    payloads = random_payloads(50, 500, seed=6)
    send_paced(source_port, payloads, bytes_per_second=1e6)
    assert collector.wait_for(len(payloads), timeout=20) == len(payloads)
    stats = egress.wait_for(lambda line: line.get("event") == "link stats"
                            and line.get("peer_records_sent") == len(payloads), timeout=10)
    assert stats["datagrams_lost"] == 0
    assert stats["peer_datagrams_sent"] >= stats["highest_sequence"]
    stop_pair(ingress, egress)


@pytest.mark.timeout(120)
def test_filtered_records_are_counted_on_both_sides_and_logged_with_their_source(link_pair):
    source_port, _, collector, ingress, egress, _ = link_pair(
        ingress_telemetry='log_level = "debug"',
        ingress_extra='\n[[links.stream.filters]]\ntype = "max_size"\nmax_bytes = "500"')
    payloads = random_payloads(1000, 1000, seed=8)
    kept = [payload for payload in payloads if len(payload) <= 500]
    send_paced(source_port, payloads, bytes_per_second=2e6)
    assert collector.wait_for(len(kept), timeout=30) == len(kept)
    ingress_summary, egress_summary = stop_pair(ingress, egress)
    assert collector.digests == collections.Counter(hashlib.blake2b(p, digest_size=16).digest() for p in kept)
    dropped = len(payloads) - len(kept)
    assert ingress_summary["filter_max_size_dropped"] == dropped
    assert ingress_summary["filter_max_size_errors"] == 0
    assert ingress_summary["records_dropped"] == dropped
    assert egress_summary["peer_records_dropped"] == dropped
    assert egress_summary["frames_lost"] == 0
    filtered = [line for line in ingress.lines() if "filter max_size dropped" in line.get("message", "")]
    assert 1 <= len(filtered) <= min(dropped, 10), "drop log lines are limited to 10 per filter per 10 s"
    assert all(re.fullmatch(r"127\.0\.0\.1:\d+", line["source_address"]) for line in filtered)


@pytest.mark.timeout(120)
def test_a_keyed_link_rekeys_between_frames_without_losing_a_record(link_pair, tmp_path):
    """rekey_interval of one second: every second the ingress goes on under a new key, between two frames, and
    the egress follows, with FEC on."""
    key = tmp_path / "link.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    state = tmp_path / "state"
    source_port, _, collector, ingress, egress, _ = link_pair(
        ingress_extra=f'key = {{ id = 1, file = "{key}" }}\nrekey_interval = "1s"\nfec = "25%"\n'
                      f'state_directory = "{state}"',
        egress_extra=f'keys = [{{ id = 1, file = "{key}" }}]\nstate_directory = "{state}"')
    payloads = random_payloads(6000, 1500, seed=21)
    send_paced(source_port, payloads, bytes_per_second=1.2e6)  # about 3.7 s: three or four rekeys in it
    assert collector.wait_for(len(payloads), timeout=30) == len(payloads)
    ingress_summary, egress_summary = stop_pair(ingress, egress)
    expected = collections.Counter(hashlib.blake2b(p, digest_size=16).digest() for p in payloads)
    assert collector.digests == expected
    assert ingress_summary["sessions_rekeyed"] >= 2
    assert egress_summary["sessions_started"] == 1
    assert egress_summary["sessions_rekeyed"] == ingress_summary["sessions_rekeyed"]
    assert egress_summary["frames_abandoned"] == 0 and egress_summary["frames_lost"] == 0
    assert egress_summary["datagrams_lost"] == 0 and egress_summary["dropped_stale_session"] == 0
    assert ingress.wait_for(lambda line: "the session is" in line.get("message", ""))
    import json
    last_session = json.loads((state / "stream.ingress.json").read_text())["session_id"]
    assert json.loads((state / "stream.egress.json").read_text())["session_id"] == last_session


@pytest.mark.timeout(120)
def test_a_restarted_egress_refuses_replays_of_what_it_delivered_before(start_ddc, tmp_path):
    """Recorded authentic datagrams, replayed at an egress that restarted (SIGTERM, then SIGKILL), deliver nothing;
    the live sender goes on."""
    from flood import keyed_pair_through_relay

    source_port, link_port, relay, target, collector, ingress, egress = keyed_pair_through_relay(
        start_ddc, tmp_path, 1000)
    egress_config = egress.config_path.read_text()
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        first = random_payloads(3000, 1000, seed=31)
        send_paced(source_port, first, bytes_per_second=5e6)
        assert collector.wait_for(len(first), timeout=30) == len(first)
        recorded = list(relay.kept)
        for stop in ("clean", "killed"):
            if stop == "clean":
                assert egress.stop() == 0
            else:
                egress.kill()  # at once: what it delivered is in its state file already
            egress = start_ddc("egress", egress_config)
            egress.wait_until_ready()
            for datagram in recorded:
                attacker.sendto(datagram, ("127.0.0.1", link_port))
            time.sleep(0.5)
            assert collector.count == len(first), f"replays delivered after a {stop} restart"
        second = random_payloads(500, 1000, seed=32)
        send_paced(source_port, second, bytes_per_second=5e6)
        assert collector.wait_for(len(first) + len(second), timeout=30) == len(first) + len(second)
        ingress_summary, egress_summary = stop_pair(ingress, egress)
    finally:
        attacker.close()
        relay.close()
        collector.stop.set()
        collector.join(2)
        target.close()
    expected = collections.Counter(hashlib.blake2b(p, digest_size=16).digest() for p in first + second)
    assert collector.digests == expected
    data_replays = sum(1 for datagram in recorded if datagram[3] != wire.TYPE_PARITY)
    assert egress_summary["dropped_too_old"] >= data_replays and egress_summary["sessions_started"] == 1
