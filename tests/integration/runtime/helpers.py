"""Small helpers shared by the runtime integration tests (admin-side inspection)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import uvicorn
from prometheus_client import start_http_server
from psycopg import sql
from psycopg.rows import dict_row

from memory_runtime.storage.migrate import search_path
from tests.integration.runtime.conftest import Tenant
from tests.servers._process import free_port


def tenant_connection(tenant: Tenant) -> psycopg.Connection[Any]:
    """A connection as the tenant role, on the search_path the runtime sets."""
    conn = psycopg.connect(tenant.dsn)
    try:
        path = search_path(tenant.schema, "extensions")
        conn.execute("SELECT set_config('search_path', %s, false)", (path,))
    except BaseException:
        conn.close()
        raise
    return conn


def admin_rows(tenant: Tenant, query: str, *params: Any) -> list[dict[str, Any]]:
    """Run a query as the superuser with the tenant schema first on the search_path."""
    with psycopg.connect(tenant.admin_dsn, row_factory=dict_row) as conn:
        conn.execute(
            sql.SQL("SET search_path = {}, extensions").format(sql.Identifier(tenant.schema))
        )
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def admin_exec(tenant: Tenant, statement: str) -> None:
    """Run a statement without results (GRANT, REVOKE...) as the superuser in the tenant schema."""
    with psycopg.connect(tenant.admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("SET search_path = {}, extensions").format(sql.Identifier(tenant.schema))
        )
        conn.execute(statement)  # type: ignore[arg-type]


def outbox(tenant: Tenant) -> list[dict[str, Any]]:
    return admin_rows(tenant, "SELECT * FROM outbox ORDER BY occurred_at, event_type")


def vector_ids(tenant: Tenant) -> set[str]:
    return {str(r["memory_id"]) for r in admin_rows(tenant, "SELECT memory_id FROM memory_vectors")}


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve `app` with a real uvicorn server on a thread (lifespan included);
    yields its base URL. Unlike TestClient, every request is real HTTP and
    sync routes compete for the same worker threads as in production."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the runtime did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def metrics_port(app: Any) -> Iterator[str]:
    """The app's registry on its own HTTP port, as `memory_runtime serve` runs it;
    yields the /metrics URL."""
    port = free_port()
    server, thread = start_http_server(
        port, addr="127.0.0.1", registry=app.state.runtime.metrics.registry
    )
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.1)
