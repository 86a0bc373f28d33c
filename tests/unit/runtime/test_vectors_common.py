"""Pure checks shared by both vector backends (the filter: test_filters.py)."""

from __future__ import annotations

import random

import pytest
from qdrant_client import QdrantClient, models

from memory_runtime.vectors.common import (
    VectorIndexError,
    check_vector,
    normalise_distance,
    similarities,
    similarity,
)


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
