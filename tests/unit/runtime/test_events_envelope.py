"""Event envelopes are built from outbox rows and valid against the shipped JSON Schema."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jsonschema
import pytest

from memory_runtime.events import EventError, build_event, event_schema
from memory_runtime.events.envelope import encode

MEMORY_ID = uuid.uuid4()
WHEN = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


def validator() -> jsonschema.Draft202012Validator:
    schema = event_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def memory_record() -> dict[str, Any]:
    return {
        "id": str(MEMORY_ID),
        "coordinate": [1.0, 2.0],
        "memory_type": "episodic",
        "payload": {"text": "hello"},
        "text": "hello",
        "importance": 0.5,
        "metadata": {},
        "tags": ["a"],
        "version": 3,
    }


def row(event_type: str, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": uuid.uuid4(),
        "event_type": event_type,
        "memory_id": MEMORY_ID,
        "version": 3,
        "record": memory_record() if event_type.startswith("memory.") else None,
        "reason": None,
        "occurred_at": WHEN,
    }
    if event_type.startswith("link."):
        base["record"] = {"from": str(MEMORY_ID), "to": str(uuid.uuid4()), "type": "related"}
    base.update(over)
    return base


@pytest.mark.parametrize(
    "outbox_row",
    [
        row("memory.created"),
        row("memory.created", reason="import"),
        row("memory.updated"),
        row("memory.deleted", record=None, reason="decayed"),
        row("link.created"),
        row("link.deleted", reason="unlinked"),
    ],
    ids=["created", "imported", "updated", "deleted", "link-created", "link-deleted"],
)
def test_events_are_valid_against_the_schema(outbox_row: dict[str, Any]) -> None:
    event = build_event(outbox_row, "acme")
    validator().validate(event)
    assert event["event_id"] == str(outbox_row["id"])
    assert event["type"] == outbox_row["event_type"]
    assert event["tenant"] == "acme"
    assert event["memory_id"] == str(MEMORY_ID)
    assert event["occurred_at"] == "2026-03-01T12:30:00Z"
    # Encoding round-trips; the same row always gives the same bytes (stable redelivery).
    assert json.loads(encode(event)) == event
    assert encode(build_event(outbox_row, "acme")) == encode(event)


def test_timestamps_are_normalised_to_utc() -> None:
    local = WHEN.astimezone(timezone(timedelta(hours=2)))
    assert build_event(row("memory.updated", occurred_at=local), "acme")["occurred_at"] == (
        "2026-03-01T12:30:00Z"
    )


@pytest.mark.parametrize(
    ("outbox_row", "message"),
    [
        (row("memory.exploded"), "unknown event type"),
        (row("memory.created", record=None), "needs the record"),
        (row("memory.deleted", record=None), "needs a reason"),
        (row("memory.deleted", reason="api"), "carries no record"),
        (row("memory.updated", version=None), "version"),
        (row("memory.updated", record=["not", "an", "object"]), "JSON object"),
        (row("memory.updated", occurred_at="yesterday"), "datetime"),
    ],
)
def test_bad_rows_are_refused(outbox_row: dict[str, Any], message: str) -> None:
    with pytest.raises(EventError, match=message):
        build_event(outbox_row, "acme")


def test_schema_rejects_what_build_event_never_produces() -> None:
    v = validator()
    good = build_event(row("memory.deleted", record=None, reason="api"), "acme")
    v.validate(good)
    for broken in (
        {**good, "tenant": "Not A Tenant"},
        {**good, "reason": ""},
        {**good, "extra": 1},
        {k: val for k, val in good.items() if k != "event_id"},
        {**build_event(row("memory.created"), "acme"), "record": {"id": "x"}},
    ):
        assert not v.is_valid(broken)
