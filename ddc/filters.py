"""Filters: ordered per link, each with its own counters.

Only `max_size` exists yet; issue #5 adds the keyword, regex, schema and plugin
filters and announces filtered records across the link.
"""

import logging

log = logging.getLogger("ddc.filters")


class MaxSizeFilter:
    def __init__(self, link_name: str, config):
        self.link_name = link_name
        self.max_bytes = config.max_bytes
        self.name = f"max_size({self.max_bytes})"
        self.records_dropped = 0

    def apply(self, records: list) -> list:
        kept = [record for record in records if len(record[1]) <= self.max_bytes]
        dropped = len(records) - len(kept)
        if dropped:
            self.records_dropped += dropped
            log.debug(f"link {self.link_name}: filter {self.name} dropped {dropped} records",
                      extra={"fields": {"link": self.link_name, "filter": self.name, "records": dropped}})
        return kept

    def counters(self) -> dict:
        return {f"filter_{self.name}_dropped": self.records_dropped}


FILTERS = {"max_size": MaxSizeFilter}


class FilterChain:
    def __init__(self, link_name: str, configs):
        self.filters = [FILTERS[config.type](link_name, config) for config in configs]

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
