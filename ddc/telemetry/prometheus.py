"""Prometheus exposition: renders the catalogue from the links' counters at scrape time."""

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.process_collector import ProcessCollector

import ddc
from ddc.telemetry.catalogue import COUNTER, FILTER_METRICS, LATENCY, metrics_for, per_filter

PREFIX = "ddc_"


class LinkCollector:
    def __init__(self, links):
        self.links = links

    def collect(self):
        families = {}

        def family(metric, label_names):
            if metric.name not in families:
                kind = CounterMetricFamily if metric.kind == COUNTER else GaugeMetricFamily
                families[metric.name] = kind(PREFIX + metric.name, metric.help, labels=label_names)
            return families[metric.name]

        latency = HistogramMetricFamily(PREFIX + LATENCY.name, LATENCY.help, labels=["link", "role"])
        filters = [(CounterMetricFamily(PREFIX + metric.name, metric.help, labels=["link", "role", "filter"]), suffix)
                   for metric, suffix in FILTER_METRICS]
        for link in self.links:
            counters = link.counters()
            base = [link.name, link.role]
            for metric in metrics_for(link.role):
                if metric.key in counters:
                    family(metric, ["link", "role", *metric.labels]).add_metric(
                        base + list(metric.labels.values()), counters[metric.key] * metric.scale)
            for filter_family, suffix in filters:
                for name, value in per_filter(counters, suffix).items():
                    filter_family.add_metric(base + [name], value)
            histogram = getattr(link, "latency", None)
            if histogram is not None:
                buckets, total = histogram.cumulative()
                latency.add_metric(base, buckets, total)
        info = GaugeMetricFamily(PREFIX + "build_info", "DDC version; always 1", labels=["version"])
        info.add_metric([ddc.__version__], 1)
        yield info
        yield from families.values()
        for filter_family, _ in filters:
            yield filter_family
        yield latency


def build_registry(links) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LinkCollector(links))
    ProcessCollector(registry=registry)
    return registry


def exposition(registry) -> bytes:
    return generate_latest(registry)
