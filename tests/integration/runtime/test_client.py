"""The Python client (memory_client) against a real runtime served over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from memory_client import (
    AsyncMemoryClient,
    Conflict,
    Forbidden,
    MemoryClient,
    NotFound,
    QuotaExceeded,
    RateLimited,
    RetryPolicy,
    TransportError,
    Unauthorized,
    ValidationFailed,
)
from memory_runtime.api import create_app
from memory_runtime.models import MemoryIn, SearchIn
from tests.integration.runtime.conftest import (
    ADMIN_TOKEN,
    READ_TOKEN,
    WRITE_TOKEN,
    HashingTestEmbedder,
    Tenant,
    closed_port,
    serve,
    tenant_settings,
)

pytestmark = pytest.mark.integration


def test_memory_routes(runtime_url: str) -> None:
    with MemoryClient(runtime_url, WRITE_TOKEN) as memory:
        tea = memory.store(payload={"text": "the user prefers green tea"}, tags=["prefs"])
        assert tea.version == 1
        assert tea.tags == ["prefs"]
        again = memory.store(MemoryIn(coordinate=tea.coordinate, payload={"text": "black tea"}))
        assert (again.id, again.version) == (tea.id, 2)
        batch = memory.store_many(
            [{"coordinate": [5, i], "payload": {"text": f"fact {i}"}} for i in range(3)]
        )
        assert [m.coordinate for m in batch] == [[5.0, 0.0], [5.0, 1.0], [5.0, 2.0]]
        got = memory.get([5, 1], include_vector=True)
        assert got.id == batch[1].id
        assert got.vector is not None
        assert memory.get(str(tea.id)).payload == {"text": "black tea"}
        changed = memory.update("5,1", importance=0.9, if_version=1)
        assert changed.importance == 0.9
        assert [m.id for m in memory.range("5,0", "5,1")] == [batch[0].id, batch[1].id]
        hits = memory.search("black tea", top_k=1).hits
        assert hits[0].memory.id == tea.id
        typed = memory.search(SearchIn(query="fact", mode="keyword", top_k=10))
        assert {h.memory.id for h in typed.hits} == {m.id for m in batch}
        assert memory.delete("5,2").id == batch[2].id
        assert memory.stats().memories == 3


def test_graph_and_admin_routes(runtime_url: str) -> None:
    with MemoryClient(runtime_url, ADMIN_TOKEN) as memory:
        for c in ("1,1", "2,2", "3,3"):
            memory.store(coordinate=c, payload={"text": c}, user_id="u1")
        link = memory.link("1,1", [2, 2], strength=0.5, type="next")
        assert (link.type, link.strength) == ("next", 0.5)
        memory.link({"from": "2,2", "to": "3,3", "type": "next"})
        near = memory.neighbors("1,1", depth=2)
        assert [n.depth for n in near.neighbors] == [1, 2]
        assert memory.path("1,1", "3,3").hops == 2
        assert memory.unlink("2,2", "3,3", "next").to is not None
        assert memory.path("1,1", "3,3").found is False
        assert memory.health() == {"status": "ok"}
        assert memory.ready()["status"] == "ready"
        alias = memory.request("POST", "/recall", json={"query": "1,1", "top_k": 1})
        assert "matches" in alias
        lines = list(memory.export())
        assert [line.count(b'"kind":"memory"') for line in lines] == [1, 1, 1, 0]
        assert memory.forget(user_id="u1") == 3
        assert memory.stats().memories == 0
        result = memory.import_lines(lines)
        assert (result.memories.created, result.links.created) == (3, 1)
        assert memory.import_lines(lines).memories.unchanged == 3  # idempotent
        assert memory.stats().links == 1


def test_problems_are_typed_exceptions(runtime_url: str) -> None:
    with MemoryClient(runtime_url, WRITE_TOKEN) as memory:
        with pytest.raises(NotFound) as missing:
            memory.get("9,9")
        assert missing.value.status == 404
        assert missing.value.type.endswith("/not-found")
        with pytest.raises(ValidationFailed) as invalid:
            memory.search("tea", top_k=1000)
        assert invalid.value.detail.startswith("top_k:")
        assert invalid.value.errors[0]["loc"] == ["body", "top_k"]
        memory.store(coordinate="1,1", payload={"text": "x"})
        with pytest.raises(Conflict):
            memory.update("1,1", importance=0.1, if_version=7)
        with pytest.raises(Forbidden):
            memory.forget(user_id="u1")  # bulk forget is admin only
    with MemoryClient(runtime_url, READ_TOKEN) as reader, pytest.raises(Forbidden) as refused:
        reader.store(payload={"text": "no"})
    assert "write role" in refused.value.detail
    with MemoryClient(runtime_url, "wrong") as stranger, pytest.raises(Unauthorized):
        stranger.stats()


def test_quota_is_its_own_exception(tenant: Tenant, embedder: HashingTestEmbedder) -> None:
    settings = tenant_settings(tenant, embedding_provider="local", max_memories=1)
    with serve(create_app(settings, embedder=embedder)) as url, MemoryClient(url, ADMIN_TOKEN) as m:
        m.store(payload={"text": "one"})
        with pytest.raises(QuotaExceeded) as full:
            m.store(payload={"text": "two"})
    assert full.value.status == 409


class Recording(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.statuses.append(response.status_code)
        return response


class RecordingPolicy(RetryPolicy):
    waits: list[float]

    def delay(self, attempt: int, retry_after: float | None) -> float:
        wait = super().delay(attempt, retry_after)
        self.waits.append(wait)
        return wait


def test_retries_honour_retry_after(tenant: Tenant, embedder: HashingTestEmbedder) -> None:
    # a bucket of one request refilled once a second: the second call is refused
    # with Retry-After: 1, the client waits that long and the retry goes through
    settings = tenant_settings(
        tenant, embedding_provider="local", rate_limit_per_minute=60, rate_limit_burst=1
    )
    recording = Recording()
    policy = RecordingPolicy(max_retries=3)
    object.__setattr__(policy, "waits", [])
    with serve(create_app(settings, embedder=embedder)) as url:
        with MemoryClient(url, READ_TOKEN, transport=recording, retry=policy) as memory:
            memory.stats()
            memory.stats()
        assert recording.statuses == [200, 429, 200]
        assert policy.waits == [1.0]
        refused: list[RateLimited] = []
        with MemoryClient(url, READ_TOKEN, retry=RetryPolicy(max_retries=0)) as impatient:
            for _ in range(3):  # a bucket of one: at most one of these gets through
                try:
                    impatient.stats()
                except RateLimited as exc:
                    refused.append(exc)
        assert refused
        assert refused[0].retry_after == 1.0


def test_unreachable_server_is_a_transport_error() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    policy = RetryPolicy(max_retries=2, backoff=0.01)
    with MemoryClient(url, "t", retry=policy) as memory, pytest.raises(TransportError):
        memory.stats()


def test_async_client(runtime_url: str) -> None:
    async def run() -> dict[str, Any]:
        async with AsyncMemoryClient(runtime_url, ADMIN_TOKEN) as memory:
            a = await memory.store(coordinate="1,1", payload={"text": "async tea"})
            await memory.store(coordinate="2,2", payload={"text": "async coffee"})
            await memory.link("1,1", "2,2")
            hits = (await memory.search("tea", top_k=1)).hits
            with pytest.raises(NotFound):
                await memory.get("7,7")
            lines = [line async for line in memory.export()]
            await memory.delete("2,2")
            await memory.delete("1,1")
            result = await memory.import_lines(lines)
            return {
                "first": a.id,
                "hit": hits[0].memory.id,
                "lines": len(lines),
                "created": (result.memories.created, result.links.created),
                "neighbours": len((await memory.neighbors("1,1")).neighbors),
            }

    out = asyncio.run(run())
    assert out["hit"] == out["first"]
    assert out["lines"] == 3
    assert out["created"] == (2, 1)
    assert out["neighbours"] == 1
