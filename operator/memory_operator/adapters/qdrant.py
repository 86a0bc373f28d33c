"""Qdrant adapter: one collection per tenant (single unnamed dense vector).

The plan is pure (collection.py: observed config in, the change to make out);
this class does the I/O. Dimensions and distance are fixed at creation: a
change is a permanent error, never a silent recreate that would drop the
tenant's vectors.

Why hand-written REST and not qdrant-client: the operator makes five kinds of
requests (get, exists, create, update, delete a collection), and importing
qdrant-client (numpy, grpc, its pydantic models) is a large part of the
operator's memory (bench/README.md, "Peak RSS"). The runtime, which reads and
writes points, keeps qdrant-client. Request and response shapes follow Qdrant's
REST API (`/collections/{name}`); tests run them against the REST stand-in
(tests/servers/qdrant_rest.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

import httpx

from memory_operator.adapters.calls import backend_call
from memory_operator.collection import (
    NAME,
    CollectionState,
    plan_collection,
    state_from_info,
    validate_target,
)
from memory_operator.domain import CollectionTarget, Outcome, PlanError
from memory_operator.ports import BackendError, BackendRejected, BackendUnavailable

BACKEND = "qdrant"
TIMEOUT = 10.0


def _translate(exc: Exception) -> BackendError | None:
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        error = BackendUnavailable if status >= 500 or status in (408, 429) else BackendRejected
        return error(BACKEND, f"HTTP {status}: {exc.response.text[:500]}")
    if isinstance(exc, (httpx.TransportError, ValueError)):  # unreachable, or not Qdrant's JSON
        return BackendUnavailable(BACKEND, f"{type(exc).__name__}: {exc}")
    return None


class QdrantAdmin:
    """VectorAdmin over Qdrant's REST API (one httpx client, shared by all reconciles)."""

    def __init__(self, http: httpx.Client) -> None:
        self._http = http

    @classmethod
    def connect(cls, url: str, api_key: str | None = None) -> QdrantAdmin:
        headers = {"api-key": api_key} if api_key else {}
        return cls(httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT))

    def close(self) -> None:
        self._http.close()

    def _call(self, operation: str) -> AbstractContextManager[None]:
        return backend_call(BACKEND, operation, _translate)

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """The response's `result`; raises httpx.HTTPStatusError for 4xx/5xx."""
        response = self._http.request(method, path, json=body)
        response.raise_for_status()
        return response.json()["result"]

    def _state(self, name: str) -> CollectionState | None:
        # One request: a missing collection is a 404.
        try:
            return state_from_info(self._request("GET", f"/collections/{name}"))
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:
                return None
            raise

    def ensure_collection(self, target: CollectionTarget) -> Outcome:
        with self._call("observe"):
            validate_target(target)
            plan = plan_collection(self._state(target.name), target)
        if plan.empty:
            return Outcome.UNCHANGED
        with self._call("apply"):
            if plan.create:
                self._request(
                    "PUT",
                    f"/collections/{target.name}",
                    {
                        "vectors": {
                            "size": target.dimensions,
                            "distance": target.distance,
                            "on_disk": target.on_disk,
                        },
                        "hnsw_config": {
                            "m": target.hnsw_m,
                            "ef_construct": target.hnsw_ef_construct,
                        },
                    },
                )
                return Outcome.CREATED
            change: dict[str, Any] = {}
            if plan.hnsw is not None:
                change["hnsw_config"] = {"m": plan.hnsw[0], "ef_construct": plan.hnsw[1]}
            if plan.on_disk is not None:
                change["vectors"] = {"": {"on_disk": plan.on_disk}}
            if self._request("PATCH", f"/collections/{target.name}", change) is not True:
                raise PlanError(f"Qdrant did not apply the HNSW/on_disk change to {target.name!r}")
        return Outcome.UPDATED

    def delete_collection(self, name: str) -> Outcome:
        with self._call("delete"):
            if not NAME.match(name):
                raise PlanError(f"invalid collection name {name!r}")
            if not self._request("GET", f"/collections/{name}/exists")["exists"]:
                return Outcome.UNCHANGED
            self._request("DELETE", f"/collections/{name}")
        return Outcome.DELETED
