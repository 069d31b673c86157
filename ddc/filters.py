"""Filters: ordered per link, each with its own counters.

Only `max_size` exists yet; issue #5 adds the keyword, regex, schema and plugin
filters. A dropped record is replaced by its source's placeholder where the
source has one (Kafka), so the egress counts it as filtered, never as missing.
"""

import logging

log = logging.getLogger("ddc.filters")


class MaxSizeFilter:
    def __init__(self, link_name: str, config, coordinates, placeholder):
        self.link_name = link_name
        self.coordinates = coordinates
        self.placeholder = placeholder
        self.max_bytes = config.max_bytes
        self.name = f"max_size({self.max_bytes})"
        self.records_dropped = 0

    def apply(self, records: list) -> list:
        kept = []
        for record in records:
            if len(record[1]) <= self.max_bytes:
                kept.append(record)
                continue
            self.records_dropped += 1
            stand_in = self.placeholder(record, "filtered")
            if stand_in is not None:
                kept.append(stand_in)
            log.debug(f"link {self.link_name}: filter {self.name} dropped a record of {len(record[1])} bytes",
                      extra={"fields": {"link": self.link_name, "filter": self.name, "record_bytes": len(record[1]),
                                        **self.coordinates(record[0])}})
        return kept

    def counters(self) -> dict:
        return {f"filter_{self.name}_dropped": self.records_dropped}


FILTERS = {"max_size": MaxSizeFilter}


class FilterChain:
    def __init__(self, link_name: str, configs, coordinates=lambda metadata: {},
                 placeholder=lambda record, reason: None):
        """placeholder(record, "filtered") gives what crosses the link instead of a dropped record, or None."""
        self.filters = [FILTERS[config.type](link_name, config, coordinates, placeholder) for config in configs]

    def apply(self, records: list) -> list:
        for record_filter in self.filters:
            if not records:
                break
            records = record_filter.apply(records)
        return records

    @property
    def records_dropped(self) -> int:
        return sum(record_filter.records_dropped for record_filter in self.filters)

    def counters(self) -> dict:
        merged = {}
        for record_filter in self.filters:
            merged.update(record_filter.counters())
        return merged
