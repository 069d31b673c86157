"""Properties of sequence tracking and reassembly, driven datagram by datagram."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ddc._core import wire
from ddc._core.receiver import COUNTER_NAMES, LinkReceiver
from protocol_reference import fragment, fragment_all

DROP_REASONS = tuple(name for name in COUNTER_NAMES if name.startswith("dropped_"))


def assert_every_datagram_accounted_for(counters):
    dropped = sum(counters[reason] for reason in DROP_REASONS)
    assert counters["datagrams_received"] + counters["datagrams_recovered"] == counters["datagrams_accepted"] + dropped, counters


def feed_all(receiver, datagrams, now_ns=0):
    delivered = {}
    for datagram in datagrams:
        for frame in receiver.feed(datagram, now_ns=now_ns):
            assert frame.frame_id not in delivered, "a frame was delivered twice"
            delivered[frame.frame_id] = bytes(frame)
    return delivered


network_plan = st.fixed_dictionaries({
    "frames": st.lists(st.binary(max_size=3000), min_size=1, max_size=12),
    "datagram_size": st.integers(60, 700),
    "loss": st.sampled_from([0.0, 0.05, 0.3]),
    "duplication": st.sampled_from([0.0, 0.1, 0.5]),
    "seed": st.integers(0, 2**32 - 1),
})


@settings(max_examples=300)
@given(network_plan)
def test_exactly_the_complete_frames_arrive_whatever_the_network_does(plan):
    chooser = random.Random(plan["seed"])
    per_frame = fragment_all(plan["frames"], datagram_size=plan["datagram_size"])
    kept_per_frame = [[d for d in datagrams if chooser.random() >= plan["loss"]] for datagrams in per_frame]
    stream = [d for kept in kept_per_frame for d in kept]
    duplicates = [d for d in stream if chooser.random() < plan["duplication"]]
    stream += duplicates
    chooser.shuffle(stream)

    receiver = LinkReceiver(max_frame_bytes=1 << 20, max_frames_in_flight=64, max_bytes_in_flight=1 << 22)
    delivered = feed_all(receiver, stream)
    receiver.expire(everything=True)
    counters = receiver.counters()

    complete = {i for i, (kept, sent) in enumerate(zip(kept_per_frame, per_frame)) if len(kept) == len(sent)}
    assert delivered == {i: plan["frames"][i] for i in complete}
    assert counters["frames_completed"] == len(complete)
    assert counters["dropped_duplicate"] == len(duplicates)
    assert_every_datagram_accounted_for(counters)

    seen_frames = [i for i, kept in enumerate(kept_per_frame) if kept]
    if seen_frames:
        span = max(seen_frames) - min(seen_frames) + 1
        assert counters["frames_lost"] == span - len(complete)
        partial = [i for i in seen_frames if i not in complete]
        assert counters["frames_timed_out"] == len(partial)
        assert counters["fragments_missing"] == sum(len(per_frame[i]) - len(kept_per_frame[i]) for i in partial)
        sequences = [wire.decode_datagram(d)["sequence"] for kept in kept_per_frame for d in kept]
        assert counters["datagrams_lost"] == max(sequences) - min(sequences) + 1 - len(sequences)
    assert counters["frames_in_flight"] == 0 and counters["bytes_in_flight"] == 0


@settings(max_examples=150)
@given(st.lists(st.binary(min_size=1, max_size=4000), min_size=2, max_size=15), st.integers(0, 2**32 - 1),
       st.integers(1, 4), st.integers(4096, 12000))
def test_memory_stays_within_bounds_under_any_permutation(frames, seed, max_frames, max_bytes):
    stream = [d for datagrams in fragment_all(frames, datagram_size=300) for d in datagrams]
    random.Random(seed).shuffle(stream)
    receiver = LinkReceiver(max_frame_bytes=4096, max_frames_in_flight=max_frames, max_bytes_in_flight=max_bytes)
    delivered = {}
    for datagram in stream:
        for frame in receiver.feed(datagram, now_ns=0):
            delivered[frame.frame_id] = bytes(frame)
        assert receiver.bytes_in_flight <= max_bytes
        assert receiver.frames_in_flight <= max_frames
    assert receiver.peak_bytes_in_flight <= max_bytes
    for frame_id, data in delivered.items():
        assert data == frames[frame_id]
    receiver.expire(everything=True)
    counters = receiver.counters()
    assert_every_datagram_accounted_for(counters)
    assert counters["frames_completed"] == len(delivered)
    assert counters["frames_completed"] + counters["frames_lost"] == len(frames)


def test_partial_frames_time_out_and_late_fragments_are_counted():
    datagrams = fragment(b"x" * 1000, session_id=1, frame_id=0, first_sequence=0, datagram_size=300)
    receiver = LinkReceiver(frame_timeout_seconds=1.0)
    assert feed_all(receiver, datagrams[:-1], now_ns=0) == {}
    receiver.expire(now_ns=999_000_000)
    assert receiver.counters()["frames_timed_out"] == 0
    receiver.expire(now_ns=1_000_000_000)
    assert receiver.counters()["frames_timed_out"] == 1
    assert receiver.counters()["fragments_missing"] == 1
    assert feed_all(receiver, datagrams[-1:], now_ns=2_000_000_000) == {}
    counters = receiver.counters()
    assert counters["dropped_late_fragment"] == 1
    assert counters["frames_lost"] == 1
    assert_every_datagram_accounted_for(counters)


def test_oversized_frames_are_refused_before_allocation():
    receiver = LinkReceiver(max_frame_bytes=2048, max_bytes_in_flight=4096)
    huge = wire.encode_datagram(wire.TYPE_DATA, 1, 0, b"x" * 100, fragment_index=0, fragment_count=40_000_000,
                                frame_length=4_000_000_000)
    assert receiver.feed(huge) == []
    assert receiver.counters()["dropped_oversized_frame"] == 1
    assert receiver.bytes_in_flight == 0


def test_a_new_session_abandons_the_old_one_and_old_datagrams_are_stale():
    old = fragment(b"a" * 900, session_id=1, frame_id=0, first_sequence=0, datagram_size=300)
    new = fragment(b"b" * 900, session_id=2, frame_id=0, first_sequence=0, datagram_size=300)
    receiver = LinkReceiver()
    feed_all(receiver, old[:2])
    assert receiver.session_id == 1
    assert feed_all(receiver, new) == {0: b"b" * 900}
    assert receiver.session_id == 2
    assert feed_all(receiver, old[2:]) == {}
    counters = receiver.counters()
    assert counters["sessions_started"] == 2
    assert counters["frames_abandoned"] == 1
    assert counters["dropped_stale_session"] == len(old) - 2 == 2
    assert counters["frames_lost"] == 1
    assert_every_datagram_accounted_for(counters)
    events = receiver.take_events()
    assert [(kind, session, previous) for kind, session, previous, _ in events] == [(1, 1, 0), (1, 2, 1)]


def test_heartbeats_carry_counters_and_reveal_trailing_loss():
    receiver = LinkReceiver()
    data = fragment(b"z" * 500, session_id=3, frame_id=0, first_sequence=0, datagram_size=300)
    feed_all(receiver, data)
    counters = {name: 7 for name in wire.PEER_COUNTER_FIELDS}
    # Three datagrams after the frame were sent and lost; the heartbeat's sequence reveals them while idle.
    receiver.feed(wire.encode_datagram(wire.TYPE_HEARTBEAT, 3, len(data) + 3, wire.encode_peer_counters(counters)))
    assert receiver.counters()["datagrams_lost"] == 3
    kind, session, _, payload = receiver.take_events()[-1]
    assert kind == 2 and session == 3 and wire.decode_peer_counters(payload) == counters


def test_sequence_window_recognises_duplicates_and_too_old_datagrams():
    receiver = LinkReceiver()
    first = wire.encode_datagram(wire.TYPE_HEARTBEAT, 4, 0, wire.encode_peer_counters({}))
    receiver.feed(first)
    receiver.feed(first)
    receiver.feed(wire.encode_datagram(wire.TYPE_HEARTBEAT, 4, 70_000, wire.encode_peer_counters({})))
    receiver.feed(wire.encode_datagram(wire.TYPE_HEARTBEAT, 4, 1, wire.encode_peer_counters({})))
    counters = receiver.counters()
    assert counters["dropped_duplicate"] == 1
    assert counters["dropped_too_old"] == 1
    assert_every_datagram_accounted_for(counters)


class SequenceModel:
    """What the receiver's sequence window must answer, written plainly: every sequence ever seen, no window."""

    WINDOW = 65536

    def __init__(self):
        self.seen, self.highest, self.lowest = set(), None, None

    def see(self, sequence):
        if self.highest is None:
            self.highest = self.lowest = sequence
            self.seen.add(sequence)
            return "in_order"
        if sequence > self.highest:
            self.highest = sequence
            self.seen.add(sequence)
            return "in_order"
        if self.highest - sequence >= self.WINDOW:
            return "too_old"
        if sequence in self.seen:
            return "duplicate"
        self.seen.add(sequence)
        self.lowest = min(self.lowest, sequence)
        return "late"

    def reach(self, last):
        if self.highest is not None and self.highest < last and last - self.highest < self.WINDOW:
            self.highest = last

    @property
    def lost(self):
        return 0 if self.highest is None else self.highest - self.lowest + 1 - len(self.seen)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**64 - 1), st.lists(st.tuples(st.sampled_from(["see", "see", "see", "jump", "reach"]),
                                                   st.integers(-70_000, 70_000)), max_size=300))
def test_the_sequence_window_answers_as_a_set_of_every_sequence_would(base, steps):
    """ddc/_core/sequence_window.pxd, driven alone: duplicates, reordering, loss, the window's edge, jumps beyond
    it and a shutdown's announced end, anywhere in the 64-bit space (its top included)."""
    from ddc._core.sequence_window import SequenceTracker

    tracker, model = SequenceTracker(), SequenceModel()
    base = min(base, 2**64 - 1 - 200_000)
    for action, offset in steps:
        sequence = min(max(base + offset, 0), 2**64 - 1)
        if action == "jump":
            base += abs(offset) * 3
            continue
        if action == "reach":
            tracker.reach(sequence)
            model.reach(sequence)
        else:
            assert tracker.see(sequence) == model.see(sequence), (sequence, model.highest)
        if model.highest is not None:
            assert (tracker.highest, tracker.lowest, tracker.lost) == (model.highest, model.lowest, model.lost)


def test_a_shutdown_announcing_the_last_sequence_of_the_space_ends_at_once():
    from ddc._core.sequence_window import SequenceTracker

    tracker = SequenceTracker()
    assert tracker.see(2**64 - 10) == "in_order"
    tracker.reach(2**64 - 1)  # once looped forever: last + 1 wraps to 0
    assert (tracker.highest, tracker.lost) == (2**64 - 1, 9) and tracker.was_announced(2**64 - 1)
    assert tracker.see(2**64 - 1) == "late" and tracker.lost == 8


class SessionModel:
    """The session rules as docs/protocol.md states them, written plainly: with keys, only a larger id replaces
    the live session (before any, the floor an earlier run saved) and a later key epoch of it (same low half)
    is a rekey that keeps the epoch it replaced acceptable; without keys, the last eight replaced sessions
    never come back, and a session from an earlier start time takes over only after the live one has been
    silent for the takeover time."""

    def __init__(self, keyed, takeover_ns, floor):
        self.keyed, self.takeover_ns, self.floor = keyed, takeover_ns, floor
        self.live = self.previous_epoch = None
        self.replaced, self.heard = [], 0

    def judge(self, session, now, heard):
        if session == self.live or (self.keyed and self.live is not None and session == self.previous_epoch):
            verdict = "live"
        elif self.keyed and self.live is not None and session > self.live and session % 2**32 == self.live % 2**32:
            self.previous_epoch, self.live, verdict = self.live, session, "rekeyed"
        elif self.keyed:
            verdict = "started" if (session > self.live if self.live is not None
                                    else self.floor is None or session >= self.floor) else "stale"
        elif self.live is None:
            verdict = "started"
        elif session in self.replaced[-8:]:
            verdict = "stale"
        else:
            silent = now - self.heard >= self.takeover_ns
            verdict = "stale" if session >> 32 < self.live >> 32 and not silent else "started"
        if verdict == "started":
            if self.live is not None:
                self.replaced.append(self.live)
            self.live, self.previous_epoch = session, None
            if self.keyed and self.floor is not None and session != self.floor and session > self.floor \
                    and session % 2**32 == self.floor % 2**32:
                self.previous_epoch = self.floor
        if verdict != "stale" and heard:
            self.heard = now
        return verdict


SESSION_IDS = [(start << 32) | low for start in (100, 101, 150, 200, 2**32 - 1) for low in (5, 7, 2**32 - 1)]


@settings(max_examples=400, deadline=None)
@given(st.booleans(), st.one_of(st.none(), st.sampled_from(SESSION_IDS)),
       st.lists(st.tuples(st.sampled_from(SESSION_IDS + [0, 1]), st.sampled_from([0, 10**6, 9 * 10**9, 11 * 10**9]),
                          st.booleans()), max_size=120))
def test_the_session_rules_alone_answer_as_the_protocol_states_them(keyed, floor, steps):
    """ddc/_core/sessions.pxd, driven without datagrams: restarts, replays of older sessions, rekeys, the epoch
    a rekey replaced, a restored floor, and an older session taking over a silent link (without keys only): silent
    meaning no new data or control datagram, however much parity, duplicates or replays arrive (heard=False)."""
    from ddc._core.sessions import SessionJudge

    judge, model = SessionJudge(keyed, 10.0, floor), SessionModel(keyed, 10 * 10**9, floor)
    now = 10**12
    for session, advance, heard in steps:
        now += advance
        assert judge.judge(session, now, heard) == model.judge(session, now, heard), (session, model.live)
        assert (judge.live or (None,))[0] == model.live
