"""How Kafka records look to filters and log lines, on either side of the link."""

from ddc._core import kafka_metadata
from ddc._core.kafka_metadata import FILTERED, RECORD, SKIPPED
from ddc.handlers.base import RecordDescription, RecordView


class KafkaRecords(RecordDescription):
    def placeholder(self, record, reason: str):
        """The record's coordinates without its content, so the egress counts it (filtered or skipped)
        instead of reporting it missing."""
        kind = FILTERED if reason == "filtered" else SKIPPED
        fields = kafka_metadata.unpack(record[0])
        return kafka_metadata.pack(kind, *fields[1:6], 0, -1, None, None, False, fields[11]), b""

    def coordinates(self, metadata: bytes) -> dict:
        topic, partition, offset = kafka_metadata.coordinates(metadata)
        return {"topic": topic, "partition": partition, "offset": offset}

    def describe(self, metadata: bytes) -> RecordView:
        fields = kafka_metadata.unpack(metadata)
        return RecordView(fields[0] == RECORD, fields[1], tuple(fields[9] or ()))
