"""Every route of docs/API.md as a `Call`, with the client method's arguments (no I/O here)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter

from memory_client._core import NDJSON, Call, ImportResult, ImportStatus
from memory_runtime.models import (
    Deleted,
    Direction,
    Link,
    LinkIn,
    Memory,
    MemoryIn,
    MemoryList,
    MemoryPatch,
    MemoryType,
    NeighborsOut,
    PathOut,
    SearchIn,
    SearchOut,
    Stats,
)

T = TypeVar("T")
Key = str | Iterable[float]  # a memory id, a coordinate "1,2,3", or its numbers

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


# --- answers -----------------------------------------------------------------


def model(cls: type[T]) -> Callable[[httpx.Response], T]:
    adapter = TypeAdapter(cls)
    return lambda response: adapter.validate_json(response.content)


def memories_of(response: httpx.Response) -> list[Memory]:
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


class Routes:
    """Every route of docs/API.md as a `Call` (no I/O here).

    Each takes the arguments of the client method of the same name, whose
    docstring it carries: `MemoryClient` and `AsyncMemoryClient` send what it
    returns.
    """

    # --- memories ---------------------------------------------------------
    @staticmethod
    def store(memory: MemoryIn | Mapping[str, Any] | None = None, **fields: Any) -> Call[Memory]:
        """Store one memory (upsert by coordinate)."""
        data = body(memory, fields)
        # without a coordinate the server assigns one: sending it twice would store twice
        return Call("POST", "/memories", model(Memory), json=data, replayable="coordinate" in data)

    @staticmethod
    def store_many(memories: Iterable[MemoryIn | Mapping[str, Any]]) -> Call[list[Memory]]:
        """Store up to 1000 memories in one transaction (all or nothing)."""
        data = [body(item, {}) for item in memories]
        replayable = all("coordinate" in item for item in data)
        return Call(
            "POST", "/memories/batch", memories_of, json={"memories": data}, replayable=replayable
        )

    @staticmethod
    def get(key: Key, *, include_vector: bool = False) -> Call[Memory]:
        params = {"include_vector": include_vector} if include_vector else None
        return Call("GET", key_path("/memories", key), model(Memory), params=params)

    @staticmethod
    def update(
        key: Key, change: MemoryPatch | Mapping[str, Any] | None = None, **fields: Any
    ) -> Call[Memory]:
        return Call("PATCH", key_path("/memories", key), model(Memory), json=body(change, fields))

    @staticmethod
    def delete(key: Key) -> Call[Memory]:
        return Call("DELETE", key_path("/memories", key), model(Memory))

    @staticmethod
    def forget(
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        memory_type: MemoryType | None = None,
    ) -> Call[int]:
        """Bulk forget by scope (admin token); the number of memories deleted."""
        scope = {
            "user_id": user_id,
            "agent_id": agent_id,
            "session_id": session_id,
            "memory_type": memory_type,
        }
        return Call("DELETE", "/memories", deleted, params=scope)

    @staticmethod
    def search(
        query: str | SearchIn | Mapping[str, Any] | None = None, **fields: Any
    ) -> Call[SearchOut]:
        """Recall: `search("tea", top_k=5, mode="keyword", tags=["prefs"])`.

        `query` is the text itself, or a whole request (SearchIn or a mapping).
        """
        if isinstance(query, str):
            query, fields = None, {"query": query, **fields}
        return Call("POST", "/memories/search", model(SearchOut), json=body(query, fields))

    @staticmethod
    def range(
        low: str,
        high: str,
        *,
        memory_type: MemoryType | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> Call[list[Memory]]:
        params: dict[str, Any] = {"min": low, "max": high, "memory_type": memory_type}
        params |= {"limit": limit, "offset": offset}
        return Call("GET", "/memories/range", memories_of, params=params)

    # --- graph ------------------------------------------------------------
    @staticmethod
    def link(
        source: Key | LinkIn | Mapping[str, Any], target: Key | None = None, **fields: Any
    ) -> Call[Link]:
        """`link(a, b, type="next", strength=0.5)` between two memory keys, or `link(LinkIn())`."""
        if target is None:
            if not isinstance(source, LinkIn | Mapping):
                raise TypeError("link(source) takes a LinkIn or a mapping; or link(source, target)")
            return Call("POST", "/graph/link", model(Link), json=body(source, fields))
        if isinstance(source, LinkIn | Mapping):
            raise TypeError("link(source, target): source is a memory key")
        ends = {"from": key_text(source), "to": key_text(target), **fields}
        return Call("POST", "/graph/link", model(Link), json=body(None, ends))

    @staticmethod
    def unlink(source: Key, target: Key, type: str = "related") -> Call[Link]:
        params = {"from": key_text(source), "to": key_text(target), "type": type}
        return Call("DELETE", "/graph/link", model(Link), params=params)

    @staticmethod
    def neighbors(
        key: Key,
        *,
        depth: int = 1,
        direction: Direction = "out",
        type: str | None = None,
        limit: int = 100,
    ) -> Call[NeighborsOut]:
        params = {"key": key_text(key), "depth": depth, "direction": direction, "type": type}
        return Call(
            "GET", "/graph/neighbors", model(NeighborsOut), params={**params, "limit": limit}
        )

    @staticmethod
    def path(
        source: Key,
        target: Key,
        *,
        max_depth: int = 4,
        direction: Direction = "out",
        type: str | None = None,
    ) -> Call[PathOut]:
        params: dict[str, Any] = {"from": key_text(source), "to": key_text(target)}
        params |= {"max_depth": max_depth, "direction": direction, "type": type}
        return Call("GET", "/graph/path", model(PathOut), params=params)

    # --- admin ------------------------------------------------------------
    @staticmethod
    def import_lines(
        content: Iterator[bytes] | AsyncIterator[bytes], import_id: str | None, start_line: int
    ) -> Call[ImportResult]:
        """`POST /import` of an NDJSON stream; only what differs from the server's defaults."""
        params: dict[str, Any] = {"import_id": import_id} if import_id else {}
        if start_line != 1:
            params["start_line"] = start_line
        return Call(
            "POST",
            "/import",
            model(ImportResult),
            params=params,
            content=content,
            headers={"Content-Type": NDJSON},
            timeout=httpx.Timeout(None, connect=5.0),  # as long as the stream lasts
        )

    @staticmethod
    def import_status(import_id: str) -> Call[ImportStatus]:
        return Call("GET", f"/import/{quote(import_id, safe='')}", model(ImportStatus))

    @staticmethod
    def stats() -> Call[Stats]:
        return Call("GET", "/stats", model(Stats))

    @staticmethod
    def health() -> Call[dict[str, Any]]:
        return Call("GET", "/healthz", plain_json)

    @staticmethod
    def ready() -> Call[dict[str, Any]]:
        """`/readyz` as a dict; a not-ready server raises `Unavailable`."""
        return Call("GET", "/readyz", plain_json)

    @staticmethod
    def request(
        method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None
    ) -> Call[Any]:
        """Any other route (e.g. the SomaFractalMemory aliases `/store`, `/recall`), as JSON."""
        replayable = method.upper() in IDEMPOTENT_METHODS
        return Call(
            method.upper(), path, plain_json, params=params, json=json, replayable=replayable
        )
