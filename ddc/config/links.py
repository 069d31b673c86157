"""A proxy's settings: its links, each a source or sink composed from the registered handlers with a
transport, filters and buffers, and the checks that span links (names, shared addresses, shared keys)."""

import functools
import os
import re
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ddc.config.transport import BufferConfig, EgressTransportConfig, IngressTransportConfig, SpoolConfig
from ddc.config.values import Section
from ddc.filters.config import FilterConfig, check_filters
from ddc.handlers import sink_configs, source_configs
from ddc.telemetry.config import TelemetryConfig

ENV_PREFIX = "DDC_"
LINK_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")

SourceConfig = Annotated[Union[source_configs()], Field(discriminator="type")]
SinkConfig = Annotated[Union[sink_configs()], Field(discriminator="type")]


class IngressLinkConfig(Section):
    source: SourceConfig
    transport: IngressTransportConfig
    filters: list[FilterConfig] = []
    buffer: BufferConfig = BufferConfig()

    @model_validator(mode="after")
    def handler_fits(self):
        check_filters(self.filters, self.source)
        self.source.check_link(self)
        return self


class EgressLinkConfig(Section):
    transport: EgressTransportConfig
    sink: SinkConfig
    filters: list[FilterConfig] = []
    buffer: BufferConfig = BufferConfig()
    spool: SpoolConfig | None = None

    @model_validator(mode="after")
    def handler_fits(self):
        check_filters(self.filters, self.sink)
        self.sink.check_link(self)
        return self

    @model_validator(mode="after")
    def resolve_write_ahead(self):
        """By default the spool of a sink whose deliveries are confirmed after write() returns (Kafka's) is a
        write-ahead log; resolved here so that `ddc check` shows it."""
        if self.spool is not None and self.spool.write_ahead is None:
            self.spool.write_ahead = self.sink.write_ahead_by_default
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
    # The library that seals datagrams when a link has a key (ddc/crypto.py): one per process, the same every start.
    sealing_library: Literal["auto", "libcrypto", "libgcrypt"] = "auto"


@functools.cache
def _reading_environment(model: type) -> type:
    """The model with the DDC_ variables of the environment applied over the file, by pydantic-settings.
    Imported only when such a variable is set: pydantic-settings brings asyncio and pydantic's dataclasses,
    about 0.08 s of every start-up, a tenth of a short transfer's time (bench/pydiode_compare.py)."""
    from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

    class Environment(EnvSettingsSource):
        def decode_complex_value(self, field_name, field, value):
            """JSON for a list or a table (DDC_LINKS__A__SOURCE__TOPICS='["a", "b"]'); anything else as written:
            an address such as 0.0.0.0:9180 is not JSON, and the field's own check names a wrong value."""
            try:
                return super().decode_complex_value(field_name, field, value)
            except ValueError:
                return value

    class FromEnvironment(model, BaseSettings):
        model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid",
                                          validate_default=True, defer_build=True)

        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                       file_secret_settings):
            return (Environment(settings_cls), init_settings)

    FromEnvironment.__name__ = FromEnvironment.__qualname__ = model.__name__
    return FromEnvironment


class IngressSettings(_ProxySettings):
    role: Literal["ingress"]
    links: dict[str, IngressLinkConfig]

    @field_validator("links")
    @classmethod
    def links_are_distinct(cls, links):
        _check_link_names(links)
        _check_unique(links, "source", lambda link: link.source.identity)
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
        for sink_config in sink_configs():
            sink_config.prepare_links([link for link in links.values() if isinstance(link.sink, sink_config)])
        return links
