"""The API owns what a service error means over HTTP: every kind is mapped."""

from __future__ import annotations

from memory_runtime import service
from memory_runtime.api.errors import SERVICE_PROBLEMS, known_problem


def test_every_service_error_kind_has_its_problem() -> None:
    kinds = {
        v
        for v in vars(service).values()
        if isinstance(v, type)
        and issubclass(v, service.ServiceError)
        and v is not service.ServiceError
    }
    assert kinds == set(SERVICE_PROBLEMS)
    assert not any(hasattr(k, "status") for k in kinds)  # no HTTP in the service layer


def test_a_service_error_answers_its_status_detail_and_extra() -> None:
    error = service.line_error(service.InvalidInputError, 7, "bad vector")
    problem = known_problem(error)
    assert problem is not None
    assert (problem.status, problem.slug, problem.detail) == (
        422,
        "invalid-input",
        "line 7: bad vector",
    )
    assert problem.extra == {"line": 7}
    gone = known_problem(service.NotFoundError("no such memory"))
    assert gone is not None
    assert (gone.status, gone.title) == (404, "Not found")
