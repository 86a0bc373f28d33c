"""Recall scoring: BM25, hybrid fusion, recency and importance weights (pure, no I/O).

Each candidate comes from the vector engine, from keyword search or both, and
hybrid recall gives every candidate both of its scores (a vector similarity if
it has a vector, an Okapi BM25 score if it shares a stem with the query). The
final score is

    relevance = fusion of the two signals                                 (hybrid)
    final     = (1 - w_recency - w_importance) * relevance
                + w_recency * recency + w_importance * effective_importance

with every component in [0, 1] and returned to the client, so a score can be
explained. Fusion (docs/RECALL.md has the measurements behind the default):

- `relative` (default): alpha * vector similarity + (1-alpha) * BM25 / best
  BM25 among the candidates (relative score fusion).
- `rrf`: weighted reciprocal rank fusion over the candidates,
  alpha * (K+1)/(K+vector rank) + (1-alpha) * (K+1)/(K+keyword rank), K = 60;
  a side on which the candidate has no score adds nothing. Ranks have the same
  scale on both sides whatever the engines' score distributions.

The `keyword` component is always BM25 / best BM25, the `vector` one the
similarity mapped to [0, 1] per distance.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID

from memory_contract.limits import Distance

Mode = Literal["hybrid", "vector", "keyword"]
Fusion = Literal["rrf", "relative"]

# Okapi BM25 parameters (the usual defaults: Lucene, Robertson & Zaragoza)
BM25_K1 = 1.2
BM25_B = 0.75
RRF_K = 60


def bm25_idf(memories: int, containing: int) -> float:
    """IDF of a stem in `containing` of `memories` memories: ln(1 + (N - n + .5) / (n + .5)).

    The Lucene form: never negative, so a stem in most memories still counts a little.
    """
    n = max(0, min(containing, memories))
    return math.log(1.0 + (memories - n + 0.5) / (n + 0.5))


def bm25_bound(idf: float) -> float:
    """What one stem can add to a memory's BM25 score at most (any tf, any length)."""
    return idf * (BM25_K1 + 1.0)


def keyword_terms_needed(
    bounds: Sequence[float], scored: int, threshold: float, wanted: int
) -> int:
    """MaxScore: how many stems (rarest first, `bounds` in that order) a memory must
    contain one of, so that no memory outside can reach the top `wanted`.

    `scored` memories were ranked using the first stems and the `wanted`-th best
    scored `threshold`. A memory holding none of the first m stems scores below
    the sum of the other stems' bounds; once that sum is <= threshold it cannot
    enter the top (nor tie it). Returns len(bounds) if every stem is needed.
    """
    if scored < wanted:
        return len(bounds)
    needed = len(bounds)
    rest = 0.0
    for m in range(len(bounds) - 1, 0, -1):
        rest += bounds[m]  # sum(bounds[m:])
        if rest > threshold:
            break
        needed = m
    return needed


@dataclass(frozen=True)
class Weights:
    alpha: float = 0.5  # share of the vector score in hybrid relevance
    recency: float = 0.0
    importance: float = 0.0

    def __post_init__(self) -> None:
        for name in ("alpha", "recency", "importance"):
            value = getattr(self, name)
            if not (0.0 <= value <= 1.0) or math.isnan(value):
                raise ValueError(f"{name} weight must be within 0..1, got {value}")
        if self.recency + self.importance > 1.0 + 1e-9:
            raise ValueError("recency and importance weights must sum to at most 1")


@dataclass(frozen=True)
class CandidateInfo:
    """What ranking needs to know about a memory besides its engine scores."""

    importance: float
    occurred_at: datetime  # event time: what recency weighs
    last_accessed_at: datetime


@dataclass(frozen=True)
class ScoredHit:
    memory_id: UUID
    score: float
    vector: float | None  # normalised vector similarity, None without a vector
    keyword: float | None  # BM25 / best BM25 among the candidates, None without a match
    relevance: float
    recency: float
    importance: float


def normalise_similarity(similarity: float, distance: Distance) -> float:
    """Map an engine similarity (higher is better) into [0, 1].

    Cosine similarity is already in [-1, 1]: negative means unrelated, so clamp.
    Euclid: engines report 1 / (1 + L2 distance), already in (0, 1].
    Dot products are unbounded: a logistic squashes them monotonically.
    """
    if math.isnan(similarity):
        return 0.0
    if distance in ("Cosine", "Euclid"):
        return min(1.0, max(0.0, similarity))
    try:
        return 1.0 / (1.0 + math.exp(-similarity))
    except OverflowError:
        return 0.0


def decay_factor(hours: float, half_life_hours: float) -> float:
    """0.5 ** (hours / half-life); 1 for no elapsed time or no half-life."""
    if half_life_hours <= 0 or hours <= 0:
        return 1.0
    return float(0.5 ** (hours / half_life_hours))


# decay_factor in SQL, for the statement that selects by it (the prune job's
# scan): the hours since the timestamptz `{since}` by the database clock, and
# a half-life `{half_life}` > 0 (settings refuse 0). The same formula, checked
# against decay_factor by tests/integration/runtime/test_decay_expiry.py.
DECAY_FACTOR_SQL = (
    "power(0.5, greatest(0.0, extract(epoch FROM now() - ({since})) / 3600.0) / ({half_life}))"
)


def hours_before(now_seconds: float, moment: datetime) -> float:
    """Hours from `moment` to `now_seconds` (a POSIX timestamp); negative if later."""
    return (now_seconds - moment.timestamp()) / 3600.0


def effective_importance(
    importance: float, idle_hours: float, half_life_hours: float, decay_enabled: bool = True
) -> float:
    """importance x 0.5^(hours since last access / half-life) (DESIGN §5)."""
    if not decay_enabled:
        return importance
    return importance * decay_factor(idle_hours, half_life_hours)


def ranks(scores: Mapping[UUID, float]) -> dict[UUID, int]:
    """1-based ranks, best score first, ties broken by id (a stable key)."""
    order = sorted(scores, key=lambda i: (-scores[i], i))
    return {memory_id: n for n, memory_id in enumerate(order, start=1)}


def fuse(
    vector_hits: Mapping[UUID, float],
    keyword_hits: Mapping[UUID, float],
    info: Mapping[UUID, CandidateInfo],
    *,
    mode: Mode,
    weights: Weights,
    distance: Distance,
    now: datetime,
    half_life_hours: float,
    decay_enabled: bool = True,
    top_k: int,
    fusion: Fusion = "relative",
    candidates: Sequence[UUID] | None = None,
) -> list[ScoredHit]:
    """Score and order candidates; candidates missing from `info` are dropped.

    `vector_hits` maps ids to raw engine similarities, `keyword_hits` to BM25
    scores: for hybrid recall every candidate's scores on both sides (a
    candidate missing from one has no score there). `candidates` are the ids
    to rank (default: those of the mode's side(s)). Ties are broken by id so
    the order is deterministic.
    """
    if top_k < 1:
        raise ValueError("top_k must be at least 1")
    best_rank = max((r for r in keyword_hits.values() if r > 0), default=0.0)
    if candidates is not None:
        ids = set(candidates)
    elif mode == "vector":
        ids = set(vector_hits)
    elif mode == "keyword":
        ids = set(keyword_hits)
    else:
        ids = set(vector_hits) | set(keyword_hits)
    # Hybrid with only one engine answering (no query text, or no vector) must
    # not halve every score: the missing side gets no share of relevance.
    alpha = weights.alpha
    if mode == "hybrid" and not keyword_hits:
        alpha = 1.0
    elif mode == "hybrid" and not vector_hits:
        alpha = 0.0
    vector_rank = ranks({i: s for i, s in vector_hits.items() if i in ids})
    keyword_rank = ranks({i: s for i, s in keyword_hits.items() if i in ids and s > 0})
    relevance_share = 1.0 - weights.recency - weights.importance
    now_seconds = now.timestamp()
    # Score every candidate as a plain tuple (-score, id, components...) and
    # build hits for the top_k only.
    # Ties are broken by id; UUIDs compare by their 128-bit value, which is the
    # order of their text form and of PostgreSQL's uuid type.
    scored: list[tuple[float, UUID, float | None, float | None, float, float, float]] = []
    for memory_id in ids:
        meta = info.get(memory_id)
        if meta is None:
            continue
        similarity = vector_hits.get(memory_id)
        vec = None if similarity is None else normalise_similarity(similarity, distance)
        rank = keyword_hits.get(memory_id)
        kw = None if rank is None else (rank / best_rank if best_rank > 0 else 0.0)
        if mode == "vector":
            relevance = vec or 0.0
        elif mode == "keyword":
            relevance = kw or 0.0
        elif fusion == "rrf":
            relevance = 0.0
            if memory_id in vector_rank:
                relevance += alpha * (RRF_K + 1) / (RRF_K + vector_rank[memory_id])
            if memory_id in keyword_rank:
                relevance += (1.0 - alpha) * (RRF_K + 1) / (RRF_K + keyword_rank[memory_id])
        else:
            relevance = alpha * (vec or 0.0) + (1.0 - alpha) * (kw or 0.0)
        recency = decay_factor(hours_before(now_seconds, meta.occurred_at), half_life_hours)
        importance = effective_importance(
            meta.importance,
            hours_before(now_seconds, meta.last_accessed_at),
            half_life_hours,
            decay_enabled,
        )
        score = (
            relevance_share * relevance
            + weights.recency * recency
            + weights.importance * importance
        )
        scored.append((-score, memory_id, vec, kw, relevance, recency, importance))
    return [
        ScoredHit(
            memory_id=memory_id,
            score=-negative_score,
            vector=vec,
            keyword=kw,
            relevance=relevance,
            recency=recency,
            importance=importance,
        )
        for negative_score, memory_id, vec, kw, relevance, recency, importance in heapq.nsmallest(
            top_k, scored
        )
    ]
