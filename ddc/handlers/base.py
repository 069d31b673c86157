"""What every source and sink provides to a link.

Records are (metadata: bytes, value: bytes) pairs. The metadata format belongs to
the handler type, which lets the transport stay ignorant of what it carries.
"""

import abc
import threading

from ddc.stage_buffer import StageBuffer


class Source(abc.ABC):
    """Produces records on the ingress; runs in a thread of its own until stopping is set."""

    #: What the link's buffer does when full, unless the config says otherwise.
    default_when_full = "drop"

    def __init__(self, link_name: str, config):
        self.link_name = link_name
        self.config = config

    def open(self) -> None:
        """Acquires sockets or connections; raises OSError with a clear message if it cannot."""

    @abc.abstractmethod
    def run(self, output: StageBuffer, stopping: threading.Event) -> None:
        """Pushes records into output until stopping is set, then returns."""

    def close(self) -> None:
        """Releases what open acquired."""

    #: Whether the link (and, once all links have, the proxy) stops when run() returns by itself.
    stops_link_at_end = False

    def healthy(self) -> bool:
        """Whether the source can take data in; sent across the diode in every heartbeat."""
        return True

    def acknowledge(self, count: int) -> None:
        """The link has sent (or settled) the next `count` records it took from the buffer, in order.

        Sources that keep data at rest (Kafka) commit their position from this."""

    def placeholder(self, record, reason: str):
        """What crosses the link instead of a record the ingress dropped ("filtered" or "too_large"), so the
        egress can count it instead of reporting it missing; None sends nothing."""
        return None

    def coordinates(self, metadata: bytes) -> dict:
        """Log fields that say where a record came from (its source coordinates)."""
        return {}

    def counters(self) -> dict:
        return {}


class Sink(abc.ABC):
    """Delivers records on the egress."""

    def __init__(self, link_name: str, config):
        self.link_name = link_name
        self.config = config

    def open(self) -> None:
        """Acquires sockets or connections; raises OSError with a clear message if it cannot."""

    #: Whether the link stops once the sender has shut down (one-shot transfers).
    stops_after_sender_shutdown = False

    @abc.abstractmethod
    def write(self, records: list) -> None:
        """Delivers a batch of records in order."""

    def close(self) -> None:
        """Flushes and releases what open acquired."""

    def counters(self) -> dict:
        return {}
