"""The directory handler's metrics, read from its source's and sink's counters."""

from ddc.telemetry.metric import COUNTER, EGRESS, GAUGE, INGRESS, Metric

#: Why a source did not send a file it found.
SKIP_REASONS = ("symlink", "special", "unreadable", "name")
#: Why a sink did not deliver a file (kept in quarantine_directory, if set).
QUARANTINE_REASONS = ("incomplete", "checksum", "exists", "write_failed", "too_large")
#: Why a sink refused a file for its name or description (never kept).
REFUSE_REASONS = ("invalid_name", "unsafe_path", "malformed", "too_many_files")


def _directory(name: str, kind: str, help_text: str, roles: tuple, key: str | None = None,
               labels: dict | None = None) -> Metric:
    return Metric(name, kind, help_text, key or name, roles, labels or {}, handler="directory")


METRICS = (
    _directory("directory_files_sent", COUNTER, "Files sent whole (copies not counted)", INGRESS),
    _directory("directory_bytes_sent", COUNTER, "Bytes of the files sent whole", INGRESS),
    _directory("directory_copies_sent", COUNTER, "Extra copies of files sent (resend)", INGRESS),
    _directory("directory_files_abandoned", COUNTER, "Files that changed while they were read, sent again later",
               INGRESS),
    _directory("directory_files_queued", GAUGE, "Files found and waiting to be sent", INGRESS),
    _directory("directory_oldest_queued_seconds", GAUGE, "How long the oldest waiting file has waited", INGRESS),
    *(_directory("directory_files_skipped", COUNTER, "Files not sent, by reason", INGRESS,
                 f"directory_files_skipped_{reason}", {"reason": reason}) for reason in SKIP_REASONS),
    _directory("directory_files_delivered", COUNTER, "Files renamed into place whole, their SHA-256 checked",
               EGRESS),
    _directory("directory_bytes_delivered", COUNTER, "Bytes of the files delivered", EGRESS),
    _directory("directory_files_duplicate", COUNTER, "Copies of files already delivered, dropped", EGRESS),
    _directory("directory_files_interrupted", COUNTER, "Partial files dropped because their sender restarted",
               EGRESS),
    _directory("directory_files_in_progress", GAUGE, "Files being received", EGRESS),
    *(_directory("directory_files_quarantined", COUNTER, "Files not delivered, by reason", EGRESS,
                 f"directory_files_quarantined_{reason}", {"reason": reason}) for reason in QUARANTINE_REASONS),
    *(_directory("directory_files_refused", COUNTER, "Files refused for their name or description, by reason",
                 EGRESS, f"directory_files_refused_{reason}", {"reason": reason}) for reason in REFUSE_REASONS),
)
