"""The memory use cases: store, fetch, patch, delete, recall, graph, import/export.

PostgreSQL is the source of truth. Every change writes its row(s) and outbox
row(s) in one transaction; vectors go to the index after commit, and a row
stays `index_pending` until the index confirmed it (a crash or an index outage
between commit and index write is caught up by `index_pending()`).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import psycopg

from memory_runtime import graph, ranking
from memory_runtime.coordinates import (
    Coordinate,
    CoordinateError,
    coordinate_for_id,
    parse_coordinate,
    parse_key,
)
from memory_runtime.filters import FilterError
from memory_runtime.models import (
    MAX_DEPTH,
    MAX_TEXT_CHARS,
    Degradation,
    Direction,
    Filters,
    ImportCounts,
    ImportOut,
    ImportStatus,
    Link,
    LinkIn,
    LinkKey,
    LinkLine,
    LinkRecordIn,
    Memory,
    MemoryIn,
    MemoryLine,
    MemoryPatch,
    MemoryRecordIn,
    Neighbor,
    NeighborsOut,
    PathOut,
    ScoreComponents,
    SearchHit,
    SearchIn,
    SearchOut,
)
from memory_runtime.ports import (
    Embedder,
    EmbeddingError,
    StagedWrite,
    VectorFilter,
    VectorIndex,
    VectorItem,
)
from memory_runtime.record import RECORD_FIELDS, MemoryRow
from memory_runtime.storage.postgres import (
    AccessLog,
    Candidate,
    KeywordQuery,
    LinkRow,
    PostgresStore,
    Tx,
)
from memory_runtime.vectors.common import VectorIndexError, VectorIndexUnavailable, check_vector

log = logging.getLogger("memory_runtime.service")

# Candidates recall takes from each side (vector, keyword) whatever top_k asks
# (at most 100): so the top 10 of a top_k=100 answer is the top_k=10 answer.
RECALL_POOL = 100
VECTOR_POOL_MARGIN = 50  # neighbours asked beyond the pool, cut by a stable key
PRUNE_BATCH = 500


class ServiceError(Exception):
    """A use case refused or could not finish; `detail` is safe to show. What
    each kind means over HTTP (status, problem type) is the API's business
    (api/errors.py)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra: dict[str, Any] = {}  # more facts for the answer, e.g. an import's `line`


class NotFoundError(ServiceError):
    """The memory, link or import named does not exist."""


class ConflictError(ServiceError):
    """A concurrent writer got there first, or the request contradicts the state."""


class QuotaExceededError(ServiceError):
    """The namespace holds its maximum number of memories."""


class InvalidInputError(ServiceError):
    """The input is well-formed but cannot be applied (e.g. wrong dimensions)."""


class TooLargeError(ServiceError):
    """A part of the request is over its size limit."""


class UnavailableError(ServiceError):
    """A dependency the use case needs is down."""


def line_error(kind: type[ServiceError], number: int, detail: str) -> ServiceError:
    """An import error about one line: `line N: ...`, and `line` in the problem."""
    error = kind(f"line {number}: {detail}")
    error.extra["line"] = number
    return error


@dataclass(frozen=True)
class ServiceConfig:
    tenant: str
    dimensions: int
    distance: str = "Cosine"
    max_memories: int = 0
    decay_enabled: bool = True
    half_life_hours: float = 720.0
    prune_below: float = 0.05
    vector_backend: str = "postgres"
    server_embeds: bool = True  # False for provider `none`: clients send vectors


def now_utc() -> datetime:
    return datetime.now(UTC)


def derive_text(payload: dict[str, Any]) -> str:
    """Payload `text`/`content`/`summary`, else the compact JSON (DESIGN §5).

    Cut to MAX_TEXT_CHARS, the limit a given `text` has: the payload is kept
    whole, but what is embedded and keyword-indexed stays bounded (a long text
    would otherwise overflow PostgreSQL's tsvector and cost seconds).
    """
    for key in ("text", "content", "summary"):
        value = payload.get(key)
        if isinstance(value, str) and value.strip():
            return value[:MAX_TEXT_CHARS]
    text = json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return text[:MAX_TEXT_CHARS]


# the record fields an imported line gives as they are (the rest: below, in import_chunk)
IMPORTED_AS_IS = tuple(
    name
    for name in RECORD_FIELDS
    if name in MemoryRecordIn.model_fields
    and name not in ("coordinate", "text", "tags", "occurred_at")
)


def to_memory(row: MemoryRow, include_vector: bool = False) -> Memory:
    return Memory(
        **row.record(),
        has_vector=row.has_vector,
        vector=row.embedding if include_vector else None,
    )


def to_link(row: LinkRow) -> Link:
    return Link.model_validate(
        {
            "from": row.from_id,
            "to": row.to_id,
            "type": row.type,
            "strength": row.strength,
            "metadata": row.metadata,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
            "version": row.version,
        }
    )


def memory_record(row: MemoryRow) -> dict[str, Any]:
    """The event/outbox form of a memory: as the API returns it, JSON-ready."""
    return to_memory(row).model_dump(mode="json", exclude={"vector"})


def link_record(row: LinkRow) -> dict[str, Any]:
    return to_link(row).model_dump(mode="json", by_alias=True)


def to_filter(f: Filters) -> VectorFilter:
    """The engines' filter of a request (InvalidInputError if it breaks a rule:
    a request built without validation)."""
    try:
        return f.to_filter()
    except FilterError as exc:
        raise InvalidInputError(str(exc)) from None


class QueryVectorCache:
    """A small LRU of query text -> query vector (thread-safe).

    Agents repeat queries; embedding one costs ~10 ms of CPU with the local
    model (a network call with http), while the vector for a text never changes
    for a namespace's embedder. Bounded: `maxsize` vectors (~10 KB each).
    """

    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._items: OrderedDict[str, list[float]] = OrderedDict()

    def get(self, text: str) -> list[float] | None:
        with self._lock:
            vector = self._items.get(text)
            if vector is not None:
                self._items.move_to_end(text)
            return vector

    def put(self, text: str, vector: list[float]) -> None:
        with self._lock:
            self._items[text] = vector
            self._items.move_to_end(text)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


EMBED_SLICE = 32  # texts per embedding call of a store: the index writes one slice
# while the next is embedded


class PlanChanged(Exception):
    """What a store's vectors written ahead assumed (holders, ids) changed: retry."""


@dataclass
class StorePlan:
    """A store request, checked: texts and vectors per item (embedded ones
    filled in as they come, so a retry does not embed again)."""

    items: Sequence[MemoryIn]
    coords: list[Coordinate | None]
    texts: list[str]
    vectors: list[list[float] | None]
    need: list[int]  # items still to embed
    embed_failed: bool = False
    fresh_ids: list[uuid.UUID] = field(default_factory=list)

    def __post_init__(self) -> None:
        # the id a new memory gets, fixed before any vector is written ahead
        self.fresh_ids = [uuid.uuid4() for _ in self.items]


class MemoryService:
    def __init__(
        self,
        store: PostgresStore,
        index: VectorIndex,
        embedder: Embedder,
        config: ServiceConfig,
    ) -> None:
        self.db = store
        self.index = index
        self.embedder = embedder
        self.config = config
        # recall's access counts, written in batches off the request path; the
        # app starts its writer and closes it (writing what is left) on shutdown
        self.accesses = AccessLog(store)
        self.query_vectors = QueryVectorCache()
        # hybrid recall's full-text side runs here, next to the query embedding
        self._keyword_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="recall-keyword")

    # --- helpers --------------------------------------------------------
    @property
    def embeds(self) -> bool:
        """True when the server computes vectors (provider local/http)."""
        return self.config.server_embeds and self.embedder.dimensions is not None

    def _check_vector(self, vector: Sequence[float], what: str = "vector") -> list[float]:
        if len(vector) != self.config.dimensions:
            raise InvalidInputError(
                f"{what} has {len(vector)} dimensions; this namespace uses {self.config.dimensions}"
            )
        return [float(v) for v in vector]

    def _client_vector(self, vector: Sequence[float], what: str = "vector") -> list[float]:
        """A vector a client sent (stored, searched or imported): checked alike everywhere."""
        checked = self._check_vector(vector, what)
        if self.config.distance == "Cosine" and not any(checked):
            # cosine similarity with a zero vector is undefined (NaN in every engine)
            raise InvalidInputError(f"{what} is all zeros: it has no direction for Cosine distance")
        return checked

    def _embed(self, texts: list[str]) -> list[list[float]] | None:
        """Vectors for texts, or None when the embedder failed (the rows go pending)."""
        if not texts or not self.embeds:
            return None
        try:
            vectors = self.embedder.embed(texts)
        except EmbeddingError as exc:
            log.warning("embedding failed, records stay pending: %s", exc)
            return None
        return [self._check_vector(v, "embedder output") for v in vectors]

    def close(self) -> None:
        """Write pending access counts and stop the writer thread (app shutdown)."""
        self.accesses.close()
        self._keyword_pool.shutdown(wait=True, cancel_futures=True)

    def _query_vector(self, query: str) -> list[float]:
        """The query's vector, from the LRU when this exact text was embedded lately."""
        vector = self.query_vectors.get(query)
        if vector is None:
            vector = self._check_vector(self.embedder.embed([query])[0], "embedder output")
            self.query_vectors.put(query, vector)
        return vector

    def resolve(
        self, tx: Tx, key: str | Sequence[float] | uuid.UUID, *, lock: bool = False
    ) -> MemoryRow:
        """A memory by id or coordinate; NotFoundError if absent."""
        try:
            if isinstance(key, uuid.UUID):
                parsed: uuid.UUID | Coordinate = key
            elif isinstance(key, str):
                parsed = parse_key(key)
            else:
                parsed = parse_coordinate(key)
        except CoordinateError as exc:
            raise InvalidInputError(f"not a memory id or coordinate: {exc}") from None
        if isinstance(parsed, uuid.UUID):
            row = tx.get(parsed, for_update=lock)
        else:
            row = tx.get_by_coordinate(parsed, for_update=lock)
        if row is None:
            raise NotFoundError(f"no memory at {key if not isinstance(key, list) else parsed}")
        return row

    @staticmethod
    def _vector_items(rows: Iterable[MemoryRow]) -> list[VectorItem]:
        """What the index needs of the rows waiting for it."""
        return [
            VectorItem(
                memory_id=r.id,
                vector=r.embedding,
                memory_type=r.memory_type,
                tags=tuple(r.tags),
                agent_id=r.agent_id,
                user_id=r.user_id,
                session_id=r.session_id,
                metadata=r.metadata,
                created_at=r.created_at,
                coordinate=r.coordinate,
                occurred_at=r.occurred_at,
            )
            for r in rows
            if r.embedding is not None and r.index_pending
        ]

    def _index_after_commit(
        self, rows: Sequence[MemoryRow], staged: StagedWrite | None = None
    ) -> None:
        """Send committed vectors to the index (or commit what `staged` wrote
        ahead of them); leave rows pending if it fails."""
        items = self._vector_items(rows) if staged is None else []
        if staged is None and not items:
            return
        done = [r for r in rows if r.embedding is not None and r.index_pending]
        flags = [(r.id, r.version) for r in done]
        try:
            if staged is not None:
                # pgvector: the flags clear in the vectors' own transaction
                cleared = staged.commit(lambda conn: Tx(conn).set_index_done(flags))
            else:
                self.index.upsert(items)
                cleared = False
        except Exception as exc:  # any index failure: PostgreSQL stays the truth
            log.warning("vector index write failed, %d record(s) pending: %s", len(rows), exc)
            return
        if not done:
            return
        if not cleared:
            with self.db.tx() as tx:
                tx.set_index_done(flags)
        for r in done:
            r.index_pending = False

    def _unindex_after_commit(self, ids: Sequence[uuid.UUID]) -> None:
        if not ids:
            return
        try:
            self.index.delete(list(ids))
        except Exception as exc:
            log.warning("vector index delete failed, %d tombstone(s) kept: %s", len(ids), exc)
            return
        with self.db.tx() as tx:
            tx.clear_tombstones(ids)

    def _delete_in_tx(self, tx: Tx, ids: Sequence[uuid.UUID], reason: str) -> list[MemoryRow]:
        """Links (with link.deleted events), rows and a memory.deleted event each."""
        for link in tx.delete_links_of(ids):
            tx.outbox("link.deleted", link.from_id, link.version, link_record(link), reason)
        rows = tx.delete_rows(ids)
        for row in rows:
            tx.outbox("memory.deleted", row.id, row.version + 1, None, reason)
        return rows

    # --- store ----------------------------------------------------------
    def store(self, items: Sequence[MemoryIn]) -> list[tuple[Memory, bool]]:
        """Upsert by coordinate, all in one transaction; returns (memory, created)."""
        if not items:
            raise InvalidInputError("nothing to store")
        coords = [tuple(i.coordinate) if i.coordinate is not None else None for i in items]
        given = [c for c in coords if c is not None]
        if len(set(given)) != len(given):
            raise InvalidInputError("two memories in one request share a coordinate")
        texts = [i.text if i.text is not None else derive_text(i.payload) for i in items]
        vectors: list[list[float] | None] = [
            self._client_vector(i.vector) if i.vector is not None else None for i in items
        ]
        need = [n for n, v in enumerate(vectors) if v is None] if self.embeds else []
        plan = StorePlan(items, coords, texts, vectors, need)
        for attempt in range(3):
            try:
                return self._store_tx(plan)
            except (psycopg.errors.UniqueViolation, PlanChanged):
                # a concurrent writer took the same coordinate (or id), or changed
                # what the vectors written ahead assumed: the retry sees it
                if attempt == 2:
                    raise ConflictError("the coordinate was taken concurrently; retry") from None
        raise AssertionError("unreachable")

    def _store_tx(self, plan: StorePlan) -> list[tuple[Memory, bool]]:
        now = now_utc()
        # the vectors go into the index while the memories are written (pgvector:
        # in a transaction of their own, committed right after the memories')
        staged = self.index.stage()
        try:
            ahead = self._embed_ahead(plan, now, staged) if plan.need else None
            results = self._write_stored(plan, now, staged, ahead)
        except BaseException:
            staged.abort()
            raise
        self._index_after_commit([r for r, _ in results], staged)
        return [(to_memory(r), created) for r, created in results]

    def _embed_ahead(
        self, plan: StorePlan, now: datetime, staged: StagedWrite
    ) -> dict[uuid.UUID, VectorItem]:
        """Texts to embed: embed them in slices and stage each slice's vectors
        while the next one is embedded (the index write overlaps the embedding).
        The memory ids come from an unlocked read of the coordinates' holders;
        the memories' transaction checks them and retries if they changed.
        Returns what was staged, by memory id."""
        with self.db.tx() as tx:
            holders = tx.coordinate_holders([c for c in plan.coords if c is not None])
            held = {r.id: r for r in tx.get_many([h for h in holders if h], live_only=False)}
        holder_of = dict(zip([c for c in plan.coords if c is not None], holders, strict=True))
        ids = plan.fresh_ids

        def rows(numbers: Iterable[int]) -> list[MemoryRow]:
            out = []
            for n in numbers:
                holder = holder_of.get(plan.coords[n]) if plan.coords[n] else None
                existing = held.get(holder) if holder is not None else None
                out.append(self._stored_row(plan, n, now, existing, ids[n]))
            return out

        written: dict[uuid.UUID, VectorItem] = {}

        def stage(numbers: Iterable[int]) -> None:
            items = self._vector_items(rows(numbers))
            staged.write(items)
            written.update((i.memory_id, i) for i in items)

        needed = set(plan.need)
        stage(n for n in range(len(plan.items)) if n not in needed)  # client vectors
        for start in range(0, len(plan.need), EMBED_SLICE):
            part = plan.need[start : start + EMBED_SLICE]
            vectors = self._embed([plan.texts[n] for n in part])
            if vectors is None:  # the rest stay pending, embedded by catch-up
                plan.embed_failed = True
                break
            for n, vec in zip(part, vectors, strict=True):
                plan.vectors[n] = vec
            stage(part)
        plan.need = [n for n in plan.need if plan.vectors[n] is None and not plan.embed_failed]
        return written

    def _stored_row(
        self,
        plan: StorePlan,
        n: int,
        now: datetime,
        existing: MemoryRow | None,
        memory_id: uuid.UUID,
    ) -> MemoryRow:
        """What item `n` of a store writes: a replaced `existing` row or a new one."""
        item, vector = plan.items[n], plan.vectors[n]
        # What the client sent, the same for a new record and a replaced one.
        content: dict[str, Any] = {
            "memory_type": item.memory_type,
            "payload": item.payload,
            "text": plan.texts[n],
            "importance": item.importance,
            "metadata": item.metadata,
            "tags": list(item.tags),
            "agent_id": item.agent_id,
            "user_id": item.user_id,
            "session_id": item.session_id,
            "expires_at": item.expires_at,
            "embedding": vector,
            "index_pending": vector is not None or plan.embed_failed,
        }
        if existing is not None:
            return replace(
                existing,
                **content,
                occurred_at=item.occurred_at or existing.occurred_at,
                updated_at=now,
                version=existing.version + 1,
            )
        return MemoryRow(
            **content,
            id=memory_id,
            coordinate=plan.coords[n] or coordinate_for_id(memory_id),
            created_at=now,
            updated_at=now,
            last_accessed_at=now,
            access_count=0,
            version=1,
            occurred_at=item.occurred_at or now,
        )

    def _write_stored(
        self,
        plan: StorePlan,
        now: datetime,
        staged: StagedWrite,
        ahead: Mapping[uuid.UUID, VectorItem] | None,
    ) -> list[tuple[MemoryRow, bool]]:
        """The memories' transaction of a store: rows, events, and the staged vectors."""
        results: list[tuple[MemoryRow, bool]] = []
        fresh: list[MemoryRow] = []
        with self.db.tx() as tx:
            if self.config.max_memories:
                tx.lock_quota()
                room = self.config.max_memories - tx.count()
            else:
                room = math.inf
            # one query (and row lock) for every given coordinate, not one per item
            given = [c for c in plan.coords if c is not None]
            holders = dict(zip(given, tx.coordinate_holders(given, lock=True), strict=True))
            for n, coord in enumerate(plan.coords):
                holder = holders.get(coord) if coord else None
                existing = tx.get(holder, for_update=True) if holder is not None else None
                if existing is None:
                    if room <= 0:
                        raise QuotaExceededError(
                            f"this namespace holds at most {self.config.max_memories} "
                            "memories; delete some or raise spec.storage.maxMemories"
                        )
                    room -= 1
                row = self._stored_row(plan, n, now, existing, plan.fresh_ids[n])
                if existing is not None:
                    saved = tx.update(row)
                    tx.outbox("memory.updated", saved.id, saved.version, memory_record(saved))
                    results.append((saved, False))
                else:
                    fresh.append(row)
                    results.append((row, True))
            items = {i.memory_id: i for i in self._vector_items(r for r, _ in results)}
            if ahead is not None:
                if any(items.get(key) != item for key, item in ahead.items()):
                    raise PlanChanged  # e.g. a concurrent writer replaced a holder
                staged.write([i for key, i in items.items() if key not in ahead])
            else:
                staged.write(list(items.values()))
            # new memories in one COPY (and one statement for its triggers)
            tx.insert_many(fresh)
            tx.outbox_many(
                [("memory.created", r.id, r.version, memory_record(r), None) for r in fresh]
            )
        return results

    # --- read / patch / delete -----------------------------------------
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

    def patch(self, key: str, change: MemoryPatch) -> Memory:
        fields = change.model_fields_set
        with self.db.tx() as tx:
            row = self.resolve(tx, key, lock=True)
            if change.if_version is not None and change.if_version != row.version:
                raise ConflictError(
                    f"memory is at version {row.version}, not {change.if_version}; reload it"
                )
            new = replace(row, version=row.version + 1, updated_at=now_utc())
            if "payload" in fields and change.payload is not None:
                new.payload = change.payload
            if "importance" in fields and change.importance is not None:
                new.importance = change.importance
            if "metadata" in fields and change.metadata is not None:
                new.metadata = change.metadata
            if "tags" in fields and change.tags is not None:
                new.tags = list(change.tags)
            if "expires_at" in fields:
                new.expires_at = change.expires_at
            if "occurred_at" in fields and change.occurred_at is not None:
                new.occurred_at = change.occurred_at
            if "text" in fields and change.text is not None:
                new.text = change.text
            elif "payload" in fields:
                new.text = derive_text(new.payload)
            if new.text != row.text and self.embeds:
                vectors = self._embed([new.text])
                new.embedding = vectors[0] if vectors else None
                new.index_pending = True
            elif new.embedding is not None:
                new.index_pending = True  # filter fields may have changed in the index
            saved = tx.update(new)
            tx.outbox("memory.updated", saved.id, saved.version, memory_record(saved))
        self._index_after_commit([saved])
        return to_memory(saved)

    def delete(self, key: str) -> Memory:
        with self.db.tx() as tx:
            row = self.resolve(tx, key, lock=True)
            self._delete_in_tx(tx, [row.id], "deleted")
        self._unindex_after_commit([row.id])
        return to_memory(row)

    def forget(self, flt: VectorFilter) -> int:
        """Bulk delete by scope (erasure requests); at least one scope filter required."""
        if not (flt.user_id or flt.agent_id or flt.session_id):
            raise InvalidInputError("bulk forget needs user_id, agent_id or session_id")
        with self.db.tx() as tx:
            ids = tx.ids_matching(flt)
            rows = self._delete_in_tx(tx, ids, "forget")
        self._unindex_after_commit([r.id for r in rows])
        return len(rows)

    def range(self, f: Filters, limit: int, offset: int) -> list[Memory]:
        if f.coordinate_min is None:
            raise InvalidInputError("range needs min and max coordinates")
        with self.db.tx() as tx:
            rows = tx.range(to_filter(f), limit, offset)
        return [to_memory(r) for r in rows]

    # --- recall ---------------------------------------------------------
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
            keyword_query, keyword_found = None, []
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

    # --- graph ----------------------------------------------------------
    def link(self, req: LinkIn) -> tuple[Link, bool]:
        with self.db.tx() as tx:
            source = self.resolve(tx, req.from_)
            target = self.resolve(tx, req.to)
            if source.id == target.id:
                raise InvalidInputError("a link needs two different memories")
            # Hold both ends until commit: a delete racing this link either
            # finished first (404 here) or waits for the link and removes it too.
            live = tx.live_ids([source.id, target.id])
            for end in (source, target):
                if end.id not in live:
                    raise NotFoundError(f"memory {end.id} was deleted")
            row, created, changed = tx.upsert_link(
                LinkRow(source.id, target.id, req.type, req.strength, req.metadata)
            )
            if changed:
                tx.outbox("link.created", row.from_id, row.version, link_record(row))
        return to_link(row), created

    def unlink(self, req: LinkKey) -> Link:
        with self.db.tx() as tx:
            source = self.resolve(tx, req.from_)
            target = self.resolve(tx, req.to)
            row = tx.delete_link(source.id, target.id, req.type)
            if row is None:
                raise NotFoundError(f"no {req.type!r} link between these memories")
            tx.outbox("link.deleted", row.from_id, row.version, link_record(row), "unlinked")
        return to_link(row)

    def neighbors(
        self, key: str, depth: int, direction: Direction, link_type: str | None, limit: int
    ) -> NeighborsOut:
        """Breadth-first k-hop neighbourhood (graph.py), one SQL round trip per hop."""
        if not 1 <= depth <= MAX_DEPTH:
            raise InvalidInputError(f"depth must be within 1..{MAX_DEPTH}")
        with self.db.tx() as tx:
            start = self.resolve(tx, key)
            seen = graph.neighbourhood(
                start.id,
                depth,
                direction,
                limit,
                lambda frontier: tx.links_from_frontier(frontier, direction, link_type),
            )
            rows = {r.id: r for r in tx.get_many(list(seen), vectors=False)}
        neighbours = [
            Neighbor(depth=d, memory=to_memory(rows[i]), via=to_link(link))
            for i, (d, link) in seen.items()
            if i in rows
        ]
        return NeighborsOut(start=start.id, neighbors=neighbours)

    def path(
        self,
        source_key: str,
        target_key: str,
        max_depth: int,
        direction: Direction,
        link_type: str | None,
    ) -> PathOut:
        """Fewest hops first; among those, the largest product of link strengths (graph.py)."""
        if not 1 <= max_depth <= MAX_DEPTH:
            raise InvalidInputError(f"max_depth must be within 1..{MAX_DEPTH}")
        with self.db.tx() as tx:
            source = self.resolve(tx, source_key)
            target = self.resolve(tx, target_key)
            found = graph.strongest_shortest_path(
                source.id,
                target.id,
                max_depth,
                direction,
                lambda frontier: tx.links_from_frontier(frontier, direction, link_type),
            )
            if found is None:
                return PathOut(found=False, hops=None, strength=None, memories=[], links=[])
            rows = {r.id: r for r in tx.get_many(found.nodes, live_only=False, vectors=False)}
        return PathOut(
            found=True,
            hops=len(found.links),
            strength=found.strength,
            memories=[to_memory(rows[i]) for i in found.nodes],
            links=[to_link(link) for link in found.links],
        )

    # --- export / import -----------------------------------------------
    def export_lines(self) -> Iterator[bytes]:
        for kind, raw in self.db.stream_export():
            if kind == "memory":
                record = to_memory(MemoryRow.from_db(raw), include_vector=True).model_dump(
                    mode="json", exclude={"has_vector", "index_pending"}
                )
            else:
                record = link_record(LinkRow.from_db(raw))
            yield (
                json.dumps({"kind": kind, "record": record}, separators=(",", ":")) + "\n"
            ).encode()

    def import_begin(self, import_id: str | None, start_line: int) -> int:
        """Open (or resume) an import; returns the last line already committed."""
        if import_id is None:
            return 0
        with self.db.tx() as tx:
            progress = tx.import_progress(import_id, create=True, lock=False)
            assert progress is not None
        committed = int(progress["lines"])
        if start_line > committed + 1:
            raise ConflictError(
                f"import {import_id} has committed lines 1-{committed}; a body starting at "
                f"line {start_line} would leave a gap: resume with start_line={committed + 1}"
            )
        return committed

    def import_status(self, import_id: str) -> ImportStatus:
        with self.db.tx() as tx:
            progress = tx.import_progress(import_id, lock=False)
        if progress is None:
            raise NotFoundError(f"no import named {import_id!r}")
        counts = progress["counts"]
        return ImportStatus(
            import_id=import_id,
            lines=progress["lines"],
            finished=progress["finished_at"] is not None,
            memories=ImportCounts.model_validate(counts.get("memories", {})),
            links=ImportCounts.model_validate(counts.get("links", {})),
            started_at=progress["started_at"],
            updated_at=progress["updated_at"],
        )

    def import_finish(self, out: ImportOut) -> None:
        """Mark a named import finished (its request reached the end of the body)."""
        if out.import_id is not None:
            with self.db.tx() as tx:
                self._save_progress(tx, out.import_id, out.lines, None, finished=True)

    @staticmethod
    def _save_progress(
        tx: Tx, import_id: str, lines: int, chunk: ImportOut | None, *, finished: bool = False
    ) -> None:
        progress = tx.import_progress(import_id, create=True)
        assert progress is not None
        totals = ImportOut.model_validate(progress["counts"] or {})
        if chunk is not None:
            totals.memories.add(chunk.memories)
            totals.links.add(chunk.links)
        counts = totals.model_dump(include={"memories", "links"})
        tx.save_import_progress(import_id, lines, counts, finished=finished)

    def import_chunk(
        self,
        lines: Sequence[tuple[int, MemoryLine | LinkLine]],
        out: ImportOut,
        *,
        bulk: bool = False,
    ) -> None:
        """Apply a chunk of validated lines in one transaction (counts into `out`).

        A record replaces the local one only if its version is newer, so any
        chunk may be sent again. Set-based: versions, coordinate holders and
        link ends are read for the whole chunk, new rows go in with COPY.
        `bulk` (the index's graph is dropped for this load): the vectors go
        into the chunk's own transaction where the index can take them there.
        """
        memories: dict[uuid.UUID, tuple[int, MemoryRecordIn]] = {}
        links: dict[tuple[uuid.UUID, uuid.UUID, str], tuple[int, LinkRecordIn]] = {}
        chunk = ImportOut()
        for number, line in lines:
            if isinstance(line, MemoryLine):
                rec = line.record
                if rec.vector is not None:
                    try:
                        rec.vector = self._client_vector(rec.vector)
                    except InvalidInputError as exc:
                        raise line_error(InvalidInputError, number, exc.detail) from None
                kept = memories.get(rec.id)
                if kept is None or kept[1].version < rec.version:  # a tie keeps the first
                    memories[rec.id] = (number, rec)
                if kept is not None:
                    chunk.memories.unchanged += 1
            else:
                link = line.record
                key = (link.from_, link.to, link.type)
                kept_link = links.get(key)
                if kept_link is None or kept_link[1].version < link.version:
                    links[key] = (number, link)
                if kept_link is not None:
                    chunk.links.unchanged += 1
        texts = {
            i: rec.text if rec.text is not None else derive_text(rec.payload)
            for i, (_, rec) in memories.items()
        }
        unembedded = [i for i, (_, rec) in memories.items() if rec.vector is None]
        vectors = self._embed([texts[i] for i in unembedded])
        embedded = dict(zip(unembedded, vectors, strict=True)) if vectors is not None else {}
        last = lines[-1][0] if lines else out.lines
        for attempt in range(3):
            try:
                counts, touched = self._apply_chunk(
                    out.import_id, last, memories, links, texts, embedded, bulk
                )
                break
            except psycopg.errors.UniqueViolation:
                # a concurrent import (a retry racing its cut predecessor) inserted
                # rows of this chunk first: read them again, they are now unchanged
                if attempt == 2:
                    raise ConflictError(
                        "rows of this import were written concurrently; retry"
                    ) from None
        chunk.memories.add(counts.memories)
        chunk.links.add(counts.links)
        out.lines = max(out.lines, last)
        out.memories.add(chunk.memories)
        out.links.add(chunk.links)
        self._index_after_commit(touched)

    def _apply_chunk(
        self,
        import_id: str | None,
        last: int,
        memories: Mapping[uuid.UUID, tuple[int, MemoryRecordIn]],
        links: Mapping[tuple[uuid.UUID, uuid.UUID, str], tuple[int, LinkRecordIn]],
        texts: Mapping[uuid.UUID, str],
        embedded: Mapping[uuid.UUID, list[float]],
        bulk: bool,
    ) -> tuple[ImportOut, list[MemoryRow]]:
        chunk = ImportOut()
        touched: list[MemoryRow] = []
        updated: list[tuple[int, MemoryRow]] = []
        fresh: list[tuple[int, MemoryRow]] = []
        with self.db.tx() as tx:
            if import_id is not None:
                # one chunk of a named import at a time, even from two requests
                tx.import_progress(import_id, create=True)
            if self.config.max_memories:
                tx.lock_quota()
            current = tx.versions(list(memories))
            for memory_id, (number, rec) in memories.items():
                if memory_id in current and current[memory_id] >= rec.version:
                    chunk.memories.unchanged += 1
                    continue
                vector = rec.vector if rec.vector is not None else embedded.get(memory_id)
                row = MemoryRow(
                    **{name: getattr(rec, name) for name in IMPORTED_AS_IS},
                    coordinate=tuple(rec.coordinate or ()),
                    text=texts[memory_id],
                    tags=list(rec.tags),
                    embedding=vector,
                    index_pending=vector is not None or self.embeds,
                    occurred_at=rec.occurred_at or rec.created_at,
                )
                if memory_id in current:  # a newer version of a memory we hold
                    holder = tx.get_by_coordinate(row.coordinate)
                    if holder is not None and holder.id != row.id:
                        raise line_error(
                            ConflictError, number, f"coordinate is held by memory {holder.id}"
                        )
                    updated.append((number, row))
                else:
                    fresh.append((number, row))
            indexed = [row for _, row in updated + fresh if row.embedding is not None]
            if bulk:  # their vectors go into the index in this transaction (below)
                for row in indexed:
                    row.index_pending = False
            for _, row in updated:
                saved = tx.update(row)
                tx.outbox("memory.updated", saved.id, saved.version, memory_record(saved), "import")
                chunk.memories.updated += 1
                touched.append(saved)
            self._insert_imported(tx, fresh)
            chunk.memories.created += len(fresh)
            touched.extend(row for _, row in fresh)
            if bulk and indexed:
                # the rows just written, copied by the database (no row built here)
                ids = [row.id for row in indexed]
                if not self.index.write_in_transaction(tx.connection, tx.vector_rows(ids)):
                    tx.mark_index_pending(ids)  # refused (e.g. its circuit is open)
                    for row in indexed:
                        row.index_pending = True
            self._apply_imported_links(tx, links, chunk)
            if import_id is not None:
                self._save_progress(tx, import_id, last, chunk)
        return chunk, touched

    def _insert_imported(self, tx: Tx, fresh: Sequence[tuple[int, MemoryRow]]) -> None:
        """New memories of an import chunk: quota, coordinates, COPY, events."""
        if not fresh:
            return
        if self.config.max_memories:
            room = self.config.max_memories - tx.count()
            if len(fresh) > room:
                raise line_error(
                    QuotaExceededError,
                    fresh[max(room, 0)][0],
                    f"import would exceed the quota of {self.config.max_memories} memories",
                )
        seen: dict[Coordinate, int] = {}
        for number, row in fresh:
            if row.coordinate in seen:
                raise line_error(
                    ConflictError, number, f"coordinate also used on line {seen[row.coordinate]}"
                )
            seen[row.coordinate] = number
        holders = tx.coordinate_holders([row.coordinate for _, row in fresh])
        for (number, _row), holder in zip(fresh, holders, strict=True):
            if holder is not None:
                raise line_error(ConflictError, number, f"coordinate is held by memory {holder}")
        tx.insert_many([row for _, row in fresh])
        tx.outbox_many(
            [
                ("memory.created", row.id, row.version, memory_record(row), "import")
                for _, row in fresh
            ]
        )

    def _apply_imported_links(
        self,
        tx: Tx,
        links: Mapping[tuple[uuid.UUID, uuid.UUID, str], tuple[int, LinkRecordIn]],
        chunk: ImportOut,
    ) -> None:
        if not links:
            return
        ends = tx.live_ids(sorted({end for key in links for end in key[:2]}))
        for (source, target, _), (number, _) in links.items():
            if source not in ends or target not in ends:
                raise line_error(
                    InvalidInputError,
                    number,
                    "link end not found in the namespace or earlier in the import",
                )
        current = tx.link_versions(list(links))
        new: list[LinkRow] = []
        newer: list[LinkRow] = []
        for key, (_, link) in links.items():
            if key in current and current[key] >= link.version:
                chunk.links.unchanged += 1
                continue
            row = LinkRow(
                link.from_,
                link.to,
                link.type,
                link.strength,
                link.metadata,
                link.created_at,
                link.updated_at,
                link.version,
            )
            (newer if key in current else new).append(row)
        tx.write_links(new, new=True)
        tx.write_links(newer, new=False)
        tx.outbox_many(
            [
                ("link.created", row.from_id, row.version, link_record(row), "import")
                for row in new + newer
            ]
        )
        chunk.links.created += len(new)
        chunk.links.updated += len(newer)

    # --- background jobs -----------------------------------------------
    def prune(self) -> int:
        """Delete expired memories and decayed episodic ones (memory.deleted + reason);
        the database clock decides, so every replica agrees."""
        # recent recalls reset decay: write their pending access times first
        self.accesses.flush()
        total = 0
        while True:
            with self.db.tx() as tx:
                found = tx.prunable(
                    self.config.prune_below,
                    self.config.half_life_hours,
                    self.config.decay_enabled,
                    PRUNE_BATCH,
                )
                by_reason: dict[str, list[uuid.UUID]] = {}
                for memory_id, reason in found:
                    by_reason.setdefault(reason, []).append(memory_id)
                removed: list[uuid.UUID] = []
                for reason, ids in by_reason.items():
                    removed.extend(r.id for r in self._delete_in_tx(tx, ids, reason))
            self._unindex_after_commit(removed)
            total += len(removed)
            if len(found) < PRUNE_BATCH:
                return total

    def index_pending(self, limit: int = 500) -> int:
        """Catch the index up: pending vectors (embedding them if needed) and tombstones.

        A stored vector the index can never take (NaN, wrong size: written by
        an older version or by hand) is dropped, then re-embedded from the text
        where the server embeds, else the memory stays keyword-only: one bad
        row never holds back the batch, or the rows after it."""
        with self.db.tx() as tx:
            rows = tx.pending_index(limit)
            broken = [r for r in rows if r.embedding is not None and not self._indexable(r)]
            for r in broken:
                log.error("memory %s has a vector the index cannot take; dropped", r.id)
                r.embedding = None
                tx.update(r)  # same version: the content did not change
            missing = [r for r in rows if r.embedding is None]
            if missing and self.embeds:
                vectors = self._embed([r.text for r in missing])
                if vectors is not None:
                    for r, vec in zip(missing, vectors, strict=True):
                        r.embedding = vec
                        tx.update(r)
            elif missing:
                # nothing can give these rows a vector: keyword-only, not pending
                tx.set_index_done([(r.id, r.version) for r in missing])
            tombstones = tx.tombstones(limit)
        ready = [r for r in rows if r.embedding is not None]
        self._index_after_commit(ready)
        # an old vector of a dropped one may still be in the index
        self._unindex_after_commit([*tombstones, *(r.id for r in broken if r.embedding is None)])
        return sum(1 for r in ready if not r.index_pending) + len(tombstones)

    def _indexable(self, row: MemoryRow) -> bool:
        try:
            check_vector(row.embedding or [], self.config.dimensions)
        except VectorIndexError:
            return False
        return True

    # --- stats / health -------------------------------------------------
    def stats(self) -> dict[str, Any]:
        data = self.db.stats()
        try:
            vector_count: int | None = self.index.count()
        except Exception:
            vector_count = None
        total = sum(data["memories_by_type"].values())
        return {
            "tenant": self.config.tenant,
            "schema_name": self.db.schema,
            "memories": total,
            "memories_by_type": {
                "episodic": data["memories_by_type"].get("episodic", 0),
                "semantic": data["memories_by_type"].get("semantic", 0),
            },
            "links": data["links"],
            "expired_pending_prune": data["expired"],
            "index_pending": data["index_pending"],
            "vector_count": vector_count,
            "vector_backend": self.config.vector_backend,
            "outbox_lag": data["outbox_lag"],
            "outbox_oldest_age_seconds": data["outbox_oldest_age_seconds"],
            "table_bytes": data["table_bytes"],
            "total_bytes": sum(data["table_bytes"].values()),
            "max_memories": self.config.max_memories,
        }
