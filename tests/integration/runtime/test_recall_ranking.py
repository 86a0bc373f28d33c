"""Hybrid recall over many memories: exact keyword side, both scores for every
candidate, deterministic answers, a pool independent of top_k, event time.

Run on both vector backends (pgvector, Qdrant's local engine)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.integration.runtime.conftest import (
    DIMENSIONS,
    Tenant,
)
from tests.integration.runtime.helpers import admin_exec

pytestmark = pytest.mark.integration

FILLERS = 600  # memories naming the same speaker: more than the candidate pool


@pytest.fixture
def api(backend_api: TestClient) -> TestClient:
    return backend_api


def store(api: TestClient, memories: list[dict[str, Any]]) -> None:
    for i in range(0, len(memories), 200):
        r = api.post("/memories/batch", json={"memories": memories[i : i + 200]})
        assert r.status_code == 200, r.text


def random_vector(rng: random.Random) -> list[float]:
    vec = [rng.gauss(0, 1) for _ in range(DIMENSIONS)]
    norm = math.sqrt(sum(v * v for v in vec))
    return [v / norm for v in vec]


@pytest.fixture
def conversation(api: TestClient) -> TestClient:
    """FILLERS turns by 'Caroline' about this and that, then the one that matters.

    The fillers carry vectors of their own (distinct, seeded): the test
    embedder's 16 hashed dimensions would give hundreds of them the very same
    similarity, and an engine may return any of equally near neighbours."""
    rng = random.Random(13)
    topics = ["lunch", "weather", "traffic", "music", "garden", "movies", "coffee", "books"]
    store(
        api,
        [
            {
                "coordinate": [float(i)],
                "payload": {"text": f"Caroline said something about {topics[i % 8]} number {i}"},
                "vector": random_vector(rng),
            }
            for i in range(FILLERS)
        ],
    )
    store(
        api,
        [
            {
                "coordinate": [10_000.0],
                "payload": {"text": "Caroline adopted a greyhound called Pixel last spring"},
            }
        ],
    )
    return api


def search(api: TestClient, **body: Any) -> list[dict[str, Any]]:
    r = api.post("/memories/search", json=body)
    assert r.status_code == 200, r.text
    return r.json()["hits"]


def answer(hits: list[dict[str, Any]]) -> list[tuple[float, float]]:
    # 6 places: Qdrant's local engine reports float32 similarities whose last
    # bits vary from call to call (seen: 0.756587884859 vs 0.756587910937)
    return [(h["memory"]["coordinate"][0], round(h["score"], 6)) for h in hits]


def test_keyword_recall_finds_the_memory_written_last(conversation: TestClient) -> None:
    hits = search(conversation, query="what dog did Caroline adopt? greyhound", mode="keyword")
    assert hits[0]["memory"]["coordinate"] == [10_000.0]


def test_hybrid_finds_it_too(conversation: TestClient) -> None:
    hits = search(conversation, query="Caroline greyhound", top_k=3)
    assert hits[0]["memory"]["coordinate"] == [10_000.0]
    assert hits[0]["components"]["keyword"] == pytest.approx(1.0)
    assert hits[0]["components"]["vector"] is not None


def test_repeated_searches_give_identical_answers(conversation: TestClient, tenant: Tenant) -> None:
    queries = ["Caroline music", "Caroline said coffee number", "garden weather"]
    first = {q: answer(search(conversation, query=q, top_k=20)) for q in queries}
    svc = conversation.app.state.runtime.service  # type: ignore[attr-defined]
    for round_ in range(3):
        for q in ["Caroline", "books traffic", "Caroline lunch", *queries]:
            search(conversation, query=q, top_k=50)  # counts accesses: rows move on disk
        svc.accesses.flush()
        # writes in between, leaving the same data: new memories stored and
        # deleted again, another one edited and edited back
        extra = [20_000.0 + round_ * 10 + i for i in range(5)]
        store(conversation, [{"coordinate": [c], "payload": {"text": f"zzz {c}"}} for c in extra])
        for c in extra:
            assert conversation.delete(f"/memories/{c:g}").status_code == 200
        for importance in (0.9, 0.5):
            r = conversation.patch("/memories/7", json={"importance": importance})
            assert r.status_code == 200
        admin_exec(tenant, "VACUUM memories")
        for q in queries:
            assert answer(search(conversation, query=q, top_k=20)) == first[q], (round_, q)


def test_top_k_10_is_the_first_10_of_top_k_100(conversation: TestClient) -> None:
    for query in ["Caroline music number", "Caroline adopted", "coffee books"]:
        for mode in ("hybrid", "keyword", "vector"):
            ten = answer(search(conversation, query=query, top_k=10, mode=mode))
            hundred = answer(search(conversation, query=query, top_k=100, mode=mode))
            assert ten == hundred[:10], (query, mode)


def at_cosine(c: float, rng: random.Random) -> list[float]:
    """A unit vector at cosine `c` to the first axis (the query vector below)."""
    u = [0.0] + [rng.gauss(0, 1) for _ in range(DIMENSIONS - 1)]
    norm = math.sqrt(sum(x * x for x in u))
    return [c] + [math.sqrt(1 - c * c) * x / norm for x in u[1:]]


def test_a_keyword_only_match_gets_its_vector_score_and_wins(api: TestClient) -> None:
    # 200 memories are nearer the query vector than the answer, so the vector
    # side's pool never holds it; only the keyword side finds it. Fused with its
    # real similarity (0.85) it beats a memory both sides found with one word.
    rng = random.Random(5)
    fillers = [
        {
            "coordinate": [float(i)],
            "payload": {"text": f"filler {i}"},
            "vector": at_cosine(0.9, rng),
        }
        for i in range(200)
    ]
    store(api, fillers)
    store(
        api,
        [
            {
                "coordinate": [500.0],
                "payload": {"text": "a quokka at sunset"},
                "vector": at_cosine(0.85, rng),
            },
            {"coordinate": [501.0], "payload": {"text": "sunset"}, "vector": at_cosine(0.95, rng)},
        ],
    )
    query = {"query": "quokka sunset", "vector": [1.0] + [0.0] * (DIMENSIONS - 1), "top_k": 3}
    hits = search(api, **query, fusion="relative")
    assert [h["memory"]["coordinate"][0] for h in hits[:2]] == [500.0, 501.0]
    quokka = hits[0]["components"]
    assert quokka["vector"] == pytest.approx(0.85, abs=1e-4)  # scored on both sides
    assert quokka["keyword"] == pytest.approx(1.0)
    assert hits[0]["score"] == pytest.approx(0.5 * 0.85 + 0.5 * 1.0, abs=1e-4)
    # rank fusion: it has the best keyword rank and a vector rank behind the pool
    rrf = search(api, **query, fusion="rrf")
    assert rrf[0]["memory"]["coordinate"] == [501.0]  # best on both sides
    assert 500.0 in [h["memory"]["coordinate"][0] for h in rrf]


def test_event_time_drives_recency_and_filters(api: TestClient) -> None:
    now = datetime.now(UTC)
    old = (now - timedelta(days=365)).isoformat()
    store(
        api,
        [
            {"coordinate": [1.0], "payload": {"text": "met Anna at the lake"}, "occurred_at": old},
            {"coordinate": [2.0], "payload": {"text": "met Anna at the lake again"}},
        ],
    )
    hits = search(api, query="Anna lake", recency_weight=1.0)
    assert [h["memory"]["coordinate"][0] for h in hits] == [2.0, 1.0]
    assert hits[0]["memory"]["occurred_at"] >= hits[0]["memory"]["created_at"][:19]
    assert hits[1]["components"]["recency"] < 0.01  # a year old, half-life 30 days
    window = {"occurred_to": (now - timedelta(days=30)).isoformat()}
    for mode in ("hybrid", "keyword", "vector"):
        hits = search(api, query="Anna lake", mode=mode, **window)
        assert [h["memory"]["coordinate"][0] for h in hits] == [1.0], mode
    bad = api.post(
        "/memories/search",
        json={"query": "x", "occurred_from": now.isoformat(), "occurred_to": old},
    )
    assert bad.status_code == 422


def test_event_time_survives_export_and_import(api: TestClient) -> None:
    old = "2020-05-17T08:30:00+00:00"
    store(api, [{"coordinate": [3.0], "payload": {"text": "a story"}, "occurred_at": old}])
    exported = api.get("/export").content
    assert b'"occurred_at":"2020-05-17T08:30:00Z"' in exported
    assert api.delete("/memories/3").status_code == 200
    r = api.post("/import", content=exported, headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    assert api.get("/memories/3").json()["occurred_at"] == "2020-05-17T08:30:00Z"
