"""Partial outages against the real servers: a stopped or hung Qdrant, Redis and
PostgreSQL (a TCP proxy between the runtime and the server cuts or freezes it).

The pod stays ready unless PostgreSQL is gone, the outage shows in /readyz,
/stats and the metrics, and requests degrade at once instead of waiting on the
dependency's timeouts. Bounds below are "far less than one client timeout",
which is what failing fast means, not performance targets.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import httpx
import pytest
from prometheus_client import generate_latest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from memory_runtime.api import create_app
from tests.integration.runtime.conftest import (
    ADMIN_TOKEN,
    HashingTestEmbedder,
    Tenant,
    bearer,
    tenant_settings,
)
from tests.integration.runtime.helpers import serving, wait_for
from tests.servers.faultproxy import FaultProxy, fault_proxy
from tests.servers.redis import load_runtime_functions

pytestmark = pytest.mark.integration

FAULTS = ["down", "hung"]


def cut(proxy: FaultProxy, fault: str) -> None:
    proxy.down() if fault == "down" else proxy.hang()


def metric(app, name: str, dependency: str) -> float:  # type: ignore[no-untyped-def]
    text = generate_latest(app.state.runtime.metrics.registry).decode()
    for line in text.splitlines():
        if line.startswith(f'{name}{{dependency="{dependency}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} for {dependency} not exported")


def ready(http: httpx.Client) -> dict:  # type: ignore[type-arg]
    r = http.get("/readyz", timeout=3)
    return {"code": r.status_code, **r.json()}


def skipped(http: httpx.Client, dependency: str) -> bool:
    """Reported down and its circuit open (a hung probe: one round after it is late)."""
    check = ready(http)["checks"][dependency]
    return check["status"] != "ok" and check.get("circuit") == "open"


@pytest.fixture
def qdrant_proxy(qdrant_url: str) -> Iterator[FaultProxy]:
    u = urlparse(qdrant_url)
    with fault_proxy(u.hostname or "127.0.0.1", u.port or 80) as proxy:
        yield proxy


@pytest.mark.parametrize("fault", FAULTS)
def test_vector_index_outage_keeps_the_pod_ready_and_degrades_at_once(
    tenant: Tenant, qdrant_proxy: FaultProxy, fault: str
) -> None:
    settings = tenant_settings(
        tenant,
        vector_backend="qdrant",
        qdrant_url=f"http://127.0.0.1:{qdrant_proxy.port}",  # the runtime's own client (5 s)
        qdrant_collection=f"c{tenant.role}",
        embedding_provider="local",
    )
    app = create_app(settings, embedder=HashingTestEmbedder())
    with serving(app) as url, httpx.Client(base_url=url, headers=bearer(ADMIN_TOKEN)) as http:
        first = http.post("/memories", json={"coordinate": [0], "payload": {"text": "red fox"}})
        assert first.json()["index_pending"] is False
        cut(qdrant_proxy, fault)
        wait_for(lambda: skipped(http, "vectors"), what="vectors reported down")
        state = ready(http)
        assert state["code"] == 200
        assert state["status"] == "degraded"
        assert state["checks"]["vectors"]["status"] == ("error" if fault == "down" else "hung")
        assert state["checks"]["postgres"]["status"] == "ok"
        stats = http.get("/stats").json()
        assert stats["dependencies"]["vectors"]["circuit"] != "closed"
        assert metric(app, "memory_dependency_up", "vectors") == 0
        assert metric(app, "memory_dependency_circuit_open", "vectors") == 1

        started = time.monotonic()
        for n in range(1, 11):
            w = http.post("/memories", json={"coordinate": [n], "payload": {"text": f"fox {n}"}})
            assert w.status_code == 201
            assert w.json()["index_pending"] is True
            r = http.get("/memories/search", params={"query": "fox"})
            assert r.status_code == 200
            assert r.headers["recall-degraded"] == "vector"
            assert r.json()["hits"]  # answered from full text
        # 20 requests, each of which waited on the client's timeout before (10 s then)
        assert time.monotonic() - started < 5

        qdrant_proxy.restore()
        wait_for(lambda: ready(http)["status"] == "ready", what="vectors back")
        assert app.state.runtime.service.index_pending(100) == 10
        assert http.get("/stats").json()["index_pending"] == 0


@pytest.mark.parametrize("fault", FAULTS)
def test_redis_outage_fails_open_at_once_and_keeps_the_pod_ready(
    tenant: Tenant,
    redis_server,
    fault: str,  # type: ignore[no-untyped-def]
) -> None:
    load_runtime_functions(redis_server.url)  # as the operator does
    with fault_proxy(redis_server.host, redis_server.port) as proxy:
        settings = tenant_settings(
            tenant,
            redis_url=f"redis://:{redis_server.password}@127.0.0.1:{proxy.port}/0",
            redis_prefix=f"mem:{tenant.role}",
            rate_limit_per_minute=6000,
            rate_limit_burst=1000,
        )
        app = create_app(settings)
        with serving(app) as url, httpx.Client(base_url=url, headers=bearer(ADMIN_TOKEN)) as http:
            assert http.get("/stats").headers["ratelimit-limit"] == "1000"
            cut(proxy, fault)
            wait_for(lambda: skipped(http, "redis"), what="redis reported down")
            assert ready(http)["code"] == 200
            assert metric(app, "memory_dependency_up", "redis") == 0
            started = time.monotonic()
            for n in range(20):
                r = http.post("/memories", json={"coordinate": [n], "payload": {"n": n}})
                assert r.status_code == 201  # allowed: rate limiting fails open
            assert time.monotonic() - started < 5  # before: + the client's timeout per request
            proxy.restore()
            wait_for(lambda: ready(http)["status"] == "ready", what="redis back")
            assert "ratelimit-limit" in http.get("/stats").headers


@pytest.mark.parametrize("fault", FAULTS)
def test_database_outage_is_503_at_once_and_health_never_waits(tenant: Tenant, fault: str) -> None:
    params = conninfo_to_dict(tenant.dsn)
    with fault_proxy(str(params["host"]), int(params["port"])) as proxy:
        dsn = make_conninfo(tenant.dsn, port=str(proxy.port))
        app = create_app(tenant_settings(tenant, database_url=dsn))
        with serving(app) as url, httpx.Client(base_url=url, headers=bearer(ADMIN_TOKEN)) as http:
            assert (
                http.post("/memories", json={"coordinate": [1], "payload": {}}).status_code == 201
            )
            assert ready(http)["code"] == 200

            def fetch(_: int) -> int:
                try:
                    return http.get("/memories/1", timeout=20).status_code
                except httpx.TimeoutException:
                    return 0

            cut(proxy, fault)
            with ThreadPoolExecutor(64) as pool:
                # more requests than the server has worker threads, all on the database
                calls = [pool.submit(fetch, n) for n in range(64)]
                time.sleep(0.5)
                for _ in range(3):  # liveness and readiness answer meanwhile
                    assert http.get("/healthz", timeout=2).status_code == 200
                    assert http.get("/readyz", timeout=2).status_code in (200, 503)
                    time.sleep(0.5)
                statuses = [c.result() for c in calls]
            assert set(statuses) <= {200, 503}, statuses  # none waited 20 s
            wait_for(lambda: skipped(http, "postgres"), what="postgres reported down")
            assert ready(http)["code"] == 503
            assert ready(http)["checks"]["postgres"]["status"] != "ok"
            started = time.monotonic()
            for _ in range(10):
                r = http.get("/memories/1", timeout=20)
                assert r.status_code == 503
                assert r.headers["retry-after"] == "5"
            assert time.monotonic() - started < 5  # before: 30 s each

            proxy.restore()
            wait_for(lambda: ready(http)["code"] == 200, what="postgres back")
            wait_for(lambda: http.get("/memories/1").status_code == 200, what="reads again")
            assert (
                http.post("/memories", json={"coordinate": [2], "payload": {}}).status_code == 201
            )


def test_hung_embedding_provider_leaves_writes_pending_at_once(tenant: Tenant) -> None:
    """An OpenAI-compatible provider that accepts connections and never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        settings = tenant_settings(tenant, embedding_provider="http", embedding_url=url)
        app = create_app(settings)
        with serving(app) as base, httpx.Client(base_url=base, headers=bearer(ADMIN_TOKEN)) as http:
            wait_for(lambda: skipped(http, "embedder"), what="embedder reported")
            state = ready(http)
            assert state["code"] == 200
            assert state["checks"]["embedder"]["status"] == "hung"
            assert metric(app, "memory_dependency_up", "embedder") == 0
            started = time.monotonic()
            for n in range(10):
                r = http.post("/memories", json={"coordinate": [n], "payload": {"text": "x y"}})
                assert r.status_code == 201
                assert r.json()["index_pending"] is True  # embedded later by catch-up
                found = http.get("/memories/search", params={"query": "x"})
                assert found.headers["recall-degraded"] == "embedding"
            assert time.monotonic() - started < 10  # before: 30 s (read timeout) each
