"""What every route module shares: the error responses, key schemas and the service dependency."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request

from memory_runtime.api.state import state_of
from memory_runtime.models import Problem
from memory_runtime.service import MemoryService

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
