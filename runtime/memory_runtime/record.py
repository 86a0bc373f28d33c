"""The memory record, declared once: `MemoryRecord` holds a memory's fields.

The row the store reads and writes (`MemoryRow`) and the API's answer
(`models.Memory`) both build on it, each adding how it carries the vector:
the row the vector itself (`embedding`) and, when read without it, whether
the database holds one (`stored_vector`); the answer `has_vector` and, on
request, `vector`. The SQL column list and the statement parameters follow
`RECORD_FIELDS`; an imported copy (`models.MemoryRecordIn`) is checked
against it by tests.

Rows and answers are built from data this runtime wrote or read back, with
`unchecked`: no validation on the write and read paths (requests are
validated at the edge, by the input models).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel

from memory_runtime.coordinates import Coordinate

MemoryType = Literal["episodic", "semantic"]

_setattr = object.__setattr__  # past BaseModel.__setattr__, as pydantic itself does


class MemoryRecord(BaseModel):
    """A memory's own fields, each a column of the `memories` table."""

    id: uuid.UUID
    # a tuple in a row (a hashable address), a list when read from JSON
    coordinate: Sequence[float]
    memory_type: MemoryType
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
    occurred_at: datetime  # event time (default: created_at)
    index_pending: bool

    @classmethod
    def unchecked(cls, **values: Any) -> Self:
        """The model of these values as they are: `model_construct` at a
        dataclass's cost (rows and answers are built per memory on the write
        and read paths; bench/README.md, "Building records"). Every field
        without a default must be given, and no other."""
        names, defaults = _shape(cls)
        data = values
        if data.keys() != names:  # some left to their defaults (or a mistake)
            data = {**defaults, **values}
        if data.keys() != names:
            missing, unknown = names - data.keys(), data.keys() - names
            raise TypeError(f"{cls.__name__}: missing {sorted(missing)}, unknown {sorted(unknown)}")
        model = cls.__new__(cls)
        _setattr(model, "__dict__", data)  # what model_construct sets, without its loop
        _setattr(model, "__pydantic_fields_set__", set(values))
        _setattr(model, "__pydantic_extra__", None)
        _setattr(model, "__pydantic_private__", None)
        return model


@functools.cache
def _shape(model: type[BaseModel]) -> tuple[frozenset[str], dict[str, Any]]:
    """A model's field names, and the defaults `unchecked` fills in."""
    fields = model.model_fields
    defaults = {
        name: field.default
        for name, field in fields.items()
        if not field.is_required() and field.default_factory is None
    }
    return frozenset(fields), defaults


RECORD_FIELDS: tuple[str, ...] = tuple(MemoryRecord.model_fields)


class MemoryRow(MemoryRecord):
    """A record as the store holds it, with its vector (in memory_embeddings)."""

    coordinate: Coordinate
    embedding: list[float] | None  # the vector, when read (or written) with it
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
        return cls.unchecked(**data)

    def record(self) -> dict[str, Any]:
        """The record's own fields by name (no vector): what the API shows."""
        return {name: getattr(self, name) for name in RECORD_FIELDS}
