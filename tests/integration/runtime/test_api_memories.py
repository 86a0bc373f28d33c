"""Records: store/upsert, batch, fetch, patch, delete everywhere, bulk forget, range."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.integration.runtime.conftest import Tenant
from tests.integration.runtime.helpers import admin_rows, outbox, vector_ids

pytestmark = pytest.mark.integration


def store(client: TestClient, **body: object) -> dict:
    response = client.post("/memories", json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


def test_store_assigns_id_text_and_indexes_the_vector(client: TestClient, tenant: Tenant):
    r = client.post("/memories", json={"payload": {"content": "buy milk"}, "tags": ["todo"]})
    assert r.status_code == 201
    m = r.json()
    assert m["text"] == "buy milk"
    assert m["version"] == 1
    assert len(m["coordinate"]) == 2  # assigned by the server
    assert m["has_vector"] is True
    assert m["index_pending"] is False
    assert m["id"] in vector_ids(tenant)
    [event] = outbox(tenant)
    assert event["event_type"] == "memory.created"
    assert str(event["memory_id"]) == m["id"]
    assert event["version"] == 1
    assert event["record"]["text"] == "buy milk"
    assert event["sent_at"] is None


def test_same_coordinate_in_any_spelling_is_an_upsert(client: TestClient, tenant: Tenant):
    first = client.post("/memories", json={"coordinate": "1,2", "payload": {"text": "one"}})
    second = client.post("/memories", json={"coordinate": [1.0, 2.0], "payload": {"text": "two"}})
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert second.json()["version"] == 2
    assert second.json()["created_at"] == first.json()["created_at"]
    assert client.get("/memories/1.0,2.0").json()["text"] == "two"
    assert admin_rows(tenant, "SELECT count(*) AS n FROM memories")[0]["n"] == 1
    assert [e["event_type"] for e in outbox(tenant)] == ["memory.created", "memory.updated"]


def test_batch_is_all_or_nothing(client: TestClient, tenant: Tenant):
    ok = client.post(
        "/memories/batch",
        json={"memories": [{"coordinate": [1], "payload": {"text": "a"}}, {"payload": {"b": 2}}]},
    )
    assert ok.status_code == 200
    assert [m["text"] for m in ok.json()["memories"]] == ["a", '{"b":2}']
    bad = client.post(
        "/memories/batch",
        json={
            "memories": [{"coordinate": [5], "payload": {}}, {"coordinate": [6], "importance": 9}]
        },
    )
    assert bad.status_code == 422
    dup = client.post(
        "/memories/batch",
        json={
            "memories": [{"coordinate": "7", "payload": {}}, {"coordinate": [7.0], "payload": {}}]
        },
    )
    assert dup.status_code == 422
    assert "share a coordinate" in dup.json()["detail"]
    assert admin_rows(tenant, "SELECT count(*) AS n FROM memories")[0]["n"] == 2
    assert client.get("/memories/5").status_code == 404


def test_get_counts_access_and_finds_by_id_or_coordinate(client: TestClient):
    m = store(client, coordinate=[0.5, -1], payload={"text": "x"})
    by_coord = client.get("/memories/0.5,-1.0")
    by_id = client.get(f"/memories/{m['id']}")
    assert by_coord.json()["id"] == m["id"]
    assert by_id.json()["access_count"] == 2
    assert by_id.json()["last_accessed_at"] >= m["last_accessed_at"]
    assert "vector" not in by_id.json()
    with_vector = client.get(f"/memories/{m['id']}", params={"include_vector": "true"}).json()
    assert len(with_vector["vector"]) == 16
    assert client.get("/memories/9,9").status_code == 404
    missing = client.get("/memories/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert client.get("/memories/1,abc").status_code == 422


def test_patch_changes_fields_bumps_version_and_reembeds(client: TestClient, tenant: Tenant):
    m = store(client, coordinate=[3], payload={"text": "red apple"}, tags=["fruit"])
    before = client.get(f"/memories/{m['id']}", params={"include_vector": "true"}).json()["vector"]
    r = client.patch(
        "/memories/3",
        json={
            "payload": {"text": "green car"},
            "importance": 0.9,
            "tags": ["car"],
            "if_version": 1,
        },
    )
    assert r.status_code == 200, r.text
    after = r.json()
    assert after["version"] == 2
    assert after["text"] == "green car"
    assert after["importance"] == 0.9
    assert after["tags"] == ["car"]
    assert after["index_pending"] is False
    vec = client.get(f"/memories/{m['id']}", params={"include_vector": "true"}).json()["vector"]
    assert vec != before
    tags = admin_rows(tenant, "SELECT tags FROM memory_vectors WHERE memory_id = %s", m["id"])
    assert tags[0]["tags"] == ["car"]  # the index's filter copy follows the row
    stale = client.patch("/memories/3", json={"importance": 0.1, "if_version": 1})
    assert stale.status_code == 409
    assert client.get("/memories/3").json()["importance"] == 0.9
    assert client.patch("/memories/3", json={}).status_code == 422
    assert client.patch("/memories/4", json={"importance": 0.2}).status_code == 404
    assert outbox(tenant)[-1]["event_type"] == "memory.updated"


def test_delete_removes_row_vector_links_and_emits_events(client: TestClient, tenant: Tenant):
    a = store(client, coordinate=[1], payload={"text": "a"})
    b = store(client, coordinate=[2], payload={"text": "b"})
    assert client.post("/graph/link", json={"from": "1", "to": "2"}).status_code == 201
    r = client.delete("/memories/1")
    assert r.status_code == 200
    assert r.json()["id"] == a["id"]
    assert client.get("/memories/1").status_code == 404
    assert a["id"] not in vector_ids(tenant)
    assert b["id"] in vector_ids(tenant)
    assert admin_rows(tenant, "SELECT count(*) AS n FROM links")[0]["n"] == 0
    assert admin_rows(tenant, "SELECT count(*) AS n FROM vector_tombstones")[0]["n"] == 0
    events = [(e["event_type"], e["reason"]) for e in outbox(tenant)][-2:]
    assert events == [("link.deleted", "deleted"), ("memory.deleted", "deleted")]
    assert outbox(tenant)[-1]["record"] is None
    assert client.delete("/memories/1").status_code == 404


def test_bulk_forget_by_scope(client: TestClient, tenant: Tenant):
    for i, user in enumerate(["u1", "u1", "u2"]):
        store(client, coordinate=[i], payload={"text": f"m{i}"}, user_id=user)
    assert client.delete("/memories").status_code == 422  # no filter: refuse to wipe everything
    r = client.delete("/memories", params={"user_id": "u1"})
    assert r.status_code == 200
    assert r.json() == {"deleted": 2}
    left = admin_rows(tenant, "SELECT user_id FROM memories")
    assert [row["user_id"] for row in left] == ["u2"]
    assert len(vector_ids(tenant)) == 1
    reasons = [e["reason"] for e in outbox(tenant) if e["event_type"] == "memory.deleted"]
    assert reasons == ["forget", "forget"]


def test_range_query_is_a_bounding_box(client: TestClient):
    for coord in ([0, 0], [1, 1], [2, 2], [1, 5], [1]):
        store(client, coordinate=coord, payload={"text": str(coord)})
    r = client.get("/memories/range", params={"min": "0,0", "max": "1.5,1.5"})
    assert r.status_code == 200
    assert [m["coordinate"] for m in r.json()["memories"]] == [[0.0, 0.0], [1.0, 1.0]]
    one_dim = client.get("/memories/range", params={"min": "1", "max": "1"}).json()["memories"]
    assert sorted(m["coordinate"] for m in one_dim) == [[1.0], [1.0, 1.0], [1.0, 5.0]]
    assert client.get("/memories/range", params={"min": "2,2", "max": "1,1"}).status_code == 422
    assert client.get("/memories/range", params={"min": "0"}).status_code == 422


def test_expired_memories_are_invisible(client: TestClient):
    store(client, coordinate=[1], payload={"text": "old news"}, expires_at="2000-01-01T00:00:00Z")
    store(client, coordinate=[2], payload={"text": "fresh news"})
    assert client.get("/memories/1").status_code == 404
    hits = client.get("/memories/search", params={"query": "news"}).json()["hits"]
    assert [h["memory"]["coordinate"] for h in hits] == [[2.0]]
