"""One memory record: the API model, the row and the column list follow MemoryRecord."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from memory_runtime.models import Memory, MemoryRecordIn
from memory_runtime.record import RECORD_FIELDS, MemoryRecord, MemoryRow
from memory_runtime.service.shapes import to_memory
from memory_runtime.storage.rows import ROW_COLUMNS

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def record(**change: Any) -> dict[str, Any]:
    return {
        "id": uuid.UUID(int=7),
        "coordinate": (1.0, -2.5),
        "memory_type": "semantic",
        "payload": {"text": "tea", "n": 1},
        "text": "tea",
        "importance": 0.25,
        "metadata": {"k": "v"},
        "tags": ["drink"],
        "agent_id": "a",
        "user_id": None,
        "session_id": None,
        "created_at": NOW,
        "updated_at": NOW,
        "last_accessed_at": NOW,
        "access_count": 3,
        "version": 2,
        "expires_at": None,
        "occurred_at": NOW,
        "index_pending": False,
        **change,
    }


def own_fields(model: type[MemoryRecord]) -> set[str]:
    # the fields a class body declares itself (not those it inherits)
    return set(vars(model).get("__annotations__", {}))


def test_the_record_fields_are_declared_once() -> None:
    assert tuple(MemoryRecord.model_fields) == RECORD_FIELDS
    # the answer adds what a read knows of the vector, and repeats no record field
    assert own_fields(Memory) == {"has_vector", "vector"}
    assert set(Memory.model_fields) == {*RECORD_FIELDS, "has_vector", "vector"}
    # the row adds the vector; it narrows the coordinate to a hashable tuple, no more
    assert own_fields(MemoryRow) == {"coordinate", "embedding", "stored_vector"}
    assert MemoryRow.model_fields["coordinate"].annotation == tuple[float, ...]
    assert list(MemoryRow.model_fields)[: len(RECORD_FIELDS)] == list(RECORD_FIELDS)


def test_an_imported_record_carries_record_fields_only() -> None:
    # every field an import line may set is a record field (or its vector)
    assert set(MemoryRecordIn.model_fields) <= {*RECORD_FIELDS, "vector"}
    # and what it cannot set is derived on import or bookkeeping of this copy
    assert set(RECORD_FIELDS) - set(MemoryRecordIn.model_fields) == {"index_pending"}


def test_the_column_list_and_the_statement_parameters_follow_the_record() -> None:
    assert ROW_COLUMNS.split(", ") == list(RECORD_FIELDS)
    row = MemoryRow.unchecked(**record(), embedding=[0.5])
    assert list(row.record()) == list(RECORD_FIELDS)
    assert "embedding" not in row.record()


def test_unchecked_builds_what_model_construct_builds() -> None:
    row = MemoryRow.unchecked(**record(), embedding=None)
    assert row == MemoryRow.model_construct(**record(), embedding=None)
    assert row.stored_vector is None  # its default, filled in
    assert row.coordinate == (1.0, -2.5)  # as given: no validation, no copy
    assert row.payload is not None
    assert row.record()["payload"] is row.payload
    # a row is changed in place on the write paths, and copied with changes
    row.index_pending = True
    newer = row.model_copy(update={"version": 3})
    assert (newer.version, newer.index_pending, row.version) == (3, True, 2)


def test_unchecked_refuses_a_missing_or_unknown_field() -> None:
    with pytest.raises(TypeError, match=r"missing \['embedding'\], unknown \[\]"):
        MemoryRow.unchecked(**record())
    with pytest.raises(TypeError, match=r"missing \[\], unknown \['vector'\]"):
        MemoryRow.unchecked(**record(), embedding=None, vector=None)
    with pytest.raises(TypeError, match=r"missing \['has_vector'\]"):
        Memory.unchecked(**record())


def test_an_answer_built_unchecked_serialises_as_a_validated_one() -> None:
    row = MemoryRow.unchecked(**record(), embedding=[0.5, 1.0])
    for include_vector in (False, True):
        answer = to_memory(row, include_vector)
        validated = Memory.model_validate(answer.model_dump())
        assert answer.model_dump_json() == validated.model_dump_json()
        assert answer.model_dump(mode="json") == validated.model_dump(mode="json")
    shown = to_memory(row).model_dump(mode="json")
    assert shown["coordinate"] == [1.0, -2.5]
    assert shown["has_vector"] is True
    assert "vector" not in shown  # only with include_vector
    assert list(shown) == [*RECORD_FIELDS, "has_vector"]


def test_a_row_read_without_its_vector_knows_whether_it_has_one() -> None:
    read = MemoryRow.from_db(
        {**record(coordinate=[1, 2]), "embedding": None, "stored_vector": True}
    )
    assert read.coordinate == (1.0, 2.0)
    assert read.has_vector
    assert to_memory(read).has_vector
    assert to_memory(read).vector is None
    bare = MemoryRow.from_db({**record(), "embedding": None, "stored_vector": False})
    assert not bare.has_vector
    assert not to_memory(bare).has_vector
