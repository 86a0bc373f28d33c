"""The memory API's memories and recall routes (HTTP only: parse, call the service, shape
the answer); graph, transfer and health routes live beside it."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError

from memory_runtime.api import auth
from memory_runtime.api.common import (
    ERRORS,
    Key,
    Svc,
    coordinate_query,
)
from memory_runtime.api.errors import ProblemError, validation_problem
from memory_runtime.api.state import state_of
from memory_runtime.models import (
    INT64,
    Deleted,
    Filters,
    Memory,
    MemoryBatchIn,
    MemoryIn,
    MemoryList,
    MemoryPatch,
    MemoryType,
    RecallMode,
    SearchIn,
    SearchOut,
)
from memory_runtime.service import MemoryService, to_filter

router = APIRouter()


DEGRADED_HEADER = "Recall-Degraded"  # e.g. "vector": hybrid answered from full text only


# --- memories ---------------------------------------------------------------


@router.post(
    "/memories",
    response_model=Memory,
    status_code=201,
    responses={
        200: {"model": Memory, "description": "replaced the memory at that coordinate"},
        **ERRORS,
    },
    tags=["memories"],
)
def store(body: MemoryIn, svc: Svc, request: Request, _: Any = Depends(auth.write)) -> Any:
    [(memory, created)] = svc.store([body])
    state_of(request.app).metrics.memories_written.labels("created" if created else "updated").inc()
    data = memory.model_dump(mode="json", exclude={"vector"})
    return JSONResponse(data, status_code=201 if created else 200)


class BatchBodyRequest(Request):
    """A batch body parsed and validated by pydantic-core straight from its bytes
    (a third of the time of json.loads plus validating the decoded objects, which
    FastAPI does). FastAPI takes the model from `json()` as it is; any body the
    fast path refuses is decoded as before, so FastAPI answers it as before."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = MemoryBatchIn.model_validate_json(body)
            except ValidationError:
                self._json = json.loads(body)  # FastAPI's own problems for a bad body
        return self._json


class BatchBodyRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def parse_from_bytes(request: Request) -> Response:
            return await handler(BatchBodyRequest(request.scope, request.receive))

        return parse_from_bytes


def store_batch(
    body: MemoryBatchIn, svc: Svc, request: Request, _: Any = Depends(auth.write)
) -> Response:
    results = svc.store(body.memories)
    for _memory, created in results:
        state_of(request.app).metrics.memories_written.labels(
            "created" if created else "updated"
        ).inc()
    # serialised once by pydantic-core: the response_model path would validate
    # the models again and encode them with json.dumps (bench/README.md, ingest)
    answer = MemoryList(memories=[m for m, _ in results])
    return Response(answer.model_dump_json(by_alias=True), media_type="application/json")


router.add_api_route(
    "/memories/batch",
    store_batch,
    methods=["POST"],
    response_model=MemoryList,
    responses=ERRORS,
    tags=["memories"],
    route_class_override=BatchBodyRoute,
)


def search_query(
    query: str | None = None,
    top_k: int = 10,
    mode: RecallMode = "hybrid",
    alpha: float = 0.5,
    recency_weight: float = 0.0,
    importance_weight: float = 0.0,
    memory_type: MemoryType | None = None,
    tags: Annotated[list[str] | None, Query()] = None,
    agent_id: str | None = None,
    user_id: str | None = None,
    session_id: str | None = None,
    metadata: Annotated[str | None, Query(description="JSON object, equality per key")] = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    coordinate_min: Annotated[str | None, coordinate_query()] = None,
    coordinate_max: Annotated[str | None, coordinate_query()] = None,
) -> SearchIn:
    """The query of `GET /memories/search` as the request `POST` takes (metadata as JSON text)."""
    meta: Any = {}
    if metadata:
        try:
            meta = json.loads(metadata)
        except (ValueError, RecursionError):  # RecursionError: nested thousands deep
            raise ProblemError(422, 'metadata must be a JSON object, e.g. {"k": "v"}') from None
        if not isinstance(meta, dict):
            raise ProblemError(422, "metadata must be a JSON object")
    try:
        return SearchIn(
            query=query,
            top_k=top_k,
            mode=mode,
            alpha=alpha,
            recency_weight=recency_weight,
            importance_weight=importance_weight,
            memory_type=memory_type,
            tags=tags or [],
            agent_id=agent_id,
            user_id=user_id,
            session_id=session_id,
            metadata=meta,
            created_from=created_from,
            created_to=created_to,
            coordinate_min=coordinate_min,
            coordinate_max=coordinate_max,
        )
    except ValidationError as exc:
        raise validation_problem(exc) from None


@router.get("/memories/search", response_model=SearchOut, responses=ERRORS, tags=["recall"])
def search_get(
    svc: Svc,
    request: Request,
    _: Any = Depends(auth.read),
    req: SearchIn = Depends(search_query),  # after auth: a stranger's bad query is a 401
) -> Response:
    return search_response(recall(svc, req, request))


@router.post("/memories/search", response_model=SearchOut, responses=ERRORS, tags=["recall"])
def search_post(
    body: SearchIn, svc: Svc, request: Request, _: Any = Depends(auth.read)
) -> Response:
    return search_response(recall(svc, body, request))


def recall(svc: MemoryService, req: SearchIn, request: Request) -> SearchOut:
    """Run a recall and count it (and each degraded part) in the metrics."""
    metrics = state_of(request.app).metrics
    metrics.recalls.labels(req.mode).inc()
    out = svc.recall(req)
    for part in out.degraded:
        metrics.recall_degraded.labels(part).inc()
    return out


def degraded_headers(out: SearchOut) -> dict[str, str]:
    return {DEGRADED_HEADER: ",".join(out.degraded)} if out.degraded else {}


def search_response(out: SearchOut) -> Response:
    # Serialised once by the model itself: returning the model would make FastAPI
    # dump it, validate it again against response_model and then encode it.
    return Response(
        out.model_dump_json(), media_type="application/json", headers=degraded_headers(out)
    )


@router.get("/memories/range", response_model=MemoryList, responses=ERRORS, tags=["memories"])
def range_query(
    svc: Svc,
    min: Annotated[str, coordinate_query("lower corner, e.g. 0,0")],
    max: Annotated[str, coordinate_query("upper corner, e.g. 10,10")],
    memory_type: MemoryType | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, lt=INT64)] = 0,
    _: Any = Depends(auth.read),
) -> MemoryList:
    try:
        f = Filters(coordinate_min=min, coordinate_max=max, memory_type=memory_type)
    except ValidationError as exc:
        raise validation_problem(exc) from None
    return MemoryList(memories=svc.range(f, limit, offset))


@router.delete("/memories", response_model=Deleted, responses=ERRORS, tags=["memories"])
def forget(
    svc: Svc,
    user_id: str | None = None,
    agent_id: str | None = None,
    session_id: str | None = None,
    memory_type: MemoryType | None = None,
    _: Any = Depends(auth.admin),
) -> Deleted:
    try:
        f = Filters(
            user_id=user_id, agent_id=agent_id, session_id=session_id, memory_type=memory_type
        )
    except ValidationError as exc:
        raise validation_problem(exc) from None
    return Deleted(deleted=svc.forget(to_filter(f)))


@router.get("/memories/{key}", response_model=Memory, responses=ERRORS, tags=["memories"])
def fetch(key: Key, svc: Svc, include_vector: bool = False, _: Any = Depends(auth.read)) -> Any:
    memory = svc.get(key, include_vector)
    return memory.model_dump(mode="json", exclude=None if include_vector else {"vector"})


@router.patch("/memories/{key}", response_model=Memory, responses=ERRORS, tags=["memories"])
def patch(key: Key, body: MemoryPatch, svc: Svc, _: Any = Depends(auth.write)) -> Any:
    return svc.patch(key, body).model_dump(mode="json", exclude={"vector"})


@router.delete("/memories/{key}", response_model=Memory, responses=ERRORS, tags=["memories"])
def delete(key: Key, svc: Svc, _: Any = Depends(auth.write)) -> Any:
    return svc.delete(key).model_dump(mode="json", exclude={"vector"})
