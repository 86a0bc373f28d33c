"""Index catch-up (issue 15 item 5, issue 14 item 11 second half): a backlog is
worked off in back-to-back batches, /stats shows backlog and rate, and one bad
row never holds back the others."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from memory_runtime.api import create_app
from tests.integration.runtime.conftest import (
    ADMIN_TOKEN,
    DIMENSIONS,
    Tenant,
    bearer,
    tenant_settings,
)
from tests.integration.runtime.helpers import admin_exec, admin_rows, vector_ids, wait_for

pytestmark = pytest.mark.integration


def vector(rng: random.Random) -> list[float]:
    return [rng.uniform(-1, 1) for _ in range(DIMENSIONS)]


def test_a_nan_vector_in_the_table_does_not_block_the_batch(client: TestClient, tenant: Tenant):
    rng = random.Random(7)
    ids = [
        client.post(
            "/memories",
            json={"coordinate": [n], "payload": {"text": f"m{n}"}, "vector": vector(rng)},
        ).json()["id"]
        for n in range(4)
    ]
    # as an older version (or a hand-made import) could have left it
    admin_exec(tenant, "UPDATE memories SET index_pending = true")
    admin_exec(tenant, "DELETE FROM memory_vectors")
    admin_exec(
        tenant,
        f"UPDATE memory_embeddings SET embedding[1] = 'NaN' WHERE memory_id = '{ids[1]}'",
    )
    service = client.app.state.runtime.service  # type: ignore[attr-defined]
    assert service.index_pending(500) == 4
    assert vector_ids(tenant) == set(ids)  # the others, and the bad one re-embedded
    assert client.get("/stats").json()["index_pending"] == 0
    bad = client.get(f"/memories/{ids[1]}", params={"include_vector": True}).json()
    assert bad["index_pending"] is False
    assert all(math.isfinite(v) for v in bad["vector"])  # from its text, by the embedder


def test_a_bad_vector_without_an_embedder_leaves_the_memory_keyword_only(tenant: Tenant):
    rng = random.Random(3)
    with TestClient(create_app(tenant_settings(tenant))) as c:  # provider none
        c.headers.update(bearer(ADMIN_TOKEN))
        ids = [
            c.post(
                "/memories",
                json={"coordinate": [n], "payload": {"text": f"word{n}"}, "vector": vector(rng)},
            ).json()["id"]
            for n in range(3)
        ]
        admin_exec(tenant, "UPDATE memories SET index_pending = true")
        admin_exec(tenant, "DELETE FROM memory_vectors")
        admin_exec(
            tenant,
            f"UPDATE memory_embeddings SET embedding[2] = 'Infinity' WHERE memory_id = '{ids[0]}'",
        )
        c.app.state.runtime.service.index_pending(500)  # type: ignore[attr-defined]
        assert vector_ids(tenant) == {ids[1], ids[2]}
        bad = c.get(f"/memories/{ids[0]}").json()
        assert bad["has_vector"] is False
        assert bad["index_pending"] is False
        hits = c.get("/memories/search", params={"query": "word0", "mode": "keyword"}).json()
        assert [h["memory"]["id"] for h in hits["hits"]] == [ids[0]]  # still found by its words
        assert c.get("/export").text.count("NaN") == 0


def test_a_backlog_is_caught_up_in_back_to_back_batches(tenant: Tenant):
    rng = random.Random(11)
    # the interval is an hour: only draining batch after batch can finish in time
    settings = tenant_settings(tenant, index_interval_seconds=3600, prune_interval_seconds=3600)
    with TestClient(create_app(settings)) as c:
        c.headers.update(bearer(ADMIN_TOKEN))
        for start in range(0, 1300, 100):
            batch = [
                {"coordinate": [n], "payload": {"n": n}, "vector": vector(rng)}
                for n in range(start, start + 100)
            ]
            assert c.post("/memories/batch", json={"memories": batch}).status_code == 200
    admin_exec(tenant, "UPDATE memories SET index_pending = true")
    admin_exec(tenant, "DELETE FROM memory_vectors")
    with TestClient(create_app(settings, start_jobs=True)) as c:
        c.headers.update(bearer(ADMIN_TOKEN))
        wait_for(lambda: c.get("/stats").json()["index_pending"] == 0, timeout=60, what="caught up")
        stats = c.get("/stats").json()
        assert stats["vector_count"] == 1300
        assert stats["jobs"]["index"]["runs"] >= 3  # 500 + 500 + 300 (+ an empty one)
        assert stats["index_rate_per_second"] > 0
    pending = admin_rows(tenant, "SELECT count(*) AS n FROM memories WHERE index_pending")
    assert pending[0]["n"] == 0


class HeldIndex:
    """The tenant's real index, except that one thread's upserts wait for
    `release`: an index write that is slow to land, as under load."""

    def __init__(self, index: Any, held: threading.Thread) -> None:
        self._index, self._held = index, held
        self.reached, self.release = threading.Event(), threading.Event()

    def upsert(self, items: Any) -> None:
        if threading.current_thread() is self._held:
            self.reached.set()
            assert self.release.wait(30)
        self._index.upsert(items)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)


def unit(axis: int) -> list[float]:
    return [1.0 if i == axis else 0.0 for i in range(DIMENSIONS)]


def indexed_axis(tenant: Tenant, memory_id: str) -> int | None:
    rows = admin_rows(
        tenant, "SELECT embedding::text AS v FROM memory_vectors WHERE memory_id = %s", memory_id
    )
    if not rows:
        return None
    values = [float(x) for x in rows[0]["v"].strip("[]").split(",")]
    return values.index(max(values))


def stale_catch_up(client: TestClient, change: Callable[[], Any]) -> None:
    """Catch-up reads a pending row, then `change` commits (and indexes) a newer
    state before catch-up's own index write lands."""
    service = client.app.state.runtime.service  # type: ignore[attr-defined]
    worker = threading.Thread(target=service.index_pending, args=(500,))
    held = HeldIndex(service.index, worker)
    service.index = held
    try:
        worker.start()
        assert held.reached.wait(30)
        change()
        held.release.set()
        worker.join(30)
    finally:
        service.index = held._index


def test_a_late_index_write_of_an_older_version_is_written_again(
    client: TestClient, tenant: Tenant
):
    memory = {"coordinate": [1], "payload": {"text": "first"}, "vector": unit(0)}
    mid = client.post("/memories", json=memory).json()["id"]
    admin_exec(tenant, "UPDATE memories SET index_pending = true")  # its write not confirmed
    newer = {**memory, "payload": {"text": "second"}, "vector": unit(1)}
    stale_catch_up(client, lambda: client.post("/memories", json=newer).raise_for_status())
    # the index may hold the older vector now, but then the memory says so ...
    if indexed_axis(tenant, mid) != 1:
        assert client.get(f"/memories/{mid}").json()["index_pending"] is True
    # ... and the next catch-up writes the newest one
    client.app.state.runtime.service.index_pending(500)  # type: ignore[attr-defined]
    assert indexed_axis(tenant, mid) == 1
    assert client.get(f"/memories/{mid}").json()["index_pending"] is False


def test_a_late_index_write_of_a_deleted_memory_is_removed_again(
    client: TestClient, tenant: Tenant
):
    mid = client.post(
        "/memories", json={"coordinate": [2], "payload": {"text": "gone"}, "vector": unit(2)}
    ).json()["id"]
    admin_exec(tenant, "UPDATE memories SET index_pending = true")
    stale_catch_up(client, lambda: client.delete(f"/memories/{mid}").raise_for_status())
    client.app.state.runtime.service.index_pending(500)  # type: ignore[attr-defined]
    assert mid not in vector_ids(tenant)


class DeletesFail:
    """The tenant's real index, with deletes failing: the index is down when a
    memory is deleted, so its tombstone stays for catch-up."""

    def __init__(self, index: Any) -> None:
        self._index = index

    def delete(self, ids: Any) -> None:
        raise ConnectionError("index unreachable")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)


def test_a_memory_restored_under_its_deleted_id_keeps_its_vector(
    client: TestClient, tenant: Tenant
):
    memory = {"coordinate": [3], "payload": {"text": "restored"}, "vector": unit(3)}
    mid = client.post("/memories", json=memory).json()["id"]
    backup = client.get("/export").text
    service = client.app.state.runtime.service  # type: ignore[attr-defined]
    service.index = DeletesFail(service.index)
    try:
        client.delete(f"/memories/{mid}").raise_for_status()
    finally:
        service.index = service.index._index
    assert admin_rows(tenant, "SELECT count(*) AS n FROM vector_tombstones")[0]["n"] == 1
    # a restore from the export brings the memory back under the same id ...
    client.post("/import", content=backup.encode()).raise_for_status()
    assert indexed_axis(tenant, mid) == 3
    # ... and catch-up's work on the old tombstone leaves the restored vector
    while service.index_pending(500):
        pass
    assert indexed_axis(tenant, mid) == 3
    assert client.get(f"/memories/{mid}").json()["index_pending"] is False
    assert admin_rows(tenant, "SELECT count(*) AS n FROM vector_tombstones")[0]["n"] == 0
