"""SomaFractalMemory-compatible routes, mapped onto the same service.

Shapes follow SomaFractalMemory's example API: `coord` as "1,2,3", `type`
for the memory type, `weight` for link strength (here bounded to 0..1).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memory_runtime.api import auth, routes
from memory_runtime.api.common import ERRORS, Svc, coordinate_query
from memory_runtime.api.errors import ProblemError, validation_problem
from memory_runtime.coordinates import CoordinateError, parse_coordinate
from memory_runtime.models import (
    MAX_BATCH,
    MAX_QUERY_CHARS,
    CoordinateIn,
    JsonObject,
    LinkIn,
    LinkType,
    MemoryIn,
    MemoryType,
    SearchIn,
    Text,
)

router = APIRouter(tags=["somafractalmemory compatibility"])

_SCOPE_KEYS = ("agent_id", "user_id", "session_id")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoreReq(_In):
    coord: CoordinateIn
    payload: JsonObject
    type: MemoryType = "episodic"


class RememberReq(_In):
    payload: JsonObject
    coord: CoordinateIn | None = None
    type: MemoryType = "episodic"


class BulkReq(_In):
    items: list[StoreReq] = Field(min_length=1, max_length=MAX_BATCH)


class RecallReq(_In):
    query: Text = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    top_k: int = Field(default=5, ge=1, le=100)
    type: MemoryType | None = None
    filters: dict[str, Any] | None = None


class LinkReq(_In):
    from_coord: CoordinateIn
    to_coord: CoordinateIn
    type: LinkType = "related"
    weight: float = Field(default=1.0, ge=0.0, le=1.0)


def _memory_in(coord: Any, payload: dict[str, Any], memory_type: str) -> MemoryIn:
    # SomaFractalMemory keeps importance, tags and scope inside the payload
    fields: dict[str, Any] = {"payload": payload, "memory_type": memory_type, "coordinate": coord}
    importance = payload.get("importance")
    if isinstance(importance, int | float) and 0 <= importance <= 1:
        fields["importance"] = float(importance)
    for key in _SCOPE_KEYS:
        if isinstance(payload.get(key), str) and payload[key]:
            fields[key] = payload[key]
    try:
        return MemoryIn(**fields)
    except ValidationError as exc:
        raise validation_problem(exc) from None


def _coord_list(coord: str) -> list[float]:
    try:
        return list(parse_coordinate(coord))
    except CoordinateError as exc:
        raise ProblemError(422, str(exc)) from None


@router.post("/store", responses=ERRORS)
def store(body: StoreReq, svc: Svc, _: Any = Depends(auth.write)) -> dict[str, Any]:
    [(memory, created)] = svc.store([_memory_in(body.coord, body.payload, body.type)])
    return {"ok": True, "id": str(memory.id), "coordinate": memory.coordinate, "created": created}


@router.post("/remember", responses=ERRORS)
def remember(body: RememberReq, svc: Svc, _: Any = Depends(auth.write)) -> dict[str, Any]:
    [(memory, _created)] = svc.store([_memory_in(body.coord, body.payload, body.type)])
    return {
        "ok": True,
        "id": str(memory.id),
        "coord": ",".join(repr(c) for c in memory.coordinate),
    }


@router.post("/store_bulk", responses=ERRORS)
def store_bulk(body: BulkReq, svc: Svc, _: Any = Depends(auth.write)) -> dict[str, int]:
    results = svc.store([_memory_in(i.coord, i.payload, i.type) for i in body.items])
    return {"stored": len(results)}


@router.post("/recall", responses=ERRORS)
def recall(
    body: RecallReq, svc: Svc, request: Request, response: Response, _: Any = Depends(auth.read)
) -> dict[str, Any]:
    filters = dict(body.filters or {})
    fields: dict[str, Any] = {"query": body.query, "top_k": body.top_k, "memory_type": body.type}
    for key in _SCOPE_KEYS:
        if key in filters:
            fields[key] = filters.pop(key)
    if "tags" in filters:
        fields["tags"] = filters.pop("tags")
    fields["metadata"] = filters  # anything else: equality on metadata
    try:
        req = SearchIn(**fields)
    except ValidationError as exc:
        raise validation_problem(exc) from None
    result = routes.recall(svc, req, request)
    response.headers.update(routes.degraded_headers(result))
    matches = []
    for hit in result.hits:
        match = dict(hit.memory.payload)
        match.update(
            {
                "coordinate": hit.memory.coordinate,
                "memory_type": hit.memory.memory_type,
                "score": hit.score,
            }
        )
        matches.append(match)
    return {"matches": matches}


@router.post("/link", responses=ERRORS)
def link(body: LinkReq, svc: Svc, _: Any = Depends(auth.write)) -> dict[str, Any]:
    try:
        req = LinkIn.model_validate(
            {
                "from": body.from_coord,
                "to": body.to_coord,
                "type": body.type,
                "strength": body.weight,
            }
        )
    except ValidationError as exc:
        raise validation_problem(exc) from None
    svc.link(req)
    return {"ok": True}


@router.get("/neighbors", responses=ERRORS)
def neighbors(
    svc: Svc,
    coord: Annotated[str, coordinate_query()],
    link_type: LinkType | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    _: Any = Depends(auth.read),
) -> dict[str, Any]:
    out = svc.neighbors(",".join(map(repr, _coord_list(coord))), 1, "out", link_type, limit)
    return {
        "neighbors": [
            [n.memory.coordinate, {"type": n.via.type, "strength": n.via.strength}]
            for n in out.neighbors
        ]
    }


@router.get("/shortest_path", responses=ERRORS)
def shortest_path(
    svc: Svc,
    frm: Annotated[str, coordinate_query()],
    to: Annotated[str, coordinate_query()],
    link_type: LinkType | None = None,
    _: Any = Depends(auth.read),
) -> dict[str, Any]:
    src = ",".join(map(repr, _coord_list(frm)))
    dst = ",".join(map(repr, _coord_list(to)))
    out = svc.path(src, dst, 6, "out", link_type)
    return {"path": [m.coordinate for m in out.memories]}
