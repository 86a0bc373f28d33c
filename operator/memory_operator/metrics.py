"""Operator metrics, named like controller-runtime's so existing dashboards work."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTROLLER = "memorynamespace"
REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILE_TOTAL = Counter(
    "controller_runtime_reconcile_total",
    "Total number of reconciliations per controller and result",
    ["controller", "result"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "controller_runtime_reconcile_errors_total",
    "Total number of reconciliation errors per controller",
    ["controller"],
    registry=REGISTRY,
)
RECONCILE_TIME = Histogram(
    "controller_runtime_reconcile_time_seconds",
    "Length of time per reconciliation per controller",
    ["controller"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
BACKEND_SECONDS = Histogram(
    "somafractal_backend_operation_seconds",
    "Latency of operator calls to a backend (postgres, qdrant, kafka, redis, kubernetes)",
    ["backend", "operation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)


class TenantReadiness(Collector):
    """`somafractal_memorynamespaces{namespace, ready}`: the MemoryNamespaces this
    replica's watch sees, counted per namespace and Ready status (True, False,
    Unknown). Read at scrape time from the operator's index of its watch
    (fleet.Fleet.readiness): a scrape costs no API call, a status change counts
    with its watch event and a deleted CR drops out with its DELETED event.
    Labels are bounded by namespaces x 3, never one series per tenant."""

    NAME = "somafractal_memorynamespaces"

    def __init__(self) -> None:
        self._counts: Callable[[], Mapping[tuple[str, str], int]] | None = None

    def watch(self, counts: Callable[[], Mapping[tuple[str, str], int]] | None) -> None:
        self._counts = counts

    def counts(self) -> dict[tuple[str, str], int]:
        return dict(self._counts()) if self._counts is not None else {}

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            self.NAME,
            "MemoryNamespaces by namespace and Ready condition status "
            "(Unknown: not judged yet for the current generation).",
            labels=["namespace", "ready"],
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        for (namespace, ready), count in sorted(self.counts().items()):
            if count:
                family.add_metric([namespace, ready], count)
        yield family


TENANTS = TenantReadiness()
REGISTRY.register(TENANTS)

# Results as controller-runtime labels them.
SUCCESS, ERROR, REQUEUE = "success", "error", "requeue"

T = TypeVar("T")


def record_backend(backend: str, operation: str, seconds: float) -> None:
    """One call to a backend took `seconds` (failures too). The backend adapters
    record their own phases (observe, apply, delete, and the bulk reads catalog /
    read_all); the reconciler records its Kubernetes calls (timed_backend)."""
    BACKEND_SECONDS.labels(backend, operation).observe(seconds)


def timed_backend(backend: str, operation: str, fn: Callable[[], T]) -> T:
    """Run one call and record its latency (failures too)."""
    start = time.perf_counter()
    try:
        return fn()
    finally:
        record_backend(backend, operation, time.perf_counter() - start)


def operation_counts() -> dict[tuple[str, str], float]:
    """Calls recorded so far per (backend, operation): the histogram's counts."""
    counts: dict[tuple[str, str], float] = {}
    for metric in REGISTRY.collect():
        if metric.name == "somafractal_backend_operation_seconds":
            for sample in metric.samples:
                if sample.name.endswith("_count"):
                    key = (sample.labels["backend"], sample.labels["operation"])
                    counts[key] = sample.value
    return counts


@contextmanager
def reconcile_timer() -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        RECONCILE_TIME.labels(CONTROLLER).observe(time.perf_counter() - start)


def record_result(result: str) -> None:
    RECONCILE_TOTAL.labels(CONTROLLER, result).inc()
    if result == ERROR:
        RECONCILE_ERRORS.labels(CONTROLLER).inc()


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Expose /metrics on its own port (kopf's liveness endpoint is separate)."""
    start_http_server(port, addr=addr, registry=REGISTRY)
