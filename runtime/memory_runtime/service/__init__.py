"""The memory use cases, behind one facade the API uses (`MemoryService`).

PostgreSQL is the source of truth. Every change writes its row(s) and outbox
row(s) in one transaction; vectors go to the index after commit, and a row
stays `index_pending` until the index confirmed it (a crash or an index outage
between commit and index write is caught up by `index_pending()`). A store on
pgvector writes its vectors beside the memories' transaction and commits them
just before it, marked in flight until the memories land (writes._commit_first).

One module per use case: writes.py (store, patch, delete, forget), recall.py
(get, range, hybrid recall), links.py (the graph), transfer.py (export,
import), upkeep.py (pruning, index catch-up, stats); base.py holds what they
share, errors.py what they refuse with, shapes.py how rows become answers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from memory_runtime.models import (
    Direction,
    Filters,
    ImportOut,
    ImportStatus,
    Link,
    LinkIn,
    LinkKey,
    LinkLine,
    Memory,
    MemoryIn,
    MemoryLine,
    MemoryPatch,
    NeighborsOut,
    PathOut,
    SearchIn,
    SearchOut,
)
from memory_runtime.ports import Embedder, VectorFilter, VectorIndex
from memory_runtime.service.base import Deps, Parts, QueryVectorCache, ServiceConfig
from memory_runtime.service.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    QuotaExceededError,
    ServiceError,
    TooLargeError,
    UnavailableError,
    line_error,
)
from memory_runtime.service.links import Links
from memory_runtime.service.recall import RECALL_POOL, VECTOR_POOL_MARGIN, Recall
from memory_runtime.service.shapes import (
    derive_text,
    link_record,
    memory_record,
    now_utc,
    to_filter,
    to_link,
    to_memory,
)
from memory_runtime.service.transfer import Transfer
from memory_runtime.service.upkeep import IN_FLIGHT_GRACE_SECONDS, Upkeep
from memory_runtime.service.writes import EMBED_SLICE, Writes
from memory_runtime.storage.postgres import AccessLog, PostgresStore

__all__ = [
    "EMBED_SLICE",
    "RECALL_POOL",
    "VECTOR_POOL_MARGIN",
    "ConflictError",
    "InvalidInputError",
    "MemoryService",
    "NotFoundError",
    "QuotaExceededError",
    "ServiceConfig",
    "ServiceError",
    "TooLargeError",
    "UnavailableError",
    "derive_text",
    "line_error",
    "link_record",
    "memory_record",
    "now_utc",
    "to_filter",
    "to_link",
    "to_memory",
]


class MemoryService(Parts):
    """The facade: each call goes to its use case; the parts live in one `Deps`."""

    def __init__(
        self, store: PostgresStore, index: VectorIndex, embedder: Embedder, config: ServiceConfig
    ) -> None:
        self.deps = Deps(store, index, embedder, config, AccessLog(store), QueryVectorCache())
        self.writes = Writes(self.deps)
        self.reads = Recall(self.deps)
        self.links = Links(self.deps)
        self.transfer = Transfer(self.deps)
        self.upkeep = Upkeep(self.deps)

    # The parts come from `Parts`; `index` may be swapped (tests), for every use case at once.
    @property
    def index(self) -> VectorIndex:
        return self.deps.index

    @index.setter
    def index(self, index: VectorIndex) -> None:
        self.deps.index = index

    def close(self) -> None:
        """Write pending access counts and stop the writer thread (app shutdown)."""
        self.accesses.close()

    # --- writes ---------------------------------------------------------
    def store(self, items: Sequence[MemoryIn]) -> list[tuple[Memory, bool]]:
        return self.writes.store(items)

    def patch(self, key: str, change: MemoryPatch) -> Memory:
        return self.writes.patch(key, change)

    def delete(self, key: str) -> Memory:
        return self.writes.delete(key)

    def forget(self, flt: VectorFilter) -> int:
        return self.writes.forget(flt)

    # --- reads and recall -----------------------------------------------
    def get(self, key: str, include_vector: bool = False) -> Memory:
        return self.reads.get(key, include_vector)

    def range(self, f: Filters, limit: int, offset: int) -> list[Memory]:
        return self.reads.range(f, limit, offset)

    def recall(self, req: SearchIn) -> SearchOut:
        return self.reads.recall(req)

    # --- graph ----------------------------------------------------------
    def link(self, req: LinkIn) -> tuple[Link, bool]:
        return self.links.link(req)

    def unlink(self, req: LinkKey) -> Link:
        return self.links.unlink(req)

    def neighbors(
        self, key: str, depth: int, direction: Direction, link_type: str | None, limit: int
    ) -> NeighborsOut:
        return self.links.neighbors(key, depth, direction, link_type, limit)

    def path(
        self, source: str, target: str, max_depth: int, direction: Direction, link_type: str | None
    ) -> PathOut:
        return self.links.path(source, target, max_depth, direction, link_type)

    # --- export / import ------------------------------------------------
    def export_lines(self) -> Iterator[bytes]:
        return self.transfer.export_lines()

    def import_begin(self, import_id: str | None, start_line: int) -> int:
        return self.transfer.import_begin(import_id, start_line)

    def import_status(self, import_id: str) -> ImportStatus:
        return self.transfer.import_status(import_id)

    def import_finish(self, out: ImportOut) -> None:
        self.transfer.import_finish(out)

    def import_chunk(
        self,
        lines: Sequence[tuple[int, MemoryLine | LinkLine]],
        out: ImportOut,
        *,
        bulk: bool = False,
    ) -> None:
        self.transfer.import_chunk(lines, out, bulk=bulk)

    # --- upkeep ---------------------------------------------------------
    def prune(self) -> int:
        return self.upkeep.prune()

    def index_pending(
        self, limit: int = 500, in_flight_grace: float = IN_FLIGHT_GRACE_SECONDS
    ) -> int:
        return self.upkeep.index_pending(limit, in_flight_grace)

    def stats(self) -> dict[str, Any]:
        return self.upkeep.stats()
