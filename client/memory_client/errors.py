"""Problem documents (RFC 9457) of the memory API as typed exceptions."""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://somafractal.io/problems/"


class MemoryApiError(Exception):
    """Any failure of a memory API call."""


class TransportError(MemoryApiError):
    """The server could not be reached or the connection broke (after retries)."""


class ProblemError(MemoryApiError):
    """The server answered with a problem document; the fields are the document's."""

    status: int = 0

    def __init__(self, status: int, problem: dict[str, Any], retry_after: float | None = None):
        self.status = status
        self.problem = problem
        self.type: str = str(problem.get("type", "about:blank"))
        self.title: str = str(problem.get("title", ""))
        self.detail: str = str(problem.get("detail", ""))
        self.errors: list[dict[str, Any]] = list(problem.get("errors") or [])
        self.retry_after = retry_after
        super().__init__(f"{status} {self.title}: {self.detail}" if self.detail else self.title)

    @property
    def slug(self) -> str:
        return self.type.removeprefix(PROBLEM_BASE)


class BadRequest(ProblemError):
    status = 400


class Unauthorized(ProblemError):
    status = 401


class Forbidden(ProblemError):
    status = 403


class NotFound(ProblemError):
    status = 404


class Conflict(ProblemError):
    status = 409


class QuotaExceeded(Conflict):
    """The namespace holds `maxMemories` already (a 409 of its own type)."""


class PayloadTooLarge(ProblemError):
    status = 413


class ValidationFailed(ProblemError):
    status = 422


class RateLimited(ProblemError):
    status = 429


class ServerError(ProblemError):
    status = 500


class Unavailable(ServerError):
    status = 503


_BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: RateLimited,
    503: Unavailable,
}


def problem_error(
    status: int, problem: dict[str, Any], retry_after: float | None = None
) -> ProblemError:
    """The exception class for a status and problem type."""
    if str(problem.get("type", "")).endswith("/quota-exceeded"):
        return QuotaExceeded(status, problem, retry_after)
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ProblemError)
    return cls(status, problem, retry_after)
