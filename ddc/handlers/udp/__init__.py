"""UDP streams (syslog, StatsD, telemetry): one datagram in, one record, one datagram out."""

from ddc.handlers.udp.config import UdpSinkConfig as SINK_CONFIG, UdpSourceConfig as SOURCE_CONFIG

__all__ = ["SINK_CONFIG", "SOURCE_CONFIG"]
