"""Full-text candidates: bounded work however many rows match, best matches first."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from memory_runtime.ports import VectorFilter
from memory_runtime.storage.postgres import Tx
from tests.integration.runtime.conftest import Tenant
from tests.integration.runtime.helpers import tenant_connection

pytestmark = pytest.mark.integration

MATCHING = 4000  # rows sharing the word "alpha": far more than recall ranks


class RecordingCursor(psycopg.Cursor[Any]):
    """Keeps every statement it runs, so the test can EXPLAIN exactly that one."""

    statements: list[tuple[Any, Any]]

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> RecordingCursor:  # type: ignore[override]
        RecordingCursor.statements.append((query, params))
        super().execute(query, params, **kwargs)
        return self


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
        # inserted last, so they sit at the end of the table (the unordered sample's far end)
        for n in range(3):
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


LONELY = uuid.UUID("ffffffff-ffff-4fff-bfff-fffffffffff7")  # last among equal ranks


def texts(conn: psycopg.Connection[Any], ids: list[uuid.UUID]) -> list[str]:
    rows = conn.execute("SELECT id, text FROM memories WHERE id = ANY(%s)", (ids,)).fetchall()
    by_id = {r[0]: r[1] for r in rows}
    return [by_id[i] for i in ids]


def rows_read_from_memories(plan: dict[str, Any]) -> int:
    """Rows the plan's scans of `memories` produced (all loops)."""
    total = 0
    if plan.get("Relation Name") == "memories":
        total += int(plan["Actual Rows"] * plan.get("Actual Loops", 1))
    for child in plan.get("Plans", []):
        total += rows_read_from_memories(child)
    return total


def test_keyword_search_ranks_a_bounded_set(conn: psycopg.Connection[Any]) -> None:
    # The old query ranked every one of the 4000 matching rows; recall must read
    # a bounded candidate set (here: at most the 1000-row cap) whatever matches.
    RecordingCursor.statements = []
    conn.cursor_factory = RecordingCursor
    with conn.transaction():
        hits = Tx(conn).keyword_search("alpha", VectorFilter(), 40)
    conn.cursor_factory = psycopg.Cursor
    assert len(hits) == 40
    statement, params = RecordingCursor.statements[-1]  # the candidate query itself
    with conn.cursor(row_factory=dict_row) as cur:
        if not isinstance(statement, sql.Composable):
            statement = sql.SQL(statement)
        explain = sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + statement
        raw = cur.execute(explain, params).fetchone()
    assert raw is not None
    plan = raw["QUERY PLAN"]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    read = rows_read_from_memories(plan[0]["Plan"])
    assert 0 < read <= 1000, read


def test_keyword_statement_is_planned_for_every_call(conn: psycopg.Connection[Any]) -> None:
    # A prepared statement may settle on a generic plan that cannot see how
    # common the words are (measured: 3x slower at 100k rows); psycopg prepares
    # a statement after 5 runs on one connection unless told not to.
    for word in ("alpha", "lonely", "beta", "alpha", "filler", "alpha", "late", "alpha"):
        with conn.transaction():
            assert Tx(conn).keyword_search(word, VectorFilter(), 10)
    prepared = conn.execute("SELECT statement FROM pg_prepared_statements").fetchall()
    assert prepared, "psycopg prepared nothing: the check below would prove nothing"
    assert not [s for (s,) in prepared if "WITH strict" in s], prepared


def test_rows_matching_every_word_come_first(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        hits = Tx(conn).keyword_search("alpha beta", VectorFilter(), 10)
    assert len(hits) == 10
    top = texts(conn, [c.id for c in hits[:3]])
    assert sorted(top) == ["alpha beta late 0", "alpha beta late 1", "alpha beta late 2"]
    ranks = [c.keyword_rank or 0.0 for c in hits]
    assert ranks[2] > ranks[3]  # matching both words ranks above matching one
    assert ranks == sorted(ranks, reverse=True)
    assert len({c.id for c in hits}) == 10  # a row in both steps is listed once


def test_candidates_rank_ids_outside_the_keyword_sample(conn: psycopg.Connection[Any]) -> None:
    # "alpha gamma": nothing matches both words, so the ANY-word sample fills the
    # candidates from the table's start; the last row is outside that sample, but
    # asked for by id (as hybrid asks for its vector candidates) it gets its rank.
    missing = uuid.UUID(int=8)
    with conn.transaction():
        sample = {
            c.id: c.keyword_rank for c in Tx(conn).keyword_search("alpha gamma", VectorFilter(), 40)
        }
        found = Tx(conn).candidates([LONELY, missing], "alpha gamma", VectorFilter())
    ranks = {c.id: c.keyword_rank for c in found}
    assert LONELY not in sample
    assert len(sample) == 40
    assert ranks[LONELY] == pytest.approx(max(sample.values()))  # one matching word, like them
    assert missing not in ranks  # ids that do not exist or match are not invented


def test_filters_and_expiry_apply_to_every_step(conn: psycopg.Connection[Any]) -> None:
    conn.execute("UPDATE memories SET user_id = 'u1' WHERE text LIKE 'alpha beta late %'")
    conn.execute(
        "UPDATE memories SET expires_at = now() - interval '1 hour'"
        " WHERE text = 'alpha beta late 0'"
    )
    conn.commit()
    with conn.transaction():
        hits = Tx(conn).keyword_search("alpha beta", VectorFilter(user_id="u1"), 10)
        (lonely,) = Tx(conn).candidates([LONELY], "alpha", VectorFilter(user_id="u1"))
    assert sorted(texts(conn, [c.id for c in hits])) == ["alpha beta late 1", "alpha beta late 2"]
    assert lonely.keyword_rank is None  # no keyword share when the filter excludes it
    expired = conn.execute("SELECT id FROM memories WHERE text = 'alpha beta late 0'").fetchone()
    with conn.transaction():
        assert Tx(conn).candidates([expired[0]], "alpha", VectorFilter()) == []  # never ranked


def test_a_query_of_stop_words_only_has_no_candidates(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        assert Tx(conn).keyword_search("the and of", VectorFilter(), 10) == []
        (lonely,) = Tx(conn).candidates([LONELY], "the and of", VectorFilter())
    assert lonely.keyword_rank is None


def test_candidates_carry_the_ranking_inputs_without_a_query(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "UPDATE memories SET importance = 0.25, last_accessed_at = '2026-01-02T03:04:05Z'"
        " WHERE id = %s",
        (LONELY,),
    )
    conn.commit()
    with conn.transaction():
        (lonely,) = Tx(conn).candidates([LONELY], None, VectorFilter())
        (by_keyword,) = Tx(conn).keyword_search("lonely", VectorFilter(), 5)
    assert lonely.id == LONELY
    assert lonely.info.importance == 0.25
    assert lonely.info.last_accessed_at.isoformat() == "2026-01-02T03:04:05+00:00"
    assert lonely.keyword_rank is None  # vector mode asks no keyword share
    # the keyword side brings the same inputs along, with its rank
    assert by_keyword.id == LONELY
    assert by_keyword.info == lonely.info
    assert by_keyword.keyword_rank is not None
    assert by_keyword.keyword_rank > 0


def test_more_distinct_query_words_beat_one_word_repeated(
    conn: psycopg.Connection[Any],
) -> None:
    # ts_rank_cd with an any-word query would rank the repetition first (it
    # counts matched positions: 3 against 2); ts_rank weighs distinct words.
    conn.execute(
        "INSERT INTO memories (id, coordinate, memory_type, text) VALUES"
        " (gen_random_uuid(), ARRAY[-20::float8], 'episodic', 'zebra zebra zebra'),"
        " (gen_random_uuid(), ARRAY[-21::float8], 'episodic', 'zebra yak')"
    )
    conn.commit()
    with conn.transaction():
        hits = Tx(conn).keyword_search("zebra yak", VectorFilter(), 5)
        by_id = Tx(conn).candidates([c.id for c in reversed(hits)], "zebra yak", VectorFilter())
    assert texts(conn, [c.id for c in hits]) == ["zebra yak", "zebra zebra zebra"]
    ranks = {c.id: c.keyword_rank for c in hits}
    assert {c.id: c.keyword_rank for c in by_id} == ranks  # both queries rank alike
