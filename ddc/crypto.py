"""Link keys: where they come from, how `ddc keygen` makes them, and loading libcrypto for the hot path.

The datagram sealing itself is in ddc/_core/aead.pyx (libcrypto, per datagram,
without the GIL); this module only turns configuration into 32-byte master keys.
Password-derived keys use PBKDF2-HMAC-SHA256 from the cryptography package, once,
at start-up. docs/security.md has the design and the rotation steps.
"""

import base64
import binascii
import os
from pathlib import Path

from ddc._core import aead
from ddc.config import ConfigError

KEY_BYTES = aead.KEY_LENGTH
LIBCRYPTO_NAMES = ("libcrypto.so.3", "libcrypto.so.1.1")


class KeyProblem(ConfigError):
    """A key that cannot be read or used; the message names its source and what to do."""


def load_libcrypto() -> str:
    """Opens OpenSSL's libcrypto for the sealing hot path; returns what was opened."""
    import ctypes.util  # only links with keys pay for it at start-up

    candidates = list(LIBCRYPTO_NAMES)
    found = ctypes.util.find_library("crypto")
    if found and found not in candidates:
        candidates.append(found)
    problems = []
    for name in candidates:
        try:
            return aead.load_libcrypto(name)
        except OSError as error:
            problems.append(str(error))
    raise KeyProblem("encryption needs OpenSSL's libcrypto (1.1 or 3.x), which was not found: "
                     + "; ".join(problems) + ". Install it (Debian/Ubuntu: apt-get install libssl3)")


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


def read_key(config) -> bytes:
    """The master key a KeyConfig names (file, environment variable, or password and salt)."""
    if config.file is not None:
        path = Path(config.file)
        try:
            mode = path.stat().st_mode
            data = path.read_bytes()
        except OSError as error:
            raise KeyProblem(f"key {config.id}: cannot read key file {str(path)!r}: {error.strerror}") from None
        if mode & 0o077:
            raise KeyProblem(f"key {config.id}: key file {str(path)!r} can be read by other users "
                             f"(mode {mode & 0o777:o}); run: chmod 600 {path}")
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
    """(key id, master key) for each KeyConfig, with libcrypto loaded; [] when there are none."""
    if not keys:
        return []
    load_libcrypto()
    return [(config.id, read_key(config)) for config in keys]


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
