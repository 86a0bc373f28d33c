"""`MemoryClient` (sync) and `AsyncMemoryClient` (asyncio/anyio), both on httpx.

Same methods, same arguments, same answers, written once: each method is an
`_Endpoint` over the `_routes.Routes` function of its name (which holds its
arguments, docstring and request), and `_core.exchange` is the one retry loop.
The two classes only open their httpx client, send a call and sleep, each its
own way. Request bodies accept the API's own request models (`MemoryIn`,
`SearchIn`, `LinkIn`, `MemoryPatch` from `memory_runtime.models`), a plain
mapping, or keyword fields.
"""

from __future__ import annotations

import functools
import inspect
import os
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
)
from typing import Any, Generic, ParamSpec, Self, TypeVar, overload

import anyio
import httpx

from memory_client._core import (
    Call,
    ImportResult,
    RetryPolicy,
    error_for,
    exchange,
    ndjson,
    ndjson_async,
    run_sync,
    split_lines,
    split_lines_async,
)
from memory_client._routes import Routes

T = TypeVar("T")
P = ParamSpec("P")
TransportT = TypeVar("TransportT")
HttpT = TypeVar("HttpT")

ENV_URL = "MEMORY_URL"
ENV_TOKEN = "MEMORY_TOKEN"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
USER_AGENT = "somafractal-memory-client"


class _Endpoint(Generic[P, T]):
    """A route as a method of both clients: `build` makes the call, the client's `_run` sends it.

    On `MemoryClient` the method returns the answer, on `AsyncMemoryClient` it is
    a coroutine function; its arguments and docstring are those of `build`.
    """

    def __init__(self, build: Callable[P, Call[T]]) -> None:
        self.build = build
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, client: None, owner: type) -> Self: ...
    @overload
    def __get__(self, client: MemoryClient, owner: type) -> Callable[P, T]: ...
    @overload
    def __get__(
        self, client: AsyncMemoryClient, owner: type
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...
    def __get__(self, client: _Client[Any, Any] | None, owner: type) -> Any:
        if client is None:
            return self
        build, run = self.build, client._run
        if inspect.iscoroutinefunction(run):  # the async client's methods are coroutine functions

            @functools.wraps(build)
            async def awaited(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await run(build(*args, **kwargs))

            return awaited

        @functools.wraps(build)
        def method(*args: P.args, **kwargs: P.kwargs) -> Any:
            return run(build(*args, **kwargs))

        return method


class _Client(Generic[TransportT, HttpT]):
    """What both clients are: where the API is, how calls are retried, and the API's methods."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy = RetryPolicy(),
        headers: Mapping[str, str] | None = None,
        transport: TransportT | None = None,
    ) -> None:
        url = url or os.environ.get(ENV_URL, "")
        if not url:
            raise ValueError(f"no memory API URL: pass url= or set {ENV_URL}")
        token = token or os.environ.get(ENV_TOKEN, "")
        self.retry = retry
        self.url = url.rstrip("/")
        sent = {"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT, **(headers or {})}
        self._http = self._connect(transport, base_url=self.url, headers=sent, timeout=timeout)

    def _connect(self, transport: TransportT | None, **options: Any) -> HttpT:
        raise NotImplementedError

    def _run(self, call: Call[T]) -> Any:
        """The answer to `call` (the async client: an awaitable of it)."""
        raise NotImplementedError

    # --- memories ---------------------------------------------------------
    store = _Endpoint(Routes.store)
    store_many = _Endpoint(Routes.store_many)
    get = _Endpoint(Routes.get)
    update = _Endpoint(Routes.update)
    delete = _Endpoint(Routes.delete)
    forget = _Endpoint(Routes.forget)
    search = _Endpoint(Routes.search)
    range = _Endpoint(Routes.range)

    # --- graph ------------------------------------------------------------
    link = _Endpoint(Routes.link)
    unlink = _Endpoint(Routes.unlink)
    neighbors = _Endpoint(Routes.neighbors)
    path = _Endpoint(Routes.path)

    # --- admin (and `export`, `import_lines`: streams, each client's own) --
    import_status = _Endpoint(Routes.import_status)
    stats = _Endpoint(Routes.stats)
    health = _Endpoint(Routes.health)
    ready = _Endpoint(Routes.ready)
    request = _Endpoint(Routes.request)


class MemoryClient(_Client[httpx.BaseTransport, httpx.Client]):
    """The tenant memory API, synchronously.

    >>> with MemoryClient("http://127.0.0.1:9595", token) as memory:
    ...     memory.store(payload={"text": "the user prefers tea"}, user_id="u42")
    ...     memory.search("what does the user drink?", top_k=3).hits
    """

    def _connect(self, transport: httpx.BaseTransport | None, **options: Any) -> httpx.Client:
        return httpx.Client(transport=transport, **options)

    def __enter__(self) -> MemoryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: Call[T]) -> T:
        return run_sync(exchange(call, self.retry, self.url, self._send, _block))

    async def _send(self, call: Call[Any]) -> httpx.Response:
        # awaits nothing: httpx.Client blocks until the answer is here
        return self._http.request(call.method, call.path, **call.request_kwargs())

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
        return self._run(Routes.import_lines(ndjson(lines), import_id, start_line))


async def _block(seconds: float) -> None:
    time.sleep(seconds)  # the sync client's sleep, in the shape `exchange` awaits


class AsyncMemoryClient(_Client[httpx.AsyncBaseTransport, httpx.AsyncClient]):
    """The tenant memory API for asyncio/anyio code; the methods of `MemoryClient`, awaited."""

    def _connect(
        self, transport: httpx.AsyncBaseTransport | None, **options: Any
    ) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=transport, **options)

    async def __aenter__(self) -> AsyncMemoryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, call: Call[T]) -> T:
        return await exchange(call, self.retry, self.url, self._send, anyio.sleep)

    async def _send(self, call: Call[Any]) -> httpx.Response:
        return await self._http.request(call.method, call.path, **call.request_kwargs())

    async def export(self) -> AsyncIterator[bytes]:
        """`MemoryClient.export`, asynchronously."""
        async with self._http.stream("GET", "/export") as response:
            if not response.is_success:
                await response.aread()
                raise error_for(response)
            async for line in split_lines_async(response.aiter_bytes()):
                yield line

    async def import_lines(
        self,
        lines: Iterable[bytes] | AsyncIterable[bytes],
        *,
        import_id: str | None = None,
        start_line: int = 1,
    ) -> ImportResult:
        """`MemoryClient.import_lines`; the lines may also come asynchronously."""
        return await self._run(Routes.import_lines(ndjson_async(lines), import_id, start_line))
