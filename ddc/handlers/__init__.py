"""Protocol handlers: sources on the ingress (data in), sinks on the egress (data out).

A handler is chosen by the `type` key of its config table; add new ones to the
registries below.
"""

import importlib

from ddc.handlers.base import Sink, Source

# Imported on first use: the Kafka handlers load librdkafka, which UDP-only proxies need not pay for at start-up.
SOURCES = {"udp": "ddc.handlers.udp:UdpSource", "file": "ddc.handlers.stream:FileSource",
           "kafka": "ddc.handlers.kafka.source:KafkaSource"}
SINKS = {"udp": "ddc.handlers.udp:UdpSink", "file": "ddc.handlers.stream:FileSink",
         "kafka": "ddc.handlers.kafka.sink:KafkaSink"}


def _load(location: str):
    module, name = location.split(":")
    return getattr(importlib.import_module(module), name)


def build_source(link_name: str, config) -> Source:
    return _load(SOURCES[config.type])(link_name, config)


def build_sink(link_name: str, config) -> Sink:
    return _load(SINKS[config.type])(link_name, config)
