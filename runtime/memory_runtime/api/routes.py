"""The memory API routes (HTTP only: parse, call the service, shape the answer)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import suppress
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.requests import ClientDisconnect

from memory_runtime.api import auth
from memory_runtime.api.errors import ProblemError, error_detail, validation_problem
from memory_runtime.api.state import state_of
from memory_runtime.models import (
    INT64,
    MAX_DEPTH,
    MAX_NEIGHBOURS,
    Deleted,
    Direction,
    Filters,
    ImportId,
    ImportLine,
    ImportOut,
    ImportStatus,
    Link,
    LinkIn,
    LinkKey,
    LinkLine,
    LinkType,
    Memory,
    MemoryBatchIn,
    MemoryIn,
    MemoryLine,
    MemoryList,
    MemoryPatch,
    MemoryType,
    NeighborsOut,
    PathOut,
    Problem,
    RecallMode,
    SearchIn,
    SearchOut,
    Stats,
)
from memory_runtime.service import (
    InvalidInputError,
    MemoryService,
    ServiceError,
    TooLargeError,
    line_error,
    to_filter,
)

log = logging.getLogger("memory_runtime.api")

router = APIRouter()

DEGRADED_HEADER = "Recall-Degraded"  # e.g. "vector": hybrid answered from full text only

# every error answer is a Problem document (api/errors.py); the schema is inline so
# clients and the fuzz test (tests/integration/runtime/test_api_fuzz.py) check it
PROBLEM_CONTENT = {"application/problem+json": {"schema": Problem.model_json_schema()}}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": PROBLEM_CONTENT}
    for code, text in {
        401: "missing or invalid token",
        403: "token role too low",
        413: "body too large",
        422: "invalid input",
        429: "rate limited",
    }.items()
}


# Canonical forms, so the OpenAPI document (and a fuzzer reading it) says what a
# valid value looks like; the server also accepts spaces and exponents.
_COORDINATE = r"-?[0-9]{1,9}(\.[0-9]{1,9})?(,-?[0-9]{1,9}(\.[0-9]{1,9})?){0,15}"
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
COORDINATE_SCHEMA = {"pattern": f"^{_COORDINATE}$", "examples": ["0,0"]}
KEY_SCHEMA = {"pattern": f"^({_UUID}|{_COORDINATE})$", "examples": ["1,2"]}


def coordinate_query(description: str = "a coordinate, e.g. 1,2", **kwargs: Any) -> Any:
    return Query(description=description, json_schema_extra=COORDINATE_SCHEMA, **kwargs)


def key_query(description: str = "memory id or coordinate", **kwargs: Any) -> Any:
    return Query(description=description, json_schema_extra=KEY_SCHEMA, **kwargs)


Key = Annotated[str, Path(description="memory id or coordinate", json_schema_extra=KEY_SCHEMA)]


async def service(request: Request) -> MemoryService:
    # async: a sync dependency would cost a worker-thread hop on every request
    return state_of(request.app).service


Svc = Annotated[MemoryService, Depends(service)]


def _filters_from_query(
    memory_type: MemoryType | None,
    tags: list[str] | None,
    agent_id: str | None,
    user_id: str | None,
    session_id: str | None,
    metadata: str | None,
    created_from: datetime | None,
    created_to: datetime | None,
    coordinate_min: str | None,
    coordinate_max: str | None,
) -> dict[str, Any]:
    meta: Any = {}
    if metadata:
        try:
            meta = json.loads(metadata)
        except (ValueError, RecursionError):  # RecursionError: nested thousands deep
            raise ProblemError(422, 'metadata must be a JSON object, e.g. {"k": "v"}') from None
        if not isinstance(meta, dict):
            raise ProblemError(422, "metadata must be a JSON object")
    return {
        "memory_type": memory_type,
        "tags": tags or [],
        "agent_id": agent_id,
        "user_id": user_id,
        "session_id": session_id,
        "metadata": meta,
        "created_from": created_from,
        "created_to": created_to,
        "coordinate_min": coordinate_min,
        "coordinate_max": coordinate_max,
    }


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


@router.get("/memories/search", response_model=SearchOut, responses=ERRORS, tags=["recall"])
def search_get(
    svc: Svc,
    request: Request,
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
    _: Any = Depends(auth.read),
) -> Response:
    filters = _filters_from_query(
        memory_type,
        tags,
        agent_id,
        user_id,
        session_id,
        metadata,
        created_from,
        created_to,
        coordinate_min,
        coordinate_max,
    )
    try:
        req = SearchIn(
            query=query,
            top_k=top_k,
            mode=mode,
            alpha=alpha,
            recency_weight=recency_weight,
            importance_weight=importance_weight,
            **filters,
        )
    except ValidationError as exc:
        raise validation_problem(exc) from None
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


# --- admin: export / import / stats -----------------------------------------


@router.get(
    "/export",
    responses={200: {"content": {"application/x-ndjson": {}}}, **ERRORS},
    tags=["admin"],
)
def export(svc: Svc, _: Any = Depends(auth.admin)) -> StreamingResponse:
    return StreamingResponse(svc.export_lines(), media_type="application/x-ndjson")


IMPORT_CHUNK_LINES = 1000  # lines per import transaction ...
IMPORT_CHUNK_BYTES = 8 << 20  # ... or fewer when they are big
STREAMED_BODIES = ("/import",)


def expected_import_rows(content_length: str | None, dimensions: int) -> int:
    """About how many memories an import body of this size carries (0 if unknown):
    a memory line holds its vector, at least ~12 bytes per element as exported
    plus its other fields, so this rather undercounts."""
    if content_length is None or not content_length.isdigit():
        return 0
    return int(content_length) // (
        dimensions * 12 + 256
    )  # no whole-body cap: each line is capped instead


async def ndjson_lines(
    chunks: AsyncIterator[bytes], limit: int, first: int
) -> AsyncIterator[tuple[int, bytes]]:
    """The numbered non-blank lines of an NDJSON stream, the first numbered `first`.

    Holds at most one line (plus one network chunk) in memory; a line longer than
    `limit` bytes is a 413 naming it."""
    number = first - 1
    buffer = bytearray()
    async for data in chunks:
        buffer += data
        start = 0
        while (end := buffer.find(b"\n", start)) != -1:
            number += 1
            if end - start > limit:
                raise line_error(TooLargeError, number, f"longer than {limit} bytes")
            if buffer[start:end].strip():
                yield number, bytes(buffer[start:end])
            start = end + 1
        del buffer[:start]
        if len(buffer) > limit:
            raise line_error(TooLargeError, number + 1, f"longer than {limit} bytes")
    if buffer.strip():
        yield number + 1, bytes(buffer)


IMPORT_LINE: TypeAdapter[MemoryLine | LinkLine] = TypeAdapter(ImportLine)


def parse_import_lines(
    lines: Sequence[tuple[int, bytes]],
) -> list[tuple[int, MemoryLine | LinkLine]]:
    """Validate NDJSON lines with the write API's own models; a 422 names the line."""
    parsed = []
    for number, raw in lines:
        try:
            parsed.append((number, IMPORT_LINE.validate_json(raw)))
        except ValidationError as exc:
            err = exc.errors()[0]
            if err["type"] == "union_tag_invalid":  # its message would quote the kind
                detail = 'kind: expected "memory" or "link"'
            else:  # the location without the union tag ("memory"/"link") in front
                detail = error_detail({**err, "loc": err["loc"][1:]})
            raise line_error(InvalidInputError, number, detail) from None
    return parsed


@router.post(
    "/import",
    response_model=ImportOut,
    responses={
        409: {"description": "coordinate conflict, quota, or a gap in a resumed import"},
        **ERRORS,
    },
    tags=["admin"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        }
    },
)
async def import_(
    request: Request,
    svc: Svc,
    import_id: Annotated[
        ImportId | None, Query(description="names the stream: progress is kept, resume skips")
    ] = None,
    start_line: Annotated[
        int, Query(ge=1, lt=2**62, description="number of this body's first line in the stream")
    ] = 1,
    _: Any = Depends(auth.admin),
) -> Any:
    """Stream an export in: chunked commits, idempotent, resumable (docs/API.md)."""
    committed = await run_in_threadpool(svc.import_begin, import_id, start_line)
    out = ImportOut(import_id=import_id, lines=max(committed, start_line - 1))
    limit = state_of(request.app).settings.max_body_bytes
    chunk: list[tuple[int, bytes]] = []
    size = 0
    # a load into an empty vector index, or one at least as large as the index:
    # without its graph, built once at the end
    expected = expected_import_rows(request.headers.get("content-length"), svc.config.dimensions)
    bulk = await run_in_threadpool(svc.index.begin_bulk_load, expected)
    writes = ChunkWrites(svc, out, bulk)
    try:
        async for number, line in ndjson_lines(request.stream(), limit, start_line):
            if number <= committed:
                out.skipped_lines += 1
                continue
            chunk.append((number, line))
            size += len(line)
            if len(chunk) >= IMPORT_CHUNK_LINES or size >= IMPORT_CHUNK_BYTES:
                await writes.submit(chunk)
                chunk, size = [], 0
        if chunk:
            await writes.submit(chunk)
        await writes.settle()
        await run_in_threadpool(svc.import_finish, out)
    except ServiceError as exc:
        error = exc
        try:
            await writes.settle()
        except ServiceError as earlier:  # an earlier chunk's error comes first
            error = earlier
        error.extra["committed_lines"] = out.lines
        raise error from None
    except ClientDisconnect:
        with suppress(ServiceError):
            await writes.settle()
        # nobody reads an answer now; what was committed stays, the rest resumes
        log.info("import %s cut by the client after line %d", import_id or "-", out.lines)
        return Response(status_code=499)
    finally:
        if bulk:  # also after an error or a cut: what was committed is served
            await run_in_threadpool(svc.index.finish_bulk_load)
    return out


class ChunkWrites:
    """An import's chunks, written one after the other in order, each while the
    next is read and validated (the parsing and the database's work overlap)."""

    def __init__(self, svc: MemoryService, out: ImportOut, bulk: bool) -> None:
        self.svc = svc
        self.out = out
        self.bulk = bulk
        self.pending: asyncio.Future[None] | None = None

    async def submit(self, chunk: list[tuple[int, bytes]]) -> None:
        """Validate `chunk` (meanwhile the previous one is written), then start its
        write once the previous one committed; a bad line raises after that."""
        try:
            lines = await run_in_threadpool(parse_import_lines, chunk)
        finally:
            await self.settle()
        self.pending = asyncio.ensure_future(
            run_in_threadpool(self.svc.import_chunk, lines, self.out, bulk=self.bulk)
        )

    async def settle(self) -> None:
        """Wait for the write in flight (its error, if any, raises here)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            await pending


@router.get("/import/{import_id}", response_model=ImportStatus, responses=ERRORS, tags=["admin"])
def import_status(import_id: ImportId, svc: Svc, _: Any = Depends(auth.admin)) -> ImportStatus:
    return svc.import_status(import_id)


@router.get("/stats", response_model=Stats, responses=ERRORS, tags=["admin"])
def stats(svc: Svc, request: Request, _: Any = Depends(auth.read)) -> Any:
    state = state_of(request.app)
    jobs = {job.name: job.describe() for job in state.jobs}
    return {
        **svc.stats(),
        "index_rate_per_second": jobs["index"]["rate_per_second"] if "index" in jobs else None,
        "jobs": jobs,
        "dependencies": state.health.snapshot(),
    }


# --- health -----------------------------------------------------------------


# async and I/O-free: they answer on the event loop even while every worker
# thread waits on a dependency, and never wait on one themselves.
@router.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["health"])
async def readyz(request: Request, response: Response) -> dict[str, Any]:
    """503 only when PostgreSQL (the source of truth) does not answer; other
    dependencies are reported (degraded) but keep the pod in its Service."""
    checks = state_of(request.app).health.snapshot()
    ready = checks["postgres"]["status"] == "ok"
    degraded = sorted(name for name, c in checks.items() if c["status"] != "ok")
    if not ready:
        response.status_code = 503
    status = "not ready" if not ready else "degraded" if degraded else "ready"
    return {"status": status, "degraded": degraded, "checks": checks}
