"""Operator metrics, named like controller-runtime's so existing dashboards work."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

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

# Results as controller-runtime labels them.
SUCCESS, ERROR, REQUEUE = "success", "error", "requeue"

T = TypeVar("T")


def timed_backend(backend: str, operation: str, fn: Callable[[], T]) -> T:
    """Run one backend call and record its latency (failures too)."""
    start = time.perf_counter()
    try:
        return fn()
    finally:
        BACKEND_SECONDS.labels(backend, operation).observe(time.perf_counter() - start)


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
