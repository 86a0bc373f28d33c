"""Export and import: streamed NDJSON both ways, imports in bounded chunks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import suppress
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import TypeAdapter, ValidationError
from starlette.requests import ClientDisconnect

from memory_runtime.api import auth
from memory_runtime.api.common import ERRORS, Svc
from memory_runtime.api.errors import error_detail
from memory_runtime.api.state import state_of
from memory_runtime.models import (
    ImportId,
    ImportLine,
    ImportOut,
    ImportStatus,
    LinkLine,
    MemoryLine,
)
from memory_runtime.service import (
    InvalidInputError,
    MemoryService,
    ServiceError,
    TooLargeError,
    line_error,
)

log = logging.getLogger("memory_runtime.api")

router = APIRouter()

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
