"""One memory record: the API models and the column list follow MemoryRow."""

from __future__ import annotations

from memory_runtime.models import Memory, MemoryRecordIn
from memory_runtime.record import RECORD_FIELDS, MemoryRow
from memory_runtime.storage.rows import ROW_COLUMNS


def test_the_api_memory_is_the_record_plus_what_a_read_adds() -> None:
    assert set(Memory.model_fields) == {*RECORD_FIELDS, "has_vector", "vector"}


def test_an_imported_record_carries_record_fields_only() -> None:
    # every field an import line may set is a record field (or its vector)
    assert set(MemoryRecordIn.model_fields) <= {*RECORD_FIELDS, "vector"}
    # and what it cannot set is derived on import or bookkeeping of this copy
    assert set(RECORD_FIELDS) - set(MemoryRecordIn.model_fields) == {"index_pending"}


def test_the_column_list_and_the_statement_parameters_follow_the_record() -> None:
    assert ROW_COLUMNS.split(", ") == list(RECORD_FIELDS)
    assert "embedding" not in RECORD_FIELDS
    assert MemoryRow.__dataclass_fields__.keys() - set(RECORD_FIELDS) == {
        "embedding",
        "stored_vector",
    }
