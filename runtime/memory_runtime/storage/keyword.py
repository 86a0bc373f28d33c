"""Keyword recall: the query's stems and IDFs, BM25 over the memories, both sides' candidates."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from psycopg import sql

from memory_runtime.filters import LIVE, VectorFilter, sql_where
from memory_runtime.ranking import (
    BM25_B,
    BM25_K1,
    bm25_bound,
    bm25_idf,
    keyword_terms_needed,
)
from memory_runtime.storage.rows import CANDIDATE_COLUMNS, Candidate
from memory_runtime.storage.tx_base import TxBase
from memory_runtime.vectors.common import similarities


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


def scored_candidates(
    template: str, kq: KeywordQuery, where: sql.Composable, **parts: sql.Composable
) -> sql.Composed:
    """A query over live memories matching a filter, with their BM25 score: `template`
    with {q} (the query's stems and IDF: its first two parameters), {c} (the
    candidate columns), {score}, {where} and {live} filled in, and `parts`."""
    return sql.SQL(template).format(
        q=QUERY_TERMS,
        c=sql.SQL(CANDIDATE_COLUMNS),
        score=bm25_score(kq.average_length),
        where=where,
        live=LIVE,
        **parts,
    )


class KeywordSearch(TxBase):
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
        statement = scored_candidates(
            "WITH {q} SELECT * FROM (SELECT {c}, {score} AS keyword_rank FROM memories"
            "  WHERE tsv @@ to_tsquery('simple', (SELECT string_agg(quote_literal(t), ' | ')"
            "   FROM unnest(%s::text[]) AS t)) AND {where} AND {live}) AS hit"
            " ORDER BY keyword_rank DESC, id LIMIT %s",
            kq,
            where,
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
        query = scored_candidates(
            "WITH {q} SELECT {c}, CASE WHEN NOT id = ANY(%s::uuid[]) THEN {score} END"
            " AS keyword_rank, {embedding} AS embedding"
            " FROM memories WHERE id = ANY(%s::uuid[]) AND {where} AND {live}",
            kq,
            where,
            embedding=embedding,
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
