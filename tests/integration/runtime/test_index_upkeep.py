"""Writes that keep recall cheap: HOT access counts, no GIN pending list."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from memory_runtime.storage.postgres import Tx
from tests.integration.runtime.conftest import Tenant
from tests.integration.runtime.helpers import tenant_connection

pytestmark = pytest.mark.integration


def test_access_count_updates_are_heap_only(migrated: Tenant) -> None:
    # Fill many pages the way a loaded tenant has them, then count accesses. An
    # update that is not HOT (an index covers a changed column, or the page has
    # no room) puts the new version elsewhere and adds it to every index.
    with tenant_connection(migrated) as conn:
        conn.execute(
            "INSERT INTO memories (id, coordinate, memory_type, text, tags, user_id)"
            " SELECT gen_random_uuid(), ARRAY[i::float8], 'episodic',"
            " 'the engineer repaired the cluster ' || i, ARRAY['t' || (i % 10)], 'u' || (i % 7)"
            " FROM generate_series(1, 3000) AS i"
        )
        conn.commit()
        # one row on each of 20 pages (as recall hits spread over a table)
        spread: list[Any] = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT ON ((ctid::text::point)[0]) id FROM memories"
                " ORDER BY (ctid::text::point)[0], ctid LIMIT 20"
            )
        ]
        assert len(spread) == 20
        with conn.transaction():
            Tx(conn).add_accesses({i: (1, datetime.now(UTC)) for i in spread})
            row = conn.execute(
                "SELECT pg_stat_get_xact_tuples_updated('memories'::regclass),"
                " pg_stat_get_xact_tuples_hot_updated('memories'::regclass)"
            ).fetchone()
        assert row == (20, 20)
        counts = conn.execute(
            "SELECT count(*) FROM memories WHERE access_count = 1 AND id = ANY(%s)",
            (spread,),
        ).fetchone()
        assert counts == (20,)
        assert isinstance(spread[0], uuid.UUID)


def test_new_memories_go_straight_into_the_full_text_index(migrated: Tenant) -> None:
    # Rows waiting in GIN's pending list are scanned linearly by every keyword
    # search until a vacuum merges them: stores must not leave any there.
    with tenant_connection(migrated) as conn:
        conn.execute(
            "INSERT INTO memories (id, coordinate, memory_type, text)"
            " SELECT gen_random_uuid(), ARRAY[i::float8], 'episodic', 'fresh words ' || i"
            " FROM generate_series(1, 500) AS i"
        )
        conn.commit()
    with psycopg.connect(migrated.admin_dsn, autocommit=True) as admin:
        admin.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        row = admin.execute(
            "SELECT pending_tuples FROM pgstatginindex(%s::regclass)",
            (f"{migrated.schema}.memories_tsv_idx",),
        ).fetchone()
    assert row == (0,)
