"""Problem documents (RFC 9457) of the memory API as typed exceptions."""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://somafractal.io/problems/"


class MemoryApiError(Exception):
    """Any failure of a memory API call."""


class TransportError(MemoryApiError):
    """The server could not be reached or the connection broke (after retries)."""


# status -> the exception class for it (each class below registers itself)
_BY_STATUS: dict[int, type[ProblemError]] = {}


class ProblemError(MemoryApiError):
    """The server answered with a problem document; the fields are the document's."""

    status: int = 0

    def __init_subclass__(cls, status: int = 0, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if status:
            cls.status = status
            _BY_STATUS[status] = cls

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


class BadRequest(ProblemError, status=400):
    """The request is malformed (e.g. not JSON)."""


class Unauthorized(ProblemError, status=401):
    """No token, or a wrong one."""


class Forbidden(ProblemError, status=403):
    """The token may not do this."""


class NotFound(ProblemError, status=404):
    """Nothing stands at that id, coordinate or path."""


class Conflict(ProblemError, status=409):
    """The request conflicts with the stored state (e.g. `if_version` no longer matches)."""


class QuotaExceeded(Conflict):
    """The namespace holds `maxMemories` already (a 409 of its own type)."""


class PayloadTooLarge(ProblemError, status=413):
    """The body is larger than the server accepts."""


class ValidationFailed(ProblemError, status=422):
    """A field is invalid; `errors` says which."""


class RateLimited(ProblemError, status=429):
    """Too many requests; `retry_after` says when to try again."""


class ServerError(ProblemError, status=500):
    """The server failed (any 5xx without a class of its own)."""


class Unavailable(ServerError, status=503):
    """The server or one of its backends is down for now; retry."""


def problem_error(
    status: int, problem: dict[str, Any], retry_after: float | None = None
) -> ProblemError:
    """The exception class for a status and problem type."""
    if str(problem.get("type", "")).endswith("/quota-exceeded"):
        return QuotaExceeded(status, problem, retry_after)
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ProblemError)
    return cls(status, problem, retry_after)
