"""The recall filter: its rules, checked once when a filter is built, and its
compilation for each engine. Pure: no I/O.

One `VectorFilter` is what every side of recall applies: the keyword side and
the candidates' ranking inputs (PostgreSQL's `memories`), pgvector's
`memory_vectors` (the same SQL: both tables name the filtered columns alike)
and Qdrant's payload filter. A rule the engines could read differently (a
dotted key, a nested value, a naive time) is refused here, never dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from psycopg import sql
from psycopg.types.json import Jsonb

from memory_runtime.coordinates import MAX_DIMENSIONS as MAX_COORDINATE_DIMS

if TYPE_CHECKING:  # qdrant-client is the runtime's, not the client package's
    from qdrant_client import models
SCOPES = ("agent_id", "user_id", "session_id")
INT64 = 2**63  # PostgreSQL bigint and Qdrant integers are 64-bit
FLOAT_EXACT = 2**53  # every integer up to this is a float exactly

# Live and expired memories, as every statement tells them apart (recall,
# reads, prune, stats). NOT LIVE is what PostgreSQL plans as
# `expires_at IS NOT NULL AND expires_at <= now()` (the partial expiry index).
LIVE = sql.SQL("(expires_at IS NULL OR expires_at > now())")
EXPIRED = sql.SQL("NOT ") + LIVE


class FilterError(ValueError):
    """A filter the engines would not apply alike; nothing was searched."""


def as_utc(value: datetime) -> datetime:
    """The same instant in UTC; a naive datetime is taken as UTC (as every
    engine then reads it, whatever PostgreSQL's session time zone)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def check_metadata_key(key: object) -> None:
    # Dots would be read as a path by Qdrant but as a literal key by PostgreSQL.
    if not isinstance(key, str) or not key or len(key) > 128 or "." in key:
        raise FilterError("metadata filter keys are top-level names: 1-128 characters, no '.'")


def check_metadata_value(value: object) -> None:
    # Equality on a top-level key is the one filter both engines apply alike;
    # objects, lists and null would be containment/missing-key tests in one
    # engine and unsupported in the other, so they are refused, never ignored.
    if isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if not -INT64 <= value < INT64:
            raise FilterError("metadata filter integers must fit in 64 bits")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FilterError("metadata filter numbers must be finite")
        return
    kind = {dict: "an object", list: "a list", type(None): "null"}.get(type(value), "this type")
    raise FilterError(
        f"metadata filter values must be a string, number or boolean (equality on a "
        f"top-level key), not {kind}"
    )


@dataclass(frozen=True)
class VectorFilter:
    """Conditions ANDed, applied inside every engine (never after it). Checked
    when built: a VectorFilter that exists is one every engine applies alike."""

    memory_types: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  # every tag must be present
    agent_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # equality on top-level keys
    created_from: datetime | None = None
    created_to: datetime | None = None
    occurred_from: datetime | None = None
    occurred_to: datetime | None = None
    coordinate_min: tuple[float, ...] | None = None  # box over the first len() dimensions
    coordinate_max: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        lo, hi = self.coordinate_min, self.coordinate_max
        if (lo is None) != (hi is None):
            raise FilterError("coordinate_min and coordinate_max go together")
        if lo is not None and hi is not None:
            if len(lo) != len(hi) or not 1 <= len(lo) <= MAX_COORDINATE_DIMS:
                raise FilterError(
                    f"coordinate_min and coordinate_max need the same length,"
                    f" 1..{MAX_COORDINATE_DIMS}"
                )
            if any(a > b for a, b in zip(lo, hi, strict=True)):
                raise FilterError("coordinate_min is above coordinate_max in some dimension")
        for key, value in self.metadata.items():
            check_metadata_key(key)
            check_metadata_value(value)
        for start, end in (("created_from", "created_to"), ("occurred_from", "occurred_to")):
            a, b = getattr(self, start), getattr(self, end)
            if a is not None and b is not None and as_utc(a) > as_utc(b):
                raise FilterError(f"{start} is after {end}")

    @property
    def box(self) -> list[tuple[float, float]]:
        """The coordinate box as (low, high) per dimension; [] without one."""
        if self.coordinate_min is None or self.coordinate_max is None:
            return []
        return [
            (float(lo), float(hi))
            for lo, hi in zip(self.coordinate_min, self.coordinate_max, strict=True)
        ]


def sql_where(flt: VectorFilter) -> tuple[sql.Composable, list[Any]]:
    """The filter as an SQL condition (`TRUE` if empty) over a table with the
    memories' filter columns (`memories`, pgvector's `memory_vectors`), and
    its positional parameters."""
    terms: list[sql.Composable] = []
    params: list[Any] = []

    def term(text: str, *values: Any) -> None:
        terms.append(sql.SQL(text))
        params.extend(values)

    if flt.memory_types:
        term("memory_type = ANY(%s)", list(flt.memory_types))
    if flt.tags:
        term("tags @> %s::text[]", list(flt.tags))
    for column in SCOPES:
        value = getattr(flt, column)
        if value is not None:
            terms.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if flt.metadata:
        # containment of scalars == equality on those top-level keys (GIN-indexed)
        term("metadata @> %s::jsonb", Jsonb(flt.metadata))
    for column, op, value in (
        ("created_at", ">=", flt.created_from),
        ("created_at", "<=", flt.created_to),
    ):
        if value is not None:
            term(f"{column} {op} %s", as_utc(value))
    for op, value in ((">=", flt.occurred_from), ("<=", flt.occurred_to)):
        # memories always have one; a vector row written before the engines
        # held event time (migration 0009) has none: PostgreSQL decides for it
        if value is not None:
            term(f"(occurred_at IS NULL OR occurred_at {op} %s)", as_utc(value))
    for i, (lo, hi) in enumerate(flt.box, start=1):
        # float8[] is 1-based; a shorter coordinate yields NULL and is excluded
        terms.append(sql.SQL("coordinate[{}] BETWEEN %s AND %s").format(sql.Literal(i)))
        params.extend([lo, hi])
    if not terms:
        return sql.SQL("TRUE"), params
    return sql.SQL("(") + sql.SQL(" AND ").join(terms) + sql.SQL(")"), params


def coord_key(i: int) -> str:
    """Qdrant payload key of a coordinate's dimension i (0-based): one numeric
    key per dimension, so a box is a set of range conditions."""
    return f"coord_{i}"


def qdrant_filter(flt: VectorFilter) -> models.Filter | None:
    """The filter as Qdrant's payload filter (all conditions must hold)."""
    from qdrant_client import models

    must: list[models.Condition] = []

    def match(key: str, value: Any) -> None:
        must.append(models.FieldCondition(key=key, match=models.MatchValue(value=value)))

    def between(key: str, lo: Any, hi: Any, kind: Any = None) -> None:
        must.append(models.FieldCondition(key=key, range=(kind or models.Range)(gte=lo, lte=hi)))

    if flt.memory_types:
        must.append(
            models.FieldCondition(
                key="memory_type", match=models.MatchAny(any=list(flt.memory_types))
            )
        )
    for tag in flt.tags:  # each must be an element of the tags array
        match("tags", tag)
    for column in SCOPES:
        value = getattr(flt, column)
        if value is not None:
            match(column, value)
    for key, value in flt.metadata.items():
        # PostgreSQL's jsonb compares numbers as numbers (1 = 1.0), Qdrant's
        # MatchValue an integer only with integers: a number is a range
        # (matching both), except an integer beyond a float's exact range
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and abs(value) <= FLOAT_EXACT:
            between(f"metadata.{key}", float(value), float(value))
        else:
            match(f"metadata.{key}", value)
    for key, start, end in (
        ("created_at", flt.created_from, flt.created_to),
        ("occurred_at", flt.occurred_from, flt.occurred_to),
    ):
        if start is not None or end is not None:
            since = as_utc(start) if start is not None else None
            until = as_utc(end) if end is not None else None
            between(key, since, until, models.DatetimeRange)
    if flt.occurred_from is not None or flt.occurred_to is not None:
        # a point written before the engines held event time has none: it
        # passes, and PostgreSQL decides for it (as sql_where does for pgvector)
        in_window = must.pop()
        must.append(
            models.Filter(
                should=[
                    models.IsEmptyCondition(is_empty=models.PayloadField(key="occurred_at")),
                    in_window,
                ]
            )
        )
    for i, (lo, hi) in enumerate(flt.box):
        between(coord_key(i), lo, hi)
    return models.Filter(must=must) if must else None
