"""The vectors live in memory_embeddings, outside the memories heap (migration 0004):
written with their memory in one statement, replaced, removed and deleted with it."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

import pytest

from memory_runtime.record import MemoryRow
from memory_runtime.storage import migrate as migrations
from memory_runtime.storage.migrate import load_migrations, migrate
from memory_runtime.storage.postgres import PostgresStore
from tests.integration.runtime.conftest import Tenant
from tests.integration.runtime.helpers import admin_rows, tenant_connection

pytestmark = pytest.mark.integration

DIMS = 384  # the local model's size: the case where the vector fitted inline


def vector(seed: int) -> list[float]:
    rng = random.Random(seed)
    # eighths: exact in float4 and in their shortest text form, so what comes back
    # compares equal to what was written
    return [rng.randint(-8, 8) / 8 for _ in range(DIMS)]


def memory(coordinate: float, embedding: list[float] | None) -> MemoryRow:
    now = datetime.now(UTC)
    return MemoryRow.unchecked(
        id=uuid.uuid4(),
        coordinate=(coordinate,),
        memory_type="semantic",
        payload={"text": f"memory {coordinate}"},
        text=f"memory {coordinate}",
        importance=0.5,
        metadata={},
        tags=[],
        agent_id=None,
        user_id=None,
        session_id=None,
        created_at=now,
        updated_at=now,
        last_accessed_at=now,
        access_count=0,
        version=1,
        expires_at=None,
        embedding=embedding,
        index_pending=embedding is not None,
        occurred_at=now,
    )


def stored_vectors(tenant: Tenant) -> dict[uuid.UUID, list[float]]:
    rows = admin_rows(tenant, "SELECT memory_id, embedding FROM memory_embeddings")
    return {r["memory_id"]: r["embedding"] for r in rows}


def test_vectors_stay_out_of_the_memories_heap(pg_store: PostgresStore, migrated: Tenant) -> None:
    with pg_store.tx() as tx:
        saved = [tx.insert(memory(float(i), vector(i))) for i in range(20)]
        plain = tx.insert(memory(99.0, None))
    assert saved[3].embedding == vector(3)
    assert stored_vectors(migrated) == {m.id: vector(i) for i, m in enumerate(saved)}
    # a 384-float vector is 1.5 kB; the row without it is a few hundred bytes
    widest = admin_rows(migrated, "SELECT max(pg_column_size(m.*)) AS b FROM memories m")
    assert widest[0]["b"] < 600
    with pg_store.tx() as tx:
        assert tx.get(saved[5].id).embedding == vector(5)  # type: ignore[union-attr]
        assert tx.get(plain.id).embedding is None  # type: ignore[union-attr]
        rows = tx.get_many([saved[0].id, plain.id], vectors=False)
    by_id = {r.id: (r.embedding, r.has_vector) for r in rows}
    assert by_id == {saved[0].id: (None, True), plain.id: (None, False)}  # not loaded either way


def test_insert_many_stores_each_vector_as_the_float4_the_server_would_parse(
    pg_store: PostgresStore, migrated: Tenant
) -> None:
    """insert_many sends the vectors in binary: the server holds exactly the
    float4 its own text input gives (nearest float32; edge values included)."""
    rng = random.Random(5)
    given = [[rng.uniform(-2, 2) for _ in range(DIMS)] for _ in range(3)]
    given[0][:4] = [0.1, -1e-30, 3.4e38, 1e-45]  # rounding, subnormal, near the max
    rows = [memory(float(n), v) for n, v in enumerate(given)]
    with pg_store.tx() as tx:
        tx.insert_many(rows)
    for row, values in zip(rows, given, strict=True):
        literal = "{" + ",".join(map(repr, values)) + "}"
        same = admin_rows(
            migrated,
            "SELECT embedding = %s::float4[] AS same, array_length(embedding, 1) AS n"
            " FROM memory_embeddings WHERE memory_id = %s",
            literal,
            row.id,
        )
        assert same == [{"same": True, "n": DIMS}]


def test_update_replaces_removes_and_keeps_the_vector(
    pg_store: PostgresStore, migrated: Tenant
) -> None:
    with pg_store.tx() as tx:
        row = tx.insert(memory(1.0, vector(1)))
    with pg_store.tx() as tx:
        row = tx.update(row.model_copy(update={"embedding": vector(2), "version": 2}))
    assert stored_vectors(migrated) == {row.id: vector(2)}

    def tuple_id() -> str:
        found = admin_rows(migrated, "SELECT xmin::text AS x FROM memory_embeddings")
        return str(found[0]["x"])

    written = tuple_id()
    with pg_store.tx() as tx:  # same vector, other fields: the 1.5 kB row is not rewritten
        row = tx.update(row.model_copy(update={"importance": 0.9, "version": 3}))
    assert tuple_id() == written
    assert admin_rows(migrated, "SELECT importance FROM memories")[0]["importance"] == 0.9
    with pg_store.tx() as tx:
        row = tx.update(row.model_copy(update={"embedding": None, "version": 4}))
    assert row.embedding is None
    assert stored_vectors(migrated) == {}


def test_deleting_a_memory_deletes_its_vector(pg_store: PostgresStore, migrated: Tenant) -> None:
    with pg_store.tx() as tx:
        keep = tx.insert(memory(1.0, vector(1)))
        gone = tx.insert(memory(2.0, vector(2)))
    with pg_store.tx() as tx:
        deleted = tx.delete_rows([gone.id])
    assert deleted[0].embedding == vector(2)  # the deleted row still reads whole
    assert stored_vectors(migrated) == {keep.id: vector(1)}


def test_a_row_read_without_its_vector_cannot_be_written_back(
    pg_store: PostgresStore, migrated: Tenant
) -> None:
    with pg_store.tx() as tx:
        row = tx.insert(memory(1.0, vector(1)))
    with pg_store.tx() as tx:
        (partial,) = tx.get_many([row.id], vectors=False)
        with pytest.raises(ValueError, match="without its vector"):
            tx.update(partial)
    assert stored_vectors(migrated) == {row.id: vector(1)}


def test_migration_moves_existing_vectors_and_shrinks_the_table(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = [m for m in load_migrations() if m.version < 4]
    monkeypatch.setattr(migrations, "load_migrations", lambda: before)
    migrate(tenant.dsn, tenant.schema, "extensions")
    with tenant_connection(tenant) as conn:  # the version-3 table, vectors inline
        for i in range(200):
            conn.execute(
                "INSERT INTO memories (id, coordinate, memory_type, text, embedding)"
                " VALUES (%s, %s::float8[], 'semantic', %s, %s::float4[])",
                (uuid.UUID(int=i + 1), [float(i)], f"memory {i}", vector(i) if i % 2 else None),
            )
    inline = admin_rows(tenant, "SELECT pg_relation_size('memories') AS b")[0]["b"]

    upto4 = [m for m in load_migrations() if m.version <= 4]
    monkeypatch.setattr(migrations, "load_migrations", lambda: upto4)
    assert migrate(tenant.dsn, tenant.schema, "extensions") == [4]
    monkeypatch.undo()
    assert stored_vectors(tenant) == {uuid.UUID(int=i + 1): vector(i) for i in range(1, 200, 2)}
    columns = admin_rows(
        tenant,
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = 'memories'",
    )
    assert "embedding" not in {c["column_name"] for c in columns}
    # rewritten: the dropped vectors left the pages too
    assert admin_rows(tenant, "SELECT pg_relation_size('memories') AS b")[0]["b"] < inline / 2
    rest = [m.version for m in load_migrations() if m.version > 4]
    assert migrate(tenant.dsn, tenant.schema, "extensions") == rest  # the rest, then read
    s = PostgresStore(tenant.dsn, tenant.schema, "extensions", min_size=1, max_size=1)
    s.open()
    try:
        with s.tx() as tx:
            assert tx.get(uuid.UUID(int=4)).embedding == vector(3)  # type: ignore[union-attr]
            assert tx.get(uuid.UUID(int=5)).embedding is None  # type: ignore[union-attr]
    finally:
        s.close()
