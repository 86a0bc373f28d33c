"""Recall: hybrid / vector / keyword, filters inside the engines, score components."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from memory_runtime.api import create_app
from tests.integration.runtime.conftest import (
    ADMIN_TOKEN,
    HashingTestEmbedder,
    Tenant,
    bearer,
    tenant_settings,
)

pytestmark = pytest.mark.integration

TEXTS = {
    "1": ("the quick brown fox jumps", "u1", "episodic", ["animal"]),
    "2": ("a lazy brown dog sleeps", "u1", "semantic", ["animal", "pet"]),
    "3": ("stock markets fell sharply today", "u2", "episodic", ["finance"]),
    "4": ("the fox and the dog are friends", "u2", "semantic", ["animal"]),
}


@pytest.fixture
def seeded(client: TestClient) -> TestClient:
    for coord, (text, user, kind, tags) in TEXTS.items():
        r = client.post(
            "/memories",
            json={
                "coordinate": [float(coord)],
                "payload": {"text": text},
                "user_id": user,
                "memory_type": kind,
                "tags": tags,
                "metadata": {"source": "news" if coord == "3" else "story", "n": int(coord)},
            },
        )
        assert r.status_code == 201
    return client


def coords(response) -> list[float]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    return [h["memory"]["coordinate"][0] for h in response.json()["hits"]]


def test_hybrid_returns_components(seeded: TestClient):
    r = seeded.post("/memories/search", json={"query": "brown fox", "top_k": 4})
    hits = r.json()["hits"]
    assert r.json()["mode"] == "hybrid"
    top = hits[0]
    assert top["memory"]["coordinate"] == [1.0]  # both words match
    c = top["components"]
    assert c["keyword"] == pytest.approx(1.0)
    assert 0 < c["vector"] <= 1
    assert top["score"] == pytest.approx(0.5 * c["vector"] + 0.5 * c["keyword"])
    assert c["relevance"] == pytest.approx(top["score"])
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_keyword_mode_uses_full_text_only(seeded: TestClient):
    r = seeded.get("/memories/search", params={"query": "markets", "mode": "keyword"})
    assert coords(r) == [3.0]
    hit = r.json()["hits"][0]
    assert hit["components"]["vector"] is None
    # stemming: "friend" finds "friends"
    r = seeded.get("/memories/search", params={"query": "friend", "mode": "keyword"})
    assert coords(r) == [4.0]


def test_vector_mode_with_server_embedding(seeded: TestClient):
    r = seeded.get(
        "/memories/search", params={"query": "stock markets", "mode": "vector", "top_k": 1}
    )
    assert coords(r) == [3.0]
    assert r.json()["hits"][0]["components"]["keyword"] is None


def test_filters_apply_inside_the_engines(seeded: TestClient):
    # top_k=1 with a filter must still find the filtered memory, even though
    # unfiltered memories are closer: the filter runs in the engine, not after.
    for mode in ("vector", "keyword", "hybrid"):
        r = seeded.post(
            "/memories/search",
            json={"query": "fox dog brown", "mode": mode, "top_k": 1, "user_id": "u2"},
        )
        assert coords(r) == [4.0], mode
    cases = [
        ({"memory_type": "semantic"}, [2.0, 4.0]),
        ({"tags": ["animal", "pet"]}, [2.0]),
        ({"metadata": {"source": "news"}}, [3.0]),
        ({"metadata": {"n": 2}}, [2.0]),
        ({"coordinate_min": [1.5], "coordinate_max": [3.5]}, [2.0, 3.0]),
        ({"created_to": "2000-01-01T00:00:00Z"}, []),
    ]
    for flt, expected in cases:
        r = seeded.post(
            "/memories/search", json={"query": "fox", "mode": "vector", "top_k": 10, **flt}
        )
        assert sorted(coords(r)) == expected, flt


def test_get_search_parses_filters(seeded: TestClient):
    r = seeded.get(
        "/memories/search",
        params=[
            ("query", "fox"),
            ("mode", "vector"),
            ("tags", "animal"),
            ("tags", "pet"),
            ("metadata", '{"source": "story"}'),
        ],
    )
    assert coords(r) == [2.0]
    bad = seeded.get("/memories/search", params={"query": "fox", "metadata": "[1]"})
    assert bad.status_code == 422
    assert seeded.get("/memories/search", params={"query": "x", "top_k": 500}).status_code == 422
    assert seeded.get("/memories/search").status_code == 422


def test_recency_and_importance_weights(seeded: TestClient):
    seeded.patch("/memories/2", json={"importance": 1.0})
    seeded.patch("/memories/4", json={"importance": 0.0})
    r = seeded.post(
        "/memories/search",
        json={"query": "dog", "mode": "keyword", "importance_weight": 1.0, "top_k": 2},
    )
    hits = r.json()["hits"]
    assert coords(r) == [2.0, 4.0]
    assert hits[0]["score"] == pytest.approx(hits[0]["components"]["importance"])
    assert hits[0]["components"]["importance"] == pytest.approx(1.0, abs=1e-3)
    assert hits[1]["score"] == pytest.approx(0.0)
    r = seeded.post(
        "/memories/search",
        json={"query": "dog", "mode": "keyword", "recency_weight": 0.5, "importance_weight": 0.6},
    )
    assert r.status_code == 422


def test_recall_counts_access(seeded: TestClient):
    seeded.get("/memories/search", params={"query": "markets", "mode": "keyword"})
    assert seeded.get("/memories/3").json()["access_count"] == 2


@pytest.fixture
def client_vectors_only(tenant: Tenant) -> Iterator[TestClient]:
    """A namespace with embedding provider `none`: clients send vectors."""
    app = create_app(tenant_settings(tenant, vector_dimensions=3))
    with TestClient(app, raise_server_exceptions=False) as c:
        c.headers.update(bearer(ADMIN_TOKEN))
        yield c


def test_client_vectors_with_none_provider(client_vectors_only: TestClient):
    c = client_vectors_only
    c.post("/memories", json={"coordinate": [1], "payload": {"text": "x"}, "vector": [1, 0, 0]})
    c.post("/memories", json={"coordinate": [2], "payload": {"text": "y"}, "vector": [0, 1, 0]})
    r = c.post("/memories", json={"coordinate": [3], "payload": {"text": "no vector"}})
    assert r.json()["has_vector"] is False
    assert r.json()["index_pending"] is False
    hits = c.post("/memories/search", json={"vector": [0.1, 1, 0], "mode": "vector"}).json()["hits"]
    assert [h["memory"]["coordinate"] for h in hits] == [[2.0], [1.0]]
    assert hits[0]["components"]["vector"] > hits[1]["components"]["vector"]
    wrong = c.post("/memories", json={"payload": {}, "vector": [1, 2]})
    assert wrong.status_code == 422
    assert "3" in wrong.json()["detail"]
    no_vec = c.post("/memories/search", json={"query": "x", "mode": "vector"})
    assert no_vec.status_code == 422
    # hybrid without a vector falls back to keyword search
    assert [
        h["memory"]["coordinate"]
        for h in c.post("/memories/search", json={"query": "vector"}).json()["hits"]
    ] == [[3.0]]


def test_embedder_called_in_batches(tenant: Tenant):
    embedder = HashingTestEmbedder()
    app = create_app(tenant_settings(tenant, embedding_provider="local"), embedder=embedder)
    with TestClient(app) as c:
        c.headers.update(bearer(ADMIN_TOKEN))
        body = {"memories": [{"payload": {"text": f"t{i}"}} for i in range(5)]}
        assert c.post("/memories/batch", json=body).status_code == 200
    assert embedder.calls == 1
