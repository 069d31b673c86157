"""The Kafka handler's metrics, read from the counters of its source and sink of the same name."""

from ddc.telemetry.metric import BOTH, COUNTER, EGRESS, GAUGE, INGRESS, RECORDS_DROPPED, Metric


def _kafka(name: str, kind: str, help_text: str, roles: tuple = BOTH) -> Metric:
    return Metric(name, kind, help_text, name, roles, handler="kafka")


METRICS = (
    Metric("records_dropped", COUNTER, RECORDS_DROPPED, "kafka_records_undecodable", EGRESS,
           {"reason": "undecodable"}, handler="kafka"),
    # Kafka source (ingress)
    _kafka("kafka_records_consumed", COUNTER, "Records consumed from the source cluster", INGRESS),
    _kafka("kafka_records_skipped", COUNTER, "Records larger than max_record_size, announced instead of sent "
           "(ingress) or counted from the announcement (egress)"),
    _kafka("kafka_commits", COUNTER, "Offset commits that succeeded", INGRESS),
    _kafka("kafka_commit_failures", COUNTER, "Offset commits that failed (retried with the next)", INGRESS),
    _kafka("kafka_rebalances", COUNTER, "Partition assignments and revocations", INGRESS),
    _kafka("kafka_records_unacknowledged", GAUGE, "Records consumed but not yet sent, so not yet committable", INGRESS),
    _kafka("kafka_client_errors", COUNTER, "Errors librdkafka reported (broker down, authentication, ...)"),
    _kafka("kafka_source_topic_id_changes", COUNTER, "Source topics (ingress) or source partitions (egress) that "
           "came back with a new topic id: created again, or their cluster rebuilt; their offsets start again"),
    # Kafka sink (egress)
    _kafka("kafka_records_written", COUNTER, "Records handed to the producer", EGRESS),
    _kafka("kafka_records_delivered", COUNTER, "Records the destination cluster acknowledged", EGRESS),
    _kafka("kafka_records_duplicate", COUNTER,
           "Records not written because the destination already holds them", EGRESS),
    _kafka("kafka_records_filtered", COUNTER,
           "Records a filter dropped (ingress or egress), counted as filtered, not missing", EGRESS),
    _kafka("kafka_records_repaired", COUNTER, "Offsets of missing ranges settled by a resend", EGRESS),
    _kafka("kafka_delivery_failures", COUNTER, "Records the producer could not deliver (reported missing)", EGRESS),
    _kafka("kafka_missing_ranges_reported", COUNTER, "Ranges of source offsets reported missing", EGRESS),
    _kafka("kafka_missing_offsets_reported", COUNTER, "Source offsets in the ranges reported missing", EGRESS),
    _kafka("kafka_missing_ranges_open", GAUGE, "Missing ranges not yet repaired", EGRESS),
    _kafka("kafka_report_failures", COUNTER, "Missing-range or repair reports that could not be written to "
           "missing_records_topic (the log line is their only record)", EGRESS),
    _kafka("kafka_producer_queue_full_waits", COUNTER, "Times the producer queue was full and the sink waited", EGRESS),
    _kafka("kafka_destination_checks", COUNTER,
           "Times a source partition did not follow what this egress wrote and the destination was read first",
           EGRESS),
)
