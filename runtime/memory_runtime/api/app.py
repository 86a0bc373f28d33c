"""The app factory: wires settings to the store, index, embedder, limiter and jobs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from memory_runtime import __version__
from memory_runtime.api import (
    compat,
    errors,
    graph_routes,
    health_routes,
    routes,
    transfer_routes,
)
from memory_runtime.api.mcp import McpEndpoint, mount
from memory_runtime.api.middleware import BodyLimitMiddleware, Metrics, ObserveMiddleware
from memory_runtime.api.state import RuntimeState
from memory_runtime.guards import GuardedEmbedder, GuardedIndex, GuardedRateLimiter
from memory_runtime.health import Breaker, HealthMonitor
from memory_runtime.jobs import PeriodicJob
from memory_runtime.ports import Embedder, VectorIndex
from memory_runtime.service import MemoryService, ServiceConfig
from memory_runtime.settings import Settings
from memory_runtime.storage.migrate import migrate
from memory_runtime.storage.postgres import PostgresStore

log = logging.getLogger("memory_runtime")

INDEX_BATCH = 500  # rows per index catch-up batch; batches follow each other while a backlog exists


def build_store(settings: Settings) -> PostgresStore:
    if not settings.database_url:
        raise ValueError("MEMORY_DATABASE_URL is empty: use `serve --embedded` for local mode")
    return PostgresStore(
        settings.database_url,
        settings.schema_name,
        settings.database_extensions_schema,
        max_size=settings.database_pool_size,
        outbox=settings.events_enabled,
        statement_timeout_ms=settings.database_statement_timeout_ms,
        lock_timeout_ms=settings.database_lock_timeout_ms,
        wait_seconds=settings.database_wait_seconds,
        breaker=breaker("postgres", settings),
    )


def answers(
    ping: Callable[[], object], info: Mapping[str, Any] | None = None
) -> Callable[[], Mapping[str, Any] | None]:
    """A health check: `ping` answered (it raises if not), reported with `info`."""

    def check() -> Mapping[str, Any] | None:
        ping()
        return info

    return check


def breaker(name: str, settings: Settings) -> Breaker:
    return Breaker(
        name, threshold=settings.breaker_threshold, open_seconds=settings.breaker_open_seconds
    )


def build_index(settings: Settings, store: PostgresStore, qdrant_client: Any = None) -> VectorIndex:
    from memory_runtime.vectors import build_vector_index

    return build_vector_index(
        settings.vector_backend,
        pool=store,  # its connection() gives up at once while PostgreSQL is down
        schema=settings.schema_name,
        extensions_schema=settings.database_extensions_schema,
        dimensions=settings.vector_dimensions,
        distance=settings.vector_distance,
        qdrant_url=settings.qdrant_url or None,
        qdrant_api_key=settings.qdrant_api_key or None,
        collection=settings.collection_name,
        qdrant_client=qdrant_client,
        hnsw_m=settings.vector_hnsw_m,
        hnsw_ef_construct=settings.vector_hnsw_ef_construct,
        qdrant_timeout_seconds=settings.qdrant_timeout_seconds,
    )


def build_embedder(settings: Settings) -> Embedder:
    from memory_runtime.embeddings import build_embedder as build

    return build(
        settings.embedding_provider,
        settings.embedding_model,
        settings.embedding_url,
        settings.vector_dimensions,
        threads=settings.embedding_threads,
    )


def create_app(
    settings: Settings,
    *,
    store: PostgresStore | None = None,
    index: VectorIndex | None = None,
    embedder: Embedder | None = None,
    redis_client: Any = None,
    rate_limiter: Any = None,
    qdrant_client: Any = None,
    start_jobs: bool = False,
) -> FastAPI:
    """Build the tenant API. Anything not given is built from `settings`.

    `start_jobs` runs the background jobs (pruning, index catch-up, outbox
    relay) inside the app's lifespan; tests call the service methods directly.
    """
    store = store or build_store(settings)
    breakers = {"postgres": store.breaker, "vectors": breaker("vectors", settings)}
    index = GuardedIndex(index or build_index(settings, store, qdrant_client), breakers["vectors"])
    embedder = embedder or build_embedder(settings)
    if settings.embedding_provider == "http":
        breakers["embedder"] = breaker("embedder", settings)
        embedder = GuardedEmbedder(embedder, breakers["embedder"])
    if redis_client is None and settings.redis_url:
        import redis

        # short: a hung Redis costs a request at most this before its circuit opens
        redis_client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=1, socket_connect_timeout=1
        )
    if redis_client is not None:
        breakers["redis"] = breaker("redis", settings)
    if rate_limiter is None and settings.rate_limit_per_minute > 0:
        from memory_runtime.limits import build_rate_limiter

        # the limiter adds the `:ratelimit:<key>` part itself: pass the bare prefix
        rate_limiter = build_rate_limiter(
            redis_client,
            settings.redis_key_prefix,
            settings.rate_limit_per_minute,
            settings.rate_limit_burst,
        )
    if rate_limiter is not None and "redis" in breakers and rate_limiter.blocking:
        rate_limiter = GuardedRateLimiter(rate_limiter, breakers["redis"])
    service = MemoryService(
        store,
        index,
        embedder,
        ServiceConfig(
            tenant=settings.tenant,
            dimensions=settings.vector_dimensions,
            distance=settings.vector_distance,
            max_memories=settings.max_memories,
            decay_enabled=settings.decay_enabled,
            half_life_hours=settings.decay_half_life_hours,
            prune_below=settings.decay_prune_below,
            vector_backend=settings.vector_backend,
            server_embeds=settings.embedding_provider != "none",
        ),
    )
    jobs: list[PeriodicJob] = []
    mcp = McpEndpoint(settings.tenant, settings.max_body_bytes) if settings.mcp_enabled else None
    metrics = Metrics()
    metrics.watch_backlog(store.backlog, settings.metrics_backlog_refresh_seconds)
    checks: dict[str, Callable[[], Mapping[str, Any] | None]] = {
        "postgres": store.probe,
        "vectors": answers(index.ping, {"backend": settings.vector_backend}),
    }
    if redis_client is not None:
        checks["redis"] = answers(redis_client.ping)
    ping = getattr(getattr(embedder, "inner", embedder), "ping", None)
    if "embedder" in breakers and ping is not None:
        checks["embedder"] = answers(ping, {"provider": settings.embedding_provider})
    monitor = HealthMonitor(
        checks,
        breakers,
        interval=settings.probe_interval_seconds,
        timeout=settings.probe_timeout_seconds,
        on_change=metrics.dependency_changed,
        on_hung={"postgres": store.cut_stalled},
        hung_action_after=settings.probe_cut_after_seconds,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store.open()
        if settings.migrate_on_start:
            applied = migrate(
                settings.database_url, settings.schema_name, settings.database_extensions_schema
            )
            if applied:
                log.info("applied migrations %s to %s", applied, settings.schema_name)
        try:
            index.ensure()
        except Exception as exc:  # the index may come later; readyz reports it
            log.warning("vector index not ready at start: %s", exc)
        monitor.probe_all()  # readyz answers from the first round on
        monitor.start()
        service.accesses.start()
        if start_jobs:
            jobs.extend(_start_jobs(settings, service, store))
        try:
            if mcp is not None:
                async with mcp.running():
                    yield
            else:
                yield
        finally:
            for job in jobs:
                job.stop()
            monitor.stop()
            service.close()  # writes the last recall access counts
            store.close()

    app = FastAPI(
        title=f"SomaFractalMemory tenant API ({settings.tenant})",
        version=__version__,
        description="The memory API of one tenant. See docs/API.md.",
        lifespan=lifespan,
    )
    app.state.runtime = RuntimeState(
        settings=settings,
        service=service,
        metrics=metrics,
        health=monitor,
        rate_limiter=rate_limiter,
        tokens=settings.tokens,
        jobs=jobs,
    )
    errors.install(app)
    for module in (routes, graph_routes, transfer_routes, health_routes):
        app.include_router(module.router)
    app.include_router(compat.router)
    if mcp is not None:
        mount(app, mcp)
    # outermost first: metrics see every answer, including 413s
    app.add_middleware(
        BodyLimitMiddleware, limit=settings.max_body_bytes, streamed=transfer_routes.STREAMED_BODIES
    )
    app.add_middleware(ObserveMiddleware, metrics=metrics)
    return app


def _start_jobs(
    settings: Settings, service: MemoryService, store: PostgresStore
) -> list[PeriodicJob]:
    """Prune, index catch-up and (events on) the outbox relay, each under its
    PostgreSQL lease: one replica runs each job at a time, Redis or not."""
    from memory_runtime.jobs import PostgresLease

    jobs = [
        PeriodicJob(
            "prune",
            settings.prune_interval_seconds,
            lambda: service.prune(),
            PostgresLease(store, "prune"),
        ),
        PeriodicJob(
            "index",
            settings.index_interval_seconds,
            lambda: service.index_pending(INDEX_BATCH),
            PostgresLease(store, "index"),
            drain=True,
        ),
    ]
    if settings.events_enabled:
        from memory_runtime.events.relay import OutboxRelay

        relay = OutboxRelay(
            store,
            settings.schema_name,
            settings.tenant,
            settings.kafka_producer_config(),
            settings.kafka_topic,
        )
        jobs.append(
            PeriodicJob(
                "relay",
                settings.relay_interval_seconds,
                lambda: relay.publish_pending(500),
                PostgresLease(store, "relay"),
                drain=True,
            )
        )
    for job in jobs:
        job.start()
    return jobs
