"""`MemoryClient` (sync) and `AsyncMemoryClient` (asyncio/anyio), both on httpx.

Same methods, same arguments, same answers: the routes are built once in
`_core.Routes`; these classes only send them. Request bodies accept the API's
own request models (`MemoryIn`, `SearchIn`, `LinkIn`, `MemoryPatch` from
`memory_runtime.models`), a plain mapping, or keyword fields.

Why ~450 lines: the whole API twice, once per class, each method a typed
one-liner over `_core`; the pair reads best side by side in one file.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import anyio
import httpx

from memory_client._core import (
    NDJSON,
    Call,
    ImportResult,
    ImportStatus,
    Key,
    RetryPolicy,
    Routes,
    error_for,
    import_params,
    import_result,
    key_text,
    ndjson,
    split_lines,
)
from memory_client.errors import TransportError
from memory_runtime.models import (
    Direction,
    Link,
    LinkIn,
    Memory,
    MemoryIn,
    MemoryPatch,
    MemoryType,
    NeighborsOut,
    PathOut,
    SearchIn,
    SearchOut,
    Stats,
)

T = TypeVar("T")

ENV_URL = "MEMORY_URL"
ENV_TOKEN = "MEMORY_TOKEN"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
USER_AGENT = "somafractal-memory-client"


def _base(url: str, token: str, headers: Mapping[str, str] | None) -> dict[str, Any]:
    if not url:
        raise ValueError(f"no memory API URL: pass url= or set {ENV_URL}")
    return {
        "base_url": url.rstrip("/"),
        "headers": {
            "Authorization": f"Bearer {token}",
            "User-Agent": USER_AGENT,
            **(headers or {}),
        },
    }


def _scope(**scope: str | None) -> dict[str, str]:
    return {k: v for k, v in scope.items() if v is not None}


class MemoryClient:
    """The tenant memory API, synchronously.

    >>> with MemoryClient("http://127.0.0.1:9595", token) as memory:
    ...     memory.store(payload={"text": "the user prefers tea"}, user_id="u42")
    ...     memory.search("what does the user drink?", top_k=3).hits
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy = RetryPolicy(),
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url = url or os.environ.get(ENV_URL, "")
        token = token or os.environ.get(ENV_TOKEN, "")
        self.retry = retry
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            **_base(url, token, headers), timeout=timeout, transport=transport
        )

    def __enter__(self) -> MemoryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, **call.request_kwargs())
            except httpx.TransportError as exc:
                if not self.retry.after_error(call, exc, attempt):
                    raise TransportError(f"{call.method} {self.url}{call.path}: {exc}") from exc
                time.sleep(self.retry.delay(attempt, None))
                attempt += 1
                continue
            if response.is_success:
                return call.parse(response)
            error = error_for(response)
            if not self.retry.after_status(call, response.status_code, attempt):
                raise error
            time.sleep(self.retry.delay(attempt, error.retry_after))
            attempt += 1

    # --- memories ---------------------------------------------------------
    def store(self, memory: MemoryIn | Mapping[str, Any] | None = None, **fields: Any) -> Memory:
        """Store one memory (upsert by coordinate)."""
        return self._run(Routes.store(memory, fields))

    def store_many(self, memories: Iterable[MemoryIn | Mapping[str, Any]]) -> list[Memory]:
        """Store up to 1000 memories in one transaction (all or nothing)."""
        return self._run(Routes.store_many(memories))

    def get(self, key: Key, *, include_vector: bool = False) -> Memory:
        return self._run(Routes.get(key, include_vector))

    def update(
        self, key: Key, change: MemoryPatch | Mapping[str, Any] | None = None, **fields: Any
    ) -> Memory:
        return self._run(Routes.update(key, change, fields))

    def delete(self, key: Key) -> Memory:
        return self._run(Routes.delete(key))

    def forget(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        memory_type: MemoryType | None = None,
    ) -> int:
        """Bulk forget by scope (admin token); the number of memories deleted."""
        scope = _scope(
            user_id=user_id, agent_id=agent_id, session_id=session_id, memory_type=memory_type
        )
        return self._run(Routes.forget(scope))

    def search(
        self, query: str | SearchIn | Mapping[str, Any] | None = None, **fields: Any
    ) -> SearchOut:
        """Recall: `search("tea", top_k=5, mode="keyword", tags=["prefs"])`."""
        return self._run(Routes.search(query, fields))

    def range(
        self,
        low: str,
        high: str,
        *,
        memory_type: MemoryType | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Memory]:
        return self._run(Routes.range(low, high, memory_type, limit, offset))

    # --- graph ------------------------------------------------------------
    def link(
        self, source: Key | LinkIn | Mapping[str, Any], target: Key | None = None, **fields: Any
    ) -> Link:
        """`link(a, b, type="next", strength=0.5)` or `link(LinkIn(...))`."""
        return self._run(Routes.link(source, target, fields))

    def unlink(self, source: Key, target: Key, type: str = "related") -> Link:
        return self._run(Routes.unlink(key_text(source), key_text(target), type))

    def neighbors(
        self,
        key: Key,
        *,
        depth: int = 1,
        direction: Direction = "out",
        type: str | None = None,
        limit: int = 100,
    ) -> NeighborsOut:
        return self._run(Routes.neighbors(key_text(key), depth, direction, type, limit))

    def path(
        self,
        source: Key,
        target: Key,
        *,
        max_depth: int = 4,
        direction: Direction = "out",
        type: str | None = None,
    ) -> PathOut:
        return self._run(
            Routes.path(key_text(source), key_text(target), max_depth, direction, type)
        )

    # --- admin ------------------------------------------------------------
    def export(self) -> Iterator[bytes]:
        """The tenant's NDJSON export, line by line (streamed, one snapshot)."""
        with self._http.stream("GET", "/export") as response:
            if not response.is_success:
                response.read()
                raise error_for(response)
            yield from split_lines(response.iter_bytes())

    def import_lines(
        self, lines: Iterable[bytes], *, import_id: str | None = None, start_line: int = 1
    ) -> ImportResult:
        """Stream NDJSON lines to `POST /import`.

        `import_id` makes the import resumable: after a cut, `import_status`
        says how many lines are committed; send the rest with
        `start_line = lines + 1` (or everything again: it is idempotent).
        A streamed body cannot be replayed, so this call is not retried.
        """
        try:
            response = self._http.post(
                "/import",
                content=ndjson(lines),
                params=import_params(import_id, start_line),
                headers={"Content-Type": NDJSON},
                timeout=httpx.Timeout(None, connect=5.0),
            )
        except httpx.TransportError as exc:
            raise TransportError(f"POST {self.url}/import: {exc}") from exc
        if not response.is_success:
            raise error_for(response)
        return import_result(response)

    def import_status(self, import_id: str) -> ImportStatus:
        return self._run(Routes.import_status(import_id))

    def stats(self) -> Stats:
        return self._run(Routes.stats())

    def health(self) -> dict[str, Any]:
        return self._run(Routes.health())

    def ready(self) -> dict[str, Any]:
        """`/readyz` as a dict; a not-ready server raises `Unavailable`."""
        return self._run(Routes.ready())

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """Any other route (e.g. the SomaFractalMemory aliases `/store`, `/recall`), as JSON."""
        return self._run(Routes.raw(method, path, json, params))


class AsyncMemoryClient:
    """The tenant memory API for asyncio/anyio code; the methods of `MemoryClient`."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy = RetryPolicy(),
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        url = url or os.environ.get(ENV_URL, "")
        token = token or os.environ.get(ENV_TOKEN, "")
        self.retry = retry
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(
            **_base(url, token, headers), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncMemoryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, **call.request_kwargs())
            except httpx.TransportError as exc:
                if not self.retry.after_error(call, exc, attempt):
                    raise TransportError(f"{call.method} {self.url}{call.path}: {exc}") from exc
                await anyio.sleep(self.retry.delay(attempt, None))
                attempt += 1
                continue
            if response.is_success:
                return call.parse(response)
            error = error_for(response)
            if not self.retry.after_status(call, response.status_code, attempt):
                raise error
            await anyio.sleep(self.retry.delay(attempt, error.retry_after))
            attempt += 1

    async def store(
        self, memory: MemoryIn | Mapping[str, Any] | None = None, **fields: Any
    ) -> Memory:
        return await self._run(Routes.store(memory, fields))

    async def store_many(self, memories: Iterable[MemoryIn | Mapping[str, Any]]) -> list[Memory]:
        return await self._run(Routes.store_many(memories))

    async def get(self, key: Key, *, include_vector: bool = False) -> Memory:
        return await self._run(Routes.get(key, include_vector))

    async def update(
        self, key: Key, change: MemoryPatch | Mapping[str, Any] | None = None, **fields: Any
    ) -> Memory:
        return await self._run(Routes.update(key, change, fields))

    async def delete(self, key: Key) -> Memory:
        return await self._run(Routes.delete(key))

    async def forget(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        memory_type: MemoryType | None = None,
    ) -> int:
        scope = _scope(
            user_id=user_id, agent_id=agent_id, session_id=session_id, memory_type=memory_type
        )
        return await self._run(Routes.forget(scope))

    async def search(
        self, query: str | SearchIn | Mapping[str, Any] | None = None, **fields: Any
    ) -> SearchOut:
        return await self._run(Routes.search(query, fields))

    async def range(
        self,
        low: str,
        high: str,
        *,
        memory_type: MemoryType | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Memory]:
        return await self._run(Routes.range(low, high, memory_type, limit, offset))

    async def link(
        self, source: Key | LinkIn | Mapping[str, Any], target: Key | None = None, **fields: Any
    ) -> Link:
        return await self._run(Routes.link(source, target, fields))

    async def unlink(self, source: Key, target: Key, type: str = "related") -> Link:
        return await self._run(Routes.unlink(key_text(source), key_text(target), type))

    async def neighbors(
        self,
        key: Key,
        *,
        depth: int = 1,
        direction: Direction = "out",
        type: str | None = None,
        limit: int = 100,
    ) -> NeighborsOut:
        return await self._run(Routes.neighbors(key_text(key), depth, direction, type, limit))

    async def path(
        self,
        source: Key,
        target: Key,
        *,
        max_depth: int = 4,
        direction: Direction = "out",
        type: str | None = None,
    ) -> PathOut:
        return await self._run(
            Routes.path(key_text(source), key_text(target), max_depth, direction, type)
        )

    async def export(self) -> AsyncIterator[bytes]:
        async with self._http.stream("GET", "/export") as response:
            if not response.is_success:
                await response.aread()
                raise error_for(response)
            rest = b""
            async for chunk in response.aiter_bytes():
                rest += chunk
                *lines, rest = rest.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield line
            if rest.strip():
                yield rest

    async def import_lines(
        self,
        lines: Iterable[bytes] | AsyncIterable[bytes],
        *,
        import_id: str | None = None,
        start_line: int = 1,
    ) -> ImportResult:
        async def body() -> AsyncIterator[bytes]:
            if isinstance(lines, AsyncIterable):
                async for line in lines:
                    yield line if line.endswith(b"\n") else line + b"\n"
            else:
                for line in ndjson(lines):
                    yield line

        try:
            response = await self._http.post(
                "/import",
                content=body(),
                params=import_params(import_id, start_line),
                headers={"Content-Type": NDJSON},
                timeout=httpx.Timeout(None, connect=5.0),
            )
        except httpx.TransportError as exc:
            raise TransportError(f"POST {self.url}/import: {exc}") from exc
        if not response.is_success:
            raise error_for(response)
        return import_result(response)

    async def import_status(self, import_id: str) -> ImportStatus:
        return await self._run(Routes.import_status(import_id))

    async def stats(self) -> Stats:
        return await self._run(Routes.stats())

    async def health(self) -> dict[str, Any]:
        return await self._run(Routes.health())

    async def ready(self) -> dict[str, Any]:
        return await self._run(Routes.ready())

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        return await self._run(Routes.raw(method, path, json, params))
