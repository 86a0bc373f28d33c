"""The graph routes: link, unlink, neighbours and paths."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from memory_runtime.api import auth
from memory_runtime.api.common import ERRORS, Svc, key_query
from memory_runtime.api.errors import validation_problem
from memory_runtime.models import (
    MAX_DEPTH,
    MAX_NEIGHBOURS,
    Direction,
    Link,
    LinkIn,
    LinkKey,
    LinkType,
    NeighborsOut,
    PathOut,
)

router = APIRouter()

# --- graph ------------------------------------------------------------------


@router.post("/graph/link", response_model=Link, status_code=201, responses=ERRORS, tags=["graph"])
def link(body: LinkIn, svc: Svc, _: Any = Depends(auth.write)) -> Any:
    row, created = svc.link(body)
    return JSONResponse(
        row.model_dump(mode="json", by_alias=True), status_code=201 if created else 200
    )


@router.delete("/graph/link", response_model=Link, responses=ERRORS, tags=["graph"])
def unlink(
    svc: Svc,
    from_: Annotated[str, key_query(alias="from")],
    to: Annotated[str, key_query()],
    type: str = "related",
    _: Any = Depends(auth.write),
) -> Any:
    try:
        key = LinkKey.model_validate({"from": from_, "to": to, "type": type})
    except ValidationError as exc:
        raise validation_problem(exc) from None
    return svc.unlink(key).model_dump(mode="json", by_alias=True)


@router.get("/graph/neighbors", response_model=NeighborsOut, responses=ERRORS, tags=["graph"])
def neighbors(
    svc: Svc,
    key: Annotated[str, key_query()],
    depth: Annotated[int, Query(ge=1, le=MAX_DEPTH)] = 1,
    direction: Direction = "out",
    type: LinkType | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_NEIGHBOURS)] = 100,
    _: Any = Depends(auth.read),
) -> Any:
    return svc.neighbors(key, depth, direction, type, limit).model_dump(mode="json", by_alias=True)


@router.get("/graph/path", response_model=PathOut, responses=ERRORS, tags=["graph"])
def path(
    svc: Svc,
    from_: Annotated[str, key_query(alias="from")],
    to: Annotated[str, key_query()],
    max_depth: Annotated[int, Query(ge=1, le=MAX_DEPTH)] = 4,
    direction: Direction = "out",
    type: LinkType | None = None,
    _: Any = Depends(auth.read),
) -> Any:
    return svc.path(from_, to, max_depth, direction, type).model_dump(mode="json", by_alias=True)
