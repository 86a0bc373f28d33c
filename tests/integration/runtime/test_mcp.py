"""The MCP endpoint, driven by the official MCP Python client over Streamable HTTP.

The runtime is served by uvicorn on a loopback port (embedded-style PostgreSQL
tenant), so every call crosses the real transport: JSON-RPC over HTTP POST,
bearer token in the header, tool errors in the result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.integration.runtime.conftest import ADMIN_TOKEN, READ_TOKEN, WRITE_TOKEN, bearer

pytestmark = pytest.mark.integration

T = TypeVar("T")

TOOLS = {"remember", "recall", "get", "update", "forget", "link", "neighbours", "path", "stats"}


def with_client(
    url: str, token: str, body: Callable[[Client], Awaitable[T]], mode: str = "auto"
) -> T:
    async def run() -> T:
        async with httpx2.AsyncClient(headers=bearer(token), timeout=30) as http:
            transport = streamable_http_client(f"{url}/mcp", http_client=http)
            async with Client(transport, mode=mode) as client:
                return await body(client)

    return asyncio.run(run())


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_lists_the_tools_with_schemas(runtime_url: str, mode: str) -> None:
    async def body(client: Client) -> Any:
        return (await client.list_tools()).tools

    tools = {t.name: t for t in with_client(runtime_url, READ_TOKEN, body, mode)}
    assert set(tools) == TOOLS
    recall = tools["recall"]
    props = recall.input_schema["properties"]
    assert props["top_k"]["maximum"] == 100
    assert props["mode"]["enum"] == ["hybrid", "vector", "keyword"]
    assert recall.annotations is not None
    assert recall.annotations.read_only_hint
    assert "hits" in recall.output_schema["properties"]
    assert tools["forget"].annotations.destructive_hint
    assert tools["update"].input_schema["required"] == ["key"]
    assert all(t.description and len(t.description) > 60 for t in tools.values())


def test_write_token_stores_and_recalls(runtime_url: str) -> None:
    async def body(client: Client) -> Any:
        stored = await client.call_tool(
            "remember",
            {"payload": {"text": "the user prefers green tea"}, "tags": ["prefs"], "user_id": "u1"},
        )
        await client.call_tool("remember", {"payload": {"text": "the build runs on Fridays"}})
        # get before recall: recall's own access counts are written a second later
        got = await client.call_tool("get", {"key": stored.structured_content["id"]})
        found = await client.call_tool("recall", {"query": "green tea", "top_k": 1})
        return stored, found, got

    stored, found, got = with_client(runtime_url, WRITE_TOKEN, body)
    assert not stored.is_error
    memory = stored.structured_content
    assert memory["payload"] == {"text": "the user prefers green tea"}
    assert not found.is_error
    [hit] = found.structured_content["hits"]
    assert hit["memory"]["id"] == memory["id"]
    assert hit["components"]["keyword"] == 1.0
    assert got.structured_content["access_count"] == 1
    assert "vector" not in got.structured_content


def test_read_token_is_refused_writes_but_reads(runtime_url: str) -> None:
    async def body(client: Client) -> Any:
        refused = await client.call_tool("remember", {"payload": {"text": "nope"}})
        stats = await client.call_tool("stats", {})
        return refused, stats

    refused, stats = with_client(runtime_url, READ_TOKEN, body)
    assert refused.is_error
    assert refused.structured_content["status"] == 403
    assert refused.structured_content["type"].endswith("/forbidden")
    assert "write role" in refused.content[0].text
    assert not stats.is_error
    assert stats.structured_content["memories"] == 0  # nothing was written


def test_bad_input_is_a_clear_tool_error(runtime_url: str) -> None:
    async def body(client: Client) -> Any:
        return (
            await client.call_tool("recall", {"query": "tea", "top_k": 1000}),
            await client.call_tool("recall", {"query": "x", "metadata": {"a": {"b": 1}}}),
            await client.call_tool("get", {"key": "1,2,zebra"}),
            await client.call_tool("get", {"key": "5,5"}),
            await client.call_tool("update", {"key": "5,5"}),
        )

    top_k, metadata, key, missing, empty = with_client(runtime_url, WRITE_TOKEN, body)
    for result in (top_k, metadata, key, missing, empty):
        assert result.is_error
    assert top_k.structured_content["status"] == 422
    assert top_k.structured_content["detail"].startswith("top_k: ")
    assert "less than or equal to 100" in top_k.content[0].text
    assert metadata.structured_content["detail"].startswith("metadata.a: ")
    assert key.structured_content["status"] == 422
    assert missing.structured_content["status"] == 404
    assert "nothing to change" in empty.structured_content["detail"]


def test_bulk_forget_needs_admin(runtime_url: str) -> None:
    async def store(client: Client) -> Any:
        for i in range(3):
            await client.call_tool("remember", {"payload": {"text": f"m{i}"}, "user_id": "gone"})
        return await client.call_tool("forget", {"user_id": "gone"})

    async def admin(client: Client) -> Any:
        return await client.call_tool("forget", {"user_id": "gone"})

    refused = with_client(runtime_url, WRITE_TOKEN, store)
    assert refused.is_error
    assert refused.structured_content["status"] == 403
    assert "bulk forget needs the admin role" in refused.structured_content["detail"]
    done = with_client(runtime_url, ADMIN_TOKEN, admin)
    assert done.structured_content == {"deleted": 3, "memory": None}


def test_graph_tools(runtime_url: str) -> None:
    async def body(client: Client) -> Any:
        for c in ("1,1", "2,2", "3,3"):
            await client.call_tool("remember", {"coordinate": c, "payload": {"text": c}})
        one = await client.call_tool("link", {"from": "1,1", "to": "2,2", "strength": 0.5})
        await client.call_tool("link", {"from": "2,2", "to": "3,3", "type": "next"})
        near = await client.call_tool("neighbours", {"key": "1,1", "depth": 2})
        path = await client.call_tool("path", {"from": "1,1", "to": "3,3"})
        gone = await client.call_tool("forget", {"key": "2,2"})
        after = await client.call_tool("path", {"from": "1,1", "to": "3,3"})
        return one, near, path, gone, after

    one, near, path, gone, after = with_client(runtime_url, WRITE_TOKEN, body)
    assert one.structured_content["created"] is True
    assert one.structured_content["link"]["strength"] == 0.5
    depths = sorted(
        (n["memory"]["coordinate"], n["depth"]) for n in near.structured_content["neighbors"]
    )
    assert depths == [([2.0, 2.0], 1), ([3.0, 3.0], 2)]
    assert path.structured_content["hops"] == 2
    assert path.structured_content["strength"] == 0.5
    assert gone.structured_content["deleted"] == 1
    assert after.structured_content["found"] is False


def test_transport_refuses_missing_and_unknown_tokens(runtime_url: str) -> None:
    init = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    accept = {"Accept": "application/json, text/event-stream"}
    for headers in ({}, bearer("not-a-token")):
        r = httpx.post(f"{runtime_url}/mcp", json=init, headers={**accept, **headers})
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_mcp_tool_calls_share_the_token_bucket(tenant: Any, embedder: Any) -> None:
    from memory_runtime.api import create_app
    from tests.integration.runtime.conftest import serve, tenant_settings

    settings = tenant_settings(
        tenant, embedding_provider="local", rate_limit_per_minute=1, rate_limit_burst=2
    )
    with serve(create_app(settings, embedder=embedder)) as url:
        http = httpx.get(f"{url}/stats", headers=bearer(READ_TOKEN))  # one from the bucket
        assert http.status_code == 200

        async def body(client: Client) -> Any:
            return [await client.call_tool("stats", {}) for _ in range(2)]

        ok, limited = with_client(url, READ_TOKEN, body)
    assert not ok.is_error
    assert limited.is_error
    assert limited.structured_content["status"] == 429
    assert limited.structured_content["retry_after"] >= 1


def test_body_over_the_cap_is_refused_unread(tenant: Any, embedder: Any) -> None:
    from memory_runtime.api import create_app
    from tests.integration.runtime.conftest import serve, tenant_settings

    settings = tenant_settings(tenant, embedding_provider="local", max_body_bytes=2048)
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "remember", "arguments": {"payload": {"text": "x" * 4096}}},
    }
    accept = {"Accept": "application/json, text/event-stream"}
    with serve(create_app(settings, embedder=embedder)) as url:
        r = httpx.post(f"{url}/mcp", json=call, headers={**accept, **bearer(WRITE_TOKEN)})
        stats = httpx.get(f"{url}/stats", headers=bearer(READ_TOKEN)).json()
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    assert stats["memories"] == 0


def test_mcp_can_be_switched_off(tenant: Any, embedder: Any) -> None:
    from memory_runtime.api import create_app
    from tests.integration.runtime.conftest import serve, tenant_settings

    settings = tenant_settings(tenant, embedding_provider="local", mcp_enabled=False)
    with serve(create_app(settings, embedder=embedder)) as url:
        r = httpx.post(f"{url}/mcp", json={}, headers=bearer(ADMIN_TOKEN))
    assert r.status_code == 404
