"""Pure planning for a tenant's Qdrant collection: observed config in, the change out.

The adapter (adapters/qdrant.py) reads the collection into a `CollectionState`;
`plan_collection` compares it with the `CollectionTarget`. Dimensions and
distance are fixed at creation: a change is a PlanError (permanent), never a
silent recreate that would drop the tenant's vectors. No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from memory_contract.limits import DISTANCES, MAX_DIMENSIONS_BY_BACKEND
from memory_operator.domain import CollectionTarget, PlanError

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")


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
    if not NAME.match(target.name):
        raise PlanError(f"invalid collection name {target.name!r} (1-255 of [A-Za-z0-9_.-])")
    most = MAX_DIMENSIONS_BY_BACKEND["qdrant"]
    if not 1 <= target.dimensions <= most:
        raise PlanError(f"dimensions must be within 1..{most}, not {target.dimensions}")
    if target.distance not in DISTANCES:
        raise PlanError(f"distance must be one of {sorted(DISTANCES)}, not {target.distance!r}")
    if target.hnsw_m < 0 or target.hnsw_ef_construct < 4:
        raise PlanError("hnsw m must be >= 0 and ef_construct >= 4")


def plan_collection(state: CollectionState | None, target: CollectionTarget) -> CollectionPlan:
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
    hnsw = None
    if (state.hnsw_m, state.hnsw_ef_construct) != (target.hnsw_m, target.hnsw_ef_construct):
        hnsw = (target.hnsw_m, target.hnsw_ef_construct)
    on_disk = target.on_disk if state.on_disk != target.on_disk else None
    return CollectionPlan(hnsw=hnsw, on_disk=on_disk)


def state_from_info(info: Mapping[str, Any]) -> CollectionState:
    """Effective settings from GET /collections/{name}'s `result`: a vector-level
    HNSW override wins over the collection's."""
    config = info.get("config") or {}
    hnsw = config.get("hnsw_config") or {}
    vectors = (config.get("params") or {}).get("vectors")
    if not isinstance(vectors, Mapping) or "size" not in vectors:  # named vectors
        return CollectionState(None, None, hnsw.get("m"), hnsw.get("ef_construct"), False)
    override = vectors.get("hnsw_config") or {}
    m = override["m"] if override.get("m") is not None else hnsw.get("m")
    ef = (
        override["ef_construct"]
        if override.get("ef_construct") is not None
        else hnsw.get("ef_construct")
    )
    return CollectionState(
        vectors["size"], vectors.get("distance"), m, ef, bool(vectors.get("on_disk"))
    )
