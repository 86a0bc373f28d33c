"""Recall: hybrid / vector / keyword, filters inside the engines, score components."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from memory_runtime.api import create_app
from memory_runtime.models import SearchIn
from memory_runtime.service import InvalidInputError, MemoryService
from memory_runtime.storage.postgres import AccessLog
from tests.integration.runtime.conftest import (
    ADMIN_TOKEN,
    DIMENSIONS,
    HashingTestEmbedder,
    Tenant,
    bearer,
    closed_port,
    tenant_settings,
)
from tests.integration.runtime.helpers import admin_exec, admin_rows

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
    body = {"query": "brown fox", "top_k": 4, "fusion": "relative"}
    r = seeded.post("/memories/search", json=body)
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
    # both engines answered: nothing degraded, and no header says otherwise
    assert r.json()["degraded"] == []
    assert "recall-degraded" not in r.headers


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


def access(tenant: Tenant, coordinate: float) -> tuple[int, datetime]:
    [row] = admin_rows(
        tenant,
        "SELECT access_count, last_accessed_at FROM memories WHERE coordinate = %s::float8[]",
        [coordinate],
    )
    return int(row["access_count"]), row["last_accessed_at"]


def test_recall_counts_access_off_the_request_path(seeded: TestClient, tenant: Tenant):
    svc: MemoryService = seeded.app.state.runtime.service  # type: ignore[attr-defined]
    svc.accesses.close()  # stop the background writer: this test decides when to write
    before, accessed_before = access(tenant, 3.0)
    for _ in range(3):
        r = seeded.get("/memories/search", params={"query": "markets", "mode": "keyword"})
        assert coords(r) == [3.0]
    # the search wrote nothing itself...
    assert access(tenant, 3.0) == (before, accessed_before)
    assert svc.accesses.pending() == 1
    # ...its counts go in one batched write, all three of them
    assert svc.accesses.flush() == 1
    count, accessed = access(tenant, 3.0)
    assert count == before + 3
    assert accessed > accessed_before
    assert svc.accesses.pending() == 0
    # a GET still counts at once and shows it
    assert seeded.get("/memories/3").json()["access_count"] == before + 4


def test_clean_shutdown_writes_pending_access_counts(tenant: Tenant):
    settings = tenant_settings(tenant, embedding_provider="local")
    app = create_app(settings, embedder=HashingTestEmbedder())
    with TestClient(app) as c:
        c.headers.update(bearer(ADMIN_TOKEN))
        c.post("/memories", json={"coordinate": [1], "payload": {"text": "tea with milk"}})
        # stop the background writer: no write before exit
        app.state.runtime.service.accesses.close()
        assert coords(c.post("/memories/search", json={"query": "tea"})) == [1.0]
        assert access(tenant, 1.0)[0] == 0
    assert access(tenant, 1.0)[0] == 1  # written by the lifespan shutdown


def test_failed_access_write_keeps_the_counts(seeded: TestClient, tenant: Tenant):
    svc: MemoryService = seeded.app.state.runtime.service  # type: ignore[attr-defined]
    log = AccessLog(svc.db)  # not started: this test decides when to write
    memory_id = seeded.get("/memories/3").json()["id"]
    before = access(tenant, 3.0)[0]
    admin_exec(tenant, f"REVOKE UPDATE ON memories FROM {tenant.role}")
    log.record([uuid.UUID(memory_id)])
    assert log.flush() == 0  # refused by the database: nothing written, nothing lost
    assert log.pending() == 1
    log.record([uuid.UUID(memory_id)])
    admin_exec(tenant, f"GRANT UPDATE ON memories TO {tenant.role}")
    assert log.flush() == 1
    assert access(tenant, 3.0)[0] == before + 2


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


# (filter, where the detail points, what it says): each one must be refused, in
# every mode, instead of one engine applying it and the other dropping it.
BAD_FILTERS = [
    ({"metadata": {"source": {"kind": "news"}}}, "metadata.source", "not an object"),
    ({"metadata": {"source": ["news"]}}, "metadata.source", "not a list"),
    ({"metadata": {"source": None}}, "metadata.source", "not null"),
    ({"metadata": {"n": 2**64}}, "metadata.n", "64 bits"),
    # a key that is no plain name is not echoed (error details never carry input)
    ({"metadata": {"a.b": 1}}, "metadata.…", "no '.'"),
    ({"coordinate_min": [0]}, "", "coordinate_min and coordinate_max go together"),
    (
        {"created_from": "2030-01-01T00:00:00Z", "created_to": "2020-01-01T00:00:00Z"},
        "",
        "created_from is after created_to",
    ),
]


@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
def test_bad_filters_are_422_naming_the_problem(seeded: TestClient, mode: str):
    for flt, where, message in BAD_FILTERS:
        r = seeded.post("/memories/search", json={"query": "fox", "mode": mode, **flt})
        assert r.status_code == 422, (flt, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        detail = r.json()["detail"]
        assert detail.startswith(where), (flt, detail)
        assert message in detail, (flt, detail)
        assert "Value error" not in detail
    # JSON allows NaN through Python's parser: a non-finite value can never match
    nan = seeded.post(
        "/memories/search",
        content=b'{"query": "fox", "mode": "%s", "metadata": {"n": NaN}}' % mode.encode(),
        headers={"content-type": "application/json"},
    )
    assert nan.status_code == 422, nan.text
    assert nan.json()["detail"] == "metadata.n: metadata filter numbers must be finite"


def test_bad_filters_in_get_and_compat_recall_are_422(seeded: TestClient):
    r = seeded.get("/memories/search", params={"query": "fox", "metadata": '{"n": {"gt": 1}}'})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("metadata.n: ")
    assert "not an object" in r.json()["detail"]
    r = seeded.post("/recall", json={"query": "fox", "filters": {"source": ["news", "story"]}})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("metadata.source: ")
    assert "not a list" in r.json()["detail"]
    # scalar compat filters still work
    r = seeded.post("/recall", json={"query": "fox", "filters": {"source": "news"}})
    assert r.status_code == 200
    assert [m["coordinate"] for m in r.json()["matches"]] == [[3.0]]


def test_a_filter_the_index_refuses_is_invalid_input_not_an_outage(seeded: TestClient):
    # Past the request models (a caller of the service): the index refuses the
    # filter; recall must say so, not answer 503 or silently drop the vector side.
    svc: MemoryService = seeded.app.state.runtime.service  # type: ignore[attr-defined]
    for mode in ("hybrid", "vector"):
        req = SearchIn.model_construct(
            query="fox",
            mode=mode,
            created_from=datetime(2030, 1, 1, tzinfo=UTC),
            created_to=datetime(2020, 1, 1, tzinfo=UTC),
        )
        with pytest.raises(InvalidInputError, match="created_from is after created_to"):
            svc.recall(req)


def test_hybrid_with_the_index_down_answers_from_full_text_and_says_so(qdrant_down: TestClient):
    c = qdrant_down
    for coord, text in ((1, "brown fox"), (2, "lazy dog")):
        stored = c.post("/memories", json={"coordinate": [coord], "payload": {"text": text}})
        assert stored.status_code == 201
    r = c.post("/memories/search", json={"query": "fox"})
    assert coords(r) == [1.0]
    assert r.json()["degraded"] == ["vector"]
    assert r.headers["recall-degraded"] == "vector"
    assert r.json()["hits"][0]["components"]["vector"] is None
    r = c.post("/recall", json={"query": "fox"})
    assert r.status_code == 200
    assert r.headers["recall-degraded"] == "vector"
    # vector mode has nothing to fall back to
    assert c.post("/memories/search", json={"query": "fox", "mode": "vector"}).status_code == 503
    registry = c.app.state.runtime.metrics.registry  # type: ignore[attr-defined]
    assert registry.get_sample_value("memory_recall_degraded_total", {"part": "vector"}) == 2


@pytest.fixture
def embedder_down(tenant: Tenant) -> Iterator[TestClient]:
    """Provider `http` whose endpoint refuses connections."""
    settings = tenant_settings(
        tenant,
        embedding_provider="http",
        embedding_model="m",
        embedding_url=f"http://127.0.0.1:{closed_port()}/v1",
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        c.headers.update(bearer(ADMIN_TOKEN))
        yield c


def test_hybrid_with_the_embedder_down_says_so(embedder_down: TestClient):
    c = embedder_down
    stored = c.post("/memories", json={"coordinate": [1], "payload": {"text": "brown fox"}})
    assert stored.status_code == 201
    assert stored.json()["has_vector"] is False
    r = c.get("/memories/search", params={"query": "fox"})
    assert coords(r) == [1.0]
    assert r.json()["degraded"] == ["embedding"]
    assert r.headers["recall-degraded"] == "embedding"
    assert c.post("/memories/search", json={"query": "fox", "mode": "vector"}).status_code == 503


def test_repeated_query_texts_are_embedded_once(seeded: TestClient, embedder: HashingTestEmbedder):
    svc: MemoryService = seeded.app.state.runtime.service  # type: ignore[attr-defined]
    svc.query_vectors.maxsize = 1

    def search(query: str) -> list[float]:
        return coords(seeded.post("/memories/search", json={"query": query, "mode": "vector"}))

    calls = embedder.calls
    first = search("brown fox")
    assert embedder.calls == calls + 1
    assert search("brown fox") == first  # same answer, from the cached vector
    assert embedder.calls == calls + 1
    search("stock markets")  # a new text: embedded, and it evicts "brown fox" (maxsize 1)
    assert embedder.calls == calls + 2
    assert len(svc.query_vectors) == 1
    assert search("brown fox") == first
    assert embedder.calls == calls + 3


def test_hybrid_vector_hits_get_their_keyword_share_beyond_the_sample(client: TestClient):
    # 250 memories share "alpha", more than the keyword side samples (200 for
    # top_k 10). The best vector match is stored last, outside that sample; the
    # answer must still carry its real keyword rank, not "not a keyword hit".
    dims = HashingTestEmbedder(dimensions=DIMENSIONS)

    def dim(word: str) -> int:
        return dims.embed([word])[0].index(1.0)

    taken = {dim("alpha"), dim("omega")}  # fillers must not share them: vector ties
    words = [w for w in (f"filler{i}" for i in range(1000)) if dim(w) not in taken][:250]
    fillers = [{"coordinate": [i], "payload": {"text": f"alpha {w}"}} for i, w in enumerate(words)]
    assert client.post("/memories/batch", json={"memories": fillers}).status_code == 200
    last = {"coordinate": [999], "payload": {"text": "alpha"}}
    assert client.post("/memories", json=last).status_code == 201
    r = client.post("/memories/search", json={"query": "alpha omega", "top_k": 3})
    top = r.json()["hits"][0]
    assert top["memory"]["coordinate"] == [999.0]
    assert top["components"]["vector"] == pytest.approx(1 / 2**0.5, abs=1e-6)
    assert top["components"]["keyword"] == pytest.approx(1.0)  # the shortest: best BM25
