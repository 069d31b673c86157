"""Kafka across the diode: a consumer-group source on the ingress, an idempotent, de-duplicating sink on the egress."""

from ddc.handlers.kafka.config import KafkaSinkConfig as SINK_CONFIG, KafkaSourceConfig as SOURCE_CONFIG
from ddc.handlers.kafka.metrics import METRICS

__all__ = ["METRICS", "SINK_CONFIG", "SOURCE_CONFIG"]
