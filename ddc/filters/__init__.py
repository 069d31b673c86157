"""Filters: ordered per link, on the ingress (and the egress), each with its own counters.

chain.py runs them and decides what happens to a dropped record; builtin.py holds
the filters DDC ships; plugins come from the `ddc.filters` entry point group.
"""

from ddc.filters.chain import FilterChain, RecordView

__all__ = ["FilterChain", "RecordView"]
