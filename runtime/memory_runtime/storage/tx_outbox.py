"""Events (the outbox the relay publishes) and an import's progress."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from psycopg.types.json import Jsonb

from memory_runtime.storage.tx_base import TxBase


class Outbox(TxBase):
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
