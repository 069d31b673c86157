"""Protocol handlers: sources on the ingress (data in), sinks on the egress (data out).

A handler is a package here holding its config models, source, sink and metric entries; its `__init__`
names them (SOURCE_CONFIG and SINK_CONFIG, None for a side it lacks, and METRICS where it has its own). The
link config composes the registered handlers' models, chosen by the `type` key of a `source` or `sink` table.
To add a handler, add its package and register it below.
"""

import functools
import importlib

REGISTERED = (
    "ddc.handlers.udp",
    "ddc.handlers.stream",
    "ddc.handlers.kafka",
    "ddc.handlers.kafka_listener",
    "ddc.handlers.directory",
)


@functools.cache
def _packages() -> tuple:
    return tuple(importlib.import_module(name) for name in REGISTERED)


def source_configs() -> tuple[type, ...]:
    """Read as attributes, not with a default: a package caught half-imported (an import cycle) fails here
    rather than losing its type from the schema."""
    return tuple(package.SOURCE_CONFIG for package in _packages() if package.SOURCE_CONFIG is not None)


def sink_configs() -> tuple[type, ...]:
    return tuple(package.SINK_CONFIG for package in _packages() if package.SINK_CONFIG is not None)


def handler_metrics() -> tuple:
    return tuple(metric for package in _packages() for metric in getattr(package, "METRICS", ()))


def build_handler(link_name: str, config):
    """The source or sink a link's `source` or `sink` config describes."""
    module, name = config.implementation.split(":")
    return getattr(importlib.import_module(module), name)(link_name, config)
