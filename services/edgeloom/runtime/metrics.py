"""Prometheus metrics: one registry per app, naming rules enforced, an HTTP /metrics endpoint.

Apps declare their metrics in one place through :class:`MetricFactory`, which applies the
``edgeloom_`` prefix and refuses names that break the Prometheus naming guide (base units,
``_total`` only on counters) or labels outside the bounded set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

PREFIX = "edgeloom_"
ALLOWED_LABELS = frozenset(
    {
        "kind",
        "role",
        "system",
        "outcome",
        "worker",
        "method",
        "stage",
        "channel",
        "phase",
        "namespace",
        "name",
        # the operator's per-resource series (bounded by the live resources: removed on deletion)
        "resource_namespace",
        "uid",
    }
)
_UNITS = ("_seconds", "_bytes", "_ratio", "_total", "_info")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_FORBIDDEN_UNITS = ("_ms", "_milliseconds", "_kb", "_mb", "_percent")


@dataclass(frozen=True)
class MetricsEndpoint:
    """Where a role serves ``/metrics``, and how long it keeps serving once its work is done
    (so a Prometheus that scrapes every ``linger_s`` seconds sees the final values)."""

    port: int
    addr: str = "0.0.0.0"
    linger_s: float = 0.0


@dataclass
class MetricFactory:
    """Creates metrics in ``registry`` under the ``edgeloom_`` prefix.

    ``const_labels`` (e.g. kind, role, job) are attached to every metric; they must be bounded.
    Unitless gauges (counts such as ``participants``) are allowed; counters end in ``_total``.
    """

    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )
    const_labels: dict[str, str] = field(default_factory=dict)
    _http: WSGIServer | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._check_labels(self.const_labels)

    def _check_labels(self, labels: tuple[str, ...] | dict[str, str]) -> None:
        bad = set(labels) - ALLOWED_LABELS
        if bad:
            raise ValueError(f"labels {sorted(bad)} are not in the bounded label set")

    def _name(self, name: str, counter: bool = False) -> str:
        if not _NAME.fullmatch(name) or name.startswith(PREFIX):
            raise ValueError(f"metric name {name!r}: snake_case without the {PREFIX} prefix")
        if name.endswith(_FORBIDDEN_UNITS):
            raise ValueError(f"metric name {name!r}: use base units (seconds, bytes, ratio)")
        if counter != name.endswith("_total"):
            raise ValueError(f"metric name {name!r}: counters and only counters end in _total")
        return PREFIX + name

    def _labels(self, labels: tuple[str, ...]) -> list[str]:
        self._check_labels(labels)
        return [*self.const_labels, *labels]

    def counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        full = self._name(name, counter=True)[: -len("_total")]
        metric = Counter(full, doc, self._labels(labels), registry=self.registry)
        return metric.labels(**self.const_labels) if self.const_labels and not labels else metric

    def gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        metric = Gauge(self._name(name), doc, self._labels(labels), registry=self.registry)
        return metric.labels(**self.const_labels) if self.const_labels and not labels else metric

    def histogram(
        self,
        name: str,
        doc: str,
        labels: tuple[str, ...] = (),
        buckets: tuple[float, ...] = Histogram.DEFAULT_BUCKETS,
    ) -> Histogram:
        if not name.endswith(_UNITS):
            raise ValueError(f"histogram {name!r} must name its unit (_seconds, _bytes, ...)")
        metric = Histogram(
            self._name(name), doc, self._labels(labels), registry=self.registry, buckets=buckets
        )
        return metric.labels(**self.const_labels) if self.const_labels and not labels else metric

    def child(self, metric, **labels: str):  # type: ignore[no-untyped-def]
        """The child of a labelled metric with the const labels filled in."""
        return metric.labels(**self.const_labels, **labels)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve ``/metrics`` on ``port`` (0 picks a free one); returns the bound port."""
        self._http, _ = start_http_server(port, addr=addr, registry=self.registry)
        return int(self._http.server_port)

    def close(self) -> None:
        """Stop serving ``/metrics``."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.exposition())
