"""Outbox row -> event envelope (pure). The JSON Schema is schema/memory-event.json."""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any
from uuid import UUID

from memory_runtime.filters import as_utc

SCHEMA_VERSION = 1
EVENT_TYPES = frozenset(
    {"memory.created", "memory.updated", "memory.deleted", "link.created", "link.deleted"}
)


class EventError(ValueError):
    """An outbox row that cannot become a valid event."""


@cache
def event_schema() -> dict[str, Any]:
    """The event JSON Schema shipped with the package."""
    text = resources.files("memory_runtime.events.schema").joinpath("memory-event.json")
    return json.loads(text.read_text(encoding="utf-8"))


def _timestamp(value: Any) -> str:
    if isinstance(value, datetime):
        return as_utc(value).isoformat().replace("+00:00", "Z")
    raise EventError(f"occurred_at must be a datetime, got {type(value).__name__}")


def build_event(row: dict[str, Any], tenant: str) -> dict[str, Any]:
    """The event for one outbox row (columns id, event_type, memory_id, version,
    record, reason, occurred_at). Same row -> same event, so redeliveries match."""
    event_type = row.get("event_type")
    if event_type not in EVENT_TYPES:
        raise EventError(f"unknown event type {event_type!r}")
    version = row.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise EventError(f"event {row.get('id')} has no valid version ({version!r})")
    event: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "event_id": str(UUID(str(row["id"]))),
        "type": event_type,
        "tenant": tenant,
        "memory_id": str(UUID(str(row["memory_id"]))),
        "version": version,
        "occurred_at": _timestamp(row.get("occurred_at")),
    }
    record = row.get("record")
    if record is not None:
        if event_type == "memory.deleted":
            raise EventError("a memory.deleted event carries no record")
        if not isinstance(record, dict):
            raise EventError(f"record must be a JSON object, got {type(record).__name__}")
        event["record"] = record
    elif event_type != "memory.deleted":
        raise EventError(f"a {event_type} event needs the record")
    reason = row.get("reason")
    if reason:
        event["reason"] = str(reason)
    elif event_type == "memory.deleted":
        raise EventError("a memory.deleted event needs a reason")
    return event


def encode(event: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, the Kafka message value."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
