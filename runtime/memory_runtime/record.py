"""The memory record, defined once: `MemoryRow` holds a memory's fields; the
SQL column list, the statement parameters, the API model (`models.Memory`) and
an imported copy follow from `RECORD_FIELDS`, and tests keep the pydantic
models and the `memories` table in step with it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any


@dataclass
class MemoryRow:
    id: uuid.UUID
    coordinate: tuple[float, ...]
    memory_type: str
    payload: dict[str, Any]
    text: str
    importance: float
    metadata: dict[str, Any]
    tags: list[str]
    agent_id: str | None
    user_id: str | None
    session_id: str | None
    created_at: datetime
    updated_at: datetime
    last_accessed_at: datetime
    access_count: int
    version: int
    expires_at: datetime | None
    embedding: list[float] | None  # the vector, when read (or written) with it
    index_pending: bool
    occurred_at: datetime  # event time (default: created_at)
    # Read without its vector (get_many(vectors=False)): whether the database
    # holds one. None when the row came with its vector, or was built here.
    stored_vector: bool | None = None

    @property
    def has_vector(self) -> bool:
        return self.embedding is not None or bool(self.stored_vector)

    @classmethod
    def from_db(cls, row: dict[str, Any]) -> MemoryRow:
        data = dict(row)
        data["coordinate"] = tuple(float(c) for c in data["coordinate"])
        data["tags"] = list(data["tags"] or [])
        data["embedding"] = (
            [float(v) for v in data["embedding"]] if data["embedding"] is not None else None
        )
        return cls(**data)

    def record(self) -> dict[str, Any]:
        """The record's own fields by name (no vector): what the API shows."""
        return {name: getattr(self, name) for name in RECORD_FIELDS}


# The vector lives in its own table (memory_embeddings) and `stored_vector` is
# a fact about a read: every other field is a column of `memories`.
NOT_COLUMNS = ("embedding", "stored_vector")
RECORD_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(MemoryRow) if f.name not in NOT_COLUMNS
)
