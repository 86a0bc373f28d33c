"""Hybrid fusion, recency and importance weights, decay."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from memory_runtime.ranking import (
    CandidateInfo,
    Weights,
    decay_factor,
    effective_importance,
    fuse,
    hours_before,
    normalise_similarity,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
A, B, C = (uuid.UUID(int=i) for i in (1, 2, 3))


def info(importance: float = 0.5, age_hours: float = 0.0, idle_hours: float = 0.0) -> CandidateInfo:
    return CandidateInfo(
        importance=importance,
        occurred_at=NOW - timedelta(hours=age_hours),
        last_accessed_at=NOW - timedelta(hours=idle_hours),
    )


def run(
    vec, kw, infos, mode="hybrid", weights=Weights(), top_k=10, distance="Cosine", fusion="relative"
):
    return fuse(
        vec,
        kw,
        infos,
        mode=mode,
        weights=weights,
        distance=distance,
        now=NOW,
        half_life_hours=10.0,
        top_k=top_k,
        fusion=fusion,
    )


def test_hybrid_combines_both_engines_with_alpha():
    hits = run({A: 0.8, B: 0.2}, {B: 0.4, C: 0.1}, {A: info(), B: info(), C: info()})
    by_id = {h.memory_id: h for h in hits}
    assert by_id[A].vector == pytest.approx(0.8)
    assert by_id[A].keyword is None
    assert by_id[A].relevance == pytest.approx(0.4)  # 0.5 * 0.8
    assert by_id[B].keyword == pytest.approx(1.0)  # best keyword rank is the reference
    assert by_id[B].relevance == pytest.approx(0.5 * 0.2 + 0.5 * 1.0)
    assert by_id[C].keyword == pytest.approx(0.25)
    assert [h.memory_id for h in hits] == [B, A, C]


def test_alpha_one_is_pure_vector_order():
    hits = run({A: 0.9, B: 0.1}, {B: 5.0}, {A: info(), B: info()}, weights=Weights(alpha=1.0))
    assert [h.memory_id for h in hits] == [A, B]


def test_hybrid_with_one_engine_does_not_halve_scores():
    hits = run({A: 0.6}, {}, {A: info()})
    assert hits[0].score == pytest.approx(0.6)
    hits = run({}, {A: 2.0}, {A: info()})
    assert hits[0].score == pytest.approx(1.0)


def test_modes_restrict_candidates():
    infos = {A: info(), B: info()}
    assert [h.memory_id for h in run({A: 0.5}, {B: 1.0}, infos, mode="vector")] == [A]
    assert [h.memory_id for h in run({A: 0.5}, {B: 1.0}, infos, mode="keyword")] == [B]


def test_recency_weight_prefers_recent_memories():
    infos = {A: info(age_hours=100.0), B: info(age_hours=0.0)}
    plain = run({A: 0.9, B: 0.8}, {}, infos)
    assert plain[0].memory_id == A
    weighted = run({A: 0.9, B: 0.8}, {}, infos, weights=Weights(recency=0.5))
    assert weighted[0].memory_id == B
    assert weighted[0].recency == pytest.approx(1.0)
    assert weighted[1].recency == pytest.approx(0.5**10)
    assert weighted[0].score == pytest.approx(0.5 * 0.8 + 0.5 * 1.0)


def test_importance_weight_uses_decayed_importance():
    infos = {A: info(importance=1.0, idle_hours=10.0), B: info(importance=0.6)}
    hits = run({A: 0.5, B: 0.5}, {}, infos, weights=Weights(importance=1.0))
    by_id = {h.memory_id: h for h in hits}
    assert by_id[A].importance == pytest.approx(0.5)  # one half-life idle
    assert by_id[B].importance == pytest.approx(0.6)
    assert hits[0].memory_id == B


def test_candidates_without_rows_are_dropped_and_top_k_applies():
    hits = run({A: 0.9, B: 0.8, C: 0.7}, {}, {A: info(), C: info()}, top_k=1)
    assert [h.memory_id for h in hits] == [A]


def test_ties_break_by_id_deterministically():
    hits = run({B: 0.5, A: 0.5}, {}, {A: info(), B: info()})
    assert [h.memory_id for h in hits] == [A, B]


def test_top_k_is_the_head_of_the_full_order():
    # Ids whose numeric and text orders are shuffled against the insertion order,
    # and only five distinct scores: the tie-break decides most places.
    ids = [uuid.UUID(int=(i * 0x9E3779B97F4A7C15 << 64) % (1 << 128)) for i in range(40)]
    vec = {memory_id: (i % 5) / 10 for i, memory_id in enumerate(ids)}
    infos = {memory_id: info() for memory_id in ids}
    full = run(vec, {}, infos, mode="vector", top_k=len(ids))
    keys = [(-h.score, str(h.memory_id)) for h in full]
    assert keys == sorted(keys)
    assert len(full) == len(ids)
    for k in (1, 3, 12):
        assert run(vec, {}, infos, mode="vector", top_k=k) == full[:k]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 1.5}, "alpha"),
        ({"recency": -0.1}, "recency"),
        ({"recency": 0.6, "importance": 0.6}, "sum"),
    ],
)
def test_invalid_weights(kwargs: dict[str, float], message: str):
    with pytest.raises(ValueError, match=message):
        Weights(**kwargs)


def test_similarity_normalisation_per_distance():
    assert normalise_similarity(-0.3, "Cosine") == 0.0
    assert normalise_similarity(0.7, "Cosine") == pytest.approx(0.7)
    assert normalise_similarity(0.25, "Euclid") == pytest.approx(0.25)
    assert normalise_similarity(0.0, "Dot") == pytest.approx(0.5)
    assert normalise_similarity(3.0, "Dot") > normalise_similarity(1.0, "Dot")
    assert normalise_similarity(-1e6, "Dot") == pytest.approx(0.0)
    assert normalise_similarity(math.nan, "Cosine") == 0.0


def test_decay_and_effective_importance():
    assert decay_factor(0, 10) == 1.0
    assert decay_factor(10, 10) == pytest.approx(0.5)
    assert decay_factor(30, 10) == pytest.approx(0.125)
    assert effective_importance(0.8, 20, 10) == pytest.approx(0.2)
    assert effective_importance(0.8, 20, 10, decay_enabled=False) == 0.8
    assert effective_importance(0.8, -1, 10) == 0.8  # accessed "later" (clock skew): no decay
    assert hours_before(NOW.timestamp(), NOW - timedelta(hours=20)) == pytest.approx(20)


def test_top_k_must_be_positive():
    with pytest.raises(ValueError, match="top_k"):
        run({}, {}, {}, top_k=0)
