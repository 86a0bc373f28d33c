"""Pure ASGI middleware: body size cap, rate-limit headers, request metrics."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memory_runtime.api.errors import MEDIA_TYPE, PROBLEM_BASE
from memory_runtime.storage.postgres import Backlog

log = logging.getLogger("memory_runtime.metrics")

# Metric label values come from fixed sets only (route templates, these methods,
# status codes): the metrics port carries no tenant data (docs/THREAT-MODEL.md).
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """The runtime's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "memory_http_requests_total",
            "HTTP requests by route template, method and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "memory_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["method", "route"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "memory_rate_limited_total", "Requests refused with 429.", registry=self.registry
        )
        self.memories_written = Counter(
            "memory_records_written_total",
            "Memories created or updated.",
            ["result"],
            registry=self.registry,
        )
        self.recalls = Counter(
            "memory_recall_total", "Recall requests by mode.", ["mode"], registry=self.registry
        )
        self.recall_degraded = Counter(
            "memory_recall_degraded_total",
            "Hybrid recalls answered without a part whose dependency was down.",
            ["part"],
            registry=self.registry,
        )
        self.dependency_up = Gauge(
            "memory_dependency_up",
            "1 when the dependency's last health probe answered, else 0.",
            ["dependency"],
            registry=self.registry,
        )
        self.circuit_open = Gauge(
            "memory_dependency_circuit_open",
            "1 while requests skip the dependency (circuit open or half-open).",
            ["dependency"],
            registry=self.registry,
        )

    def watch_backlog(self, read: Callable[[], Backlog], refresh_seconds: float) -> None:
        """Export the background jobs' backlog, read at most every `refresh_seconds`."""
        self.registry.register(BacklogCollector(read, refresh_seconds))

    def dependency_changed(self, name: str, probe: Any, breaker: Any) -> None:
        """HealthMonitor callback: export a probe result and the breaker state."""
        self.dependency_up.labels(name).set(1 if probe.status == "ok" else 0)
        if breaker is not None:
            self.circuit_open.labels(name).set(0 if breaker.state == "closed" else 1)


class BacklogCollector(Collector):
    """The index catch-up's and the outbox relay's backlog as gauges.

    Every replica reports the tenant's backlog (the jobs run on one replica at
    a time, the backlog lives in PostgreSQL). A scrape reads it from the
    database at most every `refresh_seconds` (partial-index counts, costing the
    backlog's size), otherwise it answers the last reading. When the database
    cannot answer, the gauges are left out (memory_dependency_up says why)."""

    def __init__(self, read: Callable[[], Backlog], refresh_seconds: float) -> None:
        self._read = read
        self._refresh = refresh_seconds
        self._lock = threading.Lock()
        self._last: Backlog | None = None
        self._read_at = float("-inf")

    def current(self) -> Backlog | None:
        with self._lock:  # concurrent scrapes share one reading
            if time.monotonic() - self._read_at >= self._refresh:
                try:
                    self._last = self._read()
                except Exception as exc:
                    log.warning("backlog metrics unavailable: %s", exc)
                    return None
                self._read_at = time.monotonic()
            return self._last

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "memory_index_backlog",
                "Index writes not yet applied: op=upsert memories whose vector the index has"
                " not confirmed, op=delete deleted memories whose vector may still be in it.",
                labels=["op"],
            ),
            GaugeMetricFamily(
                "memory_outbox_backlog", "Events in the outbox not yet published to Kafka."
            ),
            GaugeMetricFamily(
                "memory_outbox_oldest_age_seconds",
                "Age of the oldest unpublished event (0: none waiting).",
            ),
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        backlog = self.current()
        if backlog is None:
            return
        index, outbox, oldest = self._families()
        index.add_metric(["upsert"], backlog.index_pending)
        index.add_metric(["delete"], backlog.index_tombstones)
        outbox.add_metric([], backlog.outbox_rows)
        oldest.add_metric([], backlog.outbox_oldest_age_seconds or 0.0)
        yield from (index, outbox, oldest)


async def _send_413(send: Send, limit: int, path: str) -> None:
    body = json.dumps(
        {
            "type": PROBLEM_BASE + "payload-too-large",
            "title": "Request body too large",
            "status": 413,
            "detail": f"the request body exceeds {limit} bytes",
            "instance": path,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """413 when Content-Length says too much, or when the streamed body grows past it.

    The body is read up front (at most `limit` bytes are ever buffered) and
    replayed to the app, so an oversized chunked upload is refused before any
    handler runs and nothing is half-applied. Paths in `streamed` (POST /import)
    read their body as a stream and cap each record themselves.
    """

    def __init__(self, app: ASGIApp, limit: int, streamed: tuple[str, ...] = ()) -> None:
        self.app = app
        self.limit = limit
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope["method"] in ("GET", "HEAD", "OPTIONS")
            or path in self.streamed
        ):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    await _send_413(send, self.limit, path)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _send_413(send, self.limit, path)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class ObserveMiddleware:
    """Adds RateLimit headers stashed by the auth dependency, records metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})
        started = time.perf_counter()
        status = 500

        async def wrapped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra: dict[str, str] = scope["state"].get("ratelimit_headers", {})
                if extra:
                    headers = list(message.get("headers", []))
                    present = {k.lower() for k, _ in headers}
                    for key, value in extra.items():
                        if key.lower().encode() not in present:
                            headers.append((key.lower().encode(), value.encode()))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            if method not in HTTP_METHODS:  # a client-chosen string never becomes a label
                method = "OTHER"
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
