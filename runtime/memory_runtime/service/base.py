"""The parts every use case shares (Deps) and their common helpers (UseCase)."""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from memory_runtime.coordinates import (
    Coordinate,
    CoordinateError,
    parse_coordinate,
    parse_key,
)
from memory_runtime.ports import (
    Embedder,
    EmbeddingError,
    StagedWrite,
    VectorIndex,
    VectorItem,
)
from memory_runtime.record import MemoryRow
from memory_runtime.service.errors import InvalidInputError, NotFoundError
from memory_runtime.service.shapes import link_record
from memory_runtime.storage.postgres import (
    AccessLog,
    PostgresStore,
    Tx,
)

log = logging.getLogger("memory_runtime.service")


@dataclass(frozen=True)
class ServiceConfig:
    """The settings the use cases read, each from `Settings` (api/app.py): no defaults
    here, they live there (and in memory_contract.limits)."""

    tenant: str
    dimensions: int
    distance: str
    max_memories: int
    decay_enabled: bool
    half_life_hours: float
    prune_below: float
    vector_backend: str
    server_embeds: bool  # False for provider `none`: clients send vectors


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


@dataclass
class Deps:
    """What every use case works with; one object, so swapping the index (tests)
    or any other part reaches them all."""

    db: PostgresStore
    index: VectorIndex
    embedder: Embedder
    config: ServiceConfig
    # recall's access counts, written in batches off the request path; the
    # app starts its writer and closes it (writing what is left) on shutdown
    accesses: AccessLog
    query_vectors: QueryVectorCache


class Parts:
    """The parts of a `Deps` by name: the use cases and the facade read them alike."""

    deps: Deps

    @property
    def db(self) -> PostgresStore:
        return self.deps.db

    @property
    def index(self) -> VectorIndex:
        return self.deps.index

    @property
    def embedder(self) -> Embedder:
        return self.deps.embedder

    @property
    def config(self) -> ServiceConfig:
        return self.deps.config

    @property
    def accesses(self) -> AccessLog:
        return self.deps.accesses

    @property
    def query_vectors(self) -> QueryVectorCache:
        return self.deps.query_vectors

    @property
    def embeds(self) -> bool:
        """True when the server computes vectors (provider local/http)."""
        return self.config.server_embeds and self.embedder.dimensions is not None


class UseCase(Parts):
    """The parts and the helpers every use case shares."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def _check_length(self, vector: Sequence[float], what: str) -> None:
        if len(vector) != self.config.dimensions:
            raise InvalidInputError(
                f"{what} has {len(vector)} dimensions; this namespace uses {self.config.dimensions}"
            )

    def _check_vector(self, vector: Sequence[float], what: str = "vector") -> list[float]:
        self._check_length(vector, what)
        return [float(v) for v in vector]

    def _client_vector(self, vector: list[float], what: str = "vector") -> list[float]:
        """A vector a client sent (stored, searched or imported): checked alike
        everywhere. Its elements are finite floats already (the API models'
        `Vector`), so it is used as it is, not copied."""
        self._check_length(vector, what)
        if self.config.distance == "Cosine" and not any(vector):
            # cosine similarity with a zero vector is undefined (NaN in every engine)
            raise InvalidInputError(f"{what} is all zeros: it has no direction for Cosine distance")
        return vector

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
        """Send committed vectors to the index (or commit what `staged` collected
        for after the commit); leave rows pending if it fails."""
        items = self._vector_items(rows) if staged is None else []
        if staged is None and not items:
            return
        done = [r for r in rows if r.embedding is not None and r.index_pending]
        flags = [(r.id, r.version) for r in done]
        try:
            if staged is not None:
                staged.commit()
            else:
                self.index.upsert(items)
        except Exception as exc:  # any index failure: PostgreSQL stays the truth
            log.warning("vector index write failed, %d record(s) pending: %s", len(rows), exc)
            return
        if not done:
            return
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
