"""The transport sections of a link's config: how the ingress sends (rate, datagrams, keys, FEC) and how the
egress receives, with the buffer between a link's stages and the egress's disk spool.

The protocol's sizes come from the compiled core (ddc/_core/wire.pxd), imported where a value is checked, so
that the config loads, and `ddc` can say what is missing, where the core is not built."""

import os
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from ddc.config.values import Address, Burst, Duration, Rate, Section, Size

MAX_FRAME_BYTES = 2**32 - 1
AUTO_BURST_SECONDS = 0.010
AUTO_BURST_MAX_BYTES = 256 * 1024


class BufferConfig(Section):
    """The bounded queue between a link's stages (source → transport, transport → sink)."""

    size: Annotated[Size, Field(ge=64 * 1024)] = "64MiB"
    when_full: Literal["block", "drop"] | None = None


class SpoolConfig(Section):
    """Disk space for frames the egress's sink cannot take yet (a destination that is down or slow)."""

    path: Annotated[str, Field(min_length=1)]
    max_size: Annotated[Size, Field(ge=1 << 20)] = "1GiB"
    # Every frame on disk before the sink sees it, released once delivered; None: on for a Kafka sink.
    write_ahead: bool | None = None


class KeyConfig(Section):
    """A link master key for AES-256-GCM (docs/security.md): exactly one of file, environment or
    password_environment (with salt)."""

    id: Annotated[int, Field(ge=0, le=255)]
    file: Annotated[str, Field(min_length=1)] | None = None
    environment: Annotated[str, Field(min_length=1)] | None = None
    password_environment: Annotated[str, Field(min_length=1)] | None = None
    salt: Annotated[str, Field(min_length=16)] | None = None
    iterations: Annotated[int, Field(ge=100_000)] = 600_000

    @model_validator(mode="after")
    def one_source(self):
        given = [name for name in ("file", "environment", "password_environment") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(f"key {self.id}: set exactly one of file, environment or password_environment "
                             f"(got {', '.join(given) or 'none'})")
        if self.password_environment and not self.salt:
            raise ValueError(f"key {self.id}: a password-derived key needs a salt of at least 16 characters, "
                             "the same on both sides; make one with: python3 -c 'import secrets; "
                             "print(secrets.token_hex(16))'")
        return self

    @property
    def source(self) -> str:
        """Where the key comes from, to tell two links that would share one."""
        if self.file:
            return f"file {os.path.abspath(self.file)}"
        if self.environment:
            return f"environment variable {self.environment}"
        return f"password_environment {self.password_environment} with salt {self.salt!r}"


def percent_of(value, whole: int, what: str) -> int:
    """A count given as a number or as a share of whole ("25%"), rounded up, at least 1."""
    if isinstance(value, str):
        text = value.strip()
        if not text.endswith("%"):
            raise ValueError(f"{what} {value!r} is neither a count nor a percentage such as \"25%\"")
        try:
            share = float(text[:-1])
        except ValueError:
            raise ValueError(f"{what} {value!r} is not a percentage such as \"25%\"") from None
        if not 0 < share <= 100:
            raise ValueError(f"{what} {value!r} must be above 0% and at most 100%")
        return max(1, -(-int(round(share * whole * 100)) // 10000))
    return value


class FecConfig(Section):
    """Forward error correction (docs/protocol.md): Reed-Solomon blocks of `data` datagrams plus `parity`
    datagrams, dealt over `interleave` blocks at a time against bursts of loss; every block, a small frame's
    too, survives two bursts of `loss_burst` consecutive lost datagrams (0: random loss only)."""

    data: Annotated[int, Field(ge=1, le=128)] = 64
    parity: Annotated[int, Field(ge=1, le=127)] = 16
    interleave: Annotated[int, Field(ge=1, le=64)] = 4
    loss_burst: Annotated[int, Field(ge=0, le=31)] = 10

    @model_validator(mode="before")
    @classmethod
    def parity_as_share(cls, values):
        if isinstance(values, dict) and isinstance(values.get("parity"), str):
            values = dict(values)
            values["parity"] = percent_of(values["parity"], int(values.get("data", 64)), "fec parity")
        return values


def fec_shorthand(value):
    """`fec = "25%"` is `fec = { parity = "25%" }`; "off" or "none" turn it off."""
    if isinstance(value, str):
        if value.strip().lower() in ("off", "none"):
            return None
        return {"parity": value}
    return value


class IngressTransportConfig(Section):
    destination: Address
    datagram_size: int = 1472
    rate: Rate = "1Gbit/s"
    burst: Burst = "auto"
    send_buffer: Annotated[Size, Field(ge=4096)] = "8MiB"
    segmentation_offload: bool = True
    heartbeat_interval: Annotated[Duration, Field(ge=0.01)] = "1s"
    batch_max_bytes: Annotated[Size, Field(ge=1024)] = "1MiB"
    linger: Annotated[Duration, Field(ge=0)] = "5ms"
    max_frame_size: Annotated[Size, Field(ge=1024, le=MAX_FRAME_BYTES)] = "64MiB"
    compression: Literal["none", "zstd"] = "none"
    compression_level: Annotated[int, Field(ge=1, le=22)] = 3
    key: KeyConfig | None = None
    fec: Annotated[FecConfig | None, BeforeValidator(fec_shorthand)] = None
    state_directory: Annotated[str, Field(min_length=1)] | None = None
    rekey_interval: Annotated[Duration, Field(ge=1, le=7 * 86400)] = "24h"

    @property
    def key_configs(self) -> list[KeyConfig]:
        return [self.key] if self.key else []

    @property
    def burst_bytes(self) -> int:
        """How far ahead of the rate the sender may go. "auto" is 10 ms of the rate, at most 256 KiB: a burst
        in bytes would be seconds of a slow link (256 KiB is 2 s at 1 Mbit/s, +20 % over its first 10 s),
        while 10 ms still absorbs a late wake-up. The sender makes any burst at least two datagrams."""
        if self.burst is not None:
            return self.burst
        return int(min(self.rate * AUTO_BURST_SECONDS, AUTO_BURST_MAX_BYTES))

    @field_validator("datagram_size")
    @classmethod
    def is_a_udp_datagram(cls, size):
        from ddc._core.wire import HEADER_BYTES, MAX_DATAGRAM_BYTES
        if size <= HEADER_BYTES:
            raise ValueError(f"datagram_size ({size}) leaves no room for a payload beside the {HEADER_BYTES}-byte "
                             f"header; use at least {HEADER_BYTES + 1}")
        if size > MAX_DATAGRAM_BYTES:
            raise ValueError(f"datagram_size ({size}) is more than a UDP datagram over IPv4 carries; use at most "
                             f"{MAX_DATAGRAM_BYTES}")
        return size

    @model_validator(mode="after")
    def payload_fits(self):
        """The tag, and with FEC a parity datagram's copy of a whole data datagram, must leave room."""
        from ddc._core.wire import HEADER_BYTES, TAG_BYTES, datagram_overhead
        needed = datagram_overhead(self.key is not None, self.fec is not None)
        if self.datagram_size <= needed:
            sealed_overhead = datagram_overhead(self.key is not None, False)
            parts = [f"the {HEADER_BYTES}-byte header"] \
                + ([f"the {TAG_BYTES}-byte authentication tag"] if self.key else []) \
                + ([f"the {needed - sealed_overhead} bytes forward error correction adds"] if self.fec else [])
            raise ValueError(f"datagram_size ({self.datagram_size}) leaves no room for a payload beside "
                             f"{' and '.join(parts)}; use at least {needed + 1}")
        return self

    @model_validator(mode="after")
    def batches_fit_in_frames(self):
        if self.batch_max_bytes > self.max_frame_size:
            raise ValueError(
                f"batch_max_bytes ({self.batch_max_bytes}) is larger than max_frame_size ({self.max_frame_size}); "
                "lower batch_max_bytes or raise max_frame_size")
        return self


class EgressTransportConfig(Section):
    listen: Address
    receive_buffer: Annotated[Size, Field(ge=4096)] = "32MiB"
    max_frame_size: Annotated[Size, Field(ge=1024, le=MAX_FRAME_BYTES)] = "64MiB"
    max_frames_in_flight: Annotated[int, Field(ge=1, le=1_000_000)] = 1024
    max_bytes_in_flight: Annotated[Size, Field(ge=1024)] = "256MiB"
    frame_timeout: Annotated[Duration, Field(gt=0)] = "5s"
    alarm_after_missed_heartbeats: Annotated[int, Field(ge=1, le=1000)] = 3
    keys: Annotated[list[KeyConfig], Field(max_length=16)] = []
    session_takeover_after: Annotated[Duration, Field(gt=0)] = "10s"
    max_fec_bytes_in_flight: Annotated[Size, Field(ge=65536)] = "64MiB"
    state_directory: Annotated[str, Field(min_length=1)] | None = None

    @property
    def key_configs(self) -> list[KeyConfig]:
        return self.keys

    @field_validator("keys")
    @classmethod
    def key_ids_differ(cls, keys):
        ids = [key.id for key in keys]
        repeated = sorted({key_id for key_id in ids if ids.count(key_id) > 1})
        if repeated:
            raise ValueError(f"key id {repeated[0]} is given more than once; each key needs its own id")
        return keys

    @model_validator(mode="after")
    def budget_holds_a_frame(self):
        if self.max_bytes_in_flight < self.max_frame_size:
            raise ValueError(
                f"max_bytes_in_flight ({self.max_bytes_in_flight}) is smaller than max_frame_size "
                f"({self.max_frame_size}); a largest frame could never be reassembled")
        return self
