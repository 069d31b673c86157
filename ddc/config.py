"""Configuration: one TOML file per proxy, overridable from the environment.

The file's `role` picks the schema (IngressSettings or EgressSettings), so a key
that only makes sense on the other side is an error, not silently ignored. Links
are a table keyed by link name so that every value has a stable path an
environment variable can reach: `links.syslog.transport.rate` is
`DDC_LINKS__SYSLOG__TRANSPORT__RATE`. Every problem becomes a ConfigError whose
lines each name the key path, the offending value and what is allowed.
"""

import functools
import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, PrivateAttr, ValidationError,
                      field_validator, model_validator)

from ddc._core.wire import HEADER_BYTES, MAX_DATAGRAM_BYTES as MAX_UDP_PAYLOAD
from ddc.units import parse_duration, parse_rate, parse_size

MAX_FRAME_BYTES = 2**32 - 1
AUTO_BURST_SECONDS = 0.010
AUTO_BURST_MAX_BYTES = 256 * 1024
ENV_PREFIX = "DDC_"
# librdkafka properties that hold key material or credentials: *.pem (ssl.key.pem), sasl.oauthbearer.config and
# .extensions (client secrets), sasl.jaas.config (Java clients' credentials).
SECRET_KEY_PATTERN = re.compile(r"(password|passphrase|secret|token|private|credential|(^|[._])key$|key_?file|"
                                r"\.pem$|oauthbearer\.(config|extensions)$|jaas)", re.IGNORECASE)
LINK_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


class ConfigError(Exception):
    """A configuration problem, worded for the operator; str() is one line per problem."""


class Endpoint(NamedTuple):
    host: str
    port: int

    def __str__(self):
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoint(value) -> Endpoint:
    if isinstance(value, Endpoint):
        return value
    text = str(value).strip()
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:([0-9]+)|([^:\[\]\s]+):([0-9]+)", text)
    if not match:
        raise ValueError(f"{text!r} is not an address; write host:port, such as \"127.0.0.1:5000\" or \"[::1]:5000\"")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if match.group(1):
        ipaddress.IPv6Address(host)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} in {text!r} is out of range; use 1 to 65535")
    return Endpoint(host, port)


Size = Annotated[int, BeforeValidator(parse_size)]
Duration = Annotated[float, BeforeValidator(parse_duration)]


def parse_burst(value):
    """"auto" is None here, resolved from the rate by IngressTransportConfig.burst_bytes; else a size."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    try:
        return parse_size(value)
    except ValueError as error:
        raise ValueError(f'{error}; or "auto" (10 ms of the rate)') from None


Burst = Annotated[int | None, BeforeValidator(parse_burst),
                  PlainSerializer(lambda value: "auto" if value is None else value)]
Rate = Annotated[float, BeforeValidator(parse_rate)]
Address = Annotated[Endpoint, BeforeValidator(parse_endpoint), PlainSerializer(str)]


class Section(BaseModel):
    """Schemas are built at first validation (defer_build), so a proxy builds only its role's: 0.1 s of
    start-up, which is most of a short transfer's time (bench/pydiode_compare.py)."""
    model_config = ConfigDict(extra="forbid", validate_default=True, defer_build=True)


class HttpConfig(Section):
    """Prometheus /metrics, /healthz, /readyz and /status; TLS, and client certificates, where they listen beyond
    loopback."""

    listen: Address
    certificate: Annotated[str, Field(min_length=1)] | None = None
    private_key: Annotated[str, Field(min_length=1)] | None = None
    client_ca: Annotated[str, Field(min_length=1)] | None = None
    max_connections: Annotated[int, Field(ge=1, le=1024)] = 16
    request_timeout: Annotated[Duration, Field(gt=0, le=300)] = "10s"

    @model_validator(mode="after")
    def tls_is_whole(self):
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together: set both to serve HTTPS, or neither")
        if self.client_ca is not None and self.certificate is None:
            raise ValueError("client_ca asks clients for certificates over TLS; set certificate and private_key too")
        return self


class StatsdConfig(Section):
    target: Address
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] = "ddc"
    interval: Annotated[Duration, Field(gt=0)] = "10s"


SYSLOG_FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
                     "authpriv", "ftp", "ntp", "audit", "alert", "clock",
                     "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7")


class SyslogConfig(Section):
    """RFC 5424 syslog, in addition to the log lines on stderr."""

    target: Address
    protocol: Literal["udp", "tcp"] = "udp"
    facility: Literal[SYSLOG_FACILITIES] = "local0"
    app_name: Annotated[str, Field(pattern=r"^[!-~]{1,48}$")] = "ddc"


class TelemetryConfig(Section):
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "text"] = "auto"
    stats_interval: Annotated[Duration, Field(gt=0)] = "10s"
    http: HttpConfig | None = None
    statsd: StatsdConfig | None = None
    syslog: SyslogConfig | None = None


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


FilterName = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,40}$")]


class FilterBase(Section):
    name: FilterName | None = None
    on_error: Literal["drop", "keep"] = "drop"


def _compiles(pattern: str, what: str) -> str:
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValueError(f"{what} {pattern!r} is not a regular expression: {error}") from None
    return pattern


class MaxSizeFilterConfig(FilterBase):
    type: Literal["max_size"]
    max_bytes: Annotated[Size, Field(ge=0)]


class KeywordFilterConfig(FilterBase):
    type: Literal["keyword"]
    keywords: list[Annotated[str, Field(min_length=1)]] = []
    hex_patterns: list[Annotated[str, Field(pattern=r"^([0-9A-Fa-f]{2})+$")]] = []
    case_insensitive: bool = False

    @model_validator(mode="after")
    def has_patterns(self):
        if not self.keywords and not self.hex_patterns:
            raise ValueError("a keyword filter needs at least one entry in keywords or hex_patterns")
        return self


class RegexFilterConfig(FilterBase):
    type: Literal["regex"]
    pattern: str
    action: Literal["deny", "allow"] = "deny"
    case_insensitive: bool = False

    @field_validator("pattern")
    @classmethod
    def compiles(cls, pattern):
        return _compiles(pattern, "pattern")


class JsonSchemaFilterConfig(FilterBase):
    type: Literal["json_schema"]
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    schema_file: str | None = None

    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True, defer_build=True)

    @model_validator(mode="after")
    def one_schema_that_compiles(self):
        if (self.json_schema is None) == (self.schema_file is None):
            raise ValueError("a json_schema filter needs exactly one of schema (an inline table) or schema_file")
        from ddc.filters.builtin import JsonSchemaFilter
        try:
            JsonSchemaFilter(self)
        except OSError as error:
            raise ValueError(f"cannot read schema_file {self.schema_file!r}: {error.strerror}") from None
        except Exception as error:
            raise ValueError(f"the JSON schema is not usable: {error}") from None
        return self


class NameListFilterBase(FilterBase):
    allow: list[Annotated[str, Field(min_length=1)]] = []
    deny: list[Annotated[str, Field(min_length=1)]] = []

    @field_validator("allow", "deny")
    @classmethod
    def patterns_compile(cls, names):
        return [_compiles(name, "name pattern") if name.startswith("^") else name for name in names]

    @model_validator(mode="after")
    def has_names(self):
        if not self.allow and not self.deny:
            raise ValueError(f"a {self.type} filter needs allow or deny (or both)")
        return self


class TopicFilterConfig(NameListFilterBase):
    type: Literal["topic"]


class HeaderFilterConfig(NameListFilterBase):
    type: Literal["header"]


class PluginFilterConfig(FilterBase):
    type: Literal["plugin"]
    entry_point: Annotated[str, Field(min_length=1)]
    options: dict[str, Any] = {}


FilterConfig = Annotated[MaxSizeFilterConfig | KeywordFilterConfig | RegexFilterConfig | JsonSchemaFilterConfig
                         | TopicFilterConfig | HeaderFilterConfig | PluginFilterConfig, Field(discriminator="type")]
KAFKA_ONLY_FILTERS = ("topic", "header")


def _check_filters(filters: list, handler_type: str) -> None:
    names = [config.name for config in filters if config.name]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"filter name {name!r} is used twice; each filter of a link needs its own name")
    for config in filters:
        if config.type in KAFKA_ONLY_FILTERS and handler_type != "kafka":
            raise ValueError(f"a {config.type} filter needs Kafka records; this link's records come from a "
                             f"{handler_type} handler")


class UdpSourceConfig(Section):
    type: Literal["udp"]
    listen: Address
    receive_buffer: Annotated[Size, Field(ge=4096)] = "8MiB"


class FileSourceConfig(Section):
    """A byte stream: a file, a pipe or stdin ("-"), read in chunks until its end."""

    type: Literal["file"]
    path: Annotated[str, Field(min_length=1)] = "-"
    chunk_size: Annotated[Size, Field(ge=1, le=64 * 1024 * 1024)] = "1MiB"
    stop_at_end: bool = True


KafkaProperties = dict[str, str | int | float | bool]
TopicName = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")]


def _needs_bootstrap(properties: dict) -> dict:
    if not properties.get("bootstrap.servers") and not properties.get("metadata.broker.list"):
        raise ValueError('"bootstrap.servers" is missing; set it in the properties table, such as '
                         '"bootstrap.servers" = "kafka1:9092,kafka2:9092"')
    return properties


class KafkaSourceConfig(Section):
    """A consumer-group member; `properties` go straight to librdkafka (SASL, TLS, tuning)."""

    type: Literal["kafka"]
    topics: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    group_id: Annotated[str, Field(min_length=1)] | None = None
    properties: KafkaProperties = {}
    max_record_size: Annotated[Size, Field(ge=1)] = "1MiB"
    commit_interval: Annotated[Duration, Field(ge=0)] = "1s"
    max_poll_records: Annotated[int, Field(ge=1, le=1_000_000)] = 10000

    @field_validator("properties")
    @classmethod
    def has_bootstrap(cls, properties):
        return _needs_bootstrap(properties)

    @field_validator("topics")
    @classmethod
    def patterns_compile(cls, topics):
        for topic in topics:
            if topic.startswith("^"):
                try:
                    re.compile(topic)
                except re.error as error:
                    raise ValueError(f"topic pattern {topic!r} is not a regular expression: {error}") from None
        return topics


SourceConfig = Annotated[UdpSourceConfig | FileSourceConfig | KafkaSourceConfig, Field(discriminator="type")]


class UdpSinkConfig(Section):
    type: Literal["udp"]
    target: Address
    send_buffer: Annotated[Size, Field(ge=4096)] = "4MiB"


class FileSinkConfig(Section):
    """A byte stream: written in order to a file or stdout ("-")."""

    type: Literal["file"]
    path: Annotated[str, Field(min_length=1)] = "-"
    max_reorder_bytes: Annotated[Size, Field(ge=1024 * 1024)] = "256MiB"
    stop_after_sender_shutdown: bool = False


class TopicRewrite(Section):
    pattern: str
    replacement: str

    @field_validator("pattern")
    @classmethod
    def compiles(cls, pattern):
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"{pattern!r} is not a regular expression: {error}") from None
        return pattern


class KafkaSinkConfig(Section):
    """An idempotent producer; `properties` go straight to librdkafka (SASL, TLS, tuning)."""

    type: Literal["kafka"]
    properties: KafkaProperties = {}
    topic_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]*$")] = ""
    topic_rename: dict[str, TopicName] = {}
    topic_rewrite: list[TopicRewrite] = []
    partitioning: Literal["auto", "source", "key_hash"] = "auto"
    missing_records_topic: TopicName | None = None
    deduplication_lookback: Annotated[int, Field(ge=1, le=10_000_000)] = 10000
    # Whether the producer it shares reports every delivery (a link writing to it keeps a write-ahead log).
    _report_deliveries: bool = PrivateAttr(default=False)

    @field_validator("properties")
    @classmethod
    def has_bootstrap(cls, properties):
        return _needs_bootstrap(properties)


SinkConfig = Annotated[UdpSinkConfig | FileSinkConfig | KafkaSinkConfig, Field(discriminator="type")]


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
    datagram_size: Annotated[int, Field(gt=HEADER_BYTES, le=MAX_UDP_PAYLOAD)] = 1472
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

    @model_validator(mode="after")
    def payload_fits(self):
        """The tag, and with FEC a parity datagram's copy of a whole data datagram, must leave room."""
        per_datagram = HEADER_BYTES + (16 if self.key is not None else 0)
        needed = per_datagram + (per_datagram + 2 if self.fec is not None else 0)
        if self.datagram_size <= needed:
            parts = [f"the {HEADER_BYTES}-byte header"] + (["the 16-byte authentication tag"] if self.key else []) \
                + ([f"the {per_datagram + 2} bytes forward error correction adds"] if self.fec else [])
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


KAFKA_METADATA_ROOM = 64 * 1024  # a record's topic, coordinates and framing beside its key, value and headers


class IngressLinkConfig(Section):
    source: SourceConfig
    transport: IngressTransportConfig
    filters: list[FilterConfig] = []
    buffer: BufferConfig = BufferConfig()

    @model_validator(mode="after")
    def filters_fit(self):
        _check_filters(self.filters, self.source.type)
        return self

    @model_validator(mode="after")
    def kafka_fits(self):
        if self.source.type != "kafka":
            return self
        if self.buffer.when_full == "drop":
            raise ValueError('buffer.when_full = "drop" loses records a Kafka source keeps at rest in the broker; '
                             'use "block" (the default for Kafka)')
        if self.source.max_record_size > self.transport.max_frame_size // 2:
            raise ValueError(f"source.max_record_size ({self.source.max_record_size}) leaves no room for the "
                             f"record's metadata in transport.max_frame_size ({self.transport.max_frame_size}); "
                             "keep it at most half of max_frame_size")
        if self.buffer.size < self.source.max_record_size + KAFKA_METADATA_ROOM:
            raise ValueError(f"buffer.size ({self.buffer.size}) cannot hold a record of source.max_record_size "
                             f"({self.source.max_record_size}) and its metadata; make buffer.size at least "
                             f"{self.source.max_record_size + KAFKA_METADATA_ROOM} or lower max_record_size")
        return self

    @property
    def source_identity(self) -> str | None:
        """What two links must not share (a listening address or a file); None for Kafka, where redundant
        links may read the same topics."""
        source = self.source
        return {"udp": lambda: str(source.listen), "file": lambda: source.path}.get(source.type, lambda: None)()


class EgressLinkConfig(Section):
    transport: EgressTransportConfig
    sink: SinkConfig
    filters: list[FilterConfig] = []
    buffer: BufferConfig = BufferConfig()
    spool: SpoolConfig | None = None

    @model_validator(mode="after")
    def filters_fit(self):
        _check_filters(self.filters, self.sink.type)
        return self

    @model_validator(mode="after")
    def resolve_write_ahead(self):
        """By default the spool of a Kafka sink, whose deliveries are confirmed after write() returns, is a
        write-ahead log; resolved here so that `ddc check` shows it."""
        if self.spool is not None and self.spool.write_ahead is None:
            self.spool.write_ahead = self.sink.type == "kafka"
        return self

    @property
    def write_ahead(self) -> bool:
        return self.spool is not None and bool(self.spool.write_ahead)


def _check_link_names(links: dict) -> None:
    if not links:
        raise ValueError("no links are configured; add at least one [links.NAME] table")
    for name in links:
        if not LINK_NAME_PATTERN.fullmatch(name):
            raise ValueError(
                f"link name {name!r} is not allowed; use lowercase letters, digits, '-' and '_' "
                "(names become environment variable paths)")


def _check_unique(links: dict, what: str, get) -> None:
    """get gives a link's value, None, or a list of values."""
    seen = {}
    for name, link in links.items():
        values = get(link)
        for value in values if isinstance(values, list) else [values]:
            if value is None:
                continue
            if seen.get(value, name) != name:
                raise ValueError(f"links {seen[value]!r} and {name!r} both use {what} {value}; each link needs "
                                 "its own")
            seen[value] = name


def _key_sources(link) -> list[str]:
    # A session key depends only on the master key and the session id: datagrams of one link would be authentic
    # on another link with the same key, and could be replayed there.
    return [key.source for key in link.transport.key_configs]


class _ProxySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, defer_build=True)

    telemetry: TelemetryConfig = TelemetryConfig()


@functools.cache
def _reading_environment(model: type) -> type:
    """The model with the DDC_ variables of the environment applied over the file, by pydantic-settings.
    Imported only when such a variable is set: pydantic-settings brings asyncio and pydantic's dataclasses,
    about 0.08 s of every start-up, a tenth of a short transfer's time (bench/pydiode_compare.py)."""
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class FromEnvironment(model, BaseSettings):
        model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid",
                                          validate_default=True, defer_build=True)

        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                       file_secret_settings):
            return (env_settings, init_settings)

    FromEnvironment.__name__ = FromEnvironment.__qualname__ = model.__name__
    return FromEnvironment


class IngressSettings(_ProxySettings):
    role: Literal["ingress"]
    links: dict[str, IngressLinkConfig]

    @field_validator("links")
    @classmethod
    def links_are_distinct(cls, links):
        _check_link_names(links)
        _check_unique(links, "source", lambda link: link.source_identity)
        _check_unique(links, "destination", lambda link: str(link.transport.destination))
        _check_unique(links, "the key from", _key_sources)
        return links


class EgressSettings(_ProxySettings):
    role: Literal["egress"]
    links: dict[str, EgressLinkConfig]

    @field_validator("links")
    @classmethod
    def links_are_distinct(cls, links):
        _check_link_names(links)
        _check_unique(links, "listen address", lambda link: str(link.transport.listen))
        _check_unique(links, "spool path", lambda link: os.path.abspath(link.spool.path) if link.spool else None)
        _check_unique(links, "the key from", _key_sources)
        _share_delivery_reports(links)
        return links


def _share_delivery_reports(links: dict) -> None:
    """Kafka sinks with the same properties share one producer (and what it knows the cluster holds). A
    write-ahead log needs that producer to report every delivery, and so does a `missing_records_topic` (a
    repair's report is written once its record is delivered), so it does for all of them if one needs it."""
    reporting = {}
    for link in links.values():
        if link.sink.type == "kafka":
            key = _producer_key(link.sink.properties)
            reporting[key] = reporting.get(key, False) or link.write_ahead or bool(link.sink.missing_records_topic)
    for link in links.values():
        if link.sink.type == "kafka":
            link.sink._report_deliveries = reporting[_producer_key(link.sink.properties)]


def _producer_key(properties: dict) -> tuple:
    return tuple(sorted((str(key), str(value)) for key, value in properties.items()))


Settings = IngressSettings | EgressSettings


def is_secret(key: str) -> bool:
    return bool(SECRET_KEY_PATTERN.search(key))


def mask_secrets(value: Any, key: str = "") -> Any:
    """A copy of a config tree with every secret-looking value replaced by '***'."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, key) for v in value]
    if key and is_secret(key) and value not in (None, ""):
        return "***"
    return value


TAGGED_SECTIONS = ("source", "sink")


def _user_location(location: tuple) -> tuple:
    """The key path as the user wrote it: pydantic adds the handler type after source/sink."""
    parts = list(location)
    return tuple(part for index, part in enumerate(parts)
                 if not (index > 0 and parts[index - 1] in TAGGED_SECTIONS and isinstance(part, str)
                         and index < len(parts) - 1))


def _describe(error: dict) -> str:
    kind = error["type"]
    loc = _user_location(error["loc"]) if kind != "union_tag_invalid" else tuple(error["loc"]) + ("type",)
    location = ".".join(str(part) for part in loc) or "(top level)"
    leaf = str(loc[-1]) if loc else ""
    shown = "***" if is_secret(leaf) else repr(error.get("input"))
    if kind == "union_tag_invalid":
        context = error.get("ctx", {})
        return f"{location}: {context.get('tag')!r} is not a known type; use one of {context.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"{'.'.join(str(part) for part in loc + ('type',))}: required key is missing"
    if kind == "missing":
        return f"{location}: required key is missing"
    if kind == "extra_forbidden":
        return f"{location}: unknown key (value {shown}); check its spelling and docs/configuration.md"
    message = error["msg"].removeprefix("Value error, ")
    if kind == "value_error":
        return f"{location}: {message}"
    return f"{location}: {message} (got {shown})"


def settings_from_mapping(data: dict, origin: str = "config") -> Settings:
    """Validates an already-parsed config tree; the environment still overrides it."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the configuration must be a table of keys")
    role = os.environ.get(f"{ENV_PREFIX}ROLE", data.get("role"))
    if role == "ingress":
        model = IngressSettings
    elif role == "egress":
        model = EgressSettings
    elif role is None:
        raise ConfigError(f'{origin}: role: required key is missing; set role = "ingress" or role = "egress"')
    else:
        raise ConfigError(f'{origin}: role: {role!r} is not a role; set role = "ingress" or role = "egress"')
    if any(key.upper().startswith(ENV_PREFIX) for key in os.environ):
        model = _reading_environment(model)
    try:
        return model(**data)
    except ValidationError as error:
        raise ConfigError("\n".join(f"{origin}: {_describe(e)}" for e in error.errors())) from None


def load_settings(path: str | os.PathLike) -> Settings:
    """Reads, parses and validates a proxy's config file; raises ConfigError on any problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read config file {str(path)!r}: {error.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    return settings_from_mapping(data, str(path))


def resolved_view(settings: Settings) -> dict:
    """The validated config with units resolved to numbers and secrets masked, for `ddc check`."""
    return mask_secrets(settings.model_dump(mode="json"))
