"""The Kafka handler's config: a consumer-group source and an idempotent, de-duplicating sink. `properties`
go straight to librdkafka (SASL, TLS, tuning), as confluent-kafka-python passes them."""

from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, field_validator

from ddc.config.values import Duration, Section, Size, name_or_pattern, regular_expression
from ddc.handlers.config import SinkSection, SourceSection

KafkaProperties = dict[str, str | int | float | bool]
TopicName = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")]
METADATA_ROOM = 64 * 1024  # a record's topic, coordinates and framing beside its key, value and headers


def _needs_bootstrap(properties: dict) -> dict:
    if not properties.get("bootstrap.servers") and not properties.get("metadata.broker.list"):
        raise ValueError('"bootstrap.servers" is missing; set it in the properties table, such as '
                         '"bootstrap.servers" = "kafka1:9092,kafka2:9092"')
    return properties


class KafkaSourceConfig(SourceSection):
    """A consumer-group member."""

    implementation = "ddc.handlers.kafka.source:KafkaSource"
    records_have_topics = True
    type: Literal["kafka"]
    topics: Annotated[list[Annotated[str, Field(min_length=1), name_or_pattern("topic pattern")]],
                      Field(min_length=1)]
    group_id: Annotated[str, Field(min_length=1)] | None = None
    properties: KafkaProperties = {}
    max_record_size: Annotated[Size, Field(ge=1)] = "1MiB"
    commit_interval: Annotated[Duration, Field(ge=0)] = "1s"
    max_poll_records: Annotated[int, Field(ge=1, le=1_000_000)] = 10000

    @field_validator("properties")
    @classmethod
    def has_bootstrap(cls, properties):
        return _needs_bootstrap(properties)

    def check_link(self, link) -> None:
        check_record_link(self, link, "loses records a Kafka source keeps at rest in the broker; use \"block\" "
                                      "(the default for Kafka)")


def check_record_link(source, link, why_not_drop: str) -> None:
    """What a source of Kafka records needs of its link: a buffer that waits rather than drops, and room for its
    largest record and its metadata in a frame and in the buffer."""
    if link.buffer.when_full == "drop":
        raise ValueError(f'buffer.when_full = "drop" {why_not_drop}')
    if source.max_record_size > link.transport.max_frame_size // 2:
        raise ValueError(f"source.max_record_size ({source.max_record_size}) leaves no room for the "
                         f"record's metadata in transport.max_frame_size ({link.transport.max_frame_size}); "
                         "keep it at most half of max_frame_size")
    if link.buffer.size < source.max_record_size + METADATA_ROOM:
        raise ValueError(f"buffer.size ({link.buffer.size}) cannot hold a record of source.max_record_size "
                         f"({source.max_record_size}) and its metadata; make buffer.size at least "
                         f"{source.max_record_size + METADATA_ROOM} or lower max_record_size")


class TopicRewrite(Section):
    pattern: Annotated[str, regular_expression("pattern")]
    replacement: str


class KafkaSinkConfig(SinkSection):
    """An idempotent producer."""

    implementation = "ddc.handlers.kafka.sink:KafkaSink"
    records_have_topics = True
    write_ahead_by_default = True
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

    @classmethod
    def prepare_links(cls, links: list) -> None:
        """Kafka sinks with the same properties share one producer (and what it knows the cluster holds). A
        write-ahead log needs that producer to report every delivery, and so does a `missing_records_topic` (a
        repair's report is written once its record is delivered), so it does for all of them if one needs it."""
        reporting = {}
        for link in links:
            key = _producer_key(link.sink.properties)
            reporting[key] = reporting.get(key, False) or link.write_ahead or bool(link.sink.missing_records_topic)
        for link in links:
            link.sink._report_deliveries = reporting[_producer_key(link.sink.properties)]


def _producer_key(properties: dict) -> tuple:
    return tuple(sorted((str(key), str(value)) for key, value in properties.items()))
