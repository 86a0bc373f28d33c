"""Qdrant adapter: one collection per tenant (single unnamed dense vector).

`plan_collection` is pure (observed config in, the change to make out); the
class does the I/O. Dimensions and distance are fixed at creation: a change is
a permanent error, never a silent recreate that would drop the tenant's vectors.

Limitation, by design: qdrant-client's local engine (":memory:" / path) has no
HNSW index — it reports the server defaults (m=16, ef_construct=100) whatever
was asked and ignores updates. Comparing HNSW/on_disk against it would either
rewrite forever or lie, so with the local engine those index parameters are
set at creation and not compared (`index_params=False`, detected automatically).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from memory_operator.domain import CollectionTarget, Outcome
from memory_operator.ports import BackendRejected, BackendUnavailable

Observe = Callable[[str, str, float], None]
BACKEND = "qdrant"
DISTANCES = {
    "Cosine": models.Distance.COSINE,
    "Dot": models.Distance.DOT,
    "Euclid": models.Distance.EUCLID,
}
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")


class PlanError(ValueError):
    """The desired collection can't be reached from the existing one (permanent)."""


@dataclass(frozen=True)
class CollectionState:
    dimensions: int | None  # None: not a single unnamed vector (named vectors layout)
    distance: str | None
    hnsw_m: int | None
    hnsw_ef_construct: int | None
    on_disk: bool


@dataclass(frozen=True)
class CollectionPlan:
    create: bool = False
    hnsw: tuple[int, int] | None = None  # (m, ef_construct) to set
    on_disk: bool | None = None  # new on_disk value to set

    @property
    def empty(self) -> bool:
        return not self.create and self.hnsw is None and self.on_disk is None


def validate_target(target: CollectionTarget) -> None:
    if not _NAME.match(target.name):
        raise PlanError(f"invalid collection name {target.name!r} (1-255 of [A-Za-z0-9_.-])")
    if not 1 <= target.dimensions <= 65536:
        raise PlanError(f"dimensions must be within 1..65536, not {target.dimensions}")
    if target.distance not in DISTANCES:
        raise PlanError(f"distance must be one of {sorted(DISTANCES)}, not {target.distance!r}")
    if target.hnsw_m < 0 or target.hnsw_ef_construct < 4:
        raise PlanError("hnsw m must be >= 0 and ef_construct >= 4")


def plan_collection(
    state: CollectionState | None, target: CollectionTarget, *, index_params: bool = True
) -> CollectionPlan:
    validate_target(target)
    if state is None:
        return CollectionPlan(create=True)
    if state.dimensions is None:
        raise PlanError(f"collection {target.name!r} exists with named vectors; expected one")
    if state.dimensions != target.dimensions:
        raise PlanError(
            f"collection {target.name!r} has {state.dimensions} dimensions, the spec asks "
            f"{target.dimensions}; dimensions can't change (delete the collection to rebuild)"
        )
    if state.distance != target.distance:
        raise PlanError(
            f"collection {target.name!r} uses distance {state.distance}, the spec asks "
            f"{target.distance}; distance can't change"
        )
    if not index_params:
        return CollectionPlan()
    hnsw = None
    if (state.hnsw_m, state.hnsw_ef_construct) != (target.hnsw_m, target.hnsw_ef_construct):
        hnsw = (target.hnsw_m, target.hnsw_ef_construct)
    on_disk = target.on_disk if state.on_disk != target.on_disk else None
    return CollectionPlan(hnsw=hnsw, on_disk=on_disk)


def state_from_info(info: models.CollectionInfo) -> CollectionState:
    """Effective settings: a vector-level HNSW override wins over the collection's."""
    vectors = info.config.params.vectors
    hnsw = info.config.hnsw_config
    if not isinstance(vectors, models.VectorParams):
        return CollectionState(None, None, hnsw.m, hnsw.ef_construct, False)
    override = vectors.hnsw_config
    m = override.m if override is not None and override.m is not None else hnsw.m
    ef = (
        override.ef_construct
        if override is not None and override.ef_construct is not None
        else hnsw.ef_construct
    )
    distance = vectors.distance.value if isinstance(vectors.distance, models.Distance) else None
    return CollectionState(vectors.size, distance, m, ef, bool(vectors.on_disk))


def is_local_engine(client: QdrantClient) -> bool:
    # qdrant-client keeps its backend in a private attribute; local mode is QdrantLocal.
    from qdrant_client.local.qdrant_local import QdrantLocal

    return isinstance(getattr(client, "_client", None), QdrantLocal)


class QdrantAdmin:
    """VectorAdmin over a qdrant_client.QdrantClient (server, or the local engine in tests)."""

    def __init__(
        self,
        client: QdrantClient,
        *,
        observe: Observe | None = None,
        index_params: bool | None = None,
    ) -> None:
        self._client = client
        self._observe = observe
        # Whether the engine really applies and reports HNSW/on_disk (see module doc).
        self._index_params = (not is_local_engine(client)) if index_params is None else index_params

    @contextmanager
    def _call(self, operation: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        except PlanError as exc:
            raise BackendRejected(BACKEND, str(exc)) from exc
        except UnexpectedResponse as exc:
            status = exc.status_code or 0
            error = BackendUnavailable if status >= 500 or status in (408, 429) else BackendRejected
            raise error(BACKEND, f"HTTP {status}: {exc.content!r}") from exc
        except (ResponseHandlingException, ConnectionError, TimeoutError) as exc:
            raise BackendUnavailable(BACKEND, str(exc)) from exc
        except ValueError as exc:  # the local engine reports refusals as ValueError
            raise BackendRejected(BACKEND, str(exc)) from exc
        finally:
            if self._observe is not None:
                self._observe(BACKEND, operation, time.perf_counter() - start)

    def _state(self, name: str) -> CollectionState | None:
        # One request: a missing collection is a 404 (the local engine: ValueError).
        try:
            return state_from_info(self._client.get_collection(name))
        except UnexpectedResponse as exc:
            if exc.status_code == 404:
                return None
            raise
        except ValueError:
            if not self._client.collection_exists(name):
                return None
            raise

    def ensure_collection(self, target: CollectionTarget) -> Outcome:
        with self._call("observe"):
            validate_target(target)
            plan = plan_collection(
                self._state(target.name), target, index_params=self._index_params
            )
        if plan.empty:
            return Outcome.UNCHANGED
        with self._call("apply"):
            if plan.create:
                self._client.create_collection(
                    target.name,
                    vectors_config=models.VectorParams(
                        size=target.dimensions,
                        distance=DISTANCES[target.distance],
                        on_disk=target.on_disk,
                    ),
                    hnsw_config=models.HnswConfigDiff(
                        m=target.hnsw_m, ef_construct=target.hnsw_ef_construct
                    ),
                )
                return Outcome.CREATED
            applied = self._client.update_collection(
                target.name,
                hnsw_config=(
                    models.HnswConfigDiff(m=plan.hnsw[0], ef_construct=plan.hnsw[1])
                    if plan.hnsw
                    else None
                ),
                vectors_config=(
                    {"": models.VectorParamsDiff(on_disk=plan.on_disk)}
                    if plan.on_disk is not None
                    else None
                ),
            )
            if not applied:
                raise PlanError(
                    f"Qdrant did not apply the HNSW/on_disk change to {target.name!r}; "
                    "this engine does not support it (set index_params=False)"
                )
        return Outcome.UPDATED

    def delete_collection(self, name: str) -> Outcome:
        with self._call("delete"):
            if not self._client.collection_exists(name):
                return Outcome.UNCHANGED
            self._client.delete_collection(name)
        return Outcome.DELETED
