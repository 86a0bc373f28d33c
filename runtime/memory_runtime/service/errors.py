"""What a use case refuses or cannot finish; what each kind means over HTTP is
the API's business (api/errors.py)."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """A use case refused or could not finish; `detail` is safe to show. What
    each kind means over HTTP (status, problem type) is the API's business
    (api/errors.py)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra: dict[str, Any] = {}  # more facts for the answer, e.g. an import's `line`


class NotFoundError(ServiceError):
    """The memory, link or import named does not exist."""


class ConflictError(ServiceError):
    """A concurrent writer got there first, or the request contradicts the state."""


class QuotaExceededError(ServiceError):
    """The namespace holds its maximum number of memories."""


class InvalidInputError(ServiceError):
    """The input is well-formed but cannot be applied (e.g. wrong dimensions)."""


class TooLargeError(ServiceError):
    """A part of the request is over its size limit."""


class UnavailableError(ServiceError):
    """A dependency the use case needs is down."""


def line_error(kind: type[ServiceError], number: int, detail: str) -> ServiceError:
    """An import error about one line: `line N: ...`, and `line` in the problem."""
    error = kind(f"line {number}: {detail}")
    error.extra["line"] = number
    return error
