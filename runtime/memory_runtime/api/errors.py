"""RFC 9457 problem+json for every error; internals never leak into responses."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolClosed, PoolTimeout
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from memory_runtime.service import ServiceError

log = logging.getLogger("memory_runtime.api")

PROBLEM_BASE = "https://somafractal.io/problems/"
MEDIA_TYPE = "application/problem+json"

_TITLES = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Not allowed for this token"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation-error", "Request validation failed"),
    429: ("rate-limited", "Too many requests"),
    500: ("internal-error", "Internal server error"),
    503: ("dependency-unavailable", "A dependency is unavailable"),
}


class ProblemError(Exception):
    """Raise anywhere in the HTTP layer to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        default_slug, default_title = _TITLES.get(status, ("error", "Error"))
        self.status = status
        self.detail = detail
        self.slug = slug or default_slug
        self.title = title or default_title
        self.headers = headers or {}


def problem(
    status: int,
    detail: str | None,
    *,
    instance: str | None = None,
    slug: str | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    default_slug, default_title = _TITLES.get(status, ("error", "Error"))
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + (slug or default_slug),
        "title": title or default_title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


_WHERE_SKIP = ("body", "query", "path", "[key]")


def error_message(err: Mapping[str, Any]) -> str:
    """A pydantic error's message without pydantic's "Value error, " prefix."""
    return str(err.get("msg", "invalid")).removeprefix("Value error, ")


def error_detail(err: Mapping[str, Any]) -> str:
    """`where: message` for the first error, e.g. `metadata.a: ... not an object`."""
    where = ".".join(str(p) for p in err.get("loc", ()) if p not in _WHERE_SKIP)
    return f"{where}: {error_message(err)}" if where else error_message(err)


def validation_problem(exc: ValidationError) -> ProblemError:
    """422 for a model validated inside a route (same detail as a request body error)."""
    errors = exc.errors()
    return ProblemError(422, error_detail(errors[0]) if errors else "invalid input")


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # location and message only: echoing the input could reflect secrets or megabytes
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        out.append({"loc": loc, "message": error_message(err), "type": str(err.get("type", ""))})
    return out


def install(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem(
            exc.status,
            exc.detail,
            instance=request.url.path,
            slug=exc.slug,
            title=exc.title,
            headers=exc.headers,
        )

    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError) -> JSONResponse:
        return problem(
            exc.status, exc.detail, instance=request.url.path, slug=exc.slug, title=exc.title
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        raw = exc.errors()
        detail = error_detail(raw[0]) if raw else "invalid request"
        return problem(422, detail, instance=request.url.path, extra={"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else None
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}"
        return problem(
            exc.status_code,
            detail,
            instance=request.url.path,
            headers=dict(exc.headers) if exc.headers else None,
        )

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(PoolTimeout)
    @app.exception_handler(PoolClosed)
    async def _database(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable on %s: %s", request.url.path, exc)
        return problem(
            503,
            "the database is unavailable; retry later",
            instance=request.url.path,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "the server failed to handle this request", instance=request.url.path)
