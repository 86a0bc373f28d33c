"""Pure checks shared by both vector backends, and the Qdrant filter translation."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from qdrant_client import QdrantClient, models

from memory_runtime.ports import VectorFilter
from memory_runtime.vectors.common import (
    VectorIndexError,
    as_utc,
    check_filter,
    check_vector,
    normalise_distance,
    similarities,
    similarity,
)
from memory_runtime.vectors.qdrant import build_filter


def test_distance_names() -> None:
    assert normalise_distance("cosine") == "Cosine"
    assert normalise_distance("DOT") == "Dot"
    assert normalise_distance("Euclid") == "Euclid"
    with pytest.raises(VectorIndexError, match="unknown distance"):
        normalise_distance("manhattan")


def test_similarity_is_higher_for_closer() -> None:
    assert similarity("Euclid", 0.0) == 1.0
    assert similarity("Euclid", 1.0) == 0.5
    assert similarity("Euclid", 0.1) > similarity("Euclid", 2.0)
    assert similarity("Cosine", 0.8) == 0.8


@pytest.mark.parametrize("distance", ["Cosine", "Dot", "Euclid"])
def test_similarities_are_what_the_engine_reports(distance: str) -> None:
    # candidates only the keyword side found are scored in Python: the same
    # numbers Qdrant's engine gives the ones it finds
    rng = random.Random(7)
    vectors = [[rng.uniform(-1, 1) for _ in range(8)] for _ in range(20)]
    query = [rng.uniform(-1, 1) for _ in range(8)]
    engine = QdrantClient(":memory:")
    engine.create_collection(
        "c", vectors_config=models.VectorParams(size=8, distance=models.Distance[distance.upper()])
    )
    engine.upsert("c", [models.PointStruct(id=i, vector=v) for i, v in enumerate(vectors)])
    points = engine.query_points("c", query=query, limit=len(vectors)).points
    reported = {p.id: similarity(distance, p.score) for p in points}
    computed = similarities(distance, query, vectors)
    assert computed == pytest.approx([reported[i] for i in range(len(vectors))], abs=1e-5)
    assert similarities(distance, query, vectors) == computed  # the same bits every time
    assert similarities(distance, query, []) == []


def test_check_vector() -> None:
    assert check_vector([1, 2, 3], 3) == [1.0, 2.0, 3.0]
    with pytest.raises(VectorIndexError, match="3 dimensions, the index expects 4"):
        check_vector([1, 2, 3], 4)
    with pytest.raises(VectorIndexError, match="finite"):
        check_vector([1.0, float("inf")], 2)


def test_naive_datetimes_are_utc() -> None:
    naive = datetime(2026, 1, 1, 12)
    assert as_utc(naive) == datetime(2026, 1, 1, 12, tzinfo=UTC)
    plus2 = datetime(2026, 1, 1, 14, tzinfo=timezone(timedelta(hours=2)))
    assert as_utc(plus2) == datetime(2026, 1, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("flt", "message"),
    [
        (VectorFilter(coordinate_min=(0.0,)), "together"),
        (VectorFilter(coordinate_min=(0.0,), coordinate_max=(1.0, 2.0)), "same length"),
        (VectorFilter(coordinate_min=(2.0,), coordinate_max=(1.0,)), "<="),
        (VectorFilter(metadata={"a": [1]}), "string, number or boolean"),
        (VectorFilter(metadata={"a.b": 1}), "plain names"),
        (VectorFilter(metadata={"a": float("nan")}), "string, number or boolean"),
        (
            VectorFilter(created_from=datetime(2026, 2, 1), created_to=datetime(2026, 1, 1)),
            "after",
        ),
    ],
)
def test_bad_filters_are_refused(flt: VectorFilter, message: str) -> None:
    with pytest.raises(VectorIndexError, match=message):
        check_filter(flt)


def test_qdrant_filter_translation() -> None:
    assert build_filter(VectorFilter()) is None
    flt = build_filter(
        VectorFilter(
            memory_types=("episodic",),
            tags=("a", "b"),
            user_id="u1",
            metadata={"topic": "cats", "score": 0.5},
            created_from=datetime(2026, 1, 1, tzinfo=UTC),
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
    assert isinstance(conditions["created_at"].range, models.DatetimeRange)
    assert conditions["coord_1"].range == models.Range(gte=1.0, lte=3.0)


def test_bulk_build_memory_holds_the_graph_within_bounds():
    from memory_runtime.vectors.pgvector import build_memory

    mb = 2**20
    assert build_memory(0, 384, 16) == "256MB"  # the floor: small loads as before
    # 100k 384-d rows at the measured 2,250 bytes each need 215 MB: more than that
    assert 2250 * 100_000 / mb < int(build_memory(100_000, 384, 16)[:-2]) <= 1024
    # 120k rows need more than the old fixed 256 MB, 1536-d rows far more
    assert int(build_memory(120_000, 384, 16)[:-2]) > 256
    assert int(build_memory(100_000, 1536, 16)[:-2]) > int(build_memory(100_000, 384, 16)[:-2])
    assert build_memory(10**8, 1536, 16) == "1024MB"  # the ceiling: a shared server's memory
