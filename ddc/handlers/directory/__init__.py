"""Files and folders, `type = "directory"`: each file of a folder crosses whole, named and checked, or is
reported by name (docs/files.md)."""

from ddc.handlers.directory.config import DirectorySinkConfig as SINK_CONFIG, DirectorySourceConfig as SOURCE_CONFIG
from ddc.handlers.directory.metrics import METRICS

__all__ = ["METRICS", "SINK_CONFIG", "SOURCE_CONFIG"]
