"""Small helpers shared by the runtime integration tests (admin-side inspection)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from memory_runtime.storage.migrate import search_path
from tests.integration.runtime.conftest import Tenant


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
