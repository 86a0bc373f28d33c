"""Export and import (streamed, chunked, resumable)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping, Sequence

import psycopg

from memory_runtime.coordinates import (
    Coordinate,
)
from memory_runtime.models import (
    ImportCounts,
    ImportOut,
    ImportStatus,
    LinkLine,
    LinkRecordIn,
    MemoryLine,
    MemoryRecordIn,
    coordinate_of,
)
from memory_runtime.record import RECORD_FIELDS, MemoryRow
from memory_runtime.service.base import UseCase
from memory_runtime.service.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    QuotaExceededError,
    line_error,
)
from memory_runtime.service.shapes import derive_text, link_record, memory_record, to_memory
from memory_runtime.storage.postgres import Tx
from memory_runtime.storage.rows import LinkRow

# the record fields an imported line gives as they are (the rest: below, in import_chunk)
IMPORTED_AS_IS = tuple(
    name
    for name in RECORD_FIELDS
    if name in MemoryRecordIn.model_fields
    and name not in ("coordinate", "text", "tags", "occurred_at")
)


class Transfer(UseCase):
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
                row = MemoryRow.unchecked(
                    **{name: getattr(rec, name) for name in IMPORTED_AS_IS},
                    coordinate=coordinate_of(rec.coordinate) or (),
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
