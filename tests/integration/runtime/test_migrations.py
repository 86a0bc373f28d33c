"""Schema migrations: applied once, as the tenant role, recorded, refused when edited."""

from __future__ import annotations

import pytest

from memory_runtime.record import RECORD_FIELDS
from memory_runtime.storage import migrate as migrations
from memory_runtime.storage.migrate import MigrationError, load_migrations, migrate
from tests.integration.runtime.conftest import Tenant
from tests.integration.runtime.helpers import admin_rows, tenant_connection

pytestmark = pytest.mark.integration


def test_migrate_applies_once_and_records_versions(tenant: Tenant):
    versions = [m.version for m in load_migrations()]
    assert versions[0] == 1
    assert versions == sorted(set(versions))
    assert migrate(tenant.dsn, tenant.schema, "extensions") == versions
    assert migrate(tenant.dsn, tenant.schema, "extensions") == []
    rows = admin_rows(tenant, "SELECT version, name, checksum FROM schema_migrations")
    assert [r["version"] for r in rows] == versions
    assert rows[0]["name"] == "initial"
    owners = admin_rows(
        tenant,
        "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = current_schema()",
    )
    assert [o["tableowner"] for o in owners] == [tenant.role]  # created as the tenant role
    tables = {
        r["tablename"]
        for r in admin_rows(
            tenant, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
    }
    assert tables == {
        "memories",
        "memory_embeddings",
        "keyword_stats",
        "links",
        "outbox",
        "vector_tombstones",
        "index_in_flight",
        "imports",
        "schema_migrations",
        "job_leases",
        "runtime_locks",
    }


def test_changed_migration_is_refused(tenant: Tenant, monkeypatch: pytest.MonkeyPatch):
    migrate(tenant.dsn, tenant.schema, "extensions")
    original = load_migrations()
    edited = [migrations.Migration(m.version, m.name, m.sql + "\n-- edited") for m in original]
    monkeypatch.setattr(migrations, "load_migrations", lambda: edited)
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(tenant.dsn, tenant.schema, "extensions")


def test_failed_migration_leaves_nothing_behind(tenant: Tenant, monkeypatch: pytest.MonkeyPatch):
    migrate(tenant.dsn, tenant.schema, "extensions")
    latest = load_migrations()[-1].version
    broken = [
        *load_migrations(),
        migrations.Migration(9999, "broken", "CREATE TABLE half_done (x int);\nSELECT nope;"),
    ]
    monkeypatch.setattr(migrations, "load_migrations", lambda: broken)
    with pytest.raises(MigrationError, match="9999_broken failed"):
        migrate(tenant.dsn, tenant.schema, "extensions")
    assert admin_rows(tenant, "SELECT to_regclass('half_done') AS t")[0]["t"] is None
    assert admin_rows(tenant, "SELECT max(version) AS v FROM schema_migrations")[0]["v"] == latest


def test_missing_schema_is_a_clear_error(tenant: Tenant):
    with pytest.raises(MigrationError, match="does not exist"):
        migrate(tenant.dsn, "mem_nobody", "extensions")


def test_the_memories_table_holds_the_record_and_its_search_column(tenant: Tenant) -> None:
    migrate(tenant.dsn, tenant.schema, "extensions")
    columns = admin_rows(
        tenant,
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = 'memories'",
    )
    # the record (record.py) plus the full-text column PostgreSQL computes
    assert {c["column_name"] for c in columns} == {*RECORD_FIELDS, "tsv"}


def test_a_pgvector_table_from_before_gets_an_event_time_column(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
):
    # 0009 adds the column only (filling it would rewrite the HNSW graph in
    # the migration): old rows keep none, and the filters let PostgreSQL decide
    older = [m for m in load_migrations() if m.version < 9]
    monkeypatch.setattr(migrations, "load_migrations", lambda: older)
    migrate(tenant.dsn, tenant.schema, "extensions")
    monkeypatch.undo()
    with tenant_connection(tenant) as conn:
        # the table as PgVectorIndex.ensure made it before (its other columns left out)
        conn.execute("CREATE TABLE memory_vectors (memory_id uuid PRIMARY KEY)")
        conn.execute("INSERT INTO memory_vectors VALUES ('00000000-0000-0000-0000-000000000001')")
        conn.commit()
    assert 9 in migrate(tenant.dsn, tenant.schema, "extensions")
    rows = admin_rows(tenant, "SELECT memory_id, occurred_at FROM memory_vectors")
    assert [r["occurred_at"] for r in rows] == [None]
