"""The small interfaces the memory service depends on.

Adapters in `embeddings/` and `vectors/` implement them; the service and the
tests only see these types.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from memory_runtime.filters import VectorFilter

__all__ = ["VectorFilter"]  # the engines' filter (one module: memory_runtime.filters)


class Embedder(Protocol):
    """Turns texts into vectors of a fixed dimension."""

    @property
    def dimensions(self) -> int:
        """Vector size. The `none` provider reports the namespace's dimension (used to
        validate client vectors) and raises EmbeddingError from embed()."""
        ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed a batch; one vector per text, in order. Raises EmbeddingError."""
        ...


class EmbeddingError(RuntimeError):
    """The embedder could not produce vectors (provider down, bad response, no provider)."""


@dataclass(frozen=True)
class VectorItem:
    """What the index stores for one memory: its vector plus the filterable fields."""

    memory_id: UUID
    vector: Sequence[float]
    memory_type: str
    tags: tuple[str, ...]
    agent_id: str | None
    user_id: str | None
    session_id: str | None
    metadata: dict[str, Any]
    created_at: datetime
    coordinate: tuple[float, ...]
    occurred_at: datetime  # event time (the occurred_from/occurred_to filters)


@dataclass(frozen=True)
class VectorHit:
    memory_id: UUID
    similarity: float  # higher is better; cosine similarity for Cosine


class StagedWrite(Protocol):
    """Index writes prepared while the memories' transaction runs: `write`
    (never raises; a failure surfaces at `commit`), then `commit` or `abort`.

    `writes_ahead` False (Qdrant): `write` only collects the items, `commit`
    upserts them after the memories committed; a crash in between leaves the
    memories `index_pending`, which catch-up writes again. True (pgvector):
    `write` starts writing at once, in a transaction of its own beside the
    memories', and `commit` commits it just before the memories' transaction,
    whose rows went in as indexed; `last` marks the vectors in flight, and
    catch-up repairs a crash between the two commits from those marks."""

    writes_ahead: bool

    def write(self, items: Sequence[VectorItem]) -> None: ...

    def commit(self, last: Callable[[Any], None] | None = None) -> None:
        """Apply the writes. `last(conn)` runs inside their transaction just
        before it commits, when the engine has one in the memories' database
        (pgvector; the others ignore it)."""
        ...

    def abort(self) -> None: ...


class VectorIndex(Protocol):
    """A per-tenant vector index (pgvector table or Qdrant collection)."""

    def ensure(self) -> None:
        """Create the index if missing (idempotent)."""
        ...

    def upsert(self, items: Sequence[VectorItem]) -> None: ...

    def delete(self, memory_ids: Sequence[UUID]) -> None: ...

    def stage(self) -> StagedWrite:
        """A write to prepare alongside the memories' transaction (see StagedWrite)."""
        ...

    def write_in_transaction(self, conn: Any, source: Any) -> bool:
        """Write the vector rows the query `source` selects (Tx.vector_rows: id,
        float4[] vector, memory_type, tags, scopes, metadata, created_at,
        coordinate, occurred_at) inside the memories' own open transaction `conn` (a psycopg
        connection), committed or rolled back with the memories, if the engine
        lives in that database (pgvector); False, writing nothing, if it cannot
        (Qdrant). A failure raises (the caller's transaction fails)."""
        ...

    def begin_bulk_load(self, expected_rows: int = 0) -> bool:
        """Prepare a load of about `expected_rows` (e.g. drop a graph to build it
        once, if that is cheaper); True if it did."""
        ...

    def finish_bulk_load(self) -> None:
        """End what begin_bulk_load started: the index serves every loaded vector."""
        ...

    def search(self, vector: Sequence[float], top_k: int, flt: VectorFilter) -> list[VectorHit]: ...

    def count(self) -> int: ...

    def ping(self) -> None:
        """Raise if the engine is unreachable (used by /readyz)."""
        ...
