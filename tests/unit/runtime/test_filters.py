"""The recall filter's rules and its compilation for PostgreSQL and Qdrant
(what the engines do with them: tests/integration/runtime/test_filter_congruence.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from psycopg import sql
from qdrant_client import models

from memory_runtime.filters import FilterError, VectorFilter, as_utc, qdrant_filter, sql_where
from memory_runtime.models import Filters


def test_naive_datetimes_are_utc_and_aware_ones_are_converted() -> None:
    naive = datetime(2026, 1, 1, 12)
    assert as_utc(naive) == datetime(2026, 1, 1, 12, tzinfo=UTC)
    plus2 = datetime(2026, 1, 1, 14, tzinfo=timezone(timedelta(hours=2)))
    assert as_utc(plus2) == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert as_utc(plus2).utcoffset() == timedelta(0)


BAD = [
    ({"coordinate_min": (0.0,)}, "go together"),
    ({"coordinate_min": (0.0,), "coordinate_max": (1.0, 2.0)}, "same length"),
    ({"coordinate_min": (2.0,), "coordinate_max": (1.0,)}, "above coordinate_max"),
    ({"metadata": {"a": [1]}}, "string, number or boolean.*not a list"),
    ({"metadata": {"a": 2**63}}, "64 bits"),
    ({"metadata": {"a.b": 1}}, "no '.'"),
    ({"metadata": {"a": float("nan")}}, "finite"),
    ({"created_from": datetime(2026, 2, 1), "created_to": datetime(2026, 1, 1)}, "after"),
    (
        {
            "occurred_from": datetime(2026, 1, 1, 12, tzinfo=UTC),
            # 11:00 UTC, given in +02:00: before the start once both are UTC
            "occurred_to": datetime(2026, 1, 1, 13, tzinfo=timezone(timedelta(hours=2))),
        },
        "occurred_from is after occurred_to",
    ),
]


@pytest.mark.parametrize(("fields", "message"), BAD)
def test_a_filter_breaking_a_rule_cannot_be_built(fields: dict, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        VectorFilter(**fields)


def test_the_request_model_refuses_by_the_same_rules() -> None:
    with pytest.raises(ValueError, match="created_from is after created_to"):
        Filters(created_from="2030-01-01T00:00:00Z", created_to="2020-01-01T00:00:00Z")
    built = Filters(memory_type="semantic", tags=["a"], coordinate_min=[0], coordinate_max=[1])
    assert built.to_filter() == VectorFilter(
        memory_types=("semantic",), tags=("a",), coordinate_min=(0.0,), coordinate_max=(1.0,)
    )


def test_sql_where_compiles_every_condition_with_utc_times() -> None:
    assert sql_where(VectorFilter()) == (sql.SQL("TRUE"), [])
    flt = VectorFilter(
        memory_types=("episodic",),
        tags=("a", "b"),
        user_id="u1",
        created_from=datetime(2026, 1, 1, 12),  # naive: UTC
        occurred_to=datetime(2026, 1, 1, 14, tzinfo=timezone(timedelta(hours=2))),
        coordinate_min=(0.0, 1.0),
        coordinate_max=(2.0, 3.0),
    )
    where, params = sql_where(flt)
    text = where.as_string(None)
    for part in (
        "memory_type = ANY(%s)",
        "tags @> %s::text[]",
        '"user_id" = %s',
        "created_at >= %s",
        "(occurred_at IS NULL OR occurred_at <= %s)",
        "coordinate[1] BETWEEN %s AND %s",
        "coordinate[2] BETWEEN %s AND %s",
    ):
        assert part in text
    assert text.count("%s") == len(params)
    noon = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert params[3] == noon
    assert params[3].tzinfo == UTC
    assert params[4] == noon
    assert params[4].tzinfo == UTC


def test_qdrant_filter_translation() -> None:
    assert qdrant_filter(VectorFilter()) is None
    flt = qdrant_filter(
        VectorFilter(
            memory_types=("episodic",),
            tags=("a", "b"),
            user_id="u1",
            metadata={"topic": "cats", "score": 0.5, "n": 2, "big": 2**60, "on": True},
            created_from=datetime(2026, 1, 1, tzinfo=UTC),
            occurred_from=datetime(2026, 1, 1, tzinfo=UTC),
            coordinate_min=(0.0, 1.0),
            coordinate_max=(2.0, 3.0),
        )
    )
    assert flt is not None
    assert isinstance(flt.must, list)
    conditions = {c.key: c for c in flt.must if isinstance(c, models.FieldCondition)}
    assert isinstance(conditions["memory_type"].match, models.MatchAny)
    assert sum(1 for c in flt.must if getattr(c, "key", None) == "tags") == 2  # all tags
    assert conditions["user_id"].match == models.MatchValue(value="u1")
    assert conditions["metadata.topic"].match == models.MatchValue(value="cats")
    assert conditions["metadata.score"].range == models.Range(gte=0.5, lte=0.5)
    # numbers compare as numbers (2 matches a stored 2.0, as in jsonb)...
    assert conditions["metadata.n"].range == models.Range(gte=2.0, lte=2.0)
    # ...but an integer no float holds exactly, and a boolean, match exactly
    assert conditions["metadata.big"].match == models.MatchValue(value=2**60)
    assert conditions["metadata.on"].match == models.MatchValue(value=True)
    assert isinstance(conditions["created_at"].range, models.DatetimeRange)
    assert conditions["coord_1"].range == models.Range(gte=1.0, lte=3.0)
    # event time: a point without one (written before the engines held it) passes
    (either,) = [c for c in flt.must if isinstance(c, models.Filter)]
    assert isinstance(either.should, list)
    missing, in_window = either.should
    assert missing == models.IsEmptyCondition(is_empty=models.PayloadField(key="occurred_at"))
    assert isinstance(in_window, models.FieldCondition)
    assert isinstance(in_window.range, models.DatetimeRange)
