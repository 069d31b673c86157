"""The Kafka listener's metrics, read from its source's counters."""

from ddc.telemetry.metric import COUNTER, GAUGE, INGRESS, Metric

#: Kafka's API keys the listener answers, by the label their requests are counted under.
API_NAMES = {0: "produce", 3: "metadata", 18: "api_versions", 22: "init_producer_id", 17: "sasl_handshake",
             36: "sasl_authenticate"}
#: Why the listener closed connections.
CLOSE_REASONS = ("malformed", "unsupported", "oversized", "idle", "slow", "unauthenticated", "limit", "tls")
#: The produce errors counted, by Kafka's error code.
PRODUCE_ERRORS = {2: "corrupt_message", 3: "unknown_topic_or_partition", 10: "message_too_large",
                  21: "invalid_required_acks", 42: "invalid_request", 45: "out_of_order_sequence_number",
                  47: "invalid_producer_epoch", 53: "transactional_id_authorization_failed",
                  56: "kafka_storage_error", 76: "unsupported_compression_type", 87: "invalid_record"}


def _listener(name: str, kind: str, help_text: str, key: str | None = None, labels: dict | None = None) -> Metric:
    return Metric(name, kind, help_text, key or name, INGRESS, labels or {}, handler="kafka_listener")


METRICS = (
    _listener("kafka_listener_connections_accepted", COUNTER, "Producer connections accepted"),
    _listener("kafka_listener_connections_open", GAUGE, "Producer connections open"),
    *(_listener("kafka_listener_connections_closed", COUNTER, "Connections the listener closed, by reason",
                f"kafka_listener_connections_closed_{reason}", {"reason": reason}) for reason in CLOSE_REASONS),
    *(_listener("kafka_listener_requests", COUNTER, "Requests taken, by API", f"kafka_listener_requests_{api}",
                {"api": api}) for api in API_NAMES.values()),
    *(_listener("kafka_listener_produce_errors", COUNTER, "Partitions of produce requests refused, by error",
                f"kafka_listener_produce_errors_{error}", {"error": error}) for error in PRODUCE_ERRORS.values()),
    _listener("kafka_listener_records_in", COUNTER, "Records taken from producers (retries sent again included)"),
    _listener("kafka_listener_bytes_in", COUNTER, "Bytes of records taken from producers, uncompressed"),
    _listener("kafka_listener_retries_answered", COUNTER,
              "Idempotent producers' retries of batches already taken, answered with their first offsets"),
    _listener("kafka_listener_records_resent", COUNTER,
              "Records of retries of batches taken before a restart, sent again under their offsets"),
    _listener("kafka_listener_produce_seconds", COUNTER, "Time from produce requests to their answers"),
    _listener("kafka_listener_produce_answers", COUNTER, "Produce requests answered (acks=1 and acks=all)"),
    _listener("kafka_listener_backpressure_seconds", COUNTER,
              "Time connections waited to read a request because max_pending_bytes were taken"),
    _listener("kafka_listener_records_unacknowledged", GAUGE, "Records taken in but not yet sent over the link"),
)
