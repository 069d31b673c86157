"""DDC, the Data Diode Connector: Kafka topics and UDP streams across a one-way link."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ddc")
except PackageNotFoundError:
    __version__ = "0.0.0+unknown"
