"""AES-256-GCM per datagram: the C sealing against an independent reading, and every way a datagram can lie."""

import base64
import contextlib
import os
import socket
import stat
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddc import crypto
from ddc._core import aead, wire
from ddc._core.receiver import COUNTER_NAMES, LinkReceiver
from ddc._core.sender import DatagramSender
from ddc.config.transport import KeyConfig
from ddc.transport.sockets import socket_address_bytes
from conftest import run_ddc, udp_receiver
from protocol_reference import fragment_all, sealed, session_key

crypto.load_sealing_library()
LIBRARIES = [name for name in crypto.SEALING_ORDER if crypto.usable_library(name) is None]

KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))
DROP_REASONS = tuple(name for name in COUNTER_NAMES if name.startswith("dropped_"))
SECOND = 1 << 32
NOW = 10**12


def keyed_receiver(*keys, **options) -> LinkReceiver:
    receiver = LinkReceiver(max_frame_bytes=1 << 20, max_frames_in_flight=64, max_bytes_in_flight=1 << 22, **options)
    for key_id, key in keys:
        receiver.add_key(key, key_id)
    return receiver


def feed(receiver, datagrams, now_ns=NOW) -> dict:
    delivered = {}
    for datagram in datagrams:
        for frame in receiver.feed(datagram, now_ns=now_ns):
            delivered[frame.frame_id] = bytes(frame)
    return delivered


def accounted(counters) -> bool:
    return (counters["datagrams_received"] + counters["datagrams_recovered"]
            == counters["datagrams_accepted"] + sum(counters[r] for r in DROP_REASONS))


def sealed_stream(frames, key=KEY, key_id=1, session_id=5 * SECOND + 77, datagram_size=300):
    return [sealed(d, key, key_id) for datagrams in fragment_all(frames, session_id=session_id,
                                                                 datagram_size=datagram_size - 16)
            for d in datagrams]


@contextlib.contextmanager
def using(library):
    """New ciphers seal and unseal with library inside the block."""
    previous = aead.library_in_use()
    aead.use_library(library)
    try:
        yield
    finally:
        aead.use_library(previous)


@pytest.fixture(params=LIBRARIES)
def each_library(request):
    with using(request.param):
        yield request.param


def test_every_library_found_is_checked_and_one_is_used():
    """The tests below run against every library found here (on Debian and Ubuntu, both)."""
    assert "libcrypto" in LIBRARIES, "Python's ssl module needs libcrypto, so it is always there"
    assert aead.library_in_use() in LIBRARIES
    assert crypto.load_sealing_library() == aead.versions[aead.library_in_use()]
    for library in LIBRARIES:
        assert crypto.seals_as_specified(library)
        assert aead.sealing_seconds(library, 8916, 4) > 0


SELECTION = """
import os, sys
from ddc import crypto
from ddc._core import aead
try:
    aead.SessionCipher(True)
except RuntimeError as error:
    print("before:", error)
passing = set(sys.argv[1:])
crypto.seals_as_specified = lambda name: name in passing
aead.sealing_seconds = lambda name, *_: {"libcrypto": 9.0, "libgcrypt": 1.0}[name]  # libgcrypt "faster"
for attempt in (1, 2):
    try:
        print(attempt, crypto.load_sealing_library(os.environ.get("PREFERENCE", "auto")), aead.library_in_use())
    except crypto.KeyProblem as error:
        print(attempt, "refused:", error)
"""


@pytest.mark.parametrize("passing", [["libcrypto"], ["libgcrypt"], []])
def test_a_library_that_fails_its_check_is_never_used(passing):
    """The choice in a fresh process, with the check passing only the given libraries: the one chosen is
    one that passed, and when none passes the refusal is repeated, never a half-loaded library used."""
    if any(library not in LIBRARIES for library in passing):
        pytest.skip(f"{passing} is not on this machine")
    result = subprocess.run([sys.executable, "-c", SELECTION, *passing], capture_output=True, text=True,
                            timeout=60, check=True)
    lines = result.stdout.splitlines()
    assert lines[0] == "before: no crypto library is chosen; call ddc.crypto.load_sealing_library() first"
    if passing:
        assert lines[1] == f"1 {aead.versions[passing[0]]} {passing[0]}"
        assert lines[2] == f"2 {aead.versions[passing[0]]} {passing[0]}"
    else:
        for attempt, line in zip((1, 2), lines[1:]):
            assert line.startswith(f"{attempt} refused: encryption needs OpenSSL's libcrypto")
            assert "does not seal as AES-256-GCM should" in line and "apt-get install libssl3" in line


@pytest.mark.parametrize("preference, passing, expected", [
    ("auto", ["libcrypto", "libgcrypt"], "libcrypto"),
    ("auto", ["libgcrypt"], "libgcrypt"),
    ("libgcrypt", ["libcrypto", "libgcrypt"], "libgcrypt"),
    ("libcrypto", ["libgcrypt"], None),
])
def test_the_choice_is_the_setting_or_the_documented_order_never_a_race(preference, passing, expected):
    """sealing_library names the library; "auto" takes libcrypto, then libgcrypt, whichever is faster (timing
    here says libgcrypt), so a restart never changes the library. A named library that fails is refused,
    saying which and what to install, not replaced by the other."""
    if any(library not in LIBRARIES for library in passing):
        pytest.skip(f"{passing} is not on this machine")
    result = subprocess.run([sys.executable, "-c", SELECTION, *passing], capture_output=True, text=True,
                            timeout=60, check=True, env={**os.environ, "PREFERENCE": preference})
    lines = result.stdout.splitlines()[1:]
    if expected:
        assert lines == [f"{attempt} {aead.versions[expected]} {expected}" for attempt in (1, 2)]
    else:
        for attempt, line in zip((1, 2), lines):
            assert line.startswith(f"{attempt} refused: encryption needs sealing_library = 'libcrypto'")
            assert "libcrypto: " in line and "libgcrypt" not in line.split("Install it")[0]


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=9000), st.binary(min_size=56, max_size=56), st.integers(0, 2**64 - 1),
       st.integers(0, 2**64 - 1), st.sampled_from(LIBRARIES), st.sampled_from(LIBRARIES))
def test_every_library_seals_as_aes_gcm_and_opens_what_the_other_sealed(plain, header, session_id, sequence,
                                                                         sealing, opening):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    sealer, opener = aead.SessionCipher(True, sealing), aead.SessionCipher(False, opening)
    sealer.set_key(KEY, 3, session_id)
    opener.set_key(KEY, 3, session_id)
    sealed_bytes = sealer.seal_bytes(header, plain, sequence)
    nonce = bytes(4) + sequence.to_bytes(8, "big")
    assert sealed_bytes == AESGCM(session_key(KEY, session_id)).encrypt(nonce, plain, header)
    assert opener.unseal_bytes(header, sealed_bytes, sequence) == plain
    flipped = bytearray(sealed_bytes)
    flipped[len(flipped) // 2] ^= 0x40
    lies = {(bytes(flipped), header, sequence), (sealed_bytes, bytes(56), sequence),
            (sealed_bytes, header, sequence ^ 1)} - {(sealed_bytes, header, sequence)}
    for sealed_seen, header_seen, sequence_seen in lies:
        with pytest.raises(ValueError, match="authentication failed"):
            opener.unseal_bytes(header_seen, sealed_seen, sequence_seen)


def test_the_sender_seals_exactly_as_the_specification_says(each_library):
    """Datagrams from the C sender, read back by the cryptography package from docs/security.md alone."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    target = udp_receiver()
    sending = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    session_id = 7 * SECOND + 99
    sender = DatagramSender(sending.fileno(), socket_address_bytes(socket.AF_INET, target.getsockname()),
                            session_id, 1000)
    sender.encrypt_with(KEY, 9)
    frame = os.urandom(5000)
    sender.send_frame(frame)
    pieces, raw = [], []
    for _ in range(sender.counters()["datagrams_sent"]):
        datagram = target.recv(65535)
        raw.append(datagram)
        fields = wire.decode_datagram(datagram)
        assert fields["flags"] == 1 and fields["key_id"] == 9 and len(datagram) <= 1000
        header = bytearray(datagram[:wire.HEADER_BYTES])
        header[8:12] = bytes(4)
        nonce = bytes(4) + fields["sequence"].to_bytes(8, "big")
        plain = AESGCM(session_key(KEY, session_id)).decrypt(nonce, fields["payload"], bytes(header))
        pieces.append((fields["fragment_index"], plain))
    assert b"".join(plain for _, plain in sorted(pieces)) == frame
    assert not any(frame[:32] in datagram or frame[-32:] in datagram for datagram in raw)
    sending.close()
    target.close()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=2000), min_size=1, max_size=6), st.integers(100, 700),
       st.sampled_from(LIBRARIES))
def test_sealed_frames_reassemble_and_every_datagram_is_used(frames, datagram_size, library):
    with using(library):
        receiver = keyed_receiver((1, KEY))
        assert feed(receiver, sealed_stream(frames, datagram_size=datagram_size)) == dict(enumerate(frames))
    counters = receiver.counters()
    assert counters["datagrams_received"] == counters["datagrams_accepted"]
    assert accounted(counters)


def test_each_kind_of_bad_datagram_is_refused_under_its_own_reason(each_library):
    good = sealed_stream([b"A" * 600, b"B" * 600])
    receiver = keyed_receiver((1, KEY))
    plain = fragment_all([b"C" * 100], session_id=5 * SECOND + 77)[0][0]

    def with_crc(original: bytearray) -> bytes:
        """A valid checksum, so that only authentication can catch the change."""
        data = bytearray(original)
        data[8:12] = bytes(4)
        crc = wire.checksum(bytes(data))
        data[8:12] = crc.to_bytes(4, "big")
        return bytes(data)

    def damaged(original: bytes, offset: int, value: int) -> bytes:
        data = bytearray(original)
        data[offset] = value
        return bytes(data)

    tampered_payload = bytearray(good[0])
    tampered_payload[-20] ^= 0x40
    tampered_header = bytearray(good[0])
    tampered_header[39] ^= 1  # frame id: the header is authenticated data
    tag_cut = bytearray(good[0][:-1])
    tag_cut[6:8] = (len(tag_cut) - wire.HEADER_BYTES).to_bytes(2, "big")
    bad = {
        "dropped_unauthenticated": [plain],
        "dropped_unknown_key": [sealed(plain, KEY, 2)],
        "dropped_forged": [sealed(plain, OTHER_KEY, 1), with_crc(tampered_payload), with_crc(tampered_header)],
        "dropped_malformed": [with_crc(tag_cut)],
        # A keyed receiver skips the checksum of sealed datagrams (the tag covers every byte) and checks it
        # only to name a failure: link damage is counted as damage wherever it makes the datagram fail.
        "dropped_bad_checksum": [bytes(tampered_payload), bytes(tampered_header), damaged(good[0], 5, 2),
                                 damaged(good[0], 3, 9)],
    }
    for datagrams in bad.values():
        feed(receiver, datagrams)
    assert receiver.counters()["sessions_started"] == 0, "nothing unauthenticated may start a session"
    assert feed(receiver, good) == {0: b"A" * 600, 1: b"B" * 600}
    feed(receiver, good[:2])
    counters = receiver.counters()
    for reason, datagrams in bad.items():
        assert counters[reason] == len(datagrams), (reason, counters)
    assert counters["dropped_duplicate"] == 2
    assert counters["sessions_started"] == 1
    assert accounted(counters)


def test_forgeries_decrypted_into_a_frame_never_reach_what_is_delivered(each_library):
    """The egress decrypts a fragment straight into its frame when the frame is started and that place is
    empty. A forgery aimed at such a place leaves bytes there that the authentic fragment must overwrite, and
    one aimed at a filled place must not touch it."""
    frame = os.urandom(2000)
    good = sealed_stream([frame])
    assert len(good) >= 4

    def forged(datagram: bytes) -> bytes:
        data = bytearray(datagram)
        data[wire.HEADER_BYTES + 3] ^= 0xFF  # the ciphertext, so the tag fails
        data[8:12] = bytes(4)
        data[8:12] = wire.checksum(bytes(data)).to_bytes(4, "big")
        return bytes(data)

    receiver = keyed_receiver((1, KEY))
    assert feed(receiver, [good[0], forged(good[1]), forged(good[0]), forged(good[2]), good[2]]) == {}
    assert feed(receiver, [good[1]] + good[3:]) == {0: frame}
    counters = receiver.counters()
    assert counters["dropped_forged"] == 3 and counters["frames_completed"] == 1
    assert accounted(counters)


def test_an_egress_without_keys_refuses_sealed_datagrams():
    receiver = LinkReceiver()
    assert feed(receiver, sealed_stream([b"x" * 100])) == {}
    assert receiver.counters()["dropped_unknown_key"] == 1
    assert receiver.counters()["sessions_started"] == 0


def test_a_recorded_older_session_cannot_take_over_a_live_one():
    old = sealed_stream([b"old" * 50], session_id=100 * SECOND + 1)
    live = sealed_stream([b"live" * 50, b"more" * 50], session_id=200 * SECOND + 2)
    receiver = keyed_receiver((1, KEY), session_takeover_seconds=10.0)
    assert feed(receiver, live[:1], now_ns=NOW) == {0: b"live" * 50}
    assert feed(receiver, old, now_ns=NOW + 1_000_000_000) == {}
    assert feed(receiver, live[1:], now_ns=NOW + 2_000_000_000) == {1: b"more" * 50}
    counters = receiver.counters()
    assert counters["dropped_stale_session"] == len(old)
    assert counters["sessions_started"] == 1
    # Not even once the live one is silent: with keys, sessions are ordered (an ingress whose clock went back
    # numbers its session after the last one from its state directory).
    assert feed(receiver, old, now_ns=NOW + 13_000_000_000) == {}
    assert receiver.session_id == 200 * SECOND + 2
    assert receiver.counters()["dropped_stale_session"] == 2 * len(old)
    assert accounted(receiver.counters())


def test_a_flood_of_forgeries_under_random_sessions_does_not_disturb_the_live_one():
    live = sealed_stream([bytes([i]) * 500 for i in range(20)])
    receiver = keyed_receiver((1, KEY))
    forged = [sealed(d, OTHER_KEY, 1) for i in range(50)
              for datagrams in fragment_all([b"f" * 500] * 3, session_id=9 * SECOND + i) for d in datagrams]
    mixed = [datagram for index, one in enumerate(live) for datagram in forged[index * 10:index * 10 + 10] + [one]]
    assert feed(receiver, mixed) == {i: bytes([i]) * 500 for i in range(20)}
    counters = receiver.counters()
    assert counters["dropped_forged"] == len(forged)
    assert counters["sessions_started"] == 1
    assert accounted(counters)


def test_two_keys_are_accepted_during_a_rotation():
    receiver = keyed_receiver((1, KEY), (2, OTHER_KEY))
    before = sealed_stream([b"before"], key=KEY, key_id=1, session_id=10 * SECOND)
    after = sealed_stream([b"after"], key=OTHER_KEY, key_id=2, session_id=11 * SECOND + 1)
    assert feed(receiver, before) == {0: b"before"}
    assert feed(receiver, after) == {0: b"after"}
    assert receiver.counters()["sessions_started"] == 2


# ---- keys ----

def test_keygen_writes_a_private_key_that_loads_and_never_overwrites(tmp_path):
    path = tmp_path / "link.key"
    result = run_ddc("keygen", str(path))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = crypto.read_key(KeyConfig(id=1, file=str(path)))
    assert len(key) == 32 and base64.b64decode(path.read_text()) == key
    again = run_ddc("keygen", str(path))
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    assert crypto.read_key(KeyConfig(id=1, file=str(path))) == key


def test_key_sources_and_their_errors(tmp_path, monkeypatch):
    loose = tmp_path / "loose.key"
    loose.write_text(base64.b64encode(KEY).decode())
    loose.chmod(0o644)
    with pytest.raises(crypto.KeyProblem, match="chmod 600"):
        crypto.read_key(KeyConfig(id=1, file=str(loose)))
    short = tmp_path / "short.key"
    short.write_bytes(b"c2hvcnQ=\n")
    short.chmod(0o600)
    with pytest.raises(crypto.KeyProblem, match="does not hold a 32-byte key"):
        crypto.read_key(KeyConfig(id=1, file=str(short)))
    monkeypatch.setenv("LINK_KEY", KEY.hex())
    assert crypto.read_key(KeyConfig(id=3, environment="LINK_KEY")) == KEY
    monkeypatch.setenv("LINK_PASSWORD", "correct horse battery staple")
    derived = crypto.read_key(KeyConfig(id=4, password_environment="LINK_PASSWORD", salt="0123456789abcdef",
                                        iterations=100_000))
    from hashlib import pbkdf2_hmac
    assert derived == pbkdf2_hmac("sha256", b"correct horse battery staple", b"0123456789abcdef", 100_000)
    with pytest.raises(ValueError, match="exactly one of"):
        KeyConfig(id=1, file="a", environment="B")
    with pytest.raises(ValueError, match="needs a salt"):
        KeyConfig(id=1, password_environment="B")


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file root's needs root")
def test_a_key_file_of_root_readable_by_our_own_group_is_accepted_any_other_reader_is_not(tmp_path):
    """A Kubernetes secret mounted with the pod's fsGroup is root:GROUP, mode 440, whatever defaultMode asks
    (the Helm chart's case): accepted when GROUP is one of this process's groups, as PostgreSQL accepts its key.
    Readable by anyone else, refused."""
    from ddc.config.transport import KeyConfig
    key = tmp_path / "link.key"
    key.write_bytes(base64.b64encode(KEY) + b"\n")
    for mode, group, accepted in ((0o600, os.getegid(), True), (0o440, os.getegid(), True),
                                  (0o640, os.getegid(), True), (0o440, 54321, False), (0o444, os.getegid(), False),
                                  (0o460, os.getegid(), False)):
        os.chown(key, 0, group)
        key.chmod(mode)
        if accepted:
            assert crypto.read_key(KeyConfig(id=1, file=str(key))) == KEY, oct(mode)
        else:
            with pytest.raises(crypto.KeyProblem, match="can be read by other users"):
                crypto.read_key(KeyConfig(id=1, file=str(key)))


def test_check_names_an_unreadable_key_file(tmp_path):
    config = tmp_path / "egress.toml"
    config.write_text(f"""
role = "egress"
[links.a.transport]
listen = "127.0.0.1:9"
keys = [{{ id = 1, file = "{tmp_path / 'missing.key'}" }}]
[links.a.sink]
type = "udp"
target = "127.0.0.1:9"
""")
    result = run_ddc("check", str(config))
    assert result.returncode == 2
    assert "cannot read key file" in result.stderr and "missing.key" in result.stderr
    assert "Traceback" not in result.stderr


def hidden_libraries_prefix() -> list[str] | None:
    """A command prefix that runs a command with libcrypto and libgcrypt hidden (/dev/null mounted over them, in
    a mount namespace of its own), as on a machine without them; None where namespaces are not allowed."""
    import glob
    import shutil
    paths = sorted({path for pattern in ("/usr/lib/*/libcrypto.so*", "/lib/*/libcrypto.so*", "/usr/lib/*/libgcrypt.so*",
                                         "/lib/*/libgcrypt.so*", "/usr/lib64/libcrypto.so*", "/usr/lib64/libgcrypt.so*")
                    for path in glob.glob(pattern) if not os.path.islink(path)})
    if not paths or shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"],
                                                                       capture_output=True).returncode:
        return None
    mounts = " && ".join(f"mount --bind /dev/null {path}" for path in paths)
    return ["unshare", "-m", "sh", "-c", f'{mounts} && exec "$@"', "hide"]


def test_check_and_doctor_refuse_a_keyed_config_without_a_sealing_library(tmp_path):
    """Issue #22: on a machine with neither library, `ddc check` and `ddc doctor` fail and say what to install,
    as `ddc run` does, instead of passing a config that cannot start."""
    prefix = hidden_libraries_prefix()
    if prefix is None:
        pytest.skip("hiding the system's libraries needs unshare -m (root or user namespaces)")
    key = tmp_path / "link.key"
    key.write_bytes(base64.b64encode(KEY) + b"\n")
    key.chmod(0o600)
    config = tmp_path / "egress.toml"
    config.write_text(f"""
role = "egress"
[links.a.transport]
listen = "127.0.0.1:9"
keys = [{{ id = 1, file = "{key}" }}]
[links.a.sink]
type = "udp"
target = "127.0.0.1:9"
""")
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DDC_")}
    for command, code in (("check", 2), ("doctor", 1)):
        result = subprocess.run([*prefix, sys.executable, "-m", "ddc", command, str(config)], capture_output=True,
                                text=True, stdin=subprocess.DEVNULL, env=environment, timeout=120)
        output = result.stdout + result.stderr
        assert result.returncode == code, output
        assert "apt-get install libssl3" in output and "Traceback" not in output, output
    visible = run_ddc("check", str(config))
    assert visible.returncode == 0, visible.stderr


# ---- end to end, under attack ----

@pytest.mark.timeout(300)
def test_an_encrypted_stream_survives_100k_hostile_datagrams_with_every_one_counted(start_ddc, tmp_path):
    """tests/flood.py: forged FEC blocks, a recorded older session and replays of the live one included."""
    from flood import problems, run_flood

    result = run_flood(start_ddc, tmp_path, 100_000, 20_000)
    assert problems(result) == []
