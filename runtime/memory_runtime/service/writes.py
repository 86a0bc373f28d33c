"""Store, patch, delete and forget memories."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from memory_runtime.coordinates import (
    Coordinate,
    coordinate_for_id,
)
from memory_runtime.models import (
    Memory,
    MemoryIn,
    MemoryPatch,
    coordinate_of,
)
from memory_runtime.ports import (
    StagedWrite,
    VectorFilter,
    VectorItem,
)
from memory_runtime.record import MemoryRow
from memory_runtime.service.base import UseCase
from memory_runtime.service.errors import ConflictError, InvalidInputError, QuotaExceededError
from memory_runtime.service.shapes import (
    derive_text,
    memory_record,
    now_utc,
    to_memory,
)
from memory_runtime.storage.postgres import Tx

log = logging.getLogger("memory_runtime.service")

# texts per embedding call of a store (the local embedder's batch): the index
# writes one slice while the next is embedded
EMBED_SLICE = 32


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


class Writes(UseCase):
    def store(self, items: Sequence[MemoryIn]) -> list[tuple[Memory, bool]]:
        """Upsert by coordinate, all in one transaction; returns (memory, created)."""
        if not items:
            raise InvalidInputError("nothing to store")
        coords = [coordinate_of(i.coordinate) for i in items]
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
        # in a transaction of their own, committed right before the memories')
        staged = self.index.stage()
        try:
            # vectors to embed, or an index that writes while it is handed them:
            # start the index writes before the memories' transaction, not within it
            ahead = (
                self._write_ahead(plan, now, staged)
                if plan.need or (staged.writes_ahead and any(v is not None for v in plan.vectors))
                else None
            )
            results = self._write_stored(plan, now, staged, ahead)
        except BaseException:
            staged.abort()
            raise
        if not staged.writes_ahead:
            self._index_after_commit([r for r, _ in results], staged)
        return [(to_memory(r), created) for r, created in results]

    def _write_ahead(
        self, plan: StorePlan, now: datetime, staged: StagedWrite
    ) -> dict[uuid.UUID, VectorItem]:
        """Stage the client's vectors, then embed the texts in slices and stage
        each slice's vectors while the next one is embedded (the index write
        overlaps the embedding and the memories' transaction), for the new
        memories among them. Their ids come from an unlocked read of the
        coordinates' holders; the memories' transaction checks them and retries
        if they changed. Returns what was staged, by memory id."""
        with self.db.tx() as tx:
            holders = tx.coordinate_holders([c for c in plan.coords if c is not None])
        holder_of = dict(zip([c for c in plan.coords if c is not None], holders, strict=True))
        ids = plan.fresh_ids

        def new_rows(numbers: Iterable[int]) -> list[MemoryRow]:
            # Only new memories: the vector of one that exists is written once
            # the memories' transaction holds its lock (one lock order, memory
            # then vector; the other order deadlocks two stores of one memory,
            # as each commits its vectors from inside its memories' transaction)
            out = []
            for n in numbers:
                coord = plan.coords[n]
                holder = holder_of.get(coord) if coord else None
                if holder is None:
                    out.append(self._stored_row(plan, n, now, None, ids[n]))
            return out

        written: dict[uuid.UUID, VectorItem] = {}

        def stage(numbers: Iterable[int]) -> None:
            items = self._vector_items(new_rows(numbers))
            staged.write(items)
            written.update((i.memory_id, i) for i in items)

        needed = set(plan.need)
        stage(n for n in range(len(plan.items)) if n not in needed)  # client vectors
        # shortest texts first, as the embedder orders one call's texts: each
        # slice pads to similar lengths, the same batches as one call of them all
        by_length = sorted(plan.need, key=lambda n: len(plan.texts[n]))
        for start in range(0, len(by_length), EMBED_SLICE):
            part = by_length[start : start + EMBED_SLICE]
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
            return existing.model_copy(
                update={
                    **content,
                    "occurred_at": item.occurred_at or existing.occurred_at,
                    "updated_at": now,
                    "version": existing.version + 1,
                }
            )
        return MemoryRow.unchecked(
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
        planned: list[tuple[MemoryRow, bool]] = []  # (row, created)
        with self.db.tx() as tx:
            if self.config.max_memories:
                tx.lock_quota()
                room: float = self.config.max_memories - tx.count()
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
                planned.append(
                    (self._stored_row(plan, n, now, existing, plan.fresh_ids[n]), not existing)
                )
            items = {i.memory_id: i for i in self._vector_items(r for r, _ in planned)}
            if ahead is not None:
                if any(items.get(key) != item for key, item in ahead.items()):
                    raise PlanChanged  # e.g. a concurrent writer replaced a holder
                staged.write([i for key, i in items.items() if key not in ahead])
            else:
                staged.write(list(items.values()))
            if staged.writes_ahead:  # their vectors commit just before them (_commit_first)
                for row, _ in planned:
                    row.index_pending = row.index_pending and row.id not in items
            results = [(row if created else tx.update(row), created) for row, created in planned]
            for saved, created in results:
                if not created:
                    tx.outbox("memory.updated", saved.id, saved.version, memory_record(saved))
            fresh = [row for row, created in results if created]
            # new memories in one COPY (and one statement for its triggers)
            tx.insert_many(fresh)
            tx.outbox_many(
                [("memory.created", r.id, r.version, memory_record(r), None) for r in fresh]
            )
            if staged.writes_ahead and items:
                self._commit_first(tx, staged, [r for r, _ in results if r.id in items])
        return results

    @staticmethod
    def _commit_first(tx: Tx, staged: StagedWrite, rows: Sequence[MemoryRow]) -> None:
        """Commit the staged vectors just before the memories' transaction (the
        same database): the rows go in as indexed, no pending flags to clear
        after. The vectors' transaction marks them in flight and this one lands
        them, so a crash between the two commits is found by catch-up
        (`recover_in_flight`). If the vectors fail, the rows commit pending."""
        written = [(r.id, r.version) for r in rows]
        try:
            staged.commit(lambda conn: Tx(conn).mark_in_flight(written))
        except Exception as exc:  # any index failure: PostgreSQL stays the truth
            log.warning("vector index write failed, %d record(s) pending: %s", len(rows), exc)
            tx.mark_index_pending([memory_id for memory_id, _ in written])
            for row in rows:
                row.index_pending = True
            return
        tx.land_in_flight([memory_id for memory_id, _ in written])

    def patch(self, key: str, change: MemoryPatch) -> Memory:
        fields = change.model_fields_set
        with self.db.tx() as tx:
            row = self.resolve(tx, key, lock=True)
            if change.if_version is not None and change.if_version != row.version:
                raise ConflictError(
                    f"memory is at version {row.version}, not {change.if_version}; reload it"
                )
            new = row.model_copy(update={"version": row.version + 1, "updated_at": now_utc()})
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
