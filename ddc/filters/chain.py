"""The filter chain: runs a link's filters in order and accounts for every record they drop.

A dropped record is replaced by its handler's placeholder where it has one
(Kafka), so the egress counts it as filtered, never as missing. Control records
(Kafka positions and placeholders) pass every filter untouched: they carry no
data to judge, and dropping one would make the egress report a loss. A filter
that raises is a filter that cannot vouch for the record: by default the record
is dropped and counted (fail closed); `on_error = "keep"` lets it through.
"""

import logging
import time
from importlib.metadata import entry_points
from ddc.errors import ConfigError
from ddc.handlers.base import PLAIN_DATA, RecordView

log = logging.getLogger("ddc.filters")

LOG_LINES_PER_WINDOW = 10
LOG_WINDOW_SECONDS = 10.0
PLUGIN_GROUP = "ddc.filters"


class DropLog:
    """Names dropped records' coordinates, at most LOG_LINES_PER_WINDOW lines per filter per window."""

    def __init__(self):
        self.window_started = 0.0
        self.lines = 0
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now - self.window_started >= LOG_WINDOW_SECONDS:
            self.window_started, self.lines = now, 0
        self.lines += 1
        if self.lines > LOG_LINES_PER_WINDOW:
            self.suppressed += 1
            return False
        return True


def load_plugin(config):
    """The filter object a plugin's entry point factory makes from its options."""
    found = [point for point in entry_points(group=PLUGIN_GROUP) if point.name == config.entry_point]
    if not found:
        installed = sorted(point.name for point in entry_points(group=PLUGIN_GROUP))
        raise ConfigError(f"filter plugin {config.entry_point!r} is not installed (entry point group "
                          f"{PLUGIN_GROUP!r}; installed: {installed or 'none'})")
    try:
        plugin = found[0].load()(dict(config.options))
    except Exception as error:
        raise ConfigError(f"filter plugin {config.entry_point!r} failed to start: {error}") from None
    if not callable(getattr(plugin, "accepts", None)):
        raise ConfigError(f"filter plugin {config.entry_point!r} made an object without an accepts() method")
    return plugin


class ChainedFilter:
    """One filter in a chain, with its name, error policy and counters."""

    def __init__(self, name: str, config, implementation):
        self.name = name
        self.on_error = config.on_error
        self.implementation = implementation
        self.records_dropped = 0
        self.errors = 0
        self.drop_log = DropLog()


class FilterChain:
    def __init__(self, link_name: str, configs, coordinates=lambda metadata: {},
                 placeholder=lambda record, reason: None, describe=lambda metadata: PLAIN_DATA):
        """coordinates(metadata) gives log fields; placeholder(record, "filtered") what crosses instead of a
        dropped record (or None); describe(metadata) the RecordView filters judge."""
        from ddc.filters.builtin import BUILTIN_FILTERS
        self.link_name = link_name
        self.coordinates = coordinates
        self.placeholder = placeholder
        self.describe = describe
        unnamed = [config.type for config in configs if not config.name]
        self.filters = []
        for position, config in enumerate(configs, 1):
            name = config.name or (config.type if unnamed.count(config.type) == 1 else f"{config.type}{position}")
            implementation = load_plugin(config) if config.type == "plugin" else BUILTIN_FILTERS[config.type](config)
            self.filters.append(ChainedFilter(name, config, implementation))

    def _judge(self, chained: ChainedFilter, value: bytes, view: RecordView, metadata: bytes) -> bool:
        try:
            return bool(chained.implementation.accepts(value, view))
        except Exception as error:
            chained.errors += 1
            if chained.drop_log.allow():
                log.warning(f"link {self.link_name}: filter {chained.name} failed on a record ({error!r}); "
                            f"{'dropped' if chained.on_error == 'drop' else 'kept'} by on_error",
                            extra={"fields": {"link": self.link_name, "filter": chained.name,
                                              **self._coordinates(metadata)}})
            return chained.on_error == "keep"

    def _coordinates(self, metadata: bytes) -> dict:
        try:
            return self.coordinates(metadata)
        except ValueError:
            return {}

    def apply(self, records: list) -> list:
        if not self.filters:
            return records
        kept = []
        for record in records:
            metadata, value = record
            view = self.describe(metadata)
            if not view.data:
                kept.append(record)
                continue
            for chained in self.filters:
                if self._judge(chained, value, view, metadata):
                    continue
                chained.records_dropped += 1
                if chained.drop_log.allow():
                    suppressed, chained.drop_log.suppressed = chained.drop_log.suppressed, 0
                    log.info(f"link {self.link_name}: filter {chained.name} dropped a record of {len(value)} bytes"
                             + (f" ({suppressed} more not logged)" if suppressed else ""),
                             extra={"fields": {"link": self.link_name, "filter": chained.name,
                                               "record_bytes": len(value), **self._coordinates(metadata)}})
                stand_in = self.placeholder(record, "filtered")
                if stand_in is not None:
                    kept.append(stand_in)
                break
            else:
                kept.append(record)
        return kept

    @property
    def records_dropped(self) -> int:
        return sum(chained.records_dropped for chained in self.filters)

    def counters(self) -> dict:
        merged = {}
        for chained in self.filters:
            merged[f"filter_{chained.name}_dropped"] = chained.records_dropped
            merged[f"filter_{chained.name}_errors"] = chained.errors
        return merged
