"""Link keys: where they come from, how `ddc keygen` makes them, and which library seals datagrams.

The datagram sealing itself is in ddc/_core/aead.pyx (libcrypto or libgcrypt, per
datagram, without the GIL); this module turns configuration into 32-byte master
keys and loads the sealing library the config names (`sealing_library`, "auto":
the first of SEALING_ORDER this machine has that seals exactly as specified, so the
choice is the same at every start; `ddc doctor` times them). Password-derived keys use
PBKDF2-HMAC-SHA256 from the cryptography package, once, at start-up.
docs/security.md has the design and the rotation steps.
"""

import base64
import binascii
import hashlib
import logging
import os
from pathlib import Path

from ddc._core import aead
from ddc.errors import ConfigError

log = logging.getLogger("ddc.crypto")

KEY_BYTES = aead.KEY_LENGTH
LIBRARY_FILES = {"libcrypto": ("libcrypto.so.3", "libcrypto.so.1.1"), "libgcrypt": ("libgcrypt.so.20",)}
SEALING_ORDER = ("libcrypto", "libgcrypt")  # "auto": OpenSSL first, the library most systems keep patched
PACKAGES = "Debian/Ubuntu: apt-get install libssl3 (or libgcrypt20); RHEL/Fedora: dnf install openssl-libs; " \
           "Alpine: apk add libcrypto3"
LOADERS = {"libcrypto": aead.load_libcrypto, "libgcrypt": aead.load_libgcrypt}
TIMED_DATAGRAM_BYTES = 8916
TIMED_DATAGRAMS = 48


class KeyProblem(ConfigError):
    """A key that cannot be read or used; the message names its source and what to do."""


def load_library(name: str) -> str:
    """Opens one sealing library ("libcrypto" or "libgcrypt"); returns the file opened. Raises OSError.

    The usual file names first: asking ctypes where else the library is runs ldconfig, so only a machine
    without them pays for that."""
    problems = []
    for file in (*LIBRARY_FILES[name], None):
        if file is None:
            import ctypes.util

            file = ctypes.util.find_library(name.removeprefix("lib"))
            if file is None or file in LIBRARY_FILES[name]:
                break
        try:
            return LOADERS[name](file)
        except OSError as error:
            problems.append(str(error))
    raise OSError("; ".join(problems))


def seals_as_specified(name: str) -> bool:
    """Whether the library's sealing and opening agree with the cryptography package's AES-GCM and HKDF."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    master_key, session_id, sequence = bytes(range(KEY_BYTES)), 0x1234_5678_9ABC_DEF0, 77
    header, plain = bytes(range(56)), bytes(range(256)) * 5
    session_key = HKDFExpand(hashes.SHA256(), KEY_BYTES,
                             b"ddc v2 session key" + session_id.to_bytes(8, "big")).derive(master_key)
    expected = AESGCM(session_key).encrypt(bytes(4) + sequence.to_bytes(8, "big"), plain, header)
    sealer, opener = aead.SessionCipher(True, name), aead.SessionCipher(False, name)
    forged = bytearray(expected)
    forged[3] ^= 1
    try:
        sealer.set_key(master_key, 1, session_id)
        opener.set_key(master_key, 1, session_id)
        if sealer.seal_bytes(header, plain, sequence) != expected:
            return False
        if opener.unseal_bytes(header, expected, sequence) != plain:
            return False
    except ValueError:
        return False
    try:
        opener.unseal_bytes(header, bytes(forged), sequence)
    except ValueError:
        return True
    return False


def usable_library(name: str) -> str | None:
    """None when the library loads and seals exactly as specified; else what is wrong with it."""
    try:
        load_library(name)
    except OSError as error:
        return f"{name}: {error}"
    if not seals_as_specified(name):
        return f"{name}: {aead.versions[name]} does not seal as AES-256-GCM should"
    return None


def load_sealing_library(preference: str = "auto") -> str:
    """Loads the sealing library for this process: the one named, or with "auto" the first of SEALING_ORDER that
    loads and seals exactly as specified. Returns its description, for instance "OpenSSL 3.0.19". The choice
    holds for the process: a later call with another name is refused."""
    current = aead.library_in_use()
    if current is not None:
        if preference not in ("auto", current):
            raise KeyProblem(f"sealing_library {preference!r}: this process already seals with {current}")
        return aead.versions[current]
    problems = []
    for name in SEALING_ORDER if preference == "auto" else (preference,):
        problem = usable_library(name)
        if problem is None:
            aead.use_library(name)
            log.info("sealing datagrams with %s", aead.versions[name])
            return aead.versions[name]
        problems.append(problem)
    wanted = ("OpenSSL's libcrypto (1.1 or 3.x) or libgcrypt (1.8 or newer)" if preference == "auto"
              else f"sealing_library = {preference!r}")
    raise KeyProblem(f"encryption needs {wanted}, and it could not be used: " + "; ".join(problems)
                     + f". Install it ({PACKAGES}), or set sealing_library to another")


def sealing_speeds() -> dict[str, float | str]:
    """For `ddc doctor`: each library's sealing rate here in bytes per second (best of three alternated rounds
    on jumbo datagrams), or what is wrong with it."""
    results = {}
    for name in SEALING_ORDER:
        results[name] = usable_library(name) or float("inf")
    timed = [name for name, value in results.items() if value == float("inf")]
    for _ in range(3):
        for name in timed:
            results[name] = min(results[name], aead.sealing_seconds(name, TIMED_DATAGRAM_BYTES, TIMED_DATAGRAMS))
    return {name: TIMED_DATAGRAM_BYTES * TIMED_DATAGRAMS / value if name in timed else value
            for name, value in results.items()}


def decode_key(text: bytes, origin: str) -> bytes:
    """A key is 32 raw bytes, or their base64 (what `ddc keygen` writes) or hex, with surrounding whitespace."""
    if len(text) == KEY_BYTES:
        return bytes(text)
    stripped = text.strip()
    decoders = (lambda: base64.b64decode(stripped, validate=True), lambda: bytes.fromhex(stripped.decode("ascii")))
    for decode in decoders:
        try:
            key = decode()
        except (binascii.Error, ValueError):
            continue
        if len(key) == KEY_BYTES:
            return key
    raise KeyProblem(f"{origin} does not hold a {KEY_BYTES}-byte key (raw, base64 or hex); "
                     "make one with: ddc keygen PATH")


def derive_from_password(password: bytes, salt: bytes, iterations: int) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    return PBKDF2HMAC(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, iterations=iterations).derive(password)


def private_enough(status: os.stat_result) -> bool:
    """Readable by its owner only; or, owned by root, also by one group this process is in (mode 640 or 440),
    as PostgreSQL allows for its key: a Kubernetes secret mounted with an fsGroup is root's, mode 440."""
    if not status.st_mode & 0o077:
        return True
    return (status.st_uid == 0 and not status.st_mode & 0o037
            and status.st_gid in (os.getegid(), *os.getgroups()))


def read_key(config) -> bytes:
    """The master key a KeyConfig names (file, environment variable, or password and salt)."""
    if config.file is not None:
        path = Path(config.file)
        try:
            status = path.stat()
            data = path.read_bytes()
        except OSError as error:
            raise KeyProblem(f"key {config.id}: cannot read key file {str(path)!r}: {error.strerror}") from None
        if not private_enough(status):
            raise KeyProblem(f"key {config.id}: key file {str(path)!r} can be read by other users "
                             f"(mode {status.st_mode & 0o777:o}); run: chmod 600 {path}")
        return decode_key(data, f"key {config.id}: key file {str(path)!r}")
    if config.environment is not None:
        value = os.environ.get(config.environment)
        if not value:
            raise KeyProblem(f"key {config.id}: environment variable {config.environment} is not set")
        return decode_key(value.encode(), f"key {config.id}: environment variable {config.environment}")
    value = os.environ.get(config.password_environment)
    if not value:
        raise KeyProblem(f"key {config.id}: environment variable {config.password_environment} "
                         "(the password) is not set")
    return derive_from_password(value.encode(), config.salt.encode(), config.iterations)


def link_keys(keys) -> list[tuple[int, bytes]]:
    """(key id, master key) for each KeyConfig, with a sealing library loaded; [] when there are none."""
    if not keys:
        return []
    load_sealing_library()
    return [(config.id, read_key(config)) for config in keys]


def check_keys(settings) -> None:
    """Before a proxy starts (and in `ddc check`): the configured sealing library, loaded when any link has a
    key, and every link's key its own. Datagrams of one link would be authentic on another with the same key,
    and could be replayed there (docs/security.md)."""
    if any(link.transport.key_configs for link in settings.links.values()):
        load_sealing_library(settings.sealing_library)
    seen = {}
    for name, link in settings.links.items():
        for key_id, key in link_keys(link.transport.key_configs):
            other = seen.setdefault(hashlib.sha256(key).digest(), name)
            if other != name:
                raise ConfigError(f"links {other!r} and {name!r} use the same key (key id {key_id}); each link needs "
                                  "its own: make one with `ddc keygen`")


def write_new_key(path: str) -> Path:
    """Writes a fresh random key as base64, readable by its owner only; never overwrites a file."""
    target = Path(path)
    key = base64.b64encode(os.urandom(KEY_BYTES)) + b"\n"
    try:
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyProblem(f"{str(target)!r} already exists; keys are never overwritten, choose a new path") from None
    except OSError as error:
        raise KeyProblem(f"cannot create {str(target)!r}: {error.strerror}") from None
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key)
    return target
