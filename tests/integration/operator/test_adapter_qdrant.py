"""QdrantAdmin against qdrant-client's local engine (no Qdrant server installs here)."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest
from qdrant_client import QdrantClient, models

from memory_operator.adapters.qdrant import QdrantAdmin
from memory_operator.domain import CollectionTarget, Outcome
from memory_operator.ports import BackendRejected, BackendUnavailable
from tests.servers._process import free_port

pytestmark = pytest.mark.integration

TARGET = CollectionTarget(
    name="mem_acme", dimensions=4, distance="Dot", hnsw_m=16, hnsw_ef_construct=100,
    on_disk=True,
)  # fmt: skip
WRITES = {"create_collection", "update_collection", "delete_collection", "recreate_collection"}


class RecordingQdrant(QdrantClient):
    """The real local engine; every write method called is also recorded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: list[str] = []

    def create_collection(self, *args: Any, **kwargs: Any) -> bool:
        self.writes.append("create_collection")
        return super().create_collection(*args, **kwargs)

    def update_collection(self, *args: Any, **kwargs: Any) -> bool:
        self.writes.append("update_collection")
        return super().update_collection(*args, **kwargs)

    def delete_collection(self, *args: Any, **kwargs: Any) -> bool:
        self.writes.append("delete_collection")
        return super().delete_collection(*args, **kwargs)


@pytest.fixture
def client() -> RecordingQdrant:
    return RecordingQdrant(":memory:")


def test_create_then_unchanged_without_writes(client: RecordingQdrant) -> None:
    admin = QdrantAdmin(client)
    assert admin.ensure_collection(TARGET) is Outcome.CREATED
    params = client.get_collection(TARGET.name).config.params.vectors
    assert isinstance(params, models.VectorParams)
    assert (params.size, params.distance, params.on_disk) == (4, models.Distance.DOT, True)
    # The collection is usable as created.
    client.upsert(TARGET.name, [models.PointStruct(id=1, vector=[1, 0, 0, 0])])
    assert client.writes == ["create_collection"]

    client.writes.clear()
    assert admin.ensure_collection(TARGET) is Outcome.UNCHANGED
    assert client.writes == []
    assert client.count(TARGET.name).count == 1


def test_dimension_or_distance_change_is_rejected_and_nothing_changes(
    client: RecordingQdrant,
) -> None:
    admin = QdrantAdmin(client)
    admin.ensure_collection(TARGET)
    client.upsert(TARGET.name, [models.PointStruct(id=1, vector=[1, 0, 0, 0])])
    client.writes.clear()
    with pytest.raises(BackendRejected, match="dimensions can't change"):
        admin.ensure_collection(dataclasses.replace(TARGET, dimensions=8))
    with pytest.raises(BackendRejected, match="distance can't change"):
        admin.ensure_collection(dataclasses.replace(TARGET, distance="Cosine"))
    assert client.writes == []
    assert client.count(TARGET.name).count == 1


def test_local_engine_does_not_compare_index_params(client: RecordingQdrant) -> None:
    """The local engine reports default HNSW whatever was set: not compared (documented)."""
    admin = QdrantAdmin(client)
    admin.ensure_collection(TARGET)
    reported = client.get_collection(TARGET.name).config.hnsw_config
    changed = dataclasses.replace(TARGET, hnsw_m=reported.m + 16, hnsw_ef_construct=400)
    client.writes.clear()
    assert admin.ensure_collection(changed) is Outcome.UNCHANGED
    assert client.writes == []


def test_engine_that_ignores_index_updates_is_reported(client: RecordingQdrant) -> None:
    """Forced to compare index params, the local engine's no-op update is not
    mistaken for success: a permanent error naming the engine limitation."""
    admin = QdrantAdmin(client, index_params=True)
    admin.ensure_collection(TARGET)
    reported = client.get_collection(TARGET.name).config.hnsw_config
    same_as_reported = dataclasses.replace(
        TARGET, hnsw_m=reported.m, hnsw_ef_construct=reported.ef_construct
    )
    client.writes.clear()
    assert admin.ensure_collection(same_as_reported) is Outcome.UNCHANGED
    assert client.writes == []
    with pytest.raises(BackendRejected, match="did not apply"):
        admin.ensure_collection(dataclasses.replace(same_as_reported, hnsw_m=reported.m + 1))
    assert client.writes == ["update_collection"]


def test_dropped_collection_comes_back(client: RecordingQdrant) -> None:
    admin = QdrantAdmin(client)
    admin.ensure_collection(TARGET)
    client.delete_collection(TARGET.name)
    assert admin.ensure_collection(TARGET) is Outcome.CREATED
    assert client.collection_exists(TARGET.name)


def test_delete(client: RecordingQdrant) -> None:
    admin = QdrantAdmin(client)
    other = dataclasses.replace(TARGET, name="mem_other")
    admin.ensure_collection(TARGET)
    admin.ensure_collection(other)
    assert admin.delete_collection(TARGET.name) is Outcome.DELETED
    assert not client.collection_exists(TARGET.name)
    assert client.collection_exists(other.name)
    client.writes.clear()
    assert admin.delete_collection(TARGET.name) is Outcome.UNCHANGED
    assert client.writes == []


def test_latency_is_observed(client: RecordingQdrant) -> None:
    seen: list[tuple[str, str]] = []
    admin = QdrantAdmin(client, observe=lambda b, op, s: seen.append((b, op)))
    admin.ensure_collection(TARGET)
    admin.ensure_collection(TARGET)
    assert seen == [("qdrant", "observe"), ("qdrant", "apply"), ("qdrant", "observe")]


def test_unreachable_server_is_temporary() -> None:
    remote = QdrantClient(
        url=f"http://127.0.0.1:{free_port()}", timeout=2, check_compatibility=False
    )
    with pytest.raises(BackendUnavailable):
        QdrantAdmin(remote).ensure_collection(TARGET)


def test_index_params_over_rest_are_compared_and_updated(qdrant_url: str) -> None:
    """Through qdrant-client's HTTP code path (the test-only REST stand-in reports HNSW
    and on_disk back like a server), index drift is detected and updated in place."""
    client = RecordingQdrant(url=qdrant_url, check_compatibility=False)
    admin = QdrantAdmin(client)
    target = dataclasses.replace(
        TARGET,
        name=f"mem_rest_{uuid.uuid4().hex[:8]}",
        hnsw_m=8,
        hnsw_ef_construct=64,
        on_disk=False,
    )
    assert admin.ensure_collection(target) is Outcome.CREATED
    assert admin.ensure_collection(target) is Outcome.UNCHANGED
    assert client.writes == ["create_collection"]

    tuned = dataclasses.replace(target, hnsw_m=32, on_disk=True)
    assert admin.ensure_collection(tuned) is Outcome.UPDATED
    config = client.get_collection(target.name).config
    assert (config.hnsw_config.m, config.hnsw_config.ef_construct) == (32, 64)
    assert isinstance(config.params.vectors, models.VectorParams)
    assert config.params.vectors.on_disk is True
    client.writes.clear()
    assert admin.ensure_collection(tuned) is Outcome.UNCHANGED
    assert client.writes == []
    with pytest.raises(BackendRejected, match="dimensions can't change"):
        admin.ensure_collection(dataclasses.replace(tuned, dimensions=5))
    assert admin.delete_collection(target.name) is Outcome.DELETED
