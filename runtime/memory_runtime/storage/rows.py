"""Rows as the tenant schema holds them: column lists, link and candidate rows, binary float4[]."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from psycopg.types.json import Jsonb

from memory_runtime.ranking import (
    CandidateInfo,
)
from memory_runtime.record import RECORD_FIELDS

_FLOAT4_OID = 700

_FLOAT4_ELEMENT = np.dtype([("length", ">i4"), ("value", ">f4")])


def float4_array_binary(values: Sequence[float]) -> bytes:
    """A one-dimensional float4[] in PostgreSQL's binary format (array_recv):
    ndim, has-nulls, element type, then length and lower bound, then each
    element as its byte length (4) and big-endian value."""
    elements = np.empty(len(values), dtype=_FLOAT4_ELEMENT)
    elements["length"] = 4
    elements["value"] = values
    return struct.pack("!iiiii", 1, 0, _FLOAT4_OID, len(values), 1) + elements.tobytes()


# The memories table's own columns. The vector lives in memory_embeddings
# (migration 0004), read per row by primary key only where it is wanted.
ROW_COLUMNS = ", ".join(RECORD_FIELDS)

MEMORY_COLUMNS = (
    ROW_COLUMNS + ", (SELECT e.embedding FROM memory_embeddings e"
    " WHERE e.memory_id = memories.id) AS embedding"
)

MEMORY_COLUMNS_NO_VECTOR = (
    ROW_COLUMNS + ", NULL::float4[] AS embedding, EXISTS (SELECT FROM memory_embeddings e"
    " WHERE e.memory_id = memories.id) AS stored_vector"
)

LINK_COLUMNS = "from_id, to_id, type, strength, metadata, created_at, updated_at, version"

# a record field's value as a statement parameter, where it is not the value itself
COLUMN_ADAPTERS: dict[str, Any] = {
    "coordinate": list,
    "payload": Jsonb,
    "metadata": Jsonb,
    "tags": list,
}


@dataclass
class LinkRow:
    from_id: uuid.UUID
    to_id: uuid.UUID
    type: str
    strength: float
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: int = 1

    @classmethod
    def from_db(cls, row: dict[str, Any]) -> LinkRow:
        return cls(**row)


@dataclass(frozen=True)
class Candidate:
    """A recall candidate's ranking inputs (see Tx.keyword_search, Tx.candidates)."""

    id: uuid.UUID
    info: CandidateInfo  # importance and times, as ranking takes them
    keyword_rank: float | None  # BM25 score, when it matches the query and filter
    similarity: float | None = None  # to the query vector, when asked and it has one

    @classmethod
    def from_db(cls, row: dict[str, Any]) -> Candidate:
        """From a row of CANDIDATE_COLUMNS plus `keyword_rank` (and `similarity`)."""
        rank = row["keyword_rank"]
        similarity = row.get("similarity")
        return cls(
            id=row["id"],
            info=CandidateInfo(
                float(row["importance"]), row["occurred_at"], row["last_accessed_at"]
            ),
            keyword_rank=None if rank is None else float(rank),
            similarity=None if similarity is None else float(similarity),
        )


CANDIDATE_COLUMNS = "id, importance, occurred_at, last_accessed_at"
