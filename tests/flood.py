"""A hostile flood at a live, keyed egress with FEC: the suite runs 100 000 datagrams, bench/hostile_flood.py a million.

Garbage, corrupted and forged datagrams, forged FEC blocks (parity without a key, with a wrong tag, with another
key), a recorded older session with its parity, and replays of the live session's own authentic data and parity
arrive at the egress while a real stream crosses the link. The stream must arrive byte for byte, nothing of the
attack may be delivered, every bad datagram must be counted under its reason, and RSS must stay flat.
"""

import base64
import collections
import hashlib
import random
import socket
import threading
import time

from ddc._core import wire
from ddc._core.receiver import COUNTER_NAMES
from conftest import free_udp_port, link_pair_configs, stop_pair, udp_receiver, where_it_went
from forge import parity_for, with_checksum
from protocol_reference import fragment_all, sealed
from relay import FrameDroppingRelay
from traffic import Collector, random_payloads, send_paced

KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))
SECOND = 1 << 32
DROP_REASONS = tuple(name for name in COUNTER_NAMES if name.startswith("dropped_"))
# shares of the attack, by the counter each kind must land in ("replayed_*": the live session's own datagrams)
SHARES = {"dropped_bad_magic": 0.16, "dropped_truncated": 0.08, "dropped_bad_checksum": 0.12, "dropped_forged": 0.26,
          "dropped_unknown_key": 0.08, "dropped_unauthenticated": 0.14, "dropped_stale_session": 0.08}


def rss_bytes(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def is_parity(datagram: bytes) -> bool:
    return len(datagram) > 3 and datagram[3] == wire.TYPE_PARITY


def attack_datagrams(replayable: list[bytes], chooser: random.Random, total: int) -> tuple[list[bytes], dict]:
    """total bad datagrams and, for each counter, how many of them the egress must count there."""
    now_seconds = int(time.time())
    old_session = (now_seconds - 3600) * SECOND + 1
    template = sealed_stream([b"t" * 120], old_session)[0]
    unsealed = fragment_all([b"u" * 120], session_id=old_session)[0][0]
    data = [wire.encode_datagram(wire.TYPE_DATA, old_session, index, bytes([index]) * 90, frame_id=index, fec_block=7,
                                 fec_index=index, fec_count=4) for index in range(4)]
    unsealed_parity = parity_for(data, 2, block=7, session_id=old_session)
    sealed_parity = [sealed(datagram, KEY, 1) for datagram in unsealed_parity]
    replayed_data = [datagram for datagram in replayable if not is_parity(datagram)]
    replayed_parity = [datagram for datagram in replayable if is_parity(datagram)]
    plan = {reason: int(share * total) for reason, share in SHARES.items()}
    plan["replayed_data"], plan["replayed_parity"] = len(replayed_data), len(replayed_parity)
    plan["dropped_bad_magic"] += total - sum(plan.values())
    datagrams = []
    for _ in range(plan["dropped_bad_magic"]):
        datagrams.append(bytes([chooser.randrange(0xDD)]) + chooser.randbytes(chooser.randint(56, 1400)))
    for _ in range(plan["dropped_truncated"]):
        datagrams.append(chooser.randbytes(chooser.randint(0, 55)))
    for _ in range(plan["dropped_bad_checksum"]):
        flipped = bytearray(chooser.choice((template, sealed_parity[0])))
        flipped[chooser.randrange(12, len(flipped))] ^= 1 << chooser.randrange(8)
        datagrams.append(bytes(flipped))
    for index in range(plan["dropped_forged"]):
        kind = index % 5
        if kind < 2:  # an authentic datagram or parity altered, its checksum made right again
            forged = bytearray(template if kind == 0 else sealed_parity[index % 2])
            forged[chooser.randrange(wire.HEADER_BYTES, len(forged))] ^= 1 << chooser.randrange(8)
            datagrams.append(with_checksum(forged))
        elif kind == 2:  # parity of a forged block, sealed with another key
            datagrams.append(sealed(unsealed_parity[index % 2], OTHER_KEY, 1))
        else:
            datagrams.append(sealed(fragment_all([chooser.randbytes(100)], session_id=now_seconds * SECOND + index)
                                    [0][0], OTHER_KEY, 1))
    datagrams += [sealed(unsealed, KEY, 7)] * plan["dropped_unknown_key"]
    for index in range(plan["dropped_unauthenticated"]):  # without a tag: data, and valid parity of a forged block
        datagrams.append(unsealed if index % 2 else unsealed_parity[index // 2 % 2])
    old_stream = sealed_stream([chooser.randbytes(150) for _ in range(plan["dropped_stale_session"] - 2)],
                               old_session, datagram_size=1000) + sealed_parity
    datagrams += old_stream
    datagrams += replayed_data + replayed_parity
    chooser.shuffle(datagrams)
    return datagrams, plan


def sealed_stream(frames, session_id: int, datagram_size: int = 300) -> list[bytes]:
    return [sealed(d, KEY, 1) for datagrams in fragment_all(frames, session_id=session_id,
                                                            datagram_size=datagram_size - 16) for d in datagrams]


def keyed_pair_through_relay(start_ddc, directory, keep: int) -> tuple:
    """A running keyed FEC link pair (egress with a state directory), its link through a relay that keeps copies
    of the first `keep` datagrams: (source_port, link_port, relay, target, collector, ingress, egress)."""
    key_file = directory / "link.key"
    key_file.write_text(base64.b64encode(KEY).decode())
    key_file.chmod(0o600)
    source_port, link_port = free_udp_port(), free_udp_port()
    relay = FrameDroppingRelay(link_port, keep=keep)
    relay.start()
    target = udp_receiver()
    collector = Collector(target)
    collector.start()
    ingress_config, egress_config = link_pair_configs(
        source_port, link_port, target.getsockname()[1],
        ingress_extra=f'key = {{ id = 1, file = "{key_file}" }}\nfec = "25%"',
        egress_extra=f'keys = [{{ id = 1, file = "{key_file}" }}]\nstate_directory = "{directory / "state"}"')
    ingress_config = ingress_config.replace(f"127.0.0.1:{link_port}", f"127.0.0.1:{relay.port}")
    egress = start_ddc("egress", egress_config)
    egress.wait_until_ready()
    ingress = start_ddc("ingress", ingress_config)
    ingress.wait_until_ready()
    return source_port, link_port, relay, target, collector, ingress, egress


def run_flood(start_ddc, directory, total: int, records: int, attack_pause_every: int = 200) -> dict:
    """Streams `records` payloads across a keyed FEC link while `total` hostile datagrams hit the egress."""
    source_port, link_port, relay, target, collector, ingress, egress = keyed_pair_through_relay(
        start_ddc, directory, 4000)
    try:
        payloads = random_payloads(records, 4000, seed=11)
        seconds = max(10.0, total / 40_000)  # the stream runs as long as the attack
        sender = threading.Thread(target=send_paced, args=(source_port, payloads, records * 2000 / seconds))
        sender.start()
        assert collector.wait_for(min(3000, records), timeout=30) >= min(3000, records)
        bad, plan = attack_datagrams(list(relay.kept), random.Random(12), total)
        rss_before = rss_bytes(egress.process.pid)
        rss_peak = rss_before
        attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        started = time.monotonic()
        for index, datagram in enumerate(bad):
            attacker.sendto(datagram, ("127.0.0.1", link_port))
            if index % attack_pause_every == attack_pause_every - 1:
                time.sleep(0.004)
                if index % 50_000 < attack_pause_every:
                    rss_peak = max(rss_peak, rss_bytes(egress.process.pid))
        attack_seconds = time.monotonic() - started
        attacker.close()
        sender.join()
        delivered = collector.wait_for(records, timeout=60)
        rss_after = rss_bytes(egress.process.pid)
        rss_peak = max(rss_peak, rss_after)
        ingress_summary, egress_summary = stop_pair(ingress, egress)
    finally:
        relay.close()
        collector.stop.set()
        collector.join(2)
        target.close()
    expected = collections.Counter(hashlib.blake2b(p, digest_size=16).digest() for p in payloads)
    return {"records": records, "delivered": delivered, "identical": collector.digests == expected, "plan": plan,
            "ingress": ingress_summary, "egress": egress_summary, "rss_before": rss_before, "rss_after": rss_after,
            "rss_peak": rss_peak, "attack_seconds": attack_seconds, "where": where_it_went(ingress_summary,
                                                                                         egress_summary)}


def problems(result: dict) -> list[str]:
    """What a flood run broke; empty when the egress kept every promise."""
    found = []
    egress = result["egress"]
    if result["delivered"] != result["records"] or not result["identical"]:
        found.append(f"the stream did not arrive intact: {result['delivered']} of {result['records']}; "
                     f"{result['where']}")
    for reason, count in result["plan"].items():
        if reason.startswith("dropped_") and egress[reason] != count:
            found.append(f"{reason}: counted {egress[reason]}, sent {count}")
    replayed = egress["dropped_duplicate"] + egress["dropped_too_old"]
    if replayed < result["plan"]["replayed_data"]:
        found.append(f"replayed data: {replayed} refused of {result['plan']['replayed_data']}")
    for name in ("datagrams_lost", "frames_lost", "kernel_receive_drops", "fec_blocks_unrecoverable",
                 "dropped_inconsistent_rebuild"):
        if egress[name]:
            found.append(f"{name} is {egress[name]}")
    if egress["sessions_started"] != 1:
        found.append(f"{egress['sessions_started']} sessions started; the attack must start none")
    if (egress["datagrams_received"] + egress["datagrams_recovered"]
            != egress["datagrams_accepted"] + sum(egress[reason] for reason in DROP_REASONS)):
        found.append("the egress's counters do not account for every datagram")
    if result["rss_peak"] - result["rss_before"] > 16 << 20:
        found.append(f"RSS grew from {result['rss_before']} to {result['rss_peak']} bytes")
    return found
