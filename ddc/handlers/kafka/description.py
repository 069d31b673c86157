"""How Kafka records look to filters and log lines, on either side of the link, and how a topic id is written."""

import base64

from ddc.handlers.kafka import codec
from ddc.handlers.kafka.codec import FILTERED, RECORD, SKIPPED
from ddc.handlers.base import RecordDescription, RecordView


class KafkaRecords(RecordDescription):
    def placeholder(self, record, reason: str):
        """The record's coordinates without its content, so the egress counts it (filtered or skipped)
        instead of reporting it missing."""
        kind = FILTERED if reason == "filtered" else SKIPPED
        fields = codec.unpack(record[0])
        return codec.pack(kind, *fields[1:6], 0, -1, None, None, False, fields[11], fields[12]), b""

    def coordinates(self, metadata: bytes) -> dict:
        topic, partition, offset = codec.coordinates(metadata)
        return {"topic": topic, "partition": partition, "offset": offset}

    def describe(self, metadata: bytes) -> RecordView:
        fields = codec.unpack(metadata)
        return RecordView(fields[0] == RECORD, fields[1], tuple(fields[9] or ()))


def topic_id_bytes(uuid) -> bytes | None:
    """A confluent_kafka Uuid as the 16 bytes records carry; None for the zero id of a broker without topic ids."""
    mask = (1 << 64) - 1
    raw = ((uuid.get_most_significant_bits() & mask).to_bytes(8, "big")
           + (uuid.get_least_significant_bits() & mask).to_bytes(8, "big"))
    return raw if any(raw) else None


def topic_id_text(raw: bytes | None) -> str | None:
    """As Kafka's tools print a topic id (URL-safe base64 without padding), for headers, reports and logs."""
    return None if raw is None else base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def topic_id_from_text(text) -> bytes | None:
    """topic_id_text() read back; None for anything that is not one (a report from before topic ids)."""
    if not isinstance(text, str) or len(text) != 22:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "==")
    except ValueError:
        return None
    return raw if len(raw) == codec.TOPIC_ID_BYTES and any(raw) and topic_id_text(raw) == text else None
