"""TEST-ONLY stand-in for a Qdrant server: Qdrant's REST API over QdrantClient(":memory:").

No Qdrant server binary can be installed on the build machines, and qdrant-client's
local engine lives inside one process. Tests where two processes must share one
Qdrant (operator creates the collection, runtime writes to it) point both at this
server with `QdrantClient(url=...)`, so the client's real HTTP code paths run.

It implements the subset of the REST API that qdrant-client (url mode) calls for:
collections (list, get, exists, create, update, delete), payload indexes
(create, delete), points (upsert, retrieve, delete, count, scroll, set/overwrite/
delete/clear payload, batch) and query (`/points/query`, `/points/query/batch`).
Search is exact (brute force). Settings the local engine ignores (collection
`hnsw_config`, `optimizers_config`, per-vector diffs, payload index schema) are
kept here and reported back by GET /collections/{name}, like a server would, so
drift detection against them can be tested. Never use this outside tests.

Run: [QDRANT_STANDIN_API_KEY=key] python -m tests.servers.qdrant_rest --port 6333
(or use `run_qdrant_rest()` / the `qdrant_url` fixture). In-process tests of the
operator's REST adapter use `in_process_qdrant()`: the same app, a fresh engine
per call, served through an httpx client without a socket.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import sys
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, TypeAdapter, ValidationError
from qdrant_client import QdrantClient
from qdrant_client.http import models as m

from tests.servers._process import REPO_ROOT, free_port, log_dir, spawn, wait_until

# Local-mode notices ("payload indexes have no effect") are expected here.
warnings.filterwarnings("ignore", module=r"qdrant_client\..*")

_DEFAULT_HNSW = m.HnswConfig(m=16, ef_construct=100, full_scan_threshold=10000)
_POINTS = TypeAdapter(m.PointInsertOperations)
_SELECTOR = TypeAdapter(m.PointsSelector)


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _ok(result: Any, started: float) -> JSONResponse:
    return JSONResponse(
        {"result": _jsonable(result), "status": "ok", "time": time.perf_counter() - started}
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _error_status(exc: Exception) -> int:
    text = str(exc).lower()
    if "not found" in text or "doesn't exist" in text or "does not exist" in text:
        return 404
    if "already exists" in text:
        return 409
    return 400


def _merge(base: BaseModel, diff: BaseModel | None) -> Any:
    """Apply a Qdrant *Diff model (None fields = unchanged) to a full config model."""
    if diff is None:
        return base
    changes = diff.model_dump(exclude_none=True)
    return base.model_copy(update=changes)


class QdrantRestStandIn:
    """Holds the local engine plus the settings it does not keep; one lock serialises calls."""

    def __init__(self) -> None:
        self.client = QdrantClient(":memory:")
        self.lock = threading.Lock()
        self.hnsw: dict[str, m.HnswConfig] = {}
        self.optimizers: dict[str, m.OptimizersConfig] = {}
        self.vector_diffs: dict[str, dict[str, dict[str, Any]]] = {}
        self.payload_schema: dict[str, dict[str, m.PayloadIndexInfo]] = {}

    def _require(self, name: str) -> None:
        if not self.client.collection_exists(name):
            raise HttpError(404, f"Not found: Collection `{name}` doesn't exist!")

    # --- collections
    def create_collection(self, name: str, body: m.CreateCollection) -> bool:
        if self.client.collection_exists(name):
            raise HttpError(409, f"Wrong input: Collection `{name}` already exists!")
        self.client.create_collection(
            name,
            vectors_config=body.vectors,
            sparse_vectors_config=body.sparse_vectors,
            metadata=body.metadata,
        )
        info = self.client.get_collection(name)
        self.hnsw[name] = _merge(_DEFAULT_HNSW, body.hnsw_config)
        self.optimizers[name] = _merge(info.config.optimizer_config, body.optimizers_config)
        self.vector_diffs[name] = {}
        self.payload_schema[name] = {}
        return True

    def update_collection(self, name: str, body: m.UpdateCollection) -> bool:
        self._require(name)
        vectors = body.vectors if isinstance(body.vectors, dict) else None
        # The local engine validates vector names and applies sparse/metadata changes.
        self.client.update_collection(
            name,
            vectors_config=vectors,
            sparse_vectors_config=body.sparse_vectors,
            metadata=body.metadata,
        )
        self.hnsw[name] = _merge(self.hnsw[name], body.hnsw_config)
        self.optimizers[name] = _merge(self.optimizers[name], body.optimizers_config)
        for vector_name, diff in (vectors or {}).items():
            stored = self.vector_diffs[name].setdefault(vector_name, {})
            stored.update(diff.model_dump(exclude_none=True))
        return True

    def delete_collection(self, name: str) -> bool:
        for store in (self.hnsw, self.optimizers, self.vector_diffs, self.payload_schema):
            store.pop(name, None)
        return self.client.delete_collection(name)

    def get_collection(self, name: str) -> m.CollectionInfo:
        self._require(name)
        info = self.client.get_collection(name)
        config = info.config
        vectors = config.params.vectors
        diffs = self.vector_diffs[name]
        if isinstance(vectors, dict):
            vectors = {
                k: v.model_copy(update=_vector_update(v, diffs.get(k))) for k, v in vectors.items()
            }
        elif isinstance(vectors, m.VectorParams):
            vectors = vectors.model_copy(update=_vector_update(vectors, diffs.get("")))
        params = config.params.model_copy(update={"vectors": vectors})
        config = config.model_copy(
            update={
                "params": params,
                "hnsw_config": self.hnsw[name],
                "optimizer_config": self.optimizers[name],
            }
        )
        count = info.points_count or 0
        schema = {
            k: v.model_copy(update={"points": count}) for k, v in self.payload_schema[name].items()
        }
        return info.model_copy(update={"config": config, "payload_schema": schema})

    # --- payload indexes
    def create_index(self, name: str, body: m.CreateFieldIndex) -> m.UpdateResult:
        self._require(name)
        schema = body.field_schema
        if schema is None:
            raise HttpError(400, "Wrong input: field_schema is required")
        self.client.create_payload_index(name, body.field_name, field_schema=schema)
        if isinstance(schema, m.PayloadSchemaType):
            info = m.PayloadIndexInfo(data_type=schema, params=None, points=0)
        else:
            info = m.PayloadIndexInfo(
                data_type=m.PayloadSchemaType(schema.type), params=schema, points=0
            )
        self.payload_schema[name][body.field_name] = info
        return m.UpdateResult(operation_id=0, status=m.UpdateStatus.COMPLETED)

    def delete_index(self, name: str, field: str) -> m.UpdateResult:
        self._require(name)
        self.client.delete_payload_index(name, field)
        self.payload_schema[name].pop(field, None)
        return m.UpdateResult(operation_id=0, status=m.UpdateStatus.COMPLETED)


def _vector_update(params: m.VectorParams, diff: dict[str, Any] | None) -> dict[str, Any]:
    if not diff:
        return {}
    update = dict(diff)
    if "hnsw_config" in update:
        base = params.hnsw_config or m.HnswConfigDiff()
        update["hnsw_config"] = base.model_copy(update=update["hnsw_config"])
    return update


def _selector(points: list[m.ExtendedPointId] | None, flt: m.Filter | None) -> m.PointsSelector:
    if points is not None:
        return m.PointIdsList(points=points)
    if flt is not None:
        return m.FilterSelector(filter=flt)
    raise HttpError(400, "Wrong input: either `points` or `filter` is required")


def create_app(api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="qdrant REST stand-in (TEST ONLY)", openapi_url=None, docs_url=None)
    state = QdrantRestStandIn()
    app.state.standin = state
    version = importlib.metadata.version("qdrant-client")

    @app.middleware("http")
    async def check_api_key(request: Request, call_next: Callable[..., Any]) -> Any:
        # Same header names as Qdrant: `api-key`, or `Authorization: Bearer`.
        if api_key is not None and request.url.path not in {"/healthz", "/livez", "/readyz"}:
            given = request.headers.get("api-key")
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = given or auth[7:]
            if given != api_key:
                return JSONResponse(
                    {"status": {"error": "Unauthorized: invalid or missing API key"}}, 401
                )
        return await call_next(request)

    def handle(fn: Callable[[], Any]) -> JSONResponse:
        started = time.perf_counter()
        try:
            with state.lock:
                return _ok(fn(), started)
        except HttpError as exc:
            status, message = exc.status, exc.message
        except ValidationError as exc:
            status, message = 400, f"Format error in JSON body: {exc}"
        except (ValueError, KeyError, TypeError, AssertionError) as exc:
            status, message = _error_status(exc), f"Wrong input: {exc}"
        return JSONResponse(
            {"status": {"error": message}, "time": time.perf_counter() - started}, status
        )

    async def body(request: Request) -> Any:
        raw = await request.body()
        return json.loads(raw) if raw else {}

    @app.get("/")
    def root() -> dict[str, Any]:
        return {"title": "qdrant REST stand-in (TEST ONLY)", "version": version, "commit": None}

    @app.get("/healthz")
    @app.get("/livez")
    @app.get("/readyz")
    def health() -> PlainTextResponse:
        return PlainTextResponse("healthz check passed")

    @app.get("/collections")
    def list_collections() -> JSONResponse:
        return handle(state.client.get_collections)

    @app.get("/collections/{name}")
    def get_collection(name: str) -> JSONResponse:
        return handle(lambda: state.get_collection(name))

    @app.get("/collections/{name}/exists")
    def collection_exists(name: str) -> JSONResponse:
        return handle(lambda: {"exists": state.client.collection_exists(name)})

    @app.put("/collections/{name}")
    async def create_collection(name: str, request: Request) -> JSONResponse:
        data = await body(request)
        return handle(lambda: state.create_collection(name, m.CreateCollection(**data)))

    @app.patch("/collections/{name}")
    async def update_collection(name: str, request: Request) -> JSONResponse:
        data = await body(request)
        return handle(lambda: state.update_collection(name, m.UpdateCollection(**data)))

    @app.delete("/collections/{name}")
    def delete_collection(name: str) -> JSONResponse:
        return handle(lambda: state.delete_collection(name))

    @app.put("/collections/{name}/index")
    async def create_index(name: str, request: Request) -> JSONResponse:
        data = await body(request)
        return handle(lambda: state.create_index(name, m.CreateFieldIndex(**data)))

    @app.delete("/collections/{name}/index/{field}")
    def delete_index(name: str, field: str) -> JSONResponse:
        return handle(lambda: state.delete_index(name, field))

    @app.put("/collections/{name}/points")
    async def upsert(name: str, request: Request) -> JSONResponse:
        data = await body(request)

        def run() -> Any:
            ops = _POINTS.validate_python(data)
            points = ops.batch if isinstance(ops, m.PointsBatch) else ops.points
            return state.client.upsert(
                name, points=points, update_filter=ops.update_filter, wait=True
            )

        return handle(run)

    @app.post("/collections/{name}/points")
    async def retrieve(name: str, request: Request) -> JSONResponse:
        data = await body(request)

        def run() -> Any:
            req = m.PointRequest(**data)
            return state.client.retrieve(
                name,
                ids=req.ids,
                with_payload=req.with_payload if req.with_payload is not None else True,
                with_vectors=req.with_vector if req.with_vector is not None else False,
            )

        return handle(run)

    @app.get("/collections/{name}/points/{point_id}")
    def get_point(name: str, point_id: str) -> JSONResponse:
        def run() -> Any:
            pid: int | str = int(point_id) if point_id.isdigit() else point_id
            found = state.client.retrieve(name, ids=[pid], with_payload=True, with_vectors=True)
            if not found:
                raise HttpError(404, f"Not found: No point with id {point_id} found")
            return found[0]

        return handle(run)

    @app.post("/collections/{name}/points/delete")
    async def delete_points(name: str, request: Request) -> JSONResponse:
        data = await body(request)
        return handle(
            lambda: state.client.delete(
                name, points_selector=_SELECTOR.validate_python(data), wait=True
            )
        )

    @app.post("/collections/{name}/points/count")
    async def count(name: str, request: Request) -> JSONResponse:
        data = await body(request)

        def run() -> Any:
            req = m.CountRequest(**data)
            return state.client.count(name, count_filter=req.filter, exact=True)

        return handle(run)

    @app.post("/collections/{name}/points/scroll")
    async def scroll(name: str, request: Request) -> JSONResponse:
        data = await body(request)

        def run() -> Any:
            req = m.ScrollRequest(**data)
            points, next_offset = state.client.scroll(
                name,
                scroll_filter=req.filter,
                limit=req.limit or 10,
                offset=req.offset,
                order_by=req.order_by,
                with_payload=req.with_payload if req.with_payload is not None else True,
                with_vectors=req.with_vector if req.with_vector is not None else False,
            )
            return m.ScrollResult(points=points, next_page_offset=next_offset)

        return handle(run)

    def _query(name: str, req: m.QueryRequest) -> m.QueryResponse:
        return state.client.query_points(
            name,
            query=req.query,
            using=req.using,
            prefetch=req.prefetch,
            query_filter=req.filter,
            search_params=req.params,
            limit=req.limit or 10,
            offset=req.offset,
            # Qdrant's REST defaults: no payload, no vectors unless asked.
            with_payload=req.with_payload if req.with_payload is not None else False,
            with_vectors=req.with_vector if req.with_vector is not None else False,
            score_threshold=req.score_threshold,
            lookup_from=req.lookup_from,
        )

    @app.post("/collections/{name}/points/query")
    async def query(name: str, request: Request) -> JSONResponse:
        data = await body(request)
        return handle(lambda: _query(name, m.QueryRequest(**data)))

    @app.post("/collections/{name}/points/query/batch")
    async def query_batch(name: str, request: Request) -> JSONResponse:
        data = await body(request)

        def run() -> Any:
            batch = m.QueryRequestBatch(**data)
            return [_query(name, r) for r in batch.searches]

        return handle(run)

    @app.post("/collections/{name}/points/payload")
    async def set_payload(name: str, request: Request) -> JSONResponse:
        data = await body(request)

        def run() -> Any:
            req = m.SetPayload(**data)
            return state.client.set_payload(
                name,
                payload=req.payload,
                points=_selector(req.points, req.filter),
                key=req.key,
                wait=True,
            )

        return handle(run)

    @app.put("/collections/{name}/points/payload")
    async def overwrite_payload(name: str, request: Request) -> JSONResponse:
        data = await body(request)

        def run() -> Any:
            req = m.SetPayload(**data)
            return state.client.overwrite_payload(
                name, payload=req.payload, points=_selector(req.points, req.filter), wait=True
            )

        return handle(run)

    @app.post("/collections/{name}/points/payload/delete")
    async def delete_payload(name: str, request: Request) -> JSONResponse:
        data = await body(request)

        def run() -> Any:
            req = m.DeletePayload(**data)
            return state.client.delete_payload(
                name, keys=req.keys, points=_selector(req.points, req.filter), wait=True
            )

        return handle(run)

    @app.post("/collections/{name}/points/payload/clear")
    async def clear_payload(name: str, request: Request) -> JSONResponse:
        data = await body(request)
        return handle(
            lambda: state.client.clear_payload(
                name, points_selector=_SELECTOR.validate_python(data), wait=True
            )
        )

    @app.post("/collections/{name}/points/batch")
    async def batch(name: str, request: Request) -> JSONResponse:
        data = await body(request)

        def run() -> Any:
            req = m.UpdateOperations(**data)
            return state.client.batch_update_points(
                name, update_operations=req.operations, wait=True
            )

        return handle(run)

    return app


@dataclass(frozen=True)
class InProcessQdrant:
    """The stand-in served inside the test process (no port, no subprocess)."""

    http: httpx.Client  # requests run the app; give it to the operator's QdrantAdmin
    engine: QdrantClient  # the local engine behind it, for the test's own reads
    writes: list[str]  # "PUT /collections/x" for every request that is not a GET


class _AppTransport(httpx.BaseTransport):
    """A synchronous httpx transport that runs an ASGI app (httpx's own
    ASGITransport is async only); each request gets its own event loop, so
    callers in several threads (Kopf's workers) may share the client."""

    def __init__(self, app: FastAPI) -> None:
        self._asgi = httpx.ASGITransport(app=app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def run() -> httpx.Response:
            response = await self._asgi.handle_async_request(request)
            content = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=content)

        return asyncio.run(run())


def in_process_qdrant() -> InProcessQdrant:
    app = create_app()
    writes: list[str] = []

    def record(request: httpx.Request) -> None:
        if request.method != "GET":
            writes.append(f"{request.method} {request.url.path}")

    http = httpx.Client(
        base_url="http://qdrant.test",
        transport=_AppTransport(app),
        event_hooks={"request": [record]},
    )
    return InProcessQdrant(http, app.state.standin.client, writes)


@dataclass(frozen=True)
class QdrantRestServer:
    url: str
    api_key: str | None
    log_path: Path


@contextmanager
def run_qdrant_rest(
    *, api_key: str | None = None, startup_timeout: float = 60.0
) -> Iterator[QdrantRestServer]:
    """Start the stand-in in a subprocess on a free port; stop it on exit."""
    logs = log_dir("qdrant")
    log_path = logs / ("qdrant-rest-apikey.log" if api_key else "qdrant-rest.log")
    log_path.write_text("")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "QDRANT_STANDIN_API_KEY"}
    if api_key is not None:
        env["QDRANT_STANDIN_API_KEY"] = api_key  # env, not argv: keeps it out of `ps`
    t_start = time.monotonic()
    proc = spawn(
        "qdrant-rest",
        [sys.executable, "-m", "tests.servers.qdrant_rest", "--port", str(port)],
        log_path,
        env=env,
        cwd=REPO_ROOT,
    )
    server = QdrantRestServer(url=f"http://127.0.0.1:{port}", api_key=api_key, log_path=log_path)

    def ready() -> bool:
        with urllib.request.urlopen(f"{server.url}/readyz", timeout=2) as resp:
            return resp.status == 200

    try:
        wait_until(proc, ready, timeout=startup_timeout, what=f"{server.url}/readyz")
        (logs / "startup-seconds.txt").write_text(f"{time.monotonic() - t_start:.2f}\n")
        yield server
    finally:
        proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Qdrant REST stand-in (TEST ONLY)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = create_app(os.environ.get("QDRANT_STANDIN_API_KEY") or None)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
