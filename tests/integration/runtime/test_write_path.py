"""Write path: outbox rows, pending vectors when the index is down, catch-up, pruning."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from qdrant_client import QdrantClient

from memory_runtime import service
from memory_runtime.api import create_app
from memory_runtime.vectors import build_vector_index
from tests.integration.runtime.conftest import (
    ADMIN_TOKEN,
    DIMENSIONS,
    Tenant,
    bearer,
    tenant_settings,
)
from tests.integration.runtime.helpers import admin_rows, outbox, tenant_connection, vector_ids

pytestmark = pytest.mark.integration


def test_outbox_rows_match_the_relay_contract(client: TestClient, tenant: Tenant):
    columns = admin_rows(
        tenant,
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = 'outbox'"
        " ORDER BY ordinal_position",
    )
    assert [(c["column_name"], c["data_type"]) for c in columns] == [
        ("id", "uuid"),
        ("event_type", "text"),
        ("memory_id", "uuid"),
        ("version", "bigint"),
        ("record", "jsonb"),
        ("reason", "text"),
        ("occurred_at", "timestamp with time zone"),
        ("sent_at", "timestamp with time zone"),
        ("seq", "bigint"),  # publish order (migration 0005)
    ]
    m = client.post("/memories", json={"coordinate": [1], "payload": {"text": "x"}}).json()
    client.patch("/memories/1", json={"tags": ["a"]})
    client.delete("/memories/1")
    events = outbox(tenant)
    assert [(e["event_type"], e["version"]) for e in events] == [
        ("memory.created", 1),
        ("memory.updated", 2),
        ("memory.deleted", 3),
    ]
    assert {str(e["memory_id"]) for e in events} == {m["id"]}
    assert len({e["id"] for e in events}) == 3
    assert events[1]["record"]["tags"] == ["a"]


def test_events_disabled_writes_no_outbox(tenant: Tenant):
    app = create_app(tenant_settings(tenant))  # events_enabled=False
    with TestClient(app) as c:
        c.headers.update(bearer(ADMIN_TOKEN))
        assert c.post("/memories", json={"payload": {"text": "x"}}).status_code == 201
    assert outbox(tenant) == []


def test_index_down_marks_pending_and_catch_up_repairs(qdrant_down: TestClient, tenant: Tenant):
    c = qdrant_down
    a = c.post("/memories", json={"coordinate": [1], "payload": {"text": "alpha beta"}})
    assert a.status_code == 201  # PostgreSQL is the truth: the write succeeds
    assert a.json()["index_pending"] is True
    b = c.post("/memories", json={"coordinate": [2], "payload": {"text": "gamma"}}).json()
    assert c.delete("/memories/2").status_code == 200
    assert admin_rows(tenant, "SELECT memory_id FROM vector_tombstones")[0]["memory_id"].hex == (
        b["id"].replace("-", "")
    )
    assert c.get("/memories/search", params={"query": "alpha", "mode": "vector"}).status_code == 503
    keyword_only = c.get("/memories/search", params={"query": "alpha"}).json()["hits"]
    assert [h["memory"]["coordinate"] for h in keyword_only] == [[1.0]]
    ready = c.get("/readyz")  # degraded, but the pod stays in its Service
    assert ready.status_code == 200
    assert ready.json()["degraded"] == ["vectors"]
    assert c.get("/stats").json()["index_pending"] == 1

    # the index comes back
    service = c.app.state.runtime.service  # type: ignore[attr-defined]
    live = build_vector_index(
        "qdrant",
        pool=None,
        schema=tenant.schema,
        extensions_schema="extensions",
        dimensions=DIMENSIONS,
        distance="Cosine",
        qdrant_url=None,
        qdrant_api_key=None,
        collection=tenant.schema,
        qdrant_client=QdrantClient(":memory:"),
    )
    live.ensure()
    service.index = live
    assert service.index_pending(100) == 2  # one vector written, one tombstone applied
    assert c.get("/memories/1").json()["index_pending"] is False
    assert admin_rows(tenant, "SELECT count(*) AS n FROM vector_tombstones")[0]["n"] == 0
    assert live.count() == 1
    hits = c.get("/memories/search", params={"query": "alpha", "mode": "vector"}).json()["hits"]
    assert [h["memory"]["id"] for h in hits] == [a.json()["id"]]
    assert service.index_pending(100) == 0  # nothing left


def test_prune_removes_decayed_episodic_and_expired(client: TestClient, tenant: Tenant):
    specs = {
        "1": {"importance": 0.04},  # under pruneBelow right away
        "2": {"importance": 0.04, "memory_type": "semantic"},  # semantic never decays away
        "3": {"importance": 0.5},  # idle 1000 h: 0.5 * 0.5^(1000/720) = 0.19, kept
        "4": {"importance": 0.1},  # idle 2000 h: 0.015, pruned
        "5": {"importance": 0.9, "expires_at": "2001-01-01T00:00:00Z"},
        "6": {"importance": 0.9},
    }
    ids = {}
    for coord, extra in specs.items():
        r = client.post("/memories", json={"coordinate": [int(coord)], "payload": {}, **extra})
        ids[coord] = r.json()["id"]
    client.post("/graph/link", json={"from": "6", "to": "4"})
    admin_rows(
        tenant,
        "UPDATE memories SET last_accessed_at = now() - interval '1000 hours'"
        " WHERE id = %s RETURNING id",
        ids["3"],
    )
    admin_rows(
        tenant,
        "UPDATE memories SET last_accessed_at = now() - interval '2000 hours'"
        " WHERE id = %s RETURNING id",
        ids["4"],
    )
    service = client.app.state.runtime.service  # type: ignore[attr-defined]
    assert service.prune() == 3
    left = sorted(r["coordinate"][0] for r in admin_rows(tenant, "SELECT coordinate FROM memories"))
    assert left == [2.0, 3.0, 6.0]
    deleted = {
        str(e["memory_id"]): e["reason"]
        for e in outbox(tenant)
        if e["event_type"] == "memory.deleted"
    }
    assert deleted == {ids["1"]: "decayed", ids["4"]: "decayed", ids["5"]: "expired"}
    assert admin_rows(tenant, "SELECT count(*) AS n FROM links")[0]["n"] == 0
    assert service.prune() == 0


def test_decay_disabled_prunes_only_expired(tenant: Tenant):
    app = create_app(tenant_settings(tenant, decay_enabled=False))
    with TestClient(app) as c:
        c.headers.update(bearer(ADMIN_TOKEN))
        c.post("/memories", json={"coordinate": [1], "payload": {}, "importance": 0.0})
        c.post(
            "/memories",
            json={"coordinate": [2], "payload": {}, "expires_at": "2001-01-01T00:00:00Z"},
        )
        assert app.state.runtime.service.prune() == 1
        assert c.get("/memories/1").status_code == 200


def test_staged_vectors_of_a_store_that_did_not_commit_are_rolled_back(
    client: TestClient, tenant: Tenant
):
    """pgvector writes a store's vectors ahead, in a transaction of their own; when
    the memories' transaction fails (a concurrent writer took a coordinate first,
    the store retries), those vectors are rolled back: no orphan in the index."""
    taken = uuid.uuid4()
    answer: dict[str, Any] = {}
    body = {
        "memories": [
            {"coordinate": [9, 9], "payload": {"text": "mine"}},
            {"coordinate": [9, 10], "payload": {"text": "fresh"}},
        ]
    }
    with tenant_connection(tenant) as conn:  # a writer whose insert is not committed yet
        conn.execute(
            "INSERT INTO memories (id, coordinate, memory_type, text)"
            " VALUES (%s, '{9,9}', 'semantic', 'taken')",
            (taken,),
        )
        writer = threading.Thread(
            target=lambda: answer.update(r=client.post("/memories/batch", json=body))
        )
        writer.start()
        deadline = time.monotonic() + 60
        # the store's COPY waits on the uncommitted coordinate (its vectors are staged)
        while not admin_rows(tenant, "SELECT 1 FROM pg_locks WHERE NOT granted"):
            assert time.monotonic() < deadline, "the store never waited on the coordinate"
            time.sleep(0.05)
        conn.commit()
    writer.join(timeout=60)
    response = answer["r"]
    assert response.status_code == 200, response.text
    stored = response.json()["memories"]
    assert stored[0]["id"] == str(taken)  # the retry replaced the memory it found there
    live = {r["id"] for r in admin_rows(tenant, "SELECT id::text FROM memories")}
    assert live == {str(taken), stored[1]["id"]}
    assert vector_ids(tenant) == live  # the first attempt's two fresh ids left nothing


def pending_count(tenant: Tenant) -> int:
    return admin_rows(tenant, "SELECT count(*) AS n FROM memories WHERE index_pending")[0]["n"]


def test_a_store_commits_its_vectors_just_before_its_memories_with_no_flags_to_clear(
    client: TestClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
):
    """pgvector: the memories go in as indexed, their vectors commit just before
    them, and nothing is left in flight or pending (no UPDATE of the stored rows
    after the fact)."""
    from memory_runtime.storage.postgres import Tx

    def no_flags(self: Tx, done: Any) -> None:
        raise AssertionError("a pgvector store clears no pending flags")

    monkeypatch.setattr(Tx, "set_index_done", no_flags)
    body = {"memories": [{"coordinate": [4, n], "payload": {"text": f"m{n}"}} for n in range(3)]}
    response = client.post("/memories/batch", json=body)
    assert response.status_code == 200, response.text
    stored = response.json()["memories"]
    assert not any(m["index_pending"] for m in stored)
    assert vector_ids(tenant) == {m["id"] for m in stored}
    assert pending_count(tenant) == 0
    assert admin_rows(tenant, "SELECT count(*) AS n FROM index_in_flight")[0]["n"] == 0
    # an update of one of them too (its vector replaced, in one go)
    again = client.post(
        "/memories/batch", json={"memories": [{**body["memories"][0], "payload": {"text": "new"}}]}
    )
    assert again.status_code == 200, again.text
    assert again.json()["memories"][0]["version"] == 2
    assert not again.json()["memories"][0]["index_pending"]
    assert pending_count(tenant) == 0


def test_vectors_that_fail_to_commit_leave_their_memories_pending(
    client: TestClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
):
    """If the vectors' transaction fails at its end (here: a lock timeout while
    marking them in flight), the vectors roll back and the memories commit
    pending for catch-up (never a 5xx for the store, never vectors of memories
    that say they are pending)."""
    from memory_runtime.storage.postgres import Tx

    mark = Tx.mark_in_flight

    def refused(self: Tx, written: Any) -> None:
        raise psycopg.errors.LockNotAvailable("lock timeout (test)")

    monkeypatch.setattr(Tx, "mark_in_flight", refused)
    body = {"memories": [{"coordinate": [5, n], "payload": {"text": f"m{n}"}} for n in range(3)]}
    response = client.post("/memories/batch", json=body)
    assert response.status_code == 200, response.text
    assert all(m["index_pending"] for m in response.json()["memories"])
    assert vector_ids(tenant) == set()
    assert pending_count(tenant) == 3
    monkeypatch.setattr(Tx, "mark_in_flight", mark)
    client.app.state.runtime.service.index_pending()  # catch-up
    assert len(vector_ids(tenant)) == 3
    assert pending_count(tenant) == 0


def test_vectors_whose_memories_never_committed_are_repaired_by_catch_up(
    client: TestClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
):
    """The window between the two commits: the vectors committed, then the
    memories' transaction failed (as a crash would leave it). Catch-up finds
    the in-flight marks once they are older than the grace period: a new
    memory's vector is deleted, an updated memory's vector is written again
    from the memory as it committed."""
    from memory_runtime.storage.postgres import Tx

    kept = client.post("/memories", json={"coordinate": [6, 0], "payload": {"text": "kept"}})
    assert kept.status_code == 201, kept.text
    kept_id = kept.json()["id"]
    committed = admin_rows(
        tenant, "SELECT embedding::text AS e FROM memory_vectors WHERE memory_id = %s", kept_id
    )[0]["e"]
    land = Tx.land_in_flight

    def lost(self: Tx, ids: Any) -> None:
        raise psycopg.errors.AdminShutdown("terminating connection (test)")

    monkeypatch.setattr(Tx, "land_in_flight", lost)
    body = {
        "memories": [
            {"coordinate": [6, 0], "payload": {"text": "an update that never lands"}},
            {"coordinate": [6, 1], "payload": {"text": "a memory that never lands"}},
        ]
    }
    response = client.post("/memories/batch", json=body)
    assert response.status_code >= 500
    monkeypatch.setattr(Tx, "land_in_flight", land)
    memories = {r["id"] for r in admin_rows(tenant, "SELECT id::text FROM memories")}
    assert memories == {kept_id}
    assert len(vector_ids(tenant)) == 2  # the window: a vector of a memory that is not there
    changed = admin_rows(
        tenant, "SELECT embedding::text AS e FROM memory_vectors WHERE memory_id = %s", kept_id
    )[0]["e"]
    assert changed != committed

    service_ = client.app.state.runtime.service
    service_.index_pending()  # within the grace period: a store may still be landing
    assert len(vector_ids(tenant)) == 2
    service_.index_pending(in_flight_grace=0)
    assert vector_ids(tenant) == {kept_id}
    repaired = admin_rows(
        tenant, "SELECT embedding::text AS e FROM memory_vectors WHERE memory_id = %s", kept_id
    )[0]["e"]
    assert repaired == committed
    assert pending_count(tenant) == 0
    assert admin_rows(tenant, "SELECT count(*) AS n FROM index_in_flight")[0]["n"] == 0


def test_a_text_store_embeds_in_slices_and_stages_each_while_the_next_embeds(
    client: TestClient, tenant: Tenant, embedder: Any
):
    """A store of more texts than one embedding slice: the embedder is called per
    slice and every vector reaches the index with its memory (none pending)."""
    count = 3 * service.EMBED_SLICE + 5
    body = {
        "memories": [{"coordinate": [7, n], "payload": {"text": f"w{n}"}} for n in range(count)]
    }
    before = embedder.calls
    response = client.post("/memories/batch", json=body)
    assert response.status_code == 200, response.text
    stored = response.json()["memories"]
    assert embedder.calls - before == 4
    assert not any(m["index_pending"] for m in stored)
    assert vector_ids(tenant) == {m["id"] for m in stored}


def test_a_text_store_embeds_its_shortest_texts_together(
    client: TestClient, tenant: Tenant, embedder: Any, monkeypatch: pytest.MonkeyPatch
):
    """The slices a store embeds are cut from its texts ordered by length (as
    the embedder orders the texts of one call): each slice pads to similar
    lengths, the batches one call of all the texts would run."""
    import random

    embed = embedder.embed
    calls: list[list[str]] = []

    def recorded(texts: Any) -> Any:
        calls.append(list(texts))
        return embed(texts)

    monkeypatch.setattr(embedder, "embed", recorded)
    texts = ["w" * (1 + n) for n in range(2 * service.EMBED_SLICE)]
    random.Random(5).shuffle(texts)
    body = {
        "memories": [{"coordinate": [9, n], "payload": {"text": t}} for n, t in enumerate(texts)]
    }
    response = client.post("/memories/batch", json=body)
    assert response.status_code == 200, response.text
    assert [sorted(map(len, c)) for c in calls] == [
        list(range(1, service.EMBED_SLICE + 1)),
        list(range(service.EMBED_SLICE + 1, 2 * service.EMBED_SLICE + 1)),
    ]
    stored = response.json()["memories"]
    assert [m["text"] for m in stored] == texts  # answered in the request's order
    assert vector_ids(tenant) == {m["id"] for m in stored}


def test_a_coordinate_taken_while_a_store_embeds_is_updated_with_no_orphan_vector(
    client: TestClient, tenant: Tenant, embedder: Any, monkeypatch: pytest.MonkeyPatch
):
    """The vectors of a text store are staged before its memories' transaction,
    under ids read without locks. A writer that takes one of its coordinates
    meanwhile makes the store retry: it updates that writer's memory, and the
    index holds exactly the stored memories (no vector under the id first meant
    for the coordinate)."""
    taken = uuid.uuid4()
    embed = embedder.embed
    calls = {"n": 0}

    def embed_and_race(texts: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # between two slices: a concurrent writer commits
            with tenant_connection(tenant) as conn:
                conn.execute(
                    "INSERT INTO memories (id, coordinate, memory_type, text)"
                    " VALUES (%s, '{8,40}', 'semantic', 'taken')",
                    (taken,),
                )
        return embed(texts)

    monkeypatch.setattr(embedder, "embed", embed_and_race)
    count = 2 * service.EMBED_SLICE
    body = {
        "memories": [{"coordinate": [8, n], "payload": {"text": f"w{n}"}} for n in range(count)]
    }
    response = client.post("/memories/batch", json=body)
    assert response.status_code == 200, response.text
    stored = response.json()["memories"]
    assert stored[40]["id"] == str(taken)
    assert stored[40]["version"] == 2
    live = {r["id"] for r in admin_rows(tenant, "SELECT id::text FROM memories")}
    assert live == {m["id"] for m in stored}
    assert vector_ids(tenant) == live
    assert calls["n"] == 2  # the retry embedded nothing again


@pytest.mark.parametrize("client_vectors", [True, False], ids=["vectors", "texts"])
def test_concurrent_stores_replacing_the_same_memories_never_wait_on_each_other(
    tenant: Tenant, embedder: Any, client_vectors: bool
):
    """Stores that replace the same memories race. A store's vectors of memories
    that exist are written only once its memories' transaction holds their
    locks (new memories' vectors go ahead): one lock order, so no store waits on
    another's vectors while that one waits on its memories, until a lock times
    out and its memories commit pending."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from tests.integration.runtime.helpers import serving

    app = create_app(tenant_settings(tenant, embedding_provider="local"), embedder=embedder)

    def body(k: int) -> dict[str, Any]:
        return {
            "memories": [
                {
                    "coordinate": [3, n],
                    "payload": {"text": f"round {k}"},
                    **(
                        {"vector": [float((k + n + i) % 7 + 1) for i in range(DIMENSIONS)]}
                        if client_vectors
                        else {}
                    ),
                }
                for n in range(2)
            ]
        }

    answers: list[dict[str, Any]] = []
    with serving(app) as url:

        def work(worker: int) -> None:
            with httpx.Client(base_url=url, headers=bearer(ADMIN_TOKEN), timeout=120) as c:
                for k in range(8):
                    response = c.post("/memories/batch", json=body(worker * 100 + k))
                    assert response.status_code == 200, response.text
                    answers.extend(response.json()["memories"])

        work(0)  # they exist before the race
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(work, range(1, 5)))
    assert len(answers) == 5 * 8 * 2
    assert not [m for m in answers if m["index_pending"]]
    assert pending_count(tenant) == 0
