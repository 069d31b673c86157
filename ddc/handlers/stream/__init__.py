"""Byte streams (files, pipes, stdin/stdout), `type = "file"`: one stream across the diode, in order."""

from ddc.handlers.stream.config import FileSinkConfig as SINK_CONFIG, FileSourceConfig as SOURCE_CONFIG

__all__ = ["SINK_CONFIG", "SOURCE_CONFIG"]
