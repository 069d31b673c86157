"""The metric catalogue: every metric DDC exposes, defined once: the link's here, each handler's in its
own package (ddc/handlers/<name>/metrics.py), gathered through the handler registry.

Each entry maps a key of a link's counters() to a metric name, a kind, fixed
labels and help text. Prometheus (prometheus.py) and StatsD (statsd.py) both
render from this list, and docs/metrics.md documents it; tests check that the
three agree. Names follow Prometheus conventions: counters end in `_total`
there, StatsD uses the name without the suffix.
"""

from ddc.handlers import handler_metrics
from ddc.telemetry.metric import BOTH, COUNTER, EGRESS, GAUGE, INGRESS, RECORDS_DROPPED, Metric

RECORDS_IN = "Records taken in: from the source (ingress) or rebuilt from frames (egress)"
RECORDS_OUT = "Records sent: packed into frames (ingress) or delivered by the sink (egress)"
KERNEL_DROPS = "Datagrams the kernel dropped on a full socket receive buffer"
FRAMES_DISCARDED = "Partial frames discarded, by reason"


def _drops(reason: str, help_text: str) -> Metric:
    return Metric("datagrams_dropped", COUNTER, "Link datagrams refused by the egress, by reason: " + help_text,
                  f"dropped_{reason}", EGRESS, {"reason": reason})


CATALOGUE: tuple[Metric, ...] = (
    # records through the link, both sides
    Metric("records_in", COUNTER, RECORDS_IN, "source_datagrams_received", INGRESS),
    Metric("records_in", COUNTER, RECORDS_IN, "records_received", EGRESS),
    Metric("bytes_in", COUNTER, "Record value bytes taken in from the source", "source_bytes_received", INGRESS),
    Metric("records_out", COUNTER, RECORDS_OUT, "records_sent", INGRESS),
    Metric("records_out", COUNTER, RECORDS_OUT, "sink_datagrams_sent", EGRESS),
    Metric("bytes_out", COUNTER, "Record value bytes delivered by the sink", "sink_bytes_sent", EGRESS),
    Metric("records_dropped", COUNTER, RECORDS_DROPPED, "buffer_records_dropped", BOTH, {"reason": "buffer_full"}),
    Metric("records_dropped", COUNTER, RECORDS_DROPPED, "records_too_large", INGRESS, {"reason": "too_large"}),
    Metric("records_dropped", COUNTER, RECORDS_DROPPED, "sink_records_too_large", EGRESS, {"reason": "too_large"}),
    Metric("records_dropped", COUNTER, RECORDS_DROPPED, "sink_send_errors", EGRESS, {"reason": "sink_error"}),
    Metric("kernel_receive_drops", COUNTER, KERNEL_DROPS, "source_kernel_drops", INGRESS, {"socket": "source"}),
    Metric("kernel_receive_drops", COUNTER, KERNEL_DROPS, "kernel_receive_drops", EGRESS, {"socket": "link"}),
    # stage buffers
    Metric("buffer_bytes", GAUGE, "Bytes held in the link's stage buffer", "buffer_bytes"),
    Metric("buffer_peak_bytes", GAUGE, "Most bytes the stage buffer has held", "buffer_peak_bytes"),
    Metric("buffer_full_events", COUNTER, "Times a record met a full stage buffer", "buffer_full_events"),
    Metric("records_dropped", COUNTER, RECORDS_DROPPED, "spool_records_dropped", EGRESS, {"reason": "spool_full"}),
    Metric("spool_frames_in", COUNTER, "Frames written to the disk spool (every frame with a write-ahead log, "
           "else those the sink was not keeping up with)", "spool_frames_in", EGRESS),
    Metric("spool_frames_out", COUNTER, "Frames read back from the disk spool for the sink", "spool_frames_out",
           EGRESS),
    Metric("spool_frames", GAUGE, "Frames in the disk spool not yet delivered", "spool_frames", EGRESS),
    Metric("spool_bytes", GAUGE, "Bytes the disk spool takes on disk", "spool_bytes", EGRESS),
    Metric("spool_frames_corrupt", COUNTER, "Spooled frames that failed their checksum when read back (dropped)",
           "spool_frames_corrupt", EGRESS),
    Metric("spool_frames_unlogged", COUNTER, "Frames the full write-ahead log could not take, sent to the sink from "
           "memory only (lost if the egress dies before delivering them)", "spool_frames_unlogged", EGRESS),
    # the sending side of the link
    Metric("frames_sent", COUNTER, "Frames sent across the link", "frames_sent", INGRESS),
    Metric("frames_failed", COUNTER, "Frames that could not be sent, or not whole (the kernel refused a datagram)",
           "frames_failed", INGRESS),
    Metric("frames_resent", COUNTER, "Frames sent again because the kernel refused a datagram of them (Kafka and "
           "file sources; nothing after such a frame is acknowledged until it leaves)", "frames_resent", INGRESS),
    Metric("datagrams_sent", COUNTER, "Link datagrams sent: data, parity and control", "datagrams_sent", INGRESS),
    Metric("datagrams_send_failed", COUNTER, "Link datagrams the kernel refused to send", "datagrams_failed",
           INGRESS),
    Metric("link_bytes_sent", COUNTER, "Frame bytes sent across the link", "bytes_sent", INGRESS),
    Metric("frame_bytes_uncompressed", COUNTER, "Frame bytes before compression (as sent when it is off)",
           "frame_bytes_uncompressed", INGRESS),
    Metric("compression_ratio", GAUGE, "Frame bytes before compression per byte after (1 when it is off)",
           "compression_ratio", INGRESS),
    Metric("heartbeats_sent", COUNTER, "Heartbeats sent, idle or between the batches of a frame",
           "heartbeats_sent", INGRESS),
    Metric("pacing_sleeps", COUNTER, "Times the sender waited for the pacing rate", "pacing_sleeps", INGRESS),
    Metric("segmented_sends", COUNTER, "Sends that handed the kernel several datagrams at once (UDP segmentation "
           "offload)", "segmented_sends", INGRESS),
    Metric("fec_parity_sent", COUNTER, "Parity datagrams sent (forward error correction)", "parity_sent", INGRESS),
    Metric("fec_parity_beyond_share_sent", COUNTER, "Parity datagrams sent beyond the configured share, so that "
           "blocks smaller than a full one are as strong", "parity_beyond_share_sent", INGRESS),
    # the receiving side of the link
    Metric("datagrams_received", COUNTER, "Link datagrams received", "datagrams_received", EGRESS),
    Metric("link_bytes_received", COUNTER, "Link datagram bytes received", "bytes_received", EGRESS),
    Metric("datagrams_accepted", COUNTER, "Link datagrams used: placed in a frame or processed as control",
           "datagrams_accepted", EGRESS),
    Metric("datagrams_reordered", COUNTER, "Link datagrams that arrived after a later one", "datagrams_reordered",
           EGRESS),
    _drops("truncated", "shorter than their header or payload length"),
    _drops("bad_magic", "not DDC datagrams"),
    _drops("unknown_version", "another protocol version"),
    _drops("bad_checksum", "corrupted in transit"),
    _drops("malformed", "inconsistent header fields"),
    _drops("unknown_type", "unknown datagram type"),
    _drops("oversized_frame", "announcing a frame above max_frame_size"),
    _drops("stale_session", "from a sender session that was replaced, or older than the live one"),
    _drops("duplicate", "already received"),
    _drops("too_old", "behind the sequence window"),
    _drops("late_fragment", "for a frame already completed or discarded"),
    _drops("unauthenticated", "not sealed, on a link with keys"),
    _drops("unknown_key", "sealed with a key id this egress does not have"),
    _drops("forged", "authentication tag does not match (forged, or sealed with another key)"),
    _drops("inconsistent_rebuild", "rebuilt by FEC but not the datagram their block lost (forged parity)"),
    Metric("datagrams_lost", GAUGE, "Link datagrams sent but neither received nor rebuilt from parity (falls if late ones arrive)",
           "datagrams_lost", EGRESS),
    Metric("fec_parity_received", COUNTER, "Parity datagrams received (forward error correction)",
           "parity_received", EGRESS),
    Metric("fec_datagrams_recovered", COUNTER, "Lost link datagrams rebuilt from parity", "datagrams_recovered",
           EGRESS),
    Metric("fec_blocks_recovered", COUNTER, "FEC blocks that lost datagrams and were rebuilt",
           "fec_blocks_recovered", EGRESS),
    Metric("fec_blocks_unrecoverable", COUNTER, "FEC blocks that lost more datagrams than they had parity",
           "fec_blocks_unrecoverable", EGRESS),
    Metric("fec_bytes", GAUGE, "Bytes held by open FEC blocks", "fec_bytes_in_flight", EGRESS),
    Metric("frames_completed", COUNTER, "Frames reassembled", "frames_completed", EGRESS),
    Metric("frames_discarded", COUNTER, FRAMES_DISCARDED, "frames_timed_out", EGRESS, {"reason": "timed_out"}),
    Metric("frames_discarded", COUNTER, FRAMES_DISCARDED, "frames_evicted", EGRESS, {"reason": "evicted"}),
    Metric("frames_discarded", COUNTER, FRAMES_DISCARDED, "frames_abandoned", EGRESS,
           {"reason": "session_restart"}),
    Metric("frames_lost", GAUGE, "Frames sent but not delivered, including those of which nothing arrived",
           "frames_lost", EGRESS),
    Metric("fragments_missing", COUNTER, "Missing datagrams of discarded partial frames", "fragments_missing",
           EGRESS),
    Metric("frames_undecodable", COUNTER, "Complete frames that were not valid record batches",
           "frames_undecodable", EGRESS),
    Metric("frames_in_flight", GAUGE, "Partial frames being reassembled", "frames_in_flight", EGRESS),
    Metric("reassembly_bytes", GAUGE, "Bytes held by partial frames", "bytes_in_flight", EGRESS),
    Metric("heartbeats_received", COUNTER, "Heartbeats received from the ingress", "heartbeats_received", EGRESS),
    Metric("sessions_started", COUNTER, "Sender sessions seen (a restarted ingress starts a new one)",
           "sessions_started", EGRESS),
    Metric("sessions_rekeyed", COUNTER, "Times the sender's session went on under a new key (rekey_interval)",
           "sessions_rekeyed"),
    Metric("link_up", GAUGE, "1 while heartbeats arrive, 0 after the configured number are missed", "link_up",
           EGRESS),
    # what the ingress reported in its last heartbeat
    Metric("peer_datagrams_sent", GAUGE, "Datagrams the ingress reports sent", "peer_datagrams_sent", EGRESS),
    Metric("peer_frames_sent", GAUGE, "Frames the ingress reports sent", "peer_frames_sent", EGRESS),
    Metric("peer_records_sent", GAUGE, "Records the ingress reports sent", "peer_records_sent", EGRESS),
    Metric("peer_bytes_sent", GAUGE, "Frame bytes the ingress reports sent", "peer_bytes_sent", EGRESS),
    Metric("peer_records_dropped", GAUGE, "Records the ingress reports dropped before sending",
           "peer_records_dropped", EGRESS),
    Metric("peer_source_healthy", GAUGE, "1 while the ingress reports its source healthy", "peer_source_healthy",
           EGRESS),
    Metric("peer_buffer_fill", GAUGE, "Fill of the ingress's stage buffer (0 to 1) as it reports it",
           "peer_buffer_fill_permille", EGRESS, scale=0.001),
    Metric("peer_uptime_seconds", GAUGE, "Uptime the ingress reports", "peer_uptime_ms", EGRESS, scale=0.001),
    Metric("peer_heartbeat_age_seconds", GAUGE, "Seconds since the last heartbeat arrived",
           "peer_last_heartbeat_age_seconds", EGRESS),
) + handler_metrics()

FILTER_METRICS = (  # (metric, counter key suffix): one series per filter, labelled by its name
    (Metric("filter_records_dropped", COUNTER, "Records dropped by a filter", "", BOTH), "_dropped"),
    (Metric("filter_errors", COUNTER, "Records on which a filter failed (kept or dropped by its on_error)", "",
            BOTH), "_errors"),
)
LATENCY = Metric("delivery_latency_seconds", "histogram",
                 "Seconds from a batch's first record taken in at the ingress to its records rebuilt at the egress "
                 "(needs synchronised clocks)", "", EGRESS)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def metrics_for(role: str) -> list[Metric]:
    return [metric for metric in CATALOGUE if role in metric.roles]


def per_filter(counters: dict, suffix: str) -> dict:
    """{filter name: value} from a link's counters (keys filter_<name><suffix>)."""
    return {key[len("filter_"):-len(suffix)]: value for key, value in counters.items()
            if key.startswith("filter_") and key.endswith(suffix)}
