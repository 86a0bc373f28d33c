"""PostgreSQL repository: the tenant's source of truth (psycopg 3, sync, pooled).

The pool connects as the tenant role with `search_path = <schema>, <extensions>`,
so every statement here uses unqualified names and can only reach that schema.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from memory_runtime.filters import EXPIRED, LIVE, VectorFilter, sql_where
from memory_runtime.health import Breaker
from memory_runtime.ranking import (
    BM25_B,
    BM25_K1,
    DECAY_FACTOR_SQL,
    CandidateInfo,
    bm25_bound,
    bm25_idf,
    keyword_terms_needed,
)
from memory_runtime.record import RECORD_FIELDS, MemoryRow
from memory_runtime.storage.migrate import search_path
from memory_runtime.vectors.common import similarities

log = logging.getLogger("memory_runtime.storage")

CONNECT_TIMEOUT_SECONDS = 2  # libpq's connect_timeout: a hung server is not waited on


_FLOAT4_OID = 700
_FLOAT4_ELEMENT = np.dtype([("length", ">i4"), ("value", ">f4")])


def float4_array_binary(values: Sequence[float]) -> bytes:
    """A one-dimensional float4[] in PostgreSQL's binary format (array_recv):
    ndim, has-nulls, element type, then length and lower bound, then each
    element as its byte length (4) and big-endian value."""
    elements = np.empty(len(values), dtype=_FLOAT4_ELEMENT)
    elements["length"] = 4
    elements["value"] = values
    return struct.pack("!iiiii", 1, 0, _FLOAT4_OID, len(values), 1) + elements.tobytes()


def session_settings(path: str, statement_timeout_ms: int, lock_timeout_ms: int) -> dict[str, str]:
    """What every runtime connection sets first (pool, migrations, jobs)."""
    return {
        "search_path": path,
        "statement_timeout": str(statement_timeout_ms),
        "lock_timeout": str(lock_timeout_ms),
        # a connection left in a transaction (crashed thread) frees its locks
        "idle_in_transaction_session_timeout": str(max(statement_timeout_ms, 60_000)),
    }


# The memories table's own columns. The vector lives in memory_embeddings
# (migration 0004), read per row by primary key only where it is wanted.
ROW_COLUMNS = ", ".join(RECORD_FIELDS)
MEMORY_COLUMNS = (
    ROW_COLUMNS + ", (SELECT e.embedding FROM memory_embeddings e"
    " WHERE e.memory_id = memories.id) AS embedding"
)
MEMORY_COLUMNS_NO_VECTOR = (
    ROW_COLUMNS + ", NULL::float4[] AS embedding, EXISTS (SELECT FROM memory_embeddings e"
    " WHERE e.memory_id = memories.id) AS stored_vector"
)
LINK_COLUMNS = "from_id, to_id, type, strength, metadata, created_at, updated_at, version"
# a record field's value as a statement parameter, where it is not the value itself
COLUMN_ADAPTERS: dict[str, Any] = {
    "coordinate": list,
    "payload": Jsonb,
    "metadata": Jsonb,
    "tags": list,
}


@dataclass
class LinkRow:
    from_id: uuid.UUID
    to_id: uuid.UUID
    type: str
    strength: float
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: int = 1

    @classmethod
    def from_db(cls, row: dict[str, Any]) -> LinkRow:
        return cls(**row)


@dataclass(frozen=True)
class Candidate:
    """A recall candidate's ranking inputs (see Tx.keyword_search, Tx.candidates)."""

    id: uuid.UUID
    info: CandidateInfo  # importance and times, as ranking takes them
    keyword_rank: float | None  # BM25 score, when it matches the query and filter
    similarity: float | None = None  # to the query vector, when asked and it has one

    @classmethod
    def from_db(cls, row: dict[str, Any]) -> Candidate:
        """From a row of CANDIDATE_COLUMNS plus `keyword_rank` (and `similarity`)."""
        rank = row["keyword_rank"]
        similarity = row.get("similarity")
        return cls(
            id=row["id"],
            info=CandidateInfo(
                float(row["importance"]), row["occurred_at"], row["last_accessed_at"]
            ),
            keyword_rank=None if rank is None else float(rank),
            similarity=None if similarity is None else float(similarity),
        )


CANDIDATE_COLUMNS = "id, importance, occurred_at, last_accessed_at"


@dataclass(frozen=True)
class KeywordQuery:
    """A query's stems that occur in the tenant's memories, rarest first, with
    their BM25 IDF, and the memories' average length (see Tx.keyword_query)."""

    terms: tuple[str, ...]
    idf: tuple[float, ...]
    holding: tuple[int, ...]  # memories holding each stem
    average_length: float


# The BM25 score of `memories` for the stems and IDFs in `q(term, idf)`: tf is
# a stem's positions in the tsvector, the length its indexed tokens (what
# keyword_stats counts, tsv_tokens). NULL when no stem matches.
BM25_SCORE = sql.SQL(
    "(SELECT sum(q.idf * u.tf * {k1p1} / (u.tf + {k1} * ({one_b} + {b} * u.len / {avg})))"
    " FROM (SELECT lexeme, greatest(1, cardinality(positions))::float8 AS tf,"
    "   sum(greatest(1, cardinality(positions))) OVER ()::float8 AS len"
    "   FROM unnest(memories.tsv)) AS u"
    " JOIN q ON q.term = u.lexeme)"
)


def bm25_score(average_length: float) -> sql.Composable:
    return BM25_SCORE.format(
        k1p1=sql.Literal(BM25_K1 + 1.0),
        k1=sql.Literal(BM25_K1),
        one_b=sql.Literal(1.0 - BM25_B),
        b=sql.Literal(BM25_B),
        avg=sql.Literal(max(average_length, 1.0)),
    )


# the query's stems with their IDF, as the CTE `q` of BM25_SCORE
QUERY_TERMS = sql.SQL("q(term, idf) AS (SELECT * FROM unnest(%s::text[], %s::float8[]))")


class Tx:
    """Statements that run inside one transaction of a `PostgresStore.tx()` block."""

    def __init__(self, conn: psycopg.Connection[Any], outbox: bool = True) -> None:
        # dict rows on our own cursor: the pool's connections stay default (tuple
        # rows) for the pgvector index, which shares the pool
        self.conn = conn.cursor(row_factory=dict_row)
        self.outbox_enabled = outbox  # events off: no outbox rows pile up unread

    @property
    def connection(self) -> psycopg.Connection[Any]:
        """The transaction's connection (for an index in this database: pgvector)."""
        return self.conn.connection

    # --- memories -------------------------------------------------------
    def get(self, memory_id: uuid.UUID, *, for_update: bool = False) -> MemoryRow | None:
        lock = " FOR UPDATE" if for_update else ""
        row = self.conn.execute(
            f"SELECT {MEMORY_COLUMNS} FROM memories WHERE id = %s{lock}", (memory_id,)
        ).fetchone()
        return MemoryRow.from_db(row) if row else None

    def get_by_coordinate(
        self, coordinate: Sequence[float], *, for_update: bool = False
    ) -> MemoryRow | None:
        lock = " FOR UPDATE" if for_update else ""
        row = self.conn.execute(
            f"SELECT {MEMORY_COLUMNS} FROM memories WHERE coordinate = %s::float8[]{lock}",
            (list(coordinate),),
        ).fetchone()
        return MemoryRow.from_db(row) if row else None

    def get_many(
        self, ids: Sequence[uuid.UUID], *, live_only: bool = True, vectors: bool = True
    ) -> list[MemoryRow]:
        """Rows by id. `vectors=False` leaves the embeddings in the database (the
        rows say only whether they have one: `stored_vector`), which spares
        shipping and parsing 384 floats per row for answers without them."""
        if not ids:
            return []
        where: sql.Composable = sql.SQL("id = ANY(%s)")
        if live_only:
            where = sql.SQL(" AND ").join([where, LIVE])
        columns = MEMORY_COLUMNS if vectors else MEMORY_COLUMNS_NO_VECTOR
        query = sql.SQL("SELECT {} FROM memories WHERE {}").format(sql.SQL(columns), where)
        return [MemoryRow.from_db(r) for r in self.conn.execute(query, (list(ids),))]

    def versions(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        """The current version of each of these memories that exists, rows locked."""
        rows = self.conn.execute(
            "SELECT id, version FROM memories WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
            (list(ids),),
        )
        return {r["id"]: int(r["version"]) for r in rows}

    def live_ids(self, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these memories exist, held (KEY SHARE) until the transaction ends:
        a concurrent delete waits for us, so a link written now has both ends."""
        rows = self.conn.execute(
            "SELECT id FROM memories WHERE id = ANY(%s) ORDER BY id FOR KEY SHARE",
            (list(ids),),
        )
        return {r["id"] for r in rows}

    def coordinate_holders(
        self, coordinates: Sequence[Sequence[float]], *, lock: bool = False
    ) -> list[uuid.UUID | None]:
        """For each coordinate, the id of the memory at it (None if free)."""
        if not coordinates:
            return []
        literals = ["{" + ",".join(repr(float(c)) for c in coord) + "}" for coord in coordinates]
        rows = self.conn.execute(
            "SELECT c.n, m.id FROM unnest(%s::text[]) WITH ORDINALITY AS c(coord, n)"
            " JOIN memories m ON m.coordinate = c.coord::float8[]"
            + (" ORDER BY m.id FOR UPDATE OF m" if lock else ""),
            (literals,),
        )
        found: list[uuid.UUID | None] = [None] * len(coordinates)
        for r in rows:
            found[int(r["n"]) - 1] = r["id"]
        return found

    def insert_many(self, rows: Sequence[MemoryRow]) -> None:
        """Insert new memories and their vectors with COPY (the bulk form of insert)."""
        if not rows:
            return
        params = [self._params(row) for row in rows]
        columns = [c for c in params[0] if c != "embedding"]
        copy_sql = sql.SQL("COPY memories ({}) FROM STDIN").format(
            sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        with self.conn.copy(copy_sql) as copy:
            for p in params:
                copy.write_row([p[c] for c in columns])
        with self.conn.copy(
            "COPY memory_embeddings (memory_id, embedding) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            # each float4[] in PostgreSQL's binary form, encoded by numpy: a text
            # literal (Python's repr per element, the server's parse) cost ~10x
            copy.set_types(["uuid", "bytea"])
            for p in params:
                if p["embedding"] is not None:
                    copy.write_row((p["id"], float4_array_binary(p["embedding"])))

    def count(self) -> int:
        row = self.conn.execute("SELECT count(*) AS n FROM memories").fetchone()
        return int(row["n"]) if row else 0

    def lock_quota(self) -> None:
        """Serialise inserts while a quota is enforced (count-then-insert is racy
        otherwise): a row of this schema, which no other tenant can lock."""
        self.conn.execute("SELECT FROM runtime_locks WHERE name = 'quota' FOR UPDATE")

    def insert(self, row: MemoryRow) -> MemoryRow:
        """Insert a memory and its vector (if any) in one statement."""
        result = self.conn.execute(
            f"""WITH saved AS (
                    INSERT INTO memories (id, coordinate, memory_type, payload, text, importance,
                        metadata, tags, agent_id, user_id, session_id, created_at, updated_at,
                        last_accessed_at, access_count, version, expires_at, index_pending,
                        occurred_at)
                    VALUES (%(id)s, %(coordinate)s::float8[], %(memory_type)s, %(payload)s,
                        %(text)s, %(importance)s, %(metadata)s, %(tags)s::text[], %(agent_id)s,
                        %(user_id)s, %(session_id)s, %(created_at)s, %(updated_at)s,
                        %(last_accessed_at)s, %(access_count)s, %(version)s, %(expires_at)s,
                        %(index_pending)s, %(occurred_at)s)
                    RETURNING {ROW_COLUMNS}),
                kept AS (
                    INSERT INTO memory_embeddings (memory_id, embedding)
                    SELECT id, %(embedding)s::float4[] FROM saved
                    WHERE %(embedding)s::float4[] IS NOT NULL)
                SELECT * FROM saved""",
            self._params(row),
        ).fetchone()
        assert result is not None
        return MemoryRow.from_db({**result, "embedding": row.embedding})

    def update(self, row: MemoryRow) -> MemoryRow:
        """Overwrite every column of an existing row (the caller bumped `version`)
        and its vector: replaced, removed (None) or, if equal, left unwritten."""
        result = self.conn.execute(
            f"""WITH saved AS (
                    UPDATE memories SET coordinate = %(coordinate)s::float8[],
                        memory_type = %(memory_type)s, payload = %(payload)s, text = %(text)s,
                        importance = %(importance)s, metadata = %(metadata)s,
                        tags = %(tags)s::text[], agent_id = %(agent_id)s, user_id = %(user_id)s,
                        session_id = %(session_id)s, created_at = %(created_at)s,
                        updated_at = %(updated_at)s, last_accessed_at = %(last_accessed_at)s,
                        access_count = %(access_count)s, version = %(version)s,
                        expires_at = %(expires_at)s, index_pending = %(index_pending)s,
                        occurred_at = %(occurred_at)s
                    WHERE id = %(id)s RETURNING {ROW_COLUMNS}),
                dropped AS (
                    DELETE FROM memory_embeddings
                    WHERE memory_id = %(id)s AND %(embedding)s::float4[] IS NULL),
                kept AS (
                    INSERT INTO memory_embeddings (memory_id, embedding)
                    SELECT id, %(embedding)s::float4[] FROM saved
                    WHERE %(embedding)s::float4[] IS NOT NULL
                    ON CONFLICT (memory_id) DO UPDATE SET embedding = EXCLUDED.embedding
                    WHERE memory_embeddings.embedding IS DISTINCT FROM EXCLUDED.embedding)
                SELECT * FROM saved""",
            self._params(row),
        ).fetchone()
        assert result is not None
        return MemoryRow.from_db({**result, "embedding": row.embedding})

    @staticmethod
    def _params(row: MemoryRow) -> dict[str, Any]:
        if row.stored_vector:
            # writing back a row read without its vector would erase the vector
            raise ValueError("this row was read without its vector; read it whole to write it")
        params = row.record()
        for name, adapt in COLUMN_ADAPTERS.items():
            params[name] = adapt(params[name])
        params["embedding"] = row.embedding
        return params

    def touch(self, ids: Sequence[uuid.UUID]) -> None:
        """Count an access now (GET): feeds decay and access statistics."""
        if ids:
            self.conn.execute(
                "UPDATE memories SET access_count = access_count + 1, last_accessed_at = now()"
                " WHERE id = ANY(%s)",
                (list(ids),),
            )

    def add_accesses(self, counts: Mapping[uuid.UUID, tuple[int, datetime]]) -> None:
        """Add batched access counts (AccessLog): n accesses, the last one at `at`."""
        if not counts:
            return
        ids = sorted(counts)  # one lock order for every writer: no deadlocks between batches
        self.conn.execute(
            "UPDATE memories AS m SET access_count = m.access_count + c.n,"
            " last_accessed_at = greatest(m.last_accessed_at, c.at)"
            " FROM unnest(%s::uuid[], %s::bigint[], %s::timestamptz[]) AS c(id, n, at)"
            " WHERE m.id = c.id",
            (ids, [counts[i][0] for i in ids], [counts[i][1] for i in ids]),
        )

    def delete_rows(self, ids: Sequence[uuid.UUID]) -> list[MemoryRow]:
        if not ids:
            return []
        rows = self.conn.execute(
            f"DELETE FROM memories WHERE id = ANY(%s) RETURNING {MEMORY_COLUMNS}", (list(ids),)
        ).fetchall()
        self.conn.execute(
            "INSERT INTO vector_tombstones (memory_id) SELECT unnest(%s::uuid[])"
            " ON CONFLICT (memory_id) DO UPDATE SET deleted_at = now()",
            (list(ids),),
        )
        return [MemoryRow.from_db(r) for r in rows]

    def ids_matching(self, flt: VectorFilter, *, for_update: bool = True) -> list[uuid.UUID]:
        where, params = sql_where(flt)
        query = sql.SQL("SELECT id FROM memories WHERE {} ORDER BY id{}").format(
            where, sql.SQL(" FOR UPDATE" if for_update else "")
        )
        return [r["id"] for r in self.conn.execute(query, params)]

    def keyword_query(self, query_text: str) -> KeywordQuery | None:
        """The query's stems (english, as the tsv column) with their IDF from the
        tenant's statistics (keyword_stats), rarest first; None if no stem occurs
        in any memory. One round trip."""
        rows = self.conn.execute(
            "SELECT q.term, coalesce(sum(s.docs), 0) AS docs, coalesce(sum(s.tokens), 0) AS tokens"
            " FROM (SELECT unnest(tsvector_to_array(to_tsvector('english', %s))) UNION SELECT '')"
            "  AS q(term) LEFT JOIN keyword_stats s ON s.term = q.term GROUP BY q.term",
            (query_text,),
            prepare=False,
        ).fetchall()
        corpus = next((r for r in rows if r["term"] == ""), None)
        memories = int(corpus["docs"]) if corpus else 0
        found = [(r["term"], int(r["docs"])) for r in rows if r["term"] and int(r["docs"]) > 0]
        if memories <= 0 or not found:
            return None
        found.sort(key=lambda f: (f[1], f[0]))  # rarest first, ties by stem
        return KeywordQuery(
            terms=tuple(t for t, _ in found),
            idf=tuple(bm25_idf(memories, n) for _, n in found),
            holding=tuple(n for _, n in found),
            average_length=int(corpus["tokens"]) / memories if corpus else 1.0,
        )

    def keyword_search(
        self, query: KeywordQuery | str, flt: VectorFilter, limit: int
    ) -> list[Candidate]:
        """The `limit` memories with the best BM25 score for the query among all
        live memories matching the filter, best first (ties by id), each with its
        ranking inputs (so recall need not read these rows again).

        Exact top-k without scoring every memory that shares a common stem with
        the query (MaxScore, ranking.keyword_terms_needed): score the memories
        holding one of the rarest stems first; the score they reach bounds what a
        memory holding only commoner stems could reach, and once the commoner
        stems' bounds sum below the `limit`-th score, those memories are left
        out. Otherwise one more stem is taken in and the step repeats.

        Planned for every call (never prepared): the planner then sees how common
        the stems are.
        """
        kq = self.keyword_query(query) if isinstance(query, str) else query
        if kq is None:
            return []
        where, params = sql_where(flt)
        bounds = [bm25_bound(i) for i in kq.idf]
        # start with as many of the rarest stems as could fill the answer
        needed, total = 0, 0
        for n in kq.holding:
            needed, total = needed + 1, total + n
            if total >= limit:
                break
        statement = sql.SQL(
            "WITH {q} SELECT * FROM (SELECT {c}, {score} AS keyword_rank FROM memories"
            "  WHERE tsv @@ to_tsquery('simple', (SELECT string_agg(quote_literal(t), ' | ')"
            "   FROM unnest(%s::text[]) AS t)) AND {where} AND {live}) AS hit"
            " ORDER BY keyword_rank DESC, id LIMIT %s"
        ).format(
            q=QUERY_TERMS,
            c=sql.SQL(CANDIDATE_COLUMNS),
            score=bm25_score(kq.average_length),
            where=where,
            live=LIVE,
        )
        while True:
            args = [list(kq.terms), list(kq.idf), list(kq.terms[:needed]), *params, limit]
            rows = self.conn.execute(statement, args, prepare=False).fetchall()
            threshold = float(rows[-1]["keyword_rank"]) if rows else 0.0
            more = keyword_terms_needed(bounds, len(rows), threshold, limit)
            if more <= needed:
                return [Candidate.from_db(r) for r in rows]
            needed = more

    def candidates(
        self,
        ids: Sequence[uuid.UUID],
        flt: VectorFilter,
        *,
        keyword: KeywordQuery | None = None,
        vector: Sequence[float] | None = None,
        distance: str = "Cosine",
        known_similarity: Mapping[uuid.UUID, float] | None = None,
        known_keyword: Mapping[uuid.UUID, float] | None = None,
    ) -> list[Candidate]:
        """What ranking needs of each live candidate matching the filter, in one
        round trip: with `keyword`, its BM25 score (None without a matching
        stem): the one keyword_search reported (`known_keyword`, the same
        expression) or computed here; with `vector`, its similarity to that
        vector (None without a vector): the one the index reported
        (`known_similarity`) or, for a candidate only the keyword side found,
        computed from its stored embedding as the engines do
        (vectors.common.similarities; no pgvector needed, a Qdrant tenant has
        none). The heavy columns (text, payload, metadata) are left for
        `get_many` on the few hits that are returned.

        Read in binary: 384 floats per embedding in text form took longer to
        parse than the rest of recall (bench/README.md).
        """
        if not ids:
            return []
        where, params = sql_where(flt)
        kq = keyword or KeywordQuery((), (), (), 1.0)
        known_similarity = known_similarity or {}
        known_keyword = known_keyword or {}
        embedding = (
            sql.SQL(
                "CASE WHEN NOT id = ANY(%s::uuid[]) THEN (SELECT e.embedding"
                " FROM memory_embeddings e WHERE e.memory_id = memories.id) END"
            )
            if vector is not None
            else sql.SQL("NULL::float4[]")
        )
        query = sql.SQL(
            "WITH {q} SELECT {c}, CASE WHEN NOT id = ANY(%s::uuid[]) THEN {score} END"
            " AS keyword_rank, {embedding} AS embedding"
            " FROM memories WHERE id = ANY(%s::uuid[]) AND {where} AND {live}"
        ).format(
            q=QUERY_TERMS,
            c=sql.SQL(CANDIDATE_COLUMNS),
            score=bm25_score(kq.average_length),
            embedding=embedding,
            where=where,
            live=LIVE,
        )
        similarity_arg = [] if vector is None else [list(known_similarity)]
        args = [
            list(kq.terms),
            list(kq.idf),
            list(known_keyword),
            *similarity_arg,
            list(ids),
            *params,
        ]
        rows = self.conn.execute(query, args, binary=True).fetchall()
        for r in rows:
            if r["id"] in known_keyword:
                r["keyword_rank"] = known_keyword[r["id"]]
        if vector is not None:
            found = [r for r in rows if r["embedding"] is not None]
            computed = similarities(distance, vector, [r["embedding"] for r in found])
            for r, value in zip(found, computed, strict=True):
                r["similarity"] = value
            for r in rows:
                if r["id"] in known_similarity:
                    r["similarity"] = known_similarity[r["id"]]
        return [Candidate.from_db(r) for r in rows]

    def range(self, flt: VectorFilter, limit: int, offset: int) -> list[MemoryRow]:
        where, params = sql_where(flt)
        query = sql.SQL(
            "SELECT {} FROM memories WHERE {} AND {} ORDER BY coordinate LIMIT %s OFFSET %s"
        ).format(sql.SQL(MEMORY_COLUMNS), where, LIVE)
        return [MemoryRow.from_db(r) for r in self.conn.execute(query, [*params, limit, offset])]

    @staticmethod
    def vector_rows(ids: Sequence[uuid.UUID]) -> sql.Composable:
        """The query of these memories' vector rows as the index keeps them (its
        write_in_transaction): id, vector, and the fields its filters read."""
        return sql.SQL(
            "SELECT m.id AS memory_id, e.embedding, m.memory_type, m.tags, m.agent_id,"
            " m.user_id, m.session_id, m.metadata, m.created_at, m.coordinate, m.occurred_at"
            " FROM memories m JOIN memory_embeddings e ON e.memory_id = m.id"
            " WHERE m.id = ANY({})"
        ).format(sql.Literal(list(ids)))

    def mark_index_pending(self, ids: Sequence[uuid.UUID]) -> None:
        if ids:
            self.conn.execute(
                "UPDATE memories SET index_pending = true WHERE id = ANY(%s)", (sorted(ids),)
            )

    def set_index_done(self, written: Sequence[tuple[uuid.UUID, int]]) -> None:
        """The index took these (id, version)s: clear the pending flag of rows
        still at that version. A write that landed late, after a newer version
        or a delete, may have overwritten newer state in the index: such a row
        is marked pending again, and a deleted one gets a tombstone, so that
        catch-up puts the index right."""
        if not written:
            return
        ids = sorted(written)  # one lock order for every writer
        self.conn.execute(
            """WITH d AS (SELECT * FROM unnest(%s::uuid[], %s::bigint[]) AS d(id, version)),
                    done AS (UPDATE memories AS m SET index_pending = m.version <> d.version
                               FROM d WHERE m.id = d.id
                                 AND (m.index_pending OR m.version <> d.version))
               INSERT INTO vector_tombstones (memory_id)
               SELECT d.id FROM d WHERE NOT EXISTS (SELECT FROM memories m WHERE m.id = d.id)
               ON CONFLICT (memory_id) DO NOTHING""",
            ([i for i, _ in ids], [v for _, v in ids]),
        )

    def pending_index(self, limit: int) -> list[MemoryRow]:
        rows = self.conn.execute(
            f"SELECT {MEMORY_COLUMNS} FROM memories WHERE index_pending"
            " ORDER BY updated_at LIMIT %s FOR UPDATE SKIP LOCKED",
            (limit,),
        ).fetchall()
        return [MemoryRow.from_db(r) for r in rows]

    def tombstones(self, limit: int) -> list[uuid.UUID]:
        rows = self.conn.execute(
            "SELECT memory_id FROM vector_tombstones ORDER BY deleted_at LIMIT %s"
            " FOR UPDATE SKIP LOCKED",
            (limit,),
        ).fetchall()
        return [r["memory_id"] for r in rows]

    def clear_tombstones(self, ids: Sequence[uuid.UUID]) -> None:
        """The index confirmed these deletes. A memory that lives again under one
        of these ids (a restore from an export) may have lost its new vector to
        that delete: it is marked pending, so that catch-up writes it again."""
        if ids:
            self.conn.execute(
                """WITH gone AS (DELETE FROM vector_tombstones WHERE memory_id = ANY(%s))
                   UPDATE memories AS m SET index_pending = true
                   WHERE m.id = ANY(%s) AND NOT m.index_pending
                     AND EXISTS (SELECT FROM memory_embeddings e WHERE e.memory_id = m.id)""",
                (list(ids), sorted(ids)),
            )

    def prunable(
        self, prune_below: float, half_life_hours: float, decay: bool, limit: int
    ) -> list[tuple[uuid.UUID, str]]:
        """Expired memories, and decayed episodic ones: (id, reason)."""
        decayed = DECAY_FACTOR_SQL.format(since="last_accessed_at", half_life="%s")
        rows = self.conn.execute(
            sql.SQL(
                "SELECT id, 'expired' AS reason FROM memories WHERE {expired}"
                " UNION ALL"
                " SELECT id, 'decayed' FROM memories"
                "  WHERE %s AND memory_type = 'episodic' AND {live} AND importance * {decayed} < %s"
                " LIMIT %s"
            ).format(expired=EXPIRED, live=LIVE, decayed=sql.SQL(decayed)),
            (decay, half_life_hours, prune_below, limit),
        ).fetchall()
        return [(r["id"], r["reason"]) for r in rows]

    # --- links ----------------------------------------------------------
    def upsert_link(self, link: LinkRow) -> tuple[LinkRow, bool, bool]:
        """Insert or update; returns (row, created, changed)."""
        before = self.conn.execute(
            f"SELECT {LINK_COLUMNS} FROM links WHERE from_id = %s AND to_id = %s AND type = %s"
            " FOR UPDATE",
            (link.from_id, link.to_id, link.type),
        ).fetchone()
        if before is None:
            row = self.conn.execute(
                f"INSERT INTO links (from_id, to_id, type, strength, metadata)"
                f" VALUES (%s, %s, %s, %s, %s) RETURNING {LINK_COLUMNS}",
                (link.from_id, link.to_id, link.type, link.strength, Jsonb(link.metadata)),
            ).fetchone()
            assert row is not None
            return LinkRow.from_db(row), True, True
        if before["strength"] == link.strength and before["metadata"] == link.metadata:
            return LinkRow.from_db(before), False, False
        row = self.conn.execute(
            f"UPDATE links SET strength = %s, metadata = %s, updated_at = now(),"
            f" version = version + 1 WHERE from_id = %s AND to_id = %s AND type = %s"
            f" RETURNING {LINK_COLUMNS}",
            (link.strength, Jsonb(link.metadata), link.from_id, link.to_id, link.type),
        ).fetchone()
        assert row is not None
        return LinkRow.from_db(row), False, True

    def link_versions(
        self, keys: Sequence[tuple[uuid.UUID, uuid.UUID, str]]
    ) -> dict[tuple[uuid.UUID, uuid.UUID, str], int]:
        """The current version of each of these links that exists, rows locked."""
        rows = self.conn.execute(
            "SELECT l.from_id, l.to_id, l.type, l.version FROM links l"
            " JOIN unnest(%s::uuid[], %s::uuid[], %s::text[]) AS k(f, t, ty)"
            " ON l.from_id = k.f AND l.to_id = k.t AND l.type = k.ty"
            " ORDER BY 1, 2, 3 FOR UPDATE OF l",
            ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]),
        )
        return {(r["from_id"], r["to_id"], r["type"]): int(r["version"]) for r in rows}

    def write_links(self, links: Sequence[LinkRow], *, new: bool) -> None:
        """Insert (new) or overwrite links as given, times and version included (import)."""
        if not links:
            return
        if new:
            with self.conn.copy(f"COPY links ({LINK_COLUMNS}) FROM STDIN") as copy:
                for link in links:
                    copy.write_row(self._link_params(link))
            return
        self.conn.executemany(
            "UPDATE links SET strength = %s, metadata = %s, created_at = %s, updated_at = %s,"
            " version = %s WHERE from_id = %s AND to_id = %s AND type = %s",
            [(*self._link_params(link)[3:], *self._link_params(link)[:3]) for link in links],
        )

    @staticmethod
    def _link_params(link: LinkRow) -> tuple[Any, ...]:
        """LINK_COLUMNS' values, in that order."""
        return (
            link.from_id,
            link.to_id,
            link.type,
            link.strength,
            Jsonb(link.metadata),
            link.created_at,
            link.updated_at,
            link.version,
        )

    def delete_link(self, from_id: uuid.UUID, to_id: uuid.UUID, link_type: str) -> LinkRow | None:
        row = self.conn.execute(
            f"DELETE FROM links WHERE from_id = %s AND to_id = %s AND type = %s"
            f" RETURNING {LINK_COLUMNS}",
            (from_id, to_id, link_type),
        ).fetchone()
        return LinkRow.from_db(row) if row else None

    def delete_links_of(self, ids: Sequence[uuid.UUID]) -> list[LinkRow]:
        if not ids:
            return []
        rows = self.conn.execute(
            f"DELETE FROM links WHERE from_id = ANY(%s) OR to_id = ANY(%s)"
            f" RETURNING {LINK_COLUMNS}",
            (list(ids), list(ids)),
        ).fetchall()
        return [LinkRow.from_db(r) for r in rows]

    def links_from_frontier(
        self, frontier: Sequence[uuid.UUID], direction: str, link_type: str | None
    ) -> list[LinkRow]:
        if direction == "out":
            where: sql.Composable = sql.SQL("from_id = ANY(%s)")
            params: list[Any] = [list(frontier)]
        elif direction == "in":
            where = sql.SQL("to_id = ANY(%s)")
            params = [list(frontier)]
        else:
            where = sql.SQL("(from_id = ANY(%s) OR to_id = ANY(%s))")
            params = [list(frontier), list(frontier)]
        if link_type is not None:
            where = sql.SQL("{} AND type = %s").format(where)
            params.append(link_type)
        query = sql.SQL("SELECT {} FROM links WHERE {} ORDER BY from_id, to_id, type").format(
            sql.SQL(LINK_COLUMNS), where
        )
        return [LinkRow.from_db(r) for r in self.conn.execute(query, params)]

    # --- outbox ---------------------------------------------------------
    def outbox(
        self,
        event_type: str,
        memory_id: uuid.UUID,
        version: int | None,
        record: dict[str, Any] | None,
        reason: str | None = None,
    ) -> uuid.UUID | None:
        if not self.outbox_enabled:
            return None
        event_id = uuid.uuid4()
        self.conn.execute(
            "INSERT INTO outbox (id, event_type, memory_id, version, record, reason)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            self._event_params(event_id, event_type, memory_id, version, record, reason),
        )
        return event_id

    def outbox_many(
        self,
        events: Sequence[tuple[str, uuid.UUID, int | None, dict[str, Any] | None, str | None]],
    ) -> None:
        """Many outbox rows at once (COPY): (event_type, memory_id, version, record, reason)."""
        if not self.outbox_enabled or not events:
            return
        with self.conn.copy(
            "COPY outbox (id, event_type, memory_id, version, record, reason) FROM STDIN"
        ) as copy:
            for event in events:
                copy.write_row(self._event_params(uuid.uuid4(), *event))

    @staticmethod
    def _event_params(
        event_id: uuid.UUID,
        event_type: str,
        memory_id: uuid.UUID,
        version: int | None,
        record: dict[str, Any] | None,
        reason: str | None,
    ) -> tuple[Any, ...]:
        return (
            event_id,
            event_type,
            memory_id,
            version,
            Jsonb(record) if record is not None else None,
            reason,
        )

    # --- imports --------------------------------------------------------
    def import_progress(
        self, import_id: str, *, create: bool = False, lock: bool = True
    ) -> dict[str, Any] | None:
        """A named import's row (locked unless asked not to), created empty first if asked."""
        if create:
            self.conn.execute(
                "INSERT INTO imports (id) VALUES (%s) ON CONFLICT (id) DO NOTHING", (import_id,)
            )
        return self.conn.execute(
            "SELECT id, lines, counts, started_at, updated_at, finished_at FROM imports"
            f" WHERE id = %s{' FOR UPDATE' if lock else ''}",
            (import_id,),
        ).fetchone()

    def save_import_progress(
        self, import_id: str, lines: int, counts: dict[str, Any], *, finished: bool = False
    ) -> None:
        self.conn.execute(
            "UPDATE imports SET lines = greatest(lines, %s), counts = %s, updated_at = now(),"
            " finished_at = CASE WHEN %s THEN now() ELSE finished_at END WHERE id = %s",
            (lines, Jsonb(counts), finished, import_id),
        )


def _rollback(conn: psycopg.Connection[Any]) -> None:
    """Roll back what a failed block left open (and spare the pool its warning)."""
    if conn.broken or conn.closed:
        return
    if conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
        with suppress(psycopg.Error):
            conn.rollback()


class DatabaseUnavailable(psycopg.OperationalError):
    """PostgreSQL is down or hung (circuit open, or no connection in time): a 503."""


class PostgresStore:
    """Owns the connection pool; hands out transactions.

    Every connection carries `statement_timeout`, `lock_timeout` and
    `idle_in_transaction_session_timeout`, so no statement waits unbounded on
    a lock or a runaway query. A request waits at most `wait_seconds` for a
    connection and gives up at once while the `breaker` is open. A server that
    stopped answering (SIGSTOP, a frozen VM) enforces none of its own timeouts:
    `cut_stalled()` (called by the health monitor when its probe hangs) shuts
    down the sockets of connections busy for longer than a moment, so their
    requests fail with a 503 instead of waiting for the server to come back.
    """

    def __init__(
        self,
        conninfo: str,
        schema: str,
        extensions_schema: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        outbox: bool = True,
        statement_timeout_ms: int = 30_000,
        lock_timeout_ms: int = 5_000,
        wait_seconds: float = 5.0,
        breaker: Breaker | None = None,
    ) -> None:
        self.outbox = outbox
        self.schema = schema
        self.extensions_schema = extensions_schema
        self.conninfo = conninfo
        self.wait_seconds = wait_seconds
        self.breaker = breaker or Breaker("postgres")
        self.session_settings = session_settings(
            search_path(schema, extensions_schema), statement_timeout_ms, lock_timeout_ms
        )
        settings = self.session_settings

        def configure(conn: psycopg.Connection[Any]) -> None:
            for name, value in settings.items():
                conn.execute("SELECT set_config(%s, %s, false)", (name, value))
            conn.commit()

        self.pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
            configure=configure,
            open=False,
            name=f"memory-{schema}",
        )
        self._busy: dict[int, tuple[psycopg.Connection[Any], float]] = {}
        self._busy_lock = threading.Lock()

    def open(self, wait_seconds: float = 30.0) -> None:
        self.pool.open(wait=True, timeout=wait_seconds)

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection, or DatabaseUnavailable within `wait_seconds`.

        Only a connection that broke counts against the circuit: a lock or
        statement timeout, a constraint violation or a busy pool are answers
        from a working server (the health probe judges the server itself)."""
        conn = self._checkout()
        key = id(conn)
        with self._busy_lock:
            self._busy[key] = (conn, time.monotonic())
        answered = True
        try:
            yield conn
            # like psycopg_pool's own connection(): a transaction the block
            # left open (statements outside conn.transaction()) is committed
            if conn.info.transaction_status == TransactionStatus.INTRANS:
                conn.commit()
        except psycopg.OperationalError as exc:
            answered = not conn.broken
            if not answered:
                self.breaker.failure(type(exc).__name__)
            _rollback(conn)
            raise
        except BaseException:
            _rollback(conn)
            raise
        finally:
            with self._busy_lock:
                self._busy.pop(key, None)
            self.pool.putconn(conn)
            if answered:
                self.breaker.success()

    def _checkout(self) -> psycopg.Connection[Any]:
        if not self.breaker.allow():
            raise DatabaseUnavailable("the database is unavailable (circuit open)")
        # in short slices, so a request waiting for a connection learns at once
        # that the circuit opened instead of waiting out the whole timeout
        deadline = time.monotonic() + self.wait_seconds
        while True:
            try:
                return self.pool.getconn(timeout=min(0.25, self.wait_seconds))
            except PoolClosed as exc:
                raise DatabaseUnavailable(f"no database connection: {exc}") from exc
            except PoolTimeout as exc:
                if time.monotonic() >= deadline:
                    raise DatabaseUnavailable(f"no database connection: {exc}") from exc
                if self.breaker.state == "open":
                    raise DatabaseUnavailable("the database is unavailable (circuit open)") from exc

    def cut_stalled(self, older_than: float = 1.0) -> int:
        """Shut down the sockets of connections checked out for `older_than`
        seconds or more: their blocked reads return at once with an error."""
        now = time.monotonic()
        with self._busy_lock:
            stalled = [c for c, since in self._busy.values() if now - since >= older_than]
        for conn in stalled:
            try:
                fd = conn.pgconn.socket
                with socket.socket(fileno=os.dup(fd)) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
            except (OSError, psycopg.Error):
                continue  # already closed
        if stalled:
            log.warning("database not answering: cut %d stalled connection(s)", len(stalled))
        return len(stalled)

    @contextmanager
    def tx(self) -> Iterator[Tx]:
        with self.connection() as conn, conn.transaction():
            yield Tx(conn, self.outbox)

    @contextmanager
    def reads(self) -> Iterator[Tx]:
        """Read-only statements that need no common snapshot: each runs on its own
        (autocommit), sparing the BEGIN and COMMIT round trips. Recall uses it:
        a hit deleted between two of its reads is dropped, not half-answered."""
        with self.connection() as conn:
            conn.autocommit = True
            try:
                yield Tx(conn, self.outbox)
            finally:
                if not conn.closed:
                    conn.autocommit = False

    def probe(self) -> dict[str, Any]:
        """The health probe: a fresh connection (never the pool, which requests
        may have exhausted), bounded by its own short timeouts."""
        with psycopg.connect(
            self.conninfo, connect_timeout=CONNECT_TIMEOUT_SECONDS, autocommit=True
        ) as conn:
            conn.execute("SELECT set_config('statement_timeout', '1000', false)")
            conn.execute("SELECT 1")
        return {"schema": self.schema}

    def stream_export(self, batch: int = 500) -> Iterator[tuple[str, dict[str, Any]]]:
        """All memories then all links, from one snapshot (server-side cursor)."""
        with self.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            with conn.cursor(name="export_memories", row_factory=dict_row) as cur:
                cur.itersize = batch
                cur.execute(f"SELECT {MEMORY_COLUMNS} FROM memories ORDER BY created_at, id")
                for row in cur:
                    yield "memory", row
            with conn.cursor(name="export_links", row_factory=dict_row) as cur:
                cur.itersize = batch
                cur.execute(f"SELECT {LINK_COLUMNS} FROM links ORDER BY created_at, from_id")
                for row in cur:
                    yield "link", row

    def stats(self) -> dict[str, Any]:
        with self.tx() as tx:
            c = tx.conn
            expired = sql.SQL("SELECT count(*) FROM memories WHERE {}").format(EXPIRED)
            by_type = {
                r["memory_type"]: int(r["n"])
                for r in c.execute(
                    "SELECT memory_type, count(*) AS n FROM memories GROUP BY memory_type"
                )
            }
            one = c.execute(
                sql.SQL("SELECT (SELECT count(*) FROM links) AS links, ({}) AS expired").format(
                    expired
                )
            ).fetchone()
            assert one is not None
            backlog = _backlog(c)
            # only relations of this schema: the role cannot see others' sizes anyway
            sizes = {
                r["relname"]: int(r["bytes"])
                for r in c.execute(
                    "SELECT c.relname, pg_total_relation_size(c.oid) AS bytes FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
                    (self.schema,),
                )
            }
        return {
            "memories_by_type": by_type,
            "links": int(one["links"]),
            "index_pending": backlog.index_pending,
            "expired": int(one["expired"]),
            "outbox_lag": backlog.outbox_rows,
            "outbox_oldest_age_seconds": backlog.outbox_oldest_age_seconds,
            "table_bytes": sizes,
        }

    def backlog(self) -> Backlog:
        """What the background jobs still have to do; read by /stats and /metrics."""
        with self.reads() as tx:
            return _backlog(tx.conn)


@dataclass(frozen=True)
class Backlog:
    """Work the index catch-up and the outbox relay have not done yet."""

    index_pending: int  # memories whose vector the index has not confirmed
    index_tombstones: int  # deleted memories whose vector may still be in the index
    outbox_rows: int  # events not yet published
    outbox_oldest_age_seconds: float | None  # age of the oldest of them; None: none


def _backlog(cur: psycopg.Cursor[Any]) -> Backlog:
    # Each count reads a partial index (memories_pending_idx, outbox_unsent_idx):
    # it costs the size of the backlog, not of the tenant's data.
    row = cur.execute(
        """SELECT (SELECT count(*) FROM memories WHERE index_pending) AS pending,
                  (SELECT count(*) FROM vector_tombstones) AS tombstones,
                  (SELECT count(*) FROM outbox WHERE sent_at IS NULL) AS outbox,
                  (SELECT extract(epoch FROM now() - min(occurred_at))
                     FROM outbox WHERE sent_at IS NULL) AS oldest"""
    ).fetchone()
    assert row is not None
    oldest = row["oldest"]
    return Backlog(
        int(row["pending"]),
        int(row["tombstones"]),
        int(row["outbox"]),
        float(oldest) if oldest is not None else None,
    )


class AccessLog:
    """Access counts of recall hits, kept off the request path and written in batches.

    Recall used to UPDATE its hits inside the request: a write, row locks and
    WAL on every search, plus two round trips. Now a search only records ids
    here; a background thread adds the counts every `interval` seconds (sooner
    when `max_pending` memories wait) in one UPDATE, and `close()` writes what
    is left, so a clean shutdown loses no count. A crash loses at most one
    interval of counts (they feed decay and statistics, nothing else). A failed
    write keeps the counts for the next try.
    """

    def __init__(
        self, store: PostgresStore, *, interval: float = 1.0, max_pending: int = 5000
    ) -> None:
        self._store = store
        self._interval = interval
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._pending: dict[uuid.UUID, tuple[int, datetime]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, ids: Sequence[uuid.UUID]) -> None:
        if not ids:
            return
        now = datetime.now(UTC)
        with self._lock:
            for memory_id in ids:
                count = self._pending.get(memory_id, (0, now))[0]
                self._pending[memory_id] = (count + 1, now)
            full = len(self._pending) >= self._max_pending
        if full:
            self._wake.set()

    def pending(self) -> int:
        """Memories with counts not written yet."""
        with self._lock:
            return len(self._pending)

    def flush(self) -> int:
        """Write the pending counts now; returns how many memories were updated."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return 0
        try:
            with self._store.tx() as tx:
                tx.add_accesses(batch)
        except Exception as exc:
            with self._lock:  # put them back, merged with what arrived meanwhile
                for memory_id, (count, at) in batch.items():
                    now_count, now_at = self._pending.get(memory_id, (0, at))
                    self._pending[memory_id] = (count + now_count, max(at, now_at))
            log.warning("access counts not written (%d memories kept): %s", len(batch), exc)
            return 0
        return len(batch)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            self.flush()

    def close(self) -> None:
        """Stop the writer and write what is left (before the pool closes)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.flush()
