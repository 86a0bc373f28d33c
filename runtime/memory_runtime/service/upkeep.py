"""Background upkeep: pruning, index catch-up, statistics."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from memory_runtime.record import MemoryRow
from memory_runtime.service.base import UseCase
from memory_runtime.vectors.common import VectorIndexError, check_vector

log = logging.getLogger("memory_runtime.service")

PRUNE_BATCH = 500
# A store's vectors commit just before its memories (writes._commit_first); an
# in-flight mark older than this is of memories that never committed.
IN_FLIGHT_GRACE_SECONDS = 60.0


class Upkeep(UseCase):
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

    def index_pending(
        self, limit: int = 500, in_flight_grace: float = IN_FLIGHT_GRACE_SECONDS
    ) -> int:
        """Catch the index up: vectors whose memories never committed, pending
        vectors (embedding them if needed) and tombstones.

        A stored vector the index can never take (NaN, wrong size: written by
        an older version or by hand) is dropped, then re-embedded from the text
        where the server embeds, else the memory stays keyword-only: one bad
        row never holds back the batch, or the rows after it."""
        with self.db.tx() as tx:
            tx.recover_in_flight(in_flight_grace)  # first: it may add pending rows, tombstones
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
