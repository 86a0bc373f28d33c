"""What the sync and async clients share: the routes as calls, retries, answers, errors.

A `Call` says what to send and how to read the answer; the two clients only
differ in how they send it (httpx.Client or httpx.AsyncClient) and sleep.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, TypeAdapter

from memory_client.errors import ProblemError, problem_error
from memory_runtime.models import (
    Deleted,
    Link,
    LinkIn,
    Memory,
    MemoryIn,
    MemoryList,
    MemoryPatch,
    NeighborsOut,
    PathOut,
    SearchIn,
    SearchOut,
    Stats,
)

T = TypeVar("T")
Key = str | Iterable[float]  # a memory id, a coordinate "1,2,3", or its numbers

NDJSON = "application/x-ndjson"
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


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
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    replayable: bool = True  # may be sent again after an answer was lost

    def request_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"params": _params(self.params)}
        if self.json is not None:
            kwargs["json"] = self.json
        if self.content is not None:
            kwargs["content"] = self.content
        if self.headers:
            kwargs["headers"] = dict(self.headers)
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
    502/504 and connections that broke while waiting for the answer.
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
        if attempt >= self.max_retries:
            return False
        if status in (429, 503):
            return True  # not applied: the same body can be sent again
        return status in (502, 504) and call.replayable

    def after_error(self, call: Call[Any], exc: httpx.TransportError, attempt: int) -> bool:
        if attempt >= self.max_retries:
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


# --- answers -----------------------------------------------------------------


def model(cls: type[T]) -> Callable[[httpx.Response], T]:
    adapter = TypeAdapter(cls)
    return lambda response: adapter.validate_json(response.content)


def memories(response: httpx.Response) -> list[Memory]:
    return MemoryList.model_validate_json(response.content).memories


def deleted(response: httpx.Response) -> int:
    return Deleted.model_validate_json(response.content).deleted


def plain_json(response: httpx.Response) -> Any:
    return response.json()


# --- bodies ------------------------------------------------------------------


def body(value: BaseModel | Mapping[str, Any] | None, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON body from a request model, a mapping, or keyword fields (merged, fields win)."""
    if isinstance(value, BaseModel):
        data = value.model_dump(mode="json", by_alias=True, exclude_unset=True)
    else:
        data = dict(value or {})
    data.update(fields)
    return data


def key_text(key: Key) -> str:
    """A memory id or coordinate as the API reads it; a coordinate may be numbers."""
    return key if isinstance(key, str) else ",".join(repr(float(v)) for v in key)


def key_path(prefix: str, key: str | Iterable[float]) -> str:
    """`/memories/<id or coordinate>`."""
    return f"{prefix}/{quote(key_text(key), safe=',')}"


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """NDJSON lines (without their newline) from arbitrary byte chunks."""
    rest = b""
    for chunk in chunks:
        rest += chunk
        *lines, rest = rest.split(b"\n")
        yield from (line for line in lines if line.strip())
    if rest.strip():
        yield rest


def ndjson(lines: Iterable[bytes]) -> Iterator[bytes]:
    """Lines as an upload body: each exactly once newline-terminated."""
    for line in lines:
        yield line if line.endswith(b"\n") else line + b"\n"


# --- the routes --------------------------------------------------------------


class Routes:
    """Every route of docs/API.md as a `Call` (no I/O here)."""

    @staticmethod
    def store(
        memory: MemoryIn | Mapping[str, Any] | None, fields: Mapping[str, Any]
    ) -> Call[Memory]:
        data = body(memory, fields)
        # without a coordinate the server assigns one: sending it twice would store twice
        return Call("POST", "/memories", model(Memory), json=data, replayable="coordinate" in data)

    @staticmethod
    def store_many(items: Iterable[MemoryIn | Mapping[str, Any]]) -> Call[list[Memory]]:
        data = [body(item, {}) for item in items]
        replayable = all("coordinate" in item for item in data)
        return Call(
            "POST", "/memories/batch", memories, json={"memories": data}, replayable=replayable
        )

    @staticmethod
    def get(key: str | Iterable[float], include_vector: bool) -> Call[Memory]:
        params = {"include_vector": include_vector} if include_vector else None
        return Call("GET", key_path("/memories", key), model(Memory), params=params)

    @staticmethod
    def update(
        key: str | Iterable[float], change: MemoryPatch | Mapping[str, Any] | None, fields: Any
    ) -> Call[Memory]:
        return Call("PATCH", key_path("/memories", key), model(Memory), json=body(change, fields))

    @staticmethod
    def delete(key: str | Iterable[float]) -> Call[Memory]:
        return Call("DELETE", key_path("/memories", key), model(Memory))

    @staticmethod
    def forget(scope: Mapping[str, Any]) -> Call[int]:
        return Call("DELETE", "/memories", deleted, params=scope)

    @staticmethod
    def search(
        query: str | SearchIn | Mapping[str, Any] | None, fields: Mapping[str, Any]
    ) -> Call[SearchOut]:
        """`query` is the text itself, or a whole request (SearchIn or a mapping)."""
        if isinstance(query, str):
            query, fields = None, {"query": query, **fields}
        return Call("POST", "/memories/search", model(SearchOut), json=body(query, fields))

    @staticmethod
    def range(
        low: str, high: str, memory_type: str | None, limit: int, offset: int
    ) -> Call[list[Memory]]:
        params = {"min": low, "max": high, "memory_type": memory_type}
        return Call(
            "GET", "/memories/range", memories, params={**params, "limit": limit, "offset": offset}
        )

    @staticmethod
    def link(
        source: Key | LinkIn | Mapping[str, Any], target: Key | None, fields: Mapping[str, Any]
    ) -> Call[Link]:
        """`link(a, b, ...)` between two memory keys, or `link(LinkIn(...))`."""
        if target is None:
            if not isinstance(source, LinkIn | Mapping):
                raise TypeError("link(source) takes a LinkIn or a mapping; or link(source, target)")
            return Call("POST", "/graph/link", model(Link), json=body(source, fields))
        if isinstance(source, LinkIn | Mapping):
            raise TypeError("link(source, target): source is a memory key")
        ends = {"from": key_text(source), "to": key_text(target), **fields}
        return Call("POST", "/graph/link", model(Link), json=body(None, ends))

    @staticmethod
    def unlink(source: str, target: str, link_type: str) -> Call[Link]:
        params = {"from": source, "to": target, "type": link_type}
        return Call("DELETE", "/graph/link", model(Link), params=params)

    @staticmethod
    def neighbors(
        key: str, depth: int, direction: str, link_type: str | None, limit: int
    ) -> Call[NeighborsOut]:
        params = {"key": key, "depth": depth, "direction": direction, "type": link_type}
        return Call(
            "GET", "/graph/neighbors", model(NeighborsOut), params={**params, "limit": limit}
        )

    @staticmethod
    def path(
        source: str, target: str, max_depth: int, direction: str, link_type: str | None
    ) -> Call[PathOut]:
        params = {"from": source, "to": target, "max_depth": max_depth, "direction": direction}
        return Call("GET", "/graph/path", model(PathOut), params={**params, "type": link_type})

    @staticmethod
    def import_status(import_id: str) -> Call[ImportStatus]:
        return Call("GET", f"/import/{quote(import_id, safe='')}", model(ImportStatus))

    @staticmethod
    def stats() -> Call[Stats]:
        return Call("GET", "/stats", model(Stats))

    @staticmethod
    def health() -> Call[Any]:
        return Call("GET", "/healthz", plain_json)

    @staticmethod
    def ready() -> Call[Any]:
        return Call("GET", "/readyz", plain_json)

    @staticmethod
    def raw(method: str, path: str, json_body: Any, params: Mapping[str, Any] | None) -> Call[Any]:
        # the SomaFractalMemory-compatible aliases (/store, /recall, ...) and anything newer
        replayable = method.upper() in IDEMPOTENT_METHODS
        return Call(
            method.upper(), path, plain_json, params=params, json=json_body, replayable=replayable
        )


def import_params(import_id: str | None, start_line: int) -> dict[str, Any]:
    """Query of `POST /import`: only what differs from the server's defaults."""
    params: dict[str, Any] = {"import_id": import_id} if import_id else {}
    if start_line != 1:
        params["start_line"] = start_line
    return params


def import_result(response: httpx.Response) -> ImportResult:
    return ImportResult.model_validate_json(response.content)
