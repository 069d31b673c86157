"""The Kafka listener's config: a Kafka front door that producers write to as if it were a broker."""

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ddc.config.values import Address, Duration, Section, Size
from ddc.handlers.config import SourceSection
from ddc.handlers.kafka.config import TopicName, check_record_link

Partitions = Annotated[int, Field(ge=1, le=10000)]


class ListenerTls(Section):
    """TLS for producers' connections; with client_ca, producers must show a certificate it signed (mTLS)."""

    certificate: Annotated[str, Field(min_length=1)]
    key: Annotated[str, Field(min_length=1)]
    client_ca: Annotated[str, Field(min_length=1)] | None = None


class ListenerSasl(Section):
    """SASL for producers: PLAIN and SCRAM-SHA-256/512 against users from a file (`user:password` per line) or
    the environment (DDC_KAFKA_LISTENER_USERS, the same lines). Passwords are never logged."""

    mechanisms: Annotated[list[Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]], Field(min_length=1)] = [
        "SCRAM-SHA-256", "SCRAM-SHA-512"]
    users_file: Annotated[str, Field(min_length=1)] | None = None


class KafkaListenerSourceConfig(SourceSection):
    """Speaks the Kafka protocol to producers; each partition's records get offsets here."""

    implementation = "ddc.handlers.kafka_listener.listener:KafkaListener"
    records_have_topics = True
    type: Literal["kafka_listener"]
    listen: Address
    advertised_listener: Address | None = None
    state_directory: Annotated[str, Field(min_length=1)]
    topics: dict[TopicName, Partitions] = {}
    auto_create_partitions: Partitions | None = None
    max_topics: Annotated[int, Field(ge=1, le=100_000)] = 1000
    max_request_size: Annotated[Size, Field(ge=1024, le=1 << 30)] = "100MiB"
    max_record_size: Annotated[Size, Field(ge=1)] = "1MiB"
    max_connections: Annotated[int, Field(ge=1, le=100_000)] = 1000
    max_pending_bytes: Annotated[Size, Field(ge=1 << 20)] = "256MiB"
    idle_timeout: Annotated[Duration, Field(gt=0)] = "10min"
    request_timeout: Annotated[Duration, Field(gt=0)] = "30s"
    tls: ListenerTls | None = None
    sasl: ListenerSasl | None = None

    @property
    def identity(self) -> str:
        return str(self.listen)

    @model_validator(mode="after")
    def serves_topics(self):
        if not self.topics and self.auto_create_partitions is None:
            raise ValueError('the listener serves no topic: list them in `topics` (name = partition count, such '
                             'as topics = { orders = 3 }) or set auto_create_partitions')
        if self.advertised_listener is None and self.listen.host in ("0.0.0.0", "::", ""):
            raise ValueError(f"listen = {str(self.listen)!r} is every address, which producers cannot connect to: "
                             "set advertised_listener to the host:port they reach this ingress at")
        return self

    def check_link(self, link) -> None:
        check_record_link(self, link, "would lose records producers were told are written; use \"block\" (the "
                                      "default for a Kafka listener)")
