"""DDC, the Data Diode Connector: Kafka topics and UDP streams across a one-way link."""

__version__ = "0.1.0"  # the one place the version is written; pyproject.toml reads it from here
