"""Protocol handlers: sources on the ingress (data in), sinks on the egress (data out).

A handler is chosen by the `type` key of its config table; add new ones to the
registries below.
"""

from ddc.handlers.base import Sink, Source
from ddc.handlers.stream import FileSink, FileSource
from ddc.handlers.udp import UdpSink, UdpSource

SOURCES = {"udp": UdpSource, "file": FileSource}
SINKS = {"udp": UdpSink, "file": FileSink}


def build_source(link_name: str, config) -> Source:
    return SOURCES[config.type](link_name, config)


def build_sink(link_name: str, config) -> Sink:
    return SINKS[config.type](link_name, config)
