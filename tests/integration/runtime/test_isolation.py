"""Isolation: the runtime runs as a non-superuser role that owns only its schema.

It cannot see another tenant's schema, and nothing it does touches anything
outside its own schema.
"""

from __future__ import annotations

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from memory_runtime.api import create_app
from memory_runtime.storage.migrate import MigrationError, migrate
from tests.integration.runtime.conftest import (
    ADMIN_TOKEN,
    HashingTestEmbedder,
    Tenant,
    bearer,
    drop_tenant,
    make_tenant,
    tenant_settings,
)

pytestmark = pytest.mark.integration


def snapshot_outside(admin_dsn: str, own_schema: str) -> dict[str, str]:
    """Every relation outside `own_schema` (and the system schemas) with a content hash."""
    out: dict[str, str] = {}
    with psycopg.connect(admin_dsn) as conn:
        rels = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
            " AND n.nspname <> %s ORDER BY 1, 2",
            (own_schema,),
        ).fetchall()
        for schema, table in rels:
            digest = conn.execute(
                sql.SQL(
                    "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
                    " FROM {} AS t"
                ).format(sql.Identifier(schema, table))
            ).fetchone()
            out[f"{schema}.{table}"] = digest[0] if digest else ""
        schemas = conn.execute("SELECT nspname FROM pg_namespace ORDER BY 1").fetchall()
        out["<schemas>"] = ",".join(s for (s,) in schemas)
    return out


def workload(client: TestClient) -> None:
    for n in range(5):
        assert (
            client.post(
                "/memories",
                json={"coordinate": [n], "payload": {"text": f"acme {n}"}, "user_id": "u"},
            ).status_code
            == 201
        )
    client.post("/graph/link", json={"from": "0", "to": "1"})
    client.patch("/memories/2", json={"importance": 0.9})
    client.get("/memories/search", params={"query": "acme"})
    client.delete("/memories/3")
    client.delete("/memories", params={"user_id": "u"})
    client.post("/import", content=client.get("/export").content)
    client.app.state.runtime.service.prune()  # type: ignore[attr-defined]
    client.app.state.runtime.service.index_pending(100)  # type: ignore[attr-defined]
    client.get("/stats")


def test_runtime_cannot_see_or_touch_other_tenants(tenant: Tenant, pg_database: str):
    beta = make_tenant(pg_database, "beta")
    try:
        with TestClient(create_app(tenant_settings(beta), embedder=HashingTestEmbedder())) as c:
            c.headers.update(bearer(ADMIN_TOKEN))
            c.post("/memories", json={"coordinate": [1], "payload": {"text": "beta secret"}})
        before = snapshot_outside(pg_database, tenant.schema)
        assert "mem_beta.memories" in before

        app = create_app(
            tenant_settings(
                tenant,
                embedding_provider="local",
                events_enabled=True,
                kafka_bootstrap="127.0.0.1:1",
                kafka_topic="t",
            ),
            embedder=HashingTestEmbedder(),
        )
        with TestClient(app) as client:
            client.headers.update(bearer(ADMIN_TOKEN))
            workload(client)
            stats = client.get("/stats").json()
            assert stats["schema_name"] == tenant.schema
            assert all(not name.startswith("mem_beta") for name in stats["table_bytes"])
            # by coordinate [1] the runtime sees only its own (now deleted) data
            assert client.get("/memories/1").status_code == 404
        assert snapshot_outside(pg_database, tenant.schema) == before

        # the tenant role itself: no access to beta, no CREATE outside its schema
        with psycopg.connect(tenant.dsn, autocommit=True) as conn:
            is_super = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            assert is_super.fetchone() == (False,)
            for statement in (
                "SELECT * FROM mem_beta.memories",
                "INSERT INTO mem_beta.outbox (id, event_type, memory_id) VALUES"
                " (gen_random_uuid(), 'memory.deleted', gen_random_uuid())",
                "CREATE TABLE public.sneaky (x int)",
                "CREATE SCHEMA sneaky",
                "DROP SCHEMA mem_beta CASCADE",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
    finally:
        drop_tenant(beta)


def test_runtime_pointed_at_another_schema_refuses_to_start(tenant: Tenant, pg_database: str):
    beta = make_tenant(pg_database, "beta")
    try:
        with pytest.raises(MigrationError, match="not usable by this role"):
            migrate(tenant.dsn, beta.schema, "extensions")
        app = create_app(tenant_settings(tenant, database_schema=beta.schema))
        with pytest.raises(MigrationError), TestClient(app):
            pass
    finally:
        drop_tenant(beta)
