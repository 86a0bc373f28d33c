"""QdrantAdmin (Qdrant's REST API over httpx) against the REST stand-in
(tests/servers/qdrant_rest.py; no Qdrant server installs here)."""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from qdrant_client import QdrantClient, models

from memory_operator import metrics
from memory_operator.adapters.qdrant import QdrantAdmin
from memory_operator.domain import CollectionTarget, Outcome
from memory_operator.ports import BackendRejected, BackendUnavailable
from tests.servers._process import free_port
from tests.servers.qdrant_rest import InProcessQdrant, in_process_qdrant, run_qdrant_rest

pytestmark = pytest.mark.integration

TARGET = CollectionTarget(
    name="mem_acme", dimensions=4, distance="Dot", hnsw_m=16, hnsw_ef_construct=100,
    on_disk=True,
)  # fmt: skip


@pytest.fixture
def qdrant() -> InProcessQdrant:
    return in_process_qdrant()


def test_create_then_unchanged_without_writes(qdrant: InProcessQdrant) -> None:
    admin = QdrantAdmin(qdrant.http)
    assert admin.ensure_collection(TARGET) is Outcome.CREATED
    params = qdrant.engine.get_collection(TARGET.name).config.params.vectors
    assert isinstance(params, models.VectorParams)
    assert (params.size, params.distance, params.on_disk) == (4, models.Distance.DOT, True)
    # The collection is usable as created.
    qdrant.engine.upsert(TARGET.name, [models.PointStruct(id=1, vector=[1, 0, 0, 0])])
    assert qdrant.writes == ["PUT /collections/mem_acme"]

    qdrant.writes.clear()
    assert admin.ensure_collection(TARGET) is Outcome.UNCHANGED
    assert qdrant.writes == []
    assert qdrant.engine.count(TARGET.name).count == 1


def test_dimension_or_distance_change_is_rejected_and_nothing_changes(
    qdrant: InProcessQdrant,
) -> None:
    admin = QdrantAdmin(qdrant.http)
    admin.ensure_collection(TARGET)
    qdrant.engine.upsert(TARGET.name, [models.PointStruct(id=1, vector=[1, 0, 0, 0])])
    qdrant.writes.clear()
    with pytest.raises(BackendRejected, match="dimensions can't change"):
        admin.ensure_collection(dataclasses.replace(TARGET, dimensions=8))
    with pytest.raises(BackendRejected, match="distance can't change"):
        admin.ensure_collection(dataclasses.replace(TARGET, distance="Cosine"))
    assert qdrant.writes == []
    assert qdrant.engine.count(TARGET.name).count == 1


def test_index_params_are_compared_and_updated_in_place(qdrant: InProcessQdrant) -> None:
    admin = QdrantAdmin(qdrant.http)
    target = dataclasses.replace(TARGET, hnsw_m=8, hnsw_ef_construct=64, on_disk=False)
    assert admin.ensure_collection(target) is Outcome.CREATED
    qdrant.engine.upsert(TARGET.name, [models.PointStruct(id=1, vector=[1, 0, 0, 0])])
    qdrant.writes.clear()

    tuned = dataclasses.replace(target, hnsw_m=32, on_disk=True)
    assert admin.ensure_collection(tuned) is Outcome.UPDATED
    assert qdrant.writes == ["PATCH /collections/mem_acme"]
    info = qdrant.http.get("/collections/mem_acme").json()["result"]
    assert (info["config"]["hnsw_config"]["m"], info["config"]["hnsw_config"]["ef_construct"]) == (
        32,
        64,
    )
    assert info["config"]["params"]["vectors"]["on_disk"] is True
    assert qdrant.engine.count(TARGET.name).count == 1  # updated, not recreated
    qdrant.writes.clear()
    assert admin.ensure_collection(tuned) is Outcome.UNCHANGED
    assert qdrant.writes == []


def test_named_vectors_layout_is_rejected(qdrant: InProcessQdrant) -> None:
    qdrant.http.put(
        f"/collections/{TARGET.name}", json={"vectors": {"text": {"size": 4, "distance": "Dot"}}}
    ).raise_for_status()
    qdrant.writes.clear()
    with pytest.raises(BackendRejected, match="named vectors"):
        QdrantAdmin(qdrant.http).ensure_collection(TARGET)
    assert qdrant.writes == []


def test_dropped_collection_comes_back(qdrant: InProcessQdrant) -> None:
    admin = QdrantAdmin(qdrant.http)
    admin.ensure_collection(TARGET)
    qdrant.http.delete(f"/collections/{TARGET.name}")
    assert admin.ensure_collection(TARGET) is Outcome.CREATED
    assert qdrant.engine.collection_exists(TARGET.name)


def test_delete(qdrant: InProcessQdrant) -> None:
    admin = QdrantAdmin(qdrant.http)
    other = dataclasses.replace(TARGET, name="mem_other")
    admin.ensure_collection(TARGET)
    admin.ensure_collection(other)
    assert admin.delete_collection(TARGET.name) is Outcome.DELETED
    assert not qdrant.engine.collection_exists(TARGET.name)
    assert qdrant.engine.collection_exists(other.name)
    qdrant.writes.clear()
    assert admin.delete_collection(TARGET.name) is Outcome.UNCHANGED
    assert qdrant.writes == []
    with pytest.raises(BackendRejected, match="invalid collection name"):
        admin.delete_collection("../mem_other")
    assert qdrant.engine.collection_exists(other.name)


def test_latency_is_recorded_per_phase(qdrant: InProcessQdrant) -> None:
    """somafractal_backend_operation_seconds counts each phase the adapter ran."""
    admin = QdrantAdmin(qdrant.http)
    before = metrics.operation_counts()
    admin.ensure_collection(TARGET)
    admin.ensure_collection(TARGET)
    after = metrics.operation_counts()
    ran = {op: after[("qdrant", op)] - before.get(("qdrant", op), 0) for op in ("observe", "apply")}
    assert ran == {"observe": 2, "apply": 1}


def test_unreachable_server_is_temporary() -> None:
    admin = QdrantAdmin(httpx.Client(base_url=f"http://127.0.0.1:{free_port()}", timeout=2))
    with pytest.raises(BackendUnavailable):
        admin.ensure_collection(TARGET)


def test_server_errors_are_temporary_and_refusals_permanent() -> None:
    def answer(status: int) -> httpx.Client:
        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(status, json={"status": {"error": "nope"}})

        return httpx.Client(base_url="http://qdrant.test", transport=httpx.MockTransport(handler))

    for status in (500, 503, 429, 408):
        with pytest.raises(BackendUnavailable, match=f"HTTP {status}"):
            QdrantAdmin(answer(status)).ensure_collection(TARGET)
    for status in (400, 401, 403):
        with pytest.raises(BackendRejected, match=f"HTTP {status}"):
            QdrantAdmin(answer(status)).ensure_collection(TARGET)


def test_over_a_socket_with_api_key() -> None:
    """`connect` (what the operator builds from its configuration) against the stand-in
    served over HTTP with an API key; the collection is what qdrant-client (the
    runtime's client) sees."""
    with run_qdrant_rest(api_key="admin-key") as server:
        with pytest.raises(BackendRejected, match="HTTP 401"):
            QdrantAdmin.connect(server.url, "wrong").ensure_collection(TARGET)
        admin = QdrantAdmin.connect(server.url, "admin-key")
        target = dataclasses.replace(TARGET, hnsw_m=8, hnsw_ef_construct=64)
        assert admin.ensure_collection(target) is Outcome.CREATED
        assert admin.ensure_collection(target) is Outcome.UNCHANGED
        client = QdrantClient(url=server.url, api_key="admin-key", check_compatibility=False)
        config = client.get_collection(target.name).config
        assert (config.hnsw_config.m, config.hnsw_config.ef_construct) == (8, 64)
        client.close()
        assert admin.delete_collection(target.name) is Outcome.DELETED
        admin.close()
