"""Telemetry: logs (stderr and syslog), metrics (Prometheus and StatsD), health over HTTP.

Every metric is defined once, in catalogue.py, and read from the links' own
counters when scraped or flushed, so the data path never calls into telemetry.
"""
