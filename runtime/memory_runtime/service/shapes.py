"""How rows become answers, events and filters (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from memory_runtime.filters import FilterError
from memory_runtime.models import (
    MAX_TEXT_CHARS,
    Filters,
    Link,
    Memory,
)
from memory_runtime.ports import (
    VectorFilter,
)
from memory_runtime.record import MemoryRow
from memory_runtime.service.errors import InvalidInputError
from memory_runtime.storage.rows import LinkRow


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


def to_memory(row: MemoryRow, include_vector: bool = False) -> Memory:
    # the row's record as it is (no validation: it is what the store holds)
    return Memory.unchecked(
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
