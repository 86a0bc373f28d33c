"""Keyword recall: exact BM25 top-k over every matching memory, with the tenant's own stats."""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from memory_runtime.ports import VectorFilter
from memory_runtime.storage import migrate as migrations
from memory_runtime.storage.migrate import load_migrations, migrate
from memory_runtime.storage.postgres import Tx
from tests.integration.runtime.conftest import Tenant
from tests.integration.runtime.helpers import tenant_connection

pytestmark = pytest.mark.integration

MATCHING = 4000  # rows sharing the word "alpha": far more than recall takes
LONELY = uuid.UUID("ffffffff-ffff-4fff-bfff-fffffffffff7")  # written last


@pytest.fixture
def conn(migrated: Tenant) -> Iterator[psycopg.Connection[Any]]:
    """The tenant's connection with MATCHING 'alpha' rows, then a few better ones last."""
    with tenant_connection(migrated) as c:
        c.execute(
            "INSERT INTO memories (id, coordinate, memory_type, text)"
            " SELECT gen_random_uuid(), ARRAY[i::float8], 'episodic', 'alpha filler ' || i"
            " FROM generate_series(1, %s) AS i",
            (MATCHING,),
        )
        for n in range(3):  # inserted last, at the end of the table
            c.execute(
                "INSERT INTO memories (id, coordinate, memory_type, text)"
                " VALUES (gen_random_uuid(), ARRAY[%s::float8], 'episodic', %s)",
                (-1.0 - n, f"alpha beta late {n}"),
            )
        c.execute(
            "INSERT INTO memories (id, coordinate, memory_type, text)"
            " VALUES (%s, ARRAY[-10::float8], 'episodic', 'alpha lonely')",
            (LONELY,),
        )
        c.execute("ANALYZE memories")
        c.commit()
        yield c


def texts(conn: psycopg.Connection[Any], ids: list[uuid.UUID]) -> list[str]:
    rows = conn.execute("SELECT id, text FROM memories WHERE id = ANY(%s)", (ids,)).fetchall()
    by_id = {r[0]: r[1] for r in rows}
    return [by_id[i] for i in ids]


def search(conn: psycopg.Connection[Any], query: str, limit: int, **flt: Any) -> list[Any]:
    with conn.transaction():
        return Tx(conn).keyword_search(query, VectorFilter(**flt), limit)


def test_the_match_written_last_is_found_among_thousands(conn: psycopg.Connection[Any]) -> None:
    # No memory holds every word ("gamma" is nowhere): the old query then
    # ranked a sample of 'any word' rows in table order and missed the last one.
    hits = search(conn, "alpha lonely gamma", 10)
    assert hits[0].id == LONELY


def test_a_rare_word_outranks_a_common_one(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "INSERT INTO memories (id, coordinate, memory_type, text) VALUES"
        " (gen_random_uuid(), ARRAY[-30::float8], 'episodic', 'zebra crossing')"
    )
    conn.commit()
    # one word each: ts_rank weighed them alike; BM25 weighs the rare one higher
    hits = search(conn, "alpha zebra", 5)
    assert texts(conn, [hits[0].id]) == ["zebra crossing"]
    assert (hits[0].keyword_rank or 0) > 2 * (hits[1].keyword_rank or 0)


def test_more_distinct_query_words_beat_one_word_repeated(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "INSERT INTO memories (id, coordinate, memory_type, text) VALUES"
        " (gen_random_uuid(), ARRAY[-20::float8], 'episodic', 'zebra zebra zebra'),"
        " (gen_random_uuid(), ARRAY[-21::float8], 'episodic', 'zebra yak')"
    )
    conn.commit()
    hits = search(conn, "zebra yak", 5)
    assert texts(conn, [c.id for c in hits]) == ["zebra yak", "zebra zebra zebra"]
    with conn.transaction():  # candidates() scores the same ids alike
        kq = Tx(conn).keyword_query("zebra yak")
        by_id = Tx(conn).candidates([c.id for c in reversed(hits)], VectorFilter(), keyword=kq)
    assert {c.id: c.keyword_rank for c in by_id} == pytest.approx(
        {c.id: c.keyword_rank for c in hits}
    )


def test_scores_are_okapi_bm25_from_the_tenants_statistics(
    conn: psycopg.Connection[Any],
) -> None:
    n = MATCHING + 4
    total = conn.execute("SELECT sum(tsv_tokens(tsv)) FROM memories").fetchone()[0]
    (hit,) = [h for h in search(conn, "alpha lonely", 3) if h.id == LONELY]
    avg = float(total) / n
    idf = {w: math.log(1 + (n - df + 0.5) / (df + 0.5)) for w, df in (("alpha", n), ("lone", 1))}
    tf_part = 2.2 / (1 + 1.2 * (0.25 + 0.75 * 2 / avg))  # tf 1, length 2
    assert hit.keyword_rank == pytest.approx((idf["alpha"] + idf["lone"]) * tf_part)


def test_top_k_is_exact_whatever_the_limit(conn: psycopg.Connection[Any]) -> None:
    # the pruned search (MaxScore) returns what ranking every match returns
    conn.execute(
        "INSERT INTO memories (id, coordinate, memory_type, text)"
        " SELECT gen_random_uuid(), ARRAY[(-100 - i)::float8], 'episodic',"
        "  'beta ' || repeat('alpha ', i % 3) || 'filler x' || i FROM generate_series(1, 60) AS i"
    )
    conn.commit()
    for query in ("alpha beta lonely", "alpha filler", "beta late x7"):
        every = search(conn, query, 100_000)  # more than match: every stem is scored
        for k in (1, 5, 40):
            top = search(conn, query, k)
            assert [(h.id, h.keyword_rank) for h in top] == [
                (h.id, h.keyword_rank) for h in every[:k]
            ], (query, k)


def test_filters_and_expiry_apply(conn: psycopg.Connection[Any]) -> None:
    conn.execute("UPDATE memories SET user_id = 'u1' WHERE text LIKE 'alpha beta late %'")
    conn.execute(
        "UPDATE memories SET expires_at = now() - interval '1 hour'"
        " WHERE text = 'alpha beta late 0'"
    )
    conn.commit()
    hits = search(conn, "alpha beta", 10, user_id="u1")
    assert sorted(texts(conn, [c.id for c in hits])) == ["alpha beta late 1", "alpha beta late 2"]
    with conn.transaction():
        kq = Tx(conn).keyword_query("alpha")
        assert Tx(conn).candidates([LONELY], VectorFilter(user_id="u1"), keyword=kq) == []
        expired = conn.execute("SELECT id FROM memories WHERE text = 'alpha beta late 0'")
        assert Tx(conn).candidates([expired.fetchone()[0]], VectorFilter(), keyword=kq) == []


def test_a_query_of_stop_words_or_unknown_words_has_no_candidates(
    conn: psycopg.Connection[Any],
) -> None:
    assert search(conn, "the and of", 10) == []
    assert search(conn, "nowhere-to-be-found", 10) == []
    with conn.transaction():
        (lonely,) = Tx(conn).candidates([LONELY], VectorFilter(), keyword=None)
    assert lonely.keyword_rank is None
    assert lonely.info.importance == 0.5


def test_keyword_statement_is_planned_for_every_call(conn: psycopg.Connection[Any]) -> None:
    # A prepared statement may settle on a generic plan that cannot see how
    # common the words are; psycopg prepares after 5 runs unless told not to.
    for word in ("alpha", "lonely", "beta", "alpha", "filler", "alpha", "late", "alpha"):
        assert search(conn, word, 10)
    prepared = conn.execute("SELECT statement FROM pg_prepared_statements").fetchall()
    assert not [s for (s,) in prepared if "keyword_rank" in s or "keyword_stats" in s]


def stats_drift(conn: psycopg.Connection[Any]) -> list[Any]:
    """Stems whose counted document frequency differs from the table's (empty if exact)."""
    return conn.execute(
        "WITH counted AS (SELECT term, sum(docs) AS docs, sum(tokens) AS tokens"
        "   FROM keyword_stats GROUP BY term),"
        " actual AS (SELECT l AS term, count(*) AS docs, 0 AS tokens"
        "   FROM memories, unnest(tsvector_to_array(tsv)) AS l GROUP BY l"
        "   UNION ALL SELECT '', count(*), coalesce(sum(tsv_tokens(tsv)), 0) FROM memories)"
        " SELECT * FROM (SELECT term, c.docs, a.docs AS want, c.tokens, a.tokens AS want_tokens"
        "   FROM counted c FULL JOIN actual a USING (term)) d"
        " WHERE coalesce(docs, 0) <> coalesce(want, 0)"
        "  OR coalesce(tokens, 0) <> coalesce(want_tokens, 0)"
    ).fetchall()


def test_statistics_stay_exact_under_concurrent_writes(migrated: Tenant) -> None:
    # Writers on four connections insert, edit, delete and roll back at once
    # (enough statements to fold the stats several times): the counts must equal
    # what the table holds, with no writer waiting on another's stats row.
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            with tenant_connection(migrated) as c:
                for i in range(150):
                    base = n * 10_000 + i
                    with c.transaction():
                        c.execute(
                            "INSERT INTO memories (id, coordinate, memory_type, text) VALUES"
                            " (gen_random_uuid(), ARRAY[%s::float8], 'episodic', %s)",
                            (base, f"shared word{i % 7} writer{n} text {i}"),
                        )
                    if i % 3 == 0:
                        c.execute(
                            "UPDATE memories SET text = text || ' edited again'"
                            " WHERE coordinate = ARRAY[%s::float8]",
                            (base,),
                        )
                        c.commit()
                    if i % 5 == 0:
                        c.execute(
                            "DELETE FROM memories WHERE coordinate = ARRAY[%s::float8]", (base,)
                        )
                        c.commit()
                    if i % 11 == 0:
                        c.execute(
                            "INSERT INTO memories (id, coordinate, memory_type, text) VALUES"
                            " (gen_random_uuid(), ARRAY[%s::float8], 'episodic', 'rolled back')",
                            (-base - 1,),
                        )
                        c.rollback()
                    # access counting changes no text and no count
                    c.execute(
                        "UPDATE memories SET access_count = access_count + 1"
                        " WHERE coordinate[1] BETWEEN %s AND %s",
                        (n * 10_000, n * 10_000 + 9_999),
                    )
                    c.commit()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with tenant_connection(migrated) as c:
        assert c.execute("SELECT count(*) FROM memories").fetchone()[0] == 4 * 120
        assert stats_drift(c) == []
        rows = c.execute("SELECT count(*) FROM keyword_stats").fetchone()[0]
        assert rows < 4 * 150 * 8  # folded on the way, not one row per change
        assert (
            c.execute("SELECT count(*) FROM keyword_stats WHERE term = 'roll'").fetchone()[0] == 0
        )


def test_migration_counts_existing_memories_and_dates_their_events(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = [m for m in load_migrations() if m.version < 6]
    monkeypatch.setattr(migrations, "load_migrations", lambda: before)
    migrate(tenant.dsn, tenant.schema, "extensions")
    with tenant_connection(tenant) as c:
        c.execute(
            "INSERT INTO memories (id, coordinate, memory_type, text, created_at)"
            " SELECT gen_random_uuid(), ARRAY[i::float8], 'episodic', 'old memory ' || i,"
            "  now() - i * interval '1 day' FROM generate_series(1, 50) AS i"
        )
        c.commit()
    monkeypatch.undo()
    rest = [m.version for m in load_migrations() if m.version >= 6]
    assert migrate(tenant.dsn, tenant.schema, "extensions") == rest
    with tenant_connection(tenant) as c:
        assert stats_drift(c) == []
        c.execute("SELECT keyword_stats_fold()")  # folding changes no count
        assert stats_drift(c) == []
        assert c.execute("SELECT sum(docs) FROM keyword_stats WHERE term = 'old'").fetchone() == (
            50,
        )
        differ = c.execute("SELECT count(*) FROM memories WHERE occurred_at <> created_at")
        assert differ.fetchone() == (0,)
