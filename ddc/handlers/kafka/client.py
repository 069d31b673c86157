"""librdkafka client settings shared by the Kafka source and sink.

Properties from the config pass straight through to librdkafka, so SASL, TLS and
client tuning need no code here. librdkafka's own log lines and errors are routed
into DDC's log (JSON or text on stderr) instead of its default stderr format.
"""

import logging
import time

from confluent_kafka import KafkaError

# Properties librdkafka only knows on producers; a consumer built from the same table would warn about them.
PRODUCER_ONLY = {
    "acks", "request.required.acks", "enable.idempotence", "linger.ms", "queue.buffering.max.ms",
    "batch.size", "batch.num.messages", "compression.type", "compression.codec", "compression.level",
    "partitioner", "message.timeout.ms", "delivery.timeout.ms", "retries", "message.send.max.retries",
    "queue.buffering.max.messages", "queue.buffering.max.kbytes", "max.in.flight.requests.per.connection",
    "max.in.flight", "transactional.id", "transaction.timeout.ms", "sticky.partitioning.linger.ms",
}
CONSUMER_ONLY = {
    "group.id", "group.instance.id", "auto.offset.reset", "enable.auto.commit", "enable.auto.offset.store",
    "session.timeout.ms", "heartbeat.interval.ms", "max.poll.interval.ms", "isolation.level",
    "partition.assignment.strategy", "fetch.min.bytes", "fetch.max.bytes", "fetch.wait.max.ms",
    "max.partition.fetch.bytes", "queued.min.messages", "queued.max.messages.kbytes", "group.protocol",
    "enable.partition.eof", "auto.commit.interval.ms", "check.crcs",
}
ERROR_LOG_INTERVAL_SECONDS = 10.0


def as_librdkafka(value):
    """Text for librdkafka; booleans stay booleans, which properties handled by the Python client require."""
    return value if isinstance(value, bool) else str(value)


class ClientHealth:
    """Follows a client's error callbacks: whether its brokers are reachable, with rate-limited log lines."""

    def __init__(self, link_name: str, role: str, log: logging.Logger):
        self.link_name = link_name
        self.role = role
        self.log = log
        self.healthy = True
        self.errors = 0
        self._last_logged: dict[int, float] = {}

    def on_error(self, error: KafkaError) -> None:
        self.errors += 1
        code = error.code()
        text = error.str()
        if code == KafkaError._ALL_BROKERS_DOWN:
            self.healthy = False
            # librdkafka's own count is not to be trusted ("0/2 brokers are down" has been seen): say it plainly.
            text = f"no broker reachable (librdkafka: {text})"
        now = time.monotonic()
        if now - self._last_logged.get(code, -ERROR_LOG_INTERVAL_SECONDS) >= ERROR_LOG_INTERVAL_SECONDS:
            self._last_logged[code] = now
            self.log.error(f"link {self.link_name}: Kafka {self.role}: {text}",
                           extra={"fields": {"link": self.link_name, "kafka_error": error.name(),
                                             "fatal": error.fatal()}})

    def on_success(self) -> None:
        if not self.healthy:
            self.log.info(f"link {self.link_name}: Kafka {self.role}: brokers reachable again",
                          extra={"fields": {"link": self.link_name}})
        self.healthy = True


class _OncePerInterval(logging.Filter):
    """librdkafka repeats a failing connection's log line every few milliseconds; one per interval is enough."""

    def __init__(self):
        super().__init__()
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = str(record.msg).split("]", 1)[-1][:120]
        now = time.monotonic()
        if now - self._last.get(key, -ERROR_LOG_INTERVAL_SECONDS) < ERROR_LOG_INTERVAL_SECONDS:
            return False
        self._last[key] = now
        if len(self._last) > 1000:
            self._last.clear()
        return True


LIBRDKAFKA_LOG = logging.getLogger("ddc.librdkafka")
LIBRDKAFKA_LOG.addFilter(_OncePerInterval())


def client_config(properties: dict, defaults: dict, health: ClientHealth, *, leave_out: set = frozenset()) -> dict:
    """The user's properties over DDC's defaults, with DDC's logger and error callback."""
    config = {key: as_librdkafka(value) for key, value in defaults.items()}
    config.update({key: as_librdkafka(value) for key, value in properties.items() if key not in leave_out})
    config["error_cb"] = health.on_error
    config["logger"] = LIBRDKAFKA_LOG
    return config
