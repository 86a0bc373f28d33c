"""RFC 9457 problem+json for every error; internals never leak into responses."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolClosed, PoolTimeout
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memory_runtime.service import errors as kinds
from memory_runtime.service.errors import ServiceError

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
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        default_slug, default_title = _TITLES.get(status, ("error", "Error"))
        self.status = status
        self.detail = detail
        self.slug = slug or default_slug
        self.title = title or default_title
        self.headers = headers or {}
        self.extra = extra or {}  # more members of the problem document


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
# A location part is shown only if it reads like a field name: unknown keys and
# metadata keys are client input, and error details never echo input.
_NAME = re.compile(r"[A-Za-z0-9_:\-\[\]]{1,64}")
HIDDEN = "…"


def safe_loc(loc: Sequence[Any]) -> list[str]:
    return [
        str(p) if isinstance(p, int) or (isinstance(p, str) and _NAME.fullmatch(p)) else HIDDEN
        for p in loc
    ]


def error_message(err: Mapping[str, Any]) -> str:
    """A pydantic error's message without pydantic's "Value error, " prefix."""
    return str(err.get("msg", "invalid")).removeprefix("Value error, ")


def error_detail(err: Mapping[str, Any]) -> str:
    """`where: message` for the first error, e.g. `metadata.a: ... not an object`."""
    where = ".".join(p for p in safe_loc(err.get("loc", ())) if p not in _WHERE_SKIP)
    return f"{where}: {error_message(err)}" if where else error_message(err)


def validation_problem(exc: ValidationError) -> ProblemError:
    """422 for a model validated inside a route (same detail as a request body error)."""
    errors = exc.errors()
    return ProblemError(422, error_detail(errors[0]) if errors else "invalid input")


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # location and message only: echoing the input could reflect secrets or megabytes
    out = []
    for err in exc.errors():
        loc = safe_loc(err.get("loc", ()))
        out.append({"loc": loc, "message": error_message(err), "type": str(err.get("type", ""))})
    return out


# Why FastAPI could not parse a JSON body that json.loads did not call invalid.
_UNPARSABLE: dict[type, str] = {
    RecursionError: "the JSON body nests too deeply",
    ValueError: "the JSON body has a number with too many digits",
}


# What PostgreSQL refuses deterministically: the same request fails the same way,
# so these are never a 503 (a client honouring Retry-After would retry forever).
# ProgramLimitExceeded (e.g. a tsvector over 1 MB) is an OperationalError in
# DB-API terms, hence listed. The models refuse these first; this is the backstop.
DATABASE_REFUSALS = (psycopg.DataError, psycopg.errors.ProgramLimitExceeded, psycopg.IntegrityError)


def database_refusal(exc: Exception) -> ProblemError:
    """The problem for one of DATABASE_REFUSALS; the database's message is not shown
    (it can quote the input)."""
    if isinstance(exc, psycopg.IntegrityError):
        return ProblemError(409, "the change conflicts with stored data or a database constraint")
    return ProblemError(
        422,
        "the database refused a value in this request (out of range or too large)",
        slug="invalid-input",
        title="Invalid input",
    )


DATABASE_DOWN = (psycopg.OperationalError, PoolTimeout, PoolClosed)

# What each service error answers: status, problem type (slug) and title.
SERVICE_PROBLEMS: dict[type[ServiceError], tuple[int, str, str]] = {
    kinds.NotFoundError: (404, "not-found", "Not found"),
    kinds.ConflictError: (409, "conflict", "Conflict"),
    kinds.QuotaExceededError: (409, "quota-exceeded", "Memory quota exceeded"),
    kinds.InvalidInputError: (422, "invalid-input", "Invalid input"),
    kinds.TooLargeError: (413, "payload-too-large", "Request body too large"),
    kinds.UnavailableError: (503, "dependency-unavailable", "A dependency is unavailable"),
}


def service_problem(exc: ServiceError) -> ProblemError:
    kind = next((k for k in type(exc).__mro__ if k in SERVICE_PROBLEMS), None)
    status, slug, title = SERVICE_PROBLEMS[kind] if kind else (400, "bad-request", "Bad request")
    return ProblemError(status, exc.detail, slug=slug, title=title, extra=exc.extra)


def known_problem(exc: Exception) -> ProblemError | None:
    """The problem an expected exception answers with (the HTTP handlers and the MCP
    tools both use this); None for anything else, which is a 500."""
    if isinstance(exc, ProblemError):
        return exc
    if isinstance(exc, ServiceError):
        return service_problem(exc)
    if isinstance(exc, DATABASE_REFUSALS):  # before DATABASE_DOWN: one is an OperationalError
        return database_refusal(exc)
    if isinstance(exc, DATABASE_DOWN):
        return ProblemError(
            503, "the database is unavailable; retry later", headers={"Retry-After": "5"}
        )
    return None


def instance(scope: Scope) -> str:
    """The route template (`/memories/{key}`): the path itself is client input."""
    route: Any = scope.get("route")
    return getattr(route, "path", None) or scope.get("path", "")


def _answer(request: Request, exc: ProblemError) -> JSONResponse:
    return problem(
        exc.status,
        exc.detail,
        instance=instance(request.scope),
        slug=exc.slug,
        title=exc.title,
        headers=exc.headers,
        extra=exc.extra,
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return _answer(request, exc)

    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError) -> JSONResponse:
        return _answer(request, service_problem(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        raw = exc.errors()
        detail = error_detail(raw[0]) if raw else "invalid request"
        return problem(422, detail, instance=instance(request.scope), extra={"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else None
        unparsable = _UNPARSABLE.get(type(exc.__cause__)) if exc.status_code == 400 else None
        if unparsable:  # FastAPI's "error parsing the body": say why, as for invalid JSON
            return problem(422, unparsable, instance=instance(request.scope))
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}"
        return problem(
            exc.status_code,
            detail,
            instance=instance(request.scope),
            headers=dict(exc.headers) if exc.headers else None,
        )

    @app.exception_handler(psycopg.DataError)
    @app.exception_handler(psycopg.errors.ProgramLimitExceeded)
    @app.exception_handler(psycopg.IntegrityError)
    async def _refused(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database refused %s %s: %s", request.method, request.url.path, repr(exc))
        return _answer(request, known_problem(exc))  # type: ignore[arg-type]

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(PoolTimeout)
    @app.exception_handler(PoolClosed)
    async def _database(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable on %s: %s", request.url.path, exc)
        return _answer(request, known_problem(exc))  # type: ignore[arg-type]

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        # only for errors in the outer middleware: InternalErrorMiddleware answers the rest
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return internal_error(instance(request.scope))

    app.add_middleware(InternalErrorMiddleware)  # added first: innermost of our middleware


def internal_error(path: str) -> JSONResponse:
    return problem(500, "the server failed to handle this request", instance=path)


class InternalErrorMiddleware:
    """Answers an unhandled exception with a 500 problem and keeps the connection usable.

    Starlette's ServerErrorMiddleware (where an `Exception` handler runs) sends
    its 500 and then re-raises; uvicorn, seeing an exception after the response
    started, closes the connection without `Connection: close`, so a keep-alive
    client's next request on it fails. Here the exception ends with the answer.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            if started:  # a response is half sent: only closing the connection is honest
                raise
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            await internal_error(instance(scope))(scope, receive, send)
