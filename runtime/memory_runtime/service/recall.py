"""Reads and recall: get, range, hybrid search."""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

from memory_runtime import ranking
from memory_runtime.models import (
    Degradation,
    Filters,
    Memory,
    ScoreComponents,
    SearchHit,
    SearchIn,
    SearchOut,
)
from memory_runtime.ports import (
    EmbeddingError,
    VectorFilter,
)
from memory_runtime.service.base import Deps, UseCase
from memory_runtime.service.errors import InvalidInputError, NotFoundError, UnavailableError
from memory_runtime.service.shapes import now_utc, to_filter, to_memory
from memory_runtime.storage.keyword import KeywordQuery
from memory_runtime.storage.rows import Candidate
from memory_runtime.vectors.common import VectorIndexError, VectorIndexUnavailable

log = logging.getLogger("memory_runtime.service")

# Candidates recall takes from each side (vector, keyword) whatever top_k asks
# (at most 100): so the top 10 of a top_k=100 answer is the top_k=10 answer.
RECALL_POOL = 100

VECTOR_POOL_MARGIN = 50  # neighbours asked beyond the pool, cut by a stable key


class Recall(UseCase):
    def __init__(self, deps: Deps) -> None:
        super().__init__(deps)
        # hybrid recall's full-text side runs here, next to the query embedding
        self._keyword_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="recall-keyword")

    def get(self, key: str, include_vector: bool = False) -> Memory:
        with self.db.tx() as tx:
            row = self.resolve(tx, key)
            tx.touch([row.id])
            # read back live only: expiry is the one SQL predicate (filters.LIVE);
            # an expired memory's touch is rolled back with this error
            fresh = tx.get_many([row.id])
            if not fresh:
                raise NotFoundError(f"no memory at {key} (expired)")
        return to_memory(fresh[0], include_vector)

    def range(self, f: Filters, limit: int, offset: int) -> list[Memory]:
        if f.coordinate_min is None:
            raise InvalidInputError("range needs min and max coordinates")
        with self.db.tx() as tx:
            rows = tx.range(to_filter(f), limit, offset)
        return [to_memory(r) for r in rows]

    def recall(self, req: SearchIn) -> SearchOut:
        flt = to_filter(req)
        query = req.query.strip() if req.query else ""
        # Hybrid: the keyword query runs on another thread (and connection)
        # while this one embeds the query and asks the vector index; the
        # embedder releases the GIL, so the two overlap on separate cores.
        keyword_job: Future[tuple[KeywordQuery | None, list[Candidate]]] | None = None
        if req.mode == "hybrid" and query:
            keyword_job = self._keyword_pool.submit(self._keyword_candidates, query, flt)
        try:
            vector_hits, qvec, degraded = self._vector_candidates(req, query, flt)
            keyword_query: KeywordQuery | None = None
            keyword_found: list[Candidate] = []
            if keyword_job is not None:
                keyword_query, keyword_found = keyword_job.result()
            elif req.mode == "keyword":
                keyword_query, keyword_found = self._keyword_candidates(query, flt)
        finally:
            if keyword_job is not None:
                keyword_job.cancel()  # only when the vector side raised before waiting
        keyword_hits = {c.id: c.keyword_rank or 0.0 for c in keyword_found}
        info = {c.id: c.info for c in keyword_found}
        pool = list(dict.fromkeys([*vector_hits, *keyword_hits]))  # both sides' candidates
        with self.db.reads() as tx:
            if req.mode == "hybrid":
                # Every candidate gets both of its scores: the vector candidates
                # their BM25, the keyword ones their similarity (from the vectors
                # PostgreSQL keeps), so neither side's finds are fused with a
                # zero on the other side.
                scored_both = tx.candidates(
                    pool,
                    flt,
                    keyword=keyword_query,
                    vector=None if "vector" in degraded else qvec,
                    distance=self.config.distance,
                    known_similarity=vector_hits,
                    known_keyword=keyword_hits,
                )
                vector_hits, keyword_hits = {}, {}
                for c in scored_both:
                    info[c.id] = c.info
                    if c.similarity is not None:
                        vector_hits[c.id] = c.similarity
                    if c.keyword_rank is not None:
                        keyword_hits[c.id] = c.keyword_rank
                pool = [c.id for c in scored_both]
            elif req.mode == "vector":
                # ranking inputs of the vector candidates that match the filter
                for c in tx.candidates(list(vector_hits), flt):
                    info[c.id] = c.info
            scored = ranking.fuse(
                vector_hits,
                keyword_hits,
                info,
                mode=req.mode,
                weights=ranking.Weights(req.alpha, req.recency_weight, req.importance_weight),
                distance=self.config.distance,  # type: ignore[arg-type]
                now=now_utc(),
                half_life_hours=self.config.half_life_hours,
                decay_enabled=self.config.decay_enabled,
                top_k=req.top_k,
                fusion=req.fusion,
                candidates=pool,
            )
            rows = {r.id: r for r in tx.get_many([h.memory_id for h in scored], vectors=False)}
        # a hit deleted between the two reads is left out, not answered half-empty
        scored = [h for h in scored if h.memory_id in rows]
        self.accesses.record([h.memory_id for h in scored])
        return SearchOut(
            mode=req.mode,
            degraded=degraded,
            hits=[
                SearchHit(
                    score=h.score,
                    components=ScoreComponents(
                        vector=h.vector,
                        keyword=h.keyword,
                        relevance=h.relevance,
                        recency=h.recency,
                        importance=h.importance,
                    ),
                    memory=to_memory(rows[h.memory_id]),
                )
                for h in scored
            ],
        )

    def _query_vector(self, query: str) -> list[float]:
        """The query's vector, from the LRU when this exact text was embedded lately."""
        vector = self.query_vectors.get(query)
        if vector is None:
            vector = self._check_vector(self.embedder.embed([query])[0], "embedder output")
            self.query_vectors.put(query, vector)
        return vector

    def _keyword_candidates(
        self, query: str, flt: VectorFilter
    ) -> tuple[KeywordQuery | None, list[Candidate]]:
        """The query's stems and IDFs, and the best BM25 candidates (RECALL_POOL)."""
        with self.db.reads() as tx:
            keyword_query = tx.keyword_query(query)
            if keyword_query is None:
                return None, []
            return keyword_query, tx.keyword_search(keyword_query, flt, RECALL_POOL)

    def _vector_candidates(
        self, req: SearchIn, query: str, flt: VectorFilter
    ) -> tuple[dict[uuid.UUID, float], list[float] | None, list[Degradation]]:
        """Vector similarities of the RECALL_POOL nearest memories ({} in keyword
        mode), the query vector, and what hybrid recall had to skip because a
        dependency was down."""
        degraded: list[Degradation] = []
        if req.mode not in ("hybrid", "vector"):
            return {}, None, degraded
        qvec: list[float] | None = None
        if req.vector is not None:
            qvec = self._client_vector(req.vector, "query vector")
        elif query and self.embeds:
            try:
                qvec = self._query_vector(query)
            except EmbeddingError as exc:
                if req.mode == "vector":
                    raise UnavailableError(f"the embedder failed: {exc}") from None
                log.warning("query embedding failed, keyword only: %s", exc)
                degraded.append("embedding")
        if qvec is None:
            if req.mode == "vector":
                raise InvalidInputError(
                    "vector mode needs a query vector (this namespace does not embed text)"
                )
            return {}, None, degraded
        try:
            hits = self.index.search(qvec, RECALL_POOL + VECTOR_POOL_MARGIN, flt)
        except VectorIndexUnavailable as exc:
            # only an outage degrades hybrid recall, and the answer says so
            if req.mode == "vector":
                raise UnavailableError("the vector index is unavailable") from exc
            log.warning("vector index unavailable, keyword only: %s", exc)
            degraded.append("vector")
            return {}, qvec, degraded
        except VectorIndexError as exc:
            # a filter the request models let through: refuse, never ignore it
            raise InvalidInputError(str(exc)) from None
        # the pool's last places by a stable key: an approximate index may return
        # other neighbours among equally near ones after its graph changed
        hits.sort(key=lambda h: (-h.similarity, h.memory_id))
        return {h.memory_id: h.similarity for h in hits[:RECALL_POOL]}, qvec, degraded
