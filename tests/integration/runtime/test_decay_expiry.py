"""Decay and expiry, each defined once: the prune job's SQL selects exactly
the memories whose effective importance ranking computes below the
threshold, and the one expiry predicate splits live from expired memories."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from psycopg import sql

from memory_runtime import ranking
from memory_runtime.filters import EXPIRED, LIVE
from memory_runtime.storage.postgres import PostgresStore
from tests.integration.runtime.conftest import Tenant
from tests.integration.runtime.helpers import tenant_connection

pytestmark = pytest.mark.integration

HALF_LIFE = 24.0
PRUNE_BELOW = 0.2
# idle hours (negative: last access in the future, e.g. an imported record);
# none puts an effective importance right at the threshold (the two reads of
# the clock are a moment apart)
IDLE = [-48.0, 0.0, 1.0, 23.0, 24.5, 25.0, 47.5, 49.0, 72.0, 200.0]
IMPORTANCE = [0.05, 0.19, 0.21, 0.4, 0.5, 0.8, 1.0]


def test_sql_decay_factor_is_the_python_one(migrated: Tenant) -> None:
    expression = ranking.DECAY_FACTOR_SQL.format(
        since="now() - make_interval(secs => h * 3600)", half_life="%s"
    )
    with tenant_connection(migrated) as conn:
        rows = conn.execute(
            sql.SQL("SELECT h, {} FROM unnest(%s::float8[]) AS h").format(sql.SQL(expression)),
            (HALF_LIFE, IDLE),
        ).fetchall()
    for hours, factor in rows:
        assert float(factor) == pytest.approx(ranking.decay_factor(hours, HALF_LIFE), rel=1e-12)


def test_prune_selects_what_ranking_calls_decayed_and_what_is_expired(
    migrated: Tenant, pg_store: PostgresStore
) -> None:
    now = datetime.now(UTC)
    expected: dict[uuid.UUID, str] = {}
    with tenant_connection(migrated) as conn:
        n = 0
        for hours in IDLE:
            for importance in IMPORTANCE:
                for kind in ("episodic", "semantic"):
                    memory_id = uuid.uuid4()
                    n += 1
                    expires = None
                    if n % 5 == 0:
                        expires = now - timedelta(minutes=1)
                    elif n % 5 == 1:
                        expires = now + timedelta(days=1)
                    conn.execute(
                        "INSERT INTO memories (id, coordinate, memory_type, importance,"
                        " last_accessed_at, expires_at) VALUES (%s, ARRAY[%s::float8], %s, %s,"
                        " now() - make_interval(secs => %s::float8 * 3600), %s)",
                        (memory_id, float(n), kind, importance, hours, expires),
                    )
                    effective = ranking.effective_importance(importance, hours, HALF_LIFE)
                    if expires is not None and expires <= now:
                        expected[memory_id] = "expired"
                    elif kind == "episodic" and effective < PRUNE_BELOW:
                        expected[memory_id] = "decayed"
        conn.commit()
        split = conn.execute(
            sql.SQL(
                "SELECT count(*) FILTER (WHERE {}), count(*) FILTER (WHERE {}) FROM memories"
            ).format(LIVE, EXPIRED)
        ).fetchone()
    assert split is not None
    expired = sum(1 for r in expected.values() if r == "expired")
    assert split == (n - expired, expired)  # every memory is one or the other
    assert 0 < sum(1 for r in expected.values() if r == "decayed") < n
    with pg_store.tx() as tx:
        found = tx.prunable(PRUNE_BELOW, HALF_LIFE, True, 10_000)
        assert dict(found) == expected
        undecayed = tx.prunable(PRUNE_BELOW, HALF_LIFE, False, 10_000)
        assert dict(undecayed) == {i: r for i, r in expected.items() if r == "expired"}
