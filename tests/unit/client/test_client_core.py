"""Pure parts of the client: which calls may be sent twice, Retry-After, NDJSON lines."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from memory_client._core import (
    Call,
    RetryPolicy,
    error_for,
    exchange,
    retry_after,
    run_sync,
    split_lines,
    split_lines_async,
)
from memory_client._routes import Routes
from memory_client.client import AsyncMemoryClient, MemoryClient
from memory_client.errors import NotFound, QuotaExceeded, ServerError, Unavailable, ValidationFailed


def test_a_store_without_coordinate_is_never_sent_twice_after_a_lost_answer() -> None:
    policy = RetryPolicy(max_retries=3)
    blind = Routes.store(payload={"text": "x"})
    placed = Routes.store(coordinate="1,2", payload={"text": "x"})
    lost = httpx.ReadTimeout("no answer")
    assert not policy.after_error(blind, lost, 0)
    assert policy.after_error(placed, lost, 0)
    assert policy.after_error(blind, httpx.ConnectError("refused"), 0)  # never sent
    assert not policy.after_status(blind, 502, 0)
    assert policy.after_status(blind, 429, 0)  # refused before anything was applied
    assert policy.after_status(blind, 503, 2)
    assert not policy.after_status(blind, 503, 3)  # retries used up
    assert not policy.after_status(Routes.get("1,2"), 404, 0)


def test_delays_honour_retry_after_up_to_the_cap() -> None:
    policy = RetryPolicy(backoff=0.5, max_backoff=4, max_retry_after=30)
    assert policy.delay(0, 7) == 7
    assert policy.delay(0, 600) == 30
    assert all(0 <= policy.delay(10, None) <= 4 for _ in range(50))
    dated = httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert retry_after(dated) == 0.0  # a date in the past: now
    assert retry_after(httpx.Response(429, headers={"Retry-After": "3"})) == 3.0


def test_problem_documents_become_typed_errors() -> None:
    def problem(status: int, slug: str) -> httpx.Response:
        body = {"type": f"https://somafractal.io/problems/{slug}", "title": "t", "detail": "d"}
        return httpx.Response(status, json=body)

    assert isinstance(error_for(problem(404, "not-found")), NotFound)
    assert isinstance(error_for(problem(409, "quota-exceeded")), QuotaExceeded)
    invalid = error_for(problem(422, "validation-error"))
    assert isinstance(invalid, ValidationFailed)
    assert (invalid.slug, invalid.detail) == ("validation-error", "d")
    html = error_for(httpx.Response(502, text="<html>bad gateway</html>"))
    assert isinstance(html, ServerError)
    assert "bad gateway" in html.detail


def test_split_lines_across_chunks() -> None:
    chunks = [b'{"a":', b'1}\n{"b":2}\n\n{"c"', b":3}"]
    assert list(split_lines(chunks)) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


async def _gen(items: list[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item


def test_split_lines_async_gives_the_same_lines() -> None:
    chunks = [b'{"a":', b'1}\n{"b":2}\n\n{"c"', b":3}"]

    async def collect() -> list[bytes]:
        return [line async for line in split_lines_async(_gen(chunks))]

    assert asyncio.run(collect()) == list(split_lines(chunks))


class Server:
    """Answers in turn, and what the client slept between them."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.sent: list[str] = []
        self.slept: list[float] = []

    async def send(self, call: Call[Any]) -> httpx.Response:
        self.sent.append(f"{call.method} {call.path}")
        status = self.statuses.pop(0)
        headers = {"Retry-After": "2"} if status == 503 else {}
        return httpx.Response(status, json={"status": "ok"}, headers=headers)

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_exchange_retries_a_refused_call_after_retry_after_and_runs_without_a_loop() -> None:
    server = Server(503, 503, 200)
    health = run_sync(exchange(Routes.health(), RetryPolicy(), "u", server.send, server.sleep))
    assert (health, server.slept, len(server.sent)) == ({"status": "ok"}, [2.0, 2.0], 3)
    server = Server(503, 503)
    with pytest.raises(Unavailable):
        run_sync(
            exchange(Routes.health(), RetryPolicy(max_retries=1), "u", server.send, server.sleep)
        )
    assert server.slept == [2.0]


def test_a_streamed_import_is_sent_once_even_when_refused() -> None:
    lines: Iterator[bytes] = iter([b"{}\n"])
    server = Server(503, 200)
    call = Routes.import_lines(lines, "run-1", start_line=5)
    assert dict(call.request_kwargs()["params"]) == {"import_id": "run-1", "start_line": "5"}
    with pytest.raises(Unavailable):
        run_sync(exchange(call, RetryPolicy(), "u", server.send, server.sleep))
    assert (server.sent, server.slept) == (["POST /import"], [])


def test_link_takes_two_keys_or_one_whole_link_never_a_mix() -> None:
    between = Routes.link("1,1", [2, 2], type="next")
    assert between.json == {"from": "1,1", "to": "2.0,2.0", "type": "next"}
    whole = Routes.link({"from": "1,1", "to": "2,2"})
    assert whole.json == {"from": "1,1", "to": "2,2"}
    with pytest.raises(TypeError, match="source is a memory key"):
        Routes.link({"from": "1,1", "to": "2,2"}, "3,3")
    with pytest.raises(TypeError, match="takes a LinkIn or a mapping"):
        Routes.link("1,1")


def test_search_takes_the_query_text_or_a_whole_request() -> None:
    assert Routes.search("tea", top_k=3).json == {"query": "tea", "top_k": 3}
    assert Routes.search({"query": "tea"}).json == {"query": "tea"}


def test_both_clients_have_every_method_async_ones_awaited() -> None:
    sync, concurrent = MemoryClient("http://127.0.0.1:1", "t"), AsyncMemoryClient("http://x", "t")
    try:
        for name in ("store", "search", "link", "neighbors", "stats", "request"):
            assert not inspect.iscoroutinefunction(getattr(sync, name))
            assert inspect.iscoroutinefunction(getattr(concurrent, name))
            assert getattr(sync, name).__doc__ == getattr(Routes, name).__doc__
        assert "include_vector" in inspect.signature(concurrent.get).parameters
    finally:
        sync.close()
        asyncio.run(concurrent.aclose())
