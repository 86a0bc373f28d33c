"""Pure Qdrant collection planning: what to create or update, what to refuse."""

from __future__ import annotations

import dataclasses

import pytest

from memory_operator.collection import CollectionPlan, CollectionState, plan_collection
from memory_operator.domain import CollectionTarget, PlanError

TARGET = CollectionTarget(
    name="mem_acme", dimensions=384, distance="Cosine", hnsw_m=16, hnsw_ef_construct=100,
    on_disk=False,
)  # fmt: skip
SAME = CollectionState(384, "Cosine", 16, 100, False)


def test_absent_collection_is_created() -> None:
    assert plan_collection(None, TARGET) == CollectionPlan(create=True)


def test_matching_collection_needs_nothing() -> None:
    assert plan_collection(SAME, TARGET).empty


def test_hnsw_and_on_disk_drift_are_updated() -> None:
    state = dataclasses.replace(SAME, hnsw_m=8, on_disk=True)
    assert plan_collection(state, TARGET) == CollectionPlan(hnsw=(16, 100), on_disk=False)
    target = dataclasses.replace(TARGET, hnsw_ef_construct=200)
    assert plan_collection(SAME, target) == CollectionPlan(hnsw=(16, 200))


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (dataclasses.replace(SAME, dimensions=768), "dimensions can't change"),
        (dataclasses.replace(SAME, distance="Dot"), "distance can't change"),
        (dataclasses.replace(SAME, dimensions=None), "named vectors"),
    ],
)
def test_immutable_differences_are_permanent_errors(state: CollectionState, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        plan_collection(state, TARGET)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "bad/name"),
        ("name", ""),
        ("dimensions", 0),
        ("distance", "Manhattan"),
        ("distance", "cosine"),
        ("hnsw_m", -1),
        ("hnsw_ef_construct", 2),
    ],
)
def test_bad_targets_are_refused(field: str, value: object) -> None:
    with pytest.raises(PlanError):
        plan_collection(None, dataclasses.replace(TARGET, **{field: value}))
