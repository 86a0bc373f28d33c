"""spec.vectors.hnsw for the postgres backend: the runtime builds pgvector's HNSW
graph with the CR's m / ef_construction (rendered as MEMORY_VECTOR_HNSW_*), and
rebuilds it when they change, keeping every vector."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from memory_runtime.api.app import build_index
from memory_runtime.ports import VectorFilter, VectorIndex, VectorItem
from memory_runtime.settings import Settings

pytestmark = pytest.mark.integration

DIM = 8
SCHEMA = "mem_acme"
INDEX = f"{SCHEMA}.memory_vectors_embedding_cosine_hnsw"


@pytest.fixture
def pool(pg_database: str) -> Iterator[ConnectionPool]:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA extensions")
        conn.execute("CREATE EXTENSION vector SCHEMA extensions")
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
    with ConnectionPool(pg_database, min_size=1, max_size=4, open=True) as pool:
        yield pool


def index_from_env(
    pool: ConnectionPool, monkeypatch: pytest.MonkeyPatch, **env: str
) -> VectorIndex:
    """The index the runtime builds at start from its environment."""
    monkeypatch.setenv("MEMORY_TENANT", "acme")
    monkeypatch.setenv("MEMORY_VECTOR_BACKEND", "postgres")
    monkeypatch.setenv("MEMORY_VECTOR_DIMENSIONS", str(DIM))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    index = build_index(Settings(), pool)  # type: ignore[arg-type]
    index.ensure()
    return index


def hnsw_options(pool: ConnectionPool) -> set[str]:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT reloptions FROM pg_class WHERE oid = to_regclass(%s)", (INDEX,)
        ).fetchone()
    assert row is not None, "the HNSW index is missing"
    return set(row[0])


def items(n: int) -> list[VectorItem]:
    rng = np.random.default_rng(3)
    return [
        VectorItem(
            memory_id=uuid.UUID(int=i + 1),
            vector=rng.normal(size=DIM).tolist(),
            memory_type="semantic",
            tags=(),
            agent_id=None,
            user_id=None,
            session_id=None,
            metadata={},
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
            coordinate=(0.0,),
            occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        for i in range(n)
    ]


def test_the_index_is_built_with_the_rendered_parameters(
    pool: ConnectionPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    index_from_env(
        pool, monkeypatch, MEMORY_VECTOR_HNSW_M="24", MEMORY_VECTOR_HNSW_EF_CONSTRUCT="80"
    )
    assert hnsw_options(pool) == {"m=24", "ef_construction=80"}


def test_changed_parameters_rebuild_the_index_and_keep_every_vector(
    pool: ConnectionPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = index_from_env(pool, monkeypatch)
    assert hnsw_options(pool) == {"m=16", "ef_construction=100"}
    stored = items(200)
    first.upsert(stored)
    query = stored[17].vector
    before = first.search(query, 10, VectorFilter())

    # the CR's spec.vectors.hnsw changed: the next pod starts with other values
    second = index_from_env(
        pool, monkeypatch, MEMORY_VECTOR_HNSW_M="32", MEMORY_VECTOR_HNSW_EF_CONSTRUCT="200"
    )
    assert hnsw_options(pool) == {"m=32", "ef_construction=200"}
    with pool.connection() as conn:
        hnsw = conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = %s AND indexdef LIKE %s",
            (SCHEMA, "%USING hnsw%"),
        ).fetchone()
    assert hnsw == (1,)  # replaced, not one more graph beside the old
    assert second.count() == len(stored)
    after = second.search(query, 10, VectorFilter())
    assert after[0].memory_id == stored[17].memory_id
    assert [h.memory_id for h in after] == [h.memory_id for h in before]

    # unchanged parameters: nothing is rebuilt (the index keeps its identity)
    with pool.connection() as conn:
        oid = conn.execute("SELECT to_regclass(%s)::oid", (INDEX,)).fetchone()
    index_from_env(
        pool, monkeypatch, MEMORY_VECTOR_HNSW_M="32", MEMORY_VECTOR_HNSW_EF_CONSTRUCT="200"
    )
    with pool.connection() as conn:
        assert conn.execute("SELECT to_regclass(%s)::oid", (INDEX,)).fetchone() == oid
