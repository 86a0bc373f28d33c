"""What the sync and async clients share: calls, retries, errors, NDJSON lines.

A `Call` says what to send and how to read the answer (`_routes.Routes`
builds one per client method); `exchange` is the retry loop. The two clients
only differ in how they send a call (httpx.Client or httpx.AsyncClient) and
sleep.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict

from memory_client.errors import ProblemError, TransportError, problem_error

T = TypeVar("T")

NDJSON = "application/x-ndjson"


class ImportCounts(BaseModel):
    created: int = 0
    updated: int = 0
    unchanged: int = 0


class ImportResult(BaseModel):
    """The answer of `POST /import` (counts for this request)."""

    model_config = ConfigDict(extra="allow")
    import_id: str | None = None
    lines: int | None = None  # last line committed, in whole-stream numbering
    skipped_lines: int = 0
    memories: ImportCounts
    links: ImportCounts


class ImportStatus(BaseModel):
    """`GET /import/{import_id}`: progress of a resumable import, summed over its requests."""

    model_config = ConfigDict(extra="allow")
    import_id: str
    lines: int
    finished: bool
    memories: ImportCounts
    links: ImportCounts


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    content: Iterator[bytes] | AsyncIterator[bytes] | None = None  # a streamed body
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: httpx.Timeout | None = None  # None: the client's
    replayable: bool = True  # may be sent again after an answer was lost

    @property
    def once(self) -> bool:
        """A streamed body is read while it is sent: the call cannot be sent again."""
        return self.content is not None

    def request_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"params": _params(self.params)}
        if self.json is not None:
            kwargs["json"] = self.json
        if self.content is not None:
            kwargs["content"] = self.content
        if self.headers:
            kwargs["headers"] = dict(self.headers)
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        return kwargs


def _params(params: Mapping[str, Any] | None) -> list[tuple[str, str]] | None:
    if not params:
        return None
    out: list[tuple[str, str]] = []
    for key, value in params.items():
        if value is None:
            continue
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            out.append((key, json.dumps(v) if isinstance(v, dict) else _scalar(v)))
    return out


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- retries -----------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; a server's Retry-After wins (up to a cap).

    Retried: 429 and 503 (the server did not apply the request), connection
    failures before anything was sent, and - for calls that may be sent twice -
    502/504 and connections that broke while waiting for the answer. A call
    with a streamed body is never retried: its body is gone once sent.
    """

    max_retries: int = 4
    backoff: float = 0.25
    max_backoff: float = 8.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))

    def after_status(self, call: Call[Any], status: int, attempt: int) -> bool:
        if attempt >= self.max_retries or call.once:
            return False
        if status in (429, 503):
            return True  # not applied: the same body can be sent again
        return status in (502, 504) and call.replayable

    def after_error(self, call: Call[Any], exc: httpx.TransportError, attempt: int) -> bool:
        if attempt >= self.max_retries or call.once:
            return False
        never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        return never_sent or call.replayable


NO_RETRY = RetryPolicy(max_retries=0)


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def error_for(response: httpx.Response) -> ProblemError:
    """The typed exception for a non-2xx answer (problem+json, or whatever came)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = response.text[:500] if response.text else response.reason_phrase
        body = {"title": response.reason_phrase or "Error", "status": response.status_code}
        if text:
            body["detail"] = text
    return problem_error(response.status_code, body, retry_after(response))


async def exchange(
    call: Call[T],
    retry: RetryPolicy,
    url: str,
    send: Callable[[Call[T]], Awaitable[httpx.Response]],
    sleep: Callable[[float], Awaitable[None]],
) -> T:
    """Send `call` until it has an answer (or `retry` gives up): its parsed answer or the error.

    The I/O is the client's: `send` one attempt, `sleep` between attempts.
    """
    attempt = 0
    while True:
        try:
            response = await send(call)
        except httpx.TransportError as exc:
            if not retry.after_error(call, exc, attempt):
                raise TransportError(f"{call.method} {url}{call.path}: {exc}") from exc
            await sleep(retry.delay(attempt, None))
            attempt += 1
            continue
        if response.is_success:
            return call.parse(response)
        error = error_for(response)
        if not retry.after_status(call, response.status_code, attempt):
            raise error
        await sleep(retry.delay(attempt, error.retry_after))
        attempt += 1


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run to its end, here and without an event loop, a coroutine that never suspends.

    The sync client's `send` and `sleep` are coroutines over blocking calls
    (they await nothing), so `exchange` serves it unchanged.
    """
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("a blocking call suspended: it awaited something asynchronous")


# --- NDJSON lines ---------------------------------------------------------


class LineSplitter:
    """NDJSON lines (without their newline, blank ones dropped) from byte chunks as they come."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        *lines, self._rest = (self._rest + chunk).split(b"\n")
        return [line for line in lines if line.strip()]

    def end(self) -> list[bytes]:
        return [self._rest] if self._rest.strip() else []


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """NDJSON lines from arbitrary byte chunks."""
    lines = LineSplitter()
    for chunk in chunks:
        yield from lines.feed(chunk)
    yield from lines.end()


async def split_lines_async(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """`split_lines` over chunks that arrive asynchronously."""
    lines = LineSplitter()
    async for chunk in chunks:
        for line in lines.feed(chunk):
            yield line
    for line in lines.end():
        yield line


def _terminated(line: bytes) -> bytes:
    return line if line.endswith(b"\n") else line + b"\n"


def ndjson(lines: Iterable[bytes]) -> Iterator[bytes]:
    """Lines as an upload body: each exactly once newline-terminated."""
    return map(_terminated, lines)


async def ndjson_async(lines: Iterable[bytes] | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """`ndjson` as a body for the async client (which sends only asynchronous streams)."""
    if isinstance(lines, AsyncIterable):
        async for line in lines:
            yield _terminated(line)
    else:
        for line in lines:
            yield _terminated(line)
