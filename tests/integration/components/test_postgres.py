"""PostgreSQL smoke tests: TCP + password auth, pgvector HNSW, per-test databases."""

from __future__ import annotations

import psycopg
import pytest

from tests.servers.postgres import PostgresServer

pytestmark = pytest.mark.integration


def test_pgvector_hnsw_index_returns_nearest_row(pg_database: str) -> None:
    rows = [(i, [float(i), float(i % 7), float((i * 13) % 11)]) for i in range(200)]
    query = [42.2, 0.1, 2.9]
    # The expected answer is computed here, independent of the server.
    expected = min(rows, key=lambda r: sum((a - b) ** 2 for a, b in zip(r[1], query, strict=True)))

    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, v vector(3))")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO items VALUES (%s, %s::vector)",
                [(i, str(v)) for i, v in rows],
            )
        conn.execute("CREATE INDEX items_v_hnsw ON items USING hnsw (v vector_l2_ops)")
        conn.execute("SET enable_seqscan = off")
        sql = "SELECT id FROM items ORDER BY v <-> %s::vector LIMIT 1"
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, (str(query),)))
        assert "items_v_hnsw" in plan, plan
        (nearest,) = conn.execute(sql, (str(query),)).fetchone()  # type: ignore[misc]
    assert nearest == expected[0]


def test_listens_on_tcp_with_password_auth(postgres: PostgresServer) -> None:
    with psycopg.connect(postgres.admin_dsn) as conn:
        (addr,) = conn.execute("SELECT inet_server_addr()::text").fetchone()  # type: ignore[misc]
        (port,) = conn.execute("SELECT inet_server_port()").fetchone()  # type: ignore[misc]
    assert addr.startswith("127.0.0.1")
    assert port == postgres.port
    wrong = postgres.dsn(postgres.database, password="not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=5)


def test_pg_database_is_fresh_and_separate(postgres: PostgresServer, pg_database: str) -> None:
    with psycopg.connect(pg_database) as conn:
        (name,) = conn.execute("SELECT current_database()").fetchone()  # type: ignore[misc]
        (tables,) = conn.execute(  # type: ignore[misc]
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
    assert name != postgres.database
    assert tables == 0
