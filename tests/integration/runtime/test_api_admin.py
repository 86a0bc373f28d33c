"""Export / import (idempotent), stats, health, OpenAPI, SomaFractalMemory aliases."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from memory_runtime.api import create_app
from tests.integration.runtime.conftest import (
    ADMIN_TOKEN,
    READ_TOKEN,
    HashingTestEmbedder,
    Tenant,
    bearer,
    drop_tenant,
    make_tenant,
    tenant_settings,
)
from tests.integration.runtime.helpers import admin_rows, outbox, vector_ids

pytestmark = pytest.mark.integration


def seed(client: TestClient) -> None:
    for n in range(1, 4):
        r = client.post(
            "/memories",
            json={"coordinate": [n, n], "payload": {"text": f"memory {n}"}, "tags": [f"t{n}"]},
        )
        assert r.status_code == 201
    client.post("/graph/link", json={"from": "1,1", "to": "2,2", "type": "next", "strength": 0.4})


def test_export_import_round_trip_is_idempotent(client: TestClient, pg_database: str):
    seed(client)
    exported = client.get("/export")
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert [line["kind"] for line in lines] == ["memory"] * 3 + ["link"]
    assert len(lines[0]["record"]["vector"]) == 16  # lossless: vectors travel too

    other = make_tenant(pg_database, "beta")
    try:
        app = create_app(
            tenant_settings(
                other,
                embedding_provider="local",
                events_enabled=True,
                kafka_bootstrap="127.0.0.1:1",
                kafka_topic="t",
            ),
            embedder=HashingTestEmbedder(),
        )
        with TestClient(app) as c:
            c.headers.update(bearer(ADMIN_TOKEN))
            first = c.post("/import", content=exported.content)
            assert first.status_code == 200, first.text
            assert first.json() == {
                "import_id": None,
                "lines": 4,
                "skipped_lines": 0,
                "memories": {"created": 3, "updated": 0, "unchanged": 0},
                "links": {"created": 1, "updated": 0, "unchanged": 0},
            }
            events = len(outbox(other))
            again = c.post("/import", content=exported.content)
            assert again.json() == {
                "import_id": None,
                "lines": 4,
                "skipped_lines": 0,
                "memories": {"created": 0, "updated": 0, "unchanged": 3},
                "links": {"created": 0, "updated": 0, "unchanged": 1},
            }
            assert len(outbox(other)) == events  # nothing changed, nothing emitted
            original = client.get("/memories/2,2").json()
            copy = c.get("/memories/2,2").json()
            for field in ("id", "text", "tags", "created_at", "updated_at", "version", "payload"):
                assert copy[field] == original[field], field
            assert copy["id"] in vector_ids(other)
            hits = c.get("/memories/search", params={"query": "memory 3", "mode": "vector"})
            assert hits.json()["hits"][0]["memory"]["coordinate"] == [3.0, 3.0]
            path = c.get("/graph/path", params={"from": "1,1", "to": "2,2", "type": "next"})
            assert path.json()["strength"] == pytest.approx(0.4)
    finally:
        drop_tenant(other)


def test_import_rejects_bad_lines_atomically(client: TestClient):
    seed(client)
    good = client.get("/export").text.splitlines()
    record = json.loads(good[0])["record"]
    record["id"] = "00000000-0000-0000-0000-00000000abcd"
    record["coordinate"] = [42.0]
    new_line = json.dumps({"kind": "memory", "record": record})
    broken = "\n".join([new_line, '{"kind": "memory", "record": {"id": "x"}}']).encode()
    r = client.post("/import", content=broken)
    assert r.status_code == 422
    assert "line 2" in r.json()["detail"]
    assert (r.json()["line"], r.json()["committed_lines"]) == (2, 0)
    assert client.get("/memories/42").status_code == 404  # its chunk is all or nothing
    clash = dict(record, coordinate=[1.0, 1.0])
    r = client.post("/import", content=json.dumps({"kind": "memory", "record": clash}).encode())
    assert r.status_code == 409
    assert client.post("/import", content=b'{"kind": "thing"}').status_code == 422
    assert client.post("/import", content=b"not json").status_code == 422


def test_newer_version_in_import_updates(client: TestClient):
    seed(client)
    line = json.loads(client.get("/export").text.splitlines()[0])
    line["record"]["version"] += 5
    line["record"]["text"] = "rewritten"
    r = client.post("/import", content=json.dumps(line).encode())
    assert r.json()["memories"] == {"created": 0, "updated": 1, "unchanged": 0}
    assert client.get("/memories/1,1").json()["text"] == "rewritten"


def test_stats_for_this_tenant(client: TestClient, tenant: Tenant):
    seed(client)
    client.post("/memories", json={"coordinate": [9], "payload": {}, "memory_type": "semantic"})
    s = client.get("/stats", headers=bearer(READ_TOKEN)).json()
    assert s["tenant"] == "acme"
    assert s["schema_name"] == tenant.schema
    assert s["memories"] == 4
    assert s["memories_by_type"] == {"episodic": 3, "semantic": 1}
    assert s["links"] == 1
    assert s["vector_count"] == 4
    assert s["index_pending"] == 0
    assert s["outbox_lag"] == len(outbox(tenant)) == 5  # 4 memories + 1 link
    assert s["outbox_oldest_age_seconds"] >= 0
    assert s["table_bytes"]["memories"] > 0
    assert s["total_bytes"] == sum(s["table_bytes"].values())
    assert set(s["table_bytes"]) >= {"memories", "links", "outbox", "memory_vectors"}
    # what the relay does after publishing: the lag follows sent_at
    admin_rows(
        tenant, "UPDATE outbox SET sent_at = now() WHERE event_type = 'link.created' RETURNING id"
    )
    assert client.get("/stats").json()["outbox_lag"] == 4


def test_readyz_and_openapi(client: TestClient):
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["postgres"]["status"] == "ok"
    assert ready.json()["checks"]["vectors"]["status"] == "ok"
    spec = client.get("/openapi.json").json()
    for path in ("/memories", "/memories/search", "/graph/path", "/export", "/import", "/store"):
        assert path in spec["paths"], path
    memory_schema = spec["components"]["schemas"]["Memory"]
    assert {"id", "coordinate", "payload", "version", "vector"} <= set(memory_schema["properties"])
    problem_codes = spec["paths"]["/memories"]["post"]["responses"]
    assert {"401", "403", "413", "422", "429"} <= set(problem_codes)


def test_somafractalmemory_aliases(client: TestClient):
    r = client.post(
        "/store", json={"coord": "1,2,3", "payload": {"task": "write docs", "importance": 0.9}}
    )
    assert r.status_code == 200
    assert r.json()["ok"] is True
    assert client.get("/memories/1,2,3").json()["importance"] == 0.9
    remembered = client.post(
        "/remember", json={"payload": {"fact": "docs published"}, "type": "semantic"}
    )
    coord = remembered.json()["coord"]
    assert client.get(f"/memories/{coord}").json()["memory_type"] == "semantic"
    bulk = client.post(
        "/store_bulk",
        json={
            "items": [
                {"coord": "4,5,6", "payload": {"text": "a"}},
                {"coord": "7,8,9", "payload": {"text": "b"}},
            ]
        },
    )
    assert bulk.json() == {"stored": 2}
    assert client.post(
        "/link", json={"from_coord": "1,2,3", "to_coord": "4,5,6", "type": "related"}
    ).json() == {"ok": True}
    assert client.post("/link", json={"from_coord": "4,5,6", "to_coord": "7,8,9"}).json() == {
        "ok": True
    }
    nb = client.get("/neighbors", params={"coord": "1,2,3"}).json()
    assert nb == {"neighbors": [[[4.0, 5.0, 6.0], {"type": "related", "strength": 1.0}]]}
    path = client.get("/shortest_path", params={"frm": "1,2,3", "to": "7,8,9"}).json()
    assert path == {"path": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]}
    matches = client.post("/recall", json={"query": "write docs", "top_k": 1}).json()["matches"]
    assert matches[0]["task"] == "write docs"
    assert matches[0]["coordinate"] == [1.0, 2.0, 3.0]
    typed = client.post("/recall", json={"query": "docs", "type": "semantic"}).json()["matches"]
    assert [m["fact"] for m in typed] == ["docs published"]
    assert client.post("/store", json={"coord": "1,x", "payload": {}}).status_code == 422
    assert (
        client.post("/recall", json={"query": "x"}, headers=bearer("bad" * 10)).status_code == 401
    )
