"""What every handler's config model provides to the link config that composes it.

A handler's source and sink configs subclass these; the defaults suit a handler whose records are opaque
payloads. Each hook replaces what was once a branch on the handler type in the link config."""

from typing import ClassVar

from ddc.config.values import Section


class HandlerSection(Section):
    #: "package.module:Class" of the source or sink, imported only when a link is built (Kafka's loads
    #: librdkafka, which proxies without a Kafka link need not pay for at start-up).
    implementation: ClassVar[str]
    #: Whether the records carry a topic and headers (Kafka's), which topic and header filters read.
    records_have_topics: ClassVar[bool] = False

    def check_link(self, link) -> None:
        """Raises ValueError when the rest of the link's config (transport, buffer) cannot work with this
        handler."""


class SourceSection(HandlerSection):
    @property
    def identity(self) -> str | None:
        """What two links must not share (a listening address, a file); None: links may share the source."""
        return None


class SinkSection(HandlerSection):
    #: Whether a spool is a write-ahead log unless the config says otherwise (a sink whose deliveries are
    #: confirmed after write() returns).
    write_ahead_by_default: ClassVar[bool] = False

    @classmethod
    def prepare_links(cls, links: list) -> None:
        """Settles what the egress's links with sinks of this type share, once all are validated."""
