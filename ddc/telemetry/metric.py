"""What a metric is: the entry every part of DDC uses to declare the metrics it exposes. The catalogue
(catalogue.py) gathers the link's entries and the handlers' own (each handler's metrics.py)."""

from dataclasses import dataclass, field

COUNTER = "counter"
GAUGE = "gauge"
BOTH = ("ingress", "egress")
INGRESS = ("ingress",)
EGRESS = ("egress",)
RECORDS_DROPPED = "Records dropped, by reason"  # one help text for every entry of records_dropped


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str
    help: str
    key: str
    roles: tuple = BOTH
    labels: dict = field(default_factory=dict)
    scale: float = 1.0
    handler: str | None = None  # exposed only by links with this source or sink type
