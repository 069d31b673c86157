"""A Kafka front door: producers write to the ingress over the Kafka protocol, as to a broker
(docs/kafka-listener.md)."""

from ddc.handlers.kafka_listener.config import KafkaListenerSourceConfig as SOURCE_CONFIG
from ddc.handlers.kafka_listener.metrics import METRICS

SINK_CONFIG = None

__all__ = ["METRICS", "SINK_CONFIG", "SOURCE_CONFIG"]
