"""The TEST-ONLY Qdrant REST stand-in, driven by qdrant-client in url mode (real HTTP)."""

from __future__ import annotations

import math
import uuid

import pytest
from qdrant_client import QdrantClient
from qdrant_client.http import models as m
from qdrant_client.http.exceptions import UnexpectedResponse

from tests.servers.qdrant_rest import run_qdrant_rest

pytestmark = pytest.mark.integration


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_collection_lifecycle_and_config(qdrant_url: str) -> None:
    client = QdrantClient(url=qdrant_url, timeout=10)
    name = f"c_{uuid.uuid4().hex[:8]}"
    assert not client.collection_exists(name)
    client.create_collection(
        name,
        vectors_config=m.VectorParams(size=4, distance=m.Distance.COSINE, on_disk=False),
        hnsw_config=m.HnswConfigDiff(m=8, ef_construct=64),
    )
    assert client.collection_exists(name)
    with pytest.raises(UnexpectedResponse) as dup:
        client.create_collection(
            name, vectors_config=m.VectorParams(size=4, distance=m.Distance.COSINE)
        )
    assert dup.value.status_code == 409

    info = client.get_collection(name)
    assert info.config.params.vectors.size == 4
    assert info.config.params.vectors.distance == m.Distance.COSINE
    assert (info.config.hnsw_config.m, info.config.hnsw_config.ef_construct) == (8, 64)

    assert client.update_collection(
        name,
        hnsw_config=m.HnswConfigDiff(m=32),
        vectors_config={"": m.VectorParamsDiff(on_disk=True)},
    )
    client.create_payload_index(name, "tenant", field_schema=m.PayloadSchemaType.KEYWORD)
    info = client.get_collection(name)
    assert (info.config.hnsw_config.m, info.config.hnsw_config.ef_construct) == (32, 64)
    assert info.config.params.vectors.on_disk is True
    assert info.payload_schema["tenant"].data_type == m.PayloadSchemaType.KEYWORD

    assert client.delete_collection(name)
    assert not client.collection_exists(name)
    with pytest.raises(UnexpectedResponse) as missing:
        client.get_collection(name)
    assert missing.value.status_code == 404


def test_points_are_shared_between_clients_and_queried(qdrant_url: str) -> None:
    writer = QdrantClient(url=qdrant_url, timeout=10)
    reader = QdrantClient(url=qdrant_url, timeout=10)
    name = f"p_{uuid.uuid4().hex[:8]}"
    writer.create_collection(
        name, vectors_config=m.VectorParams(size=3, distance=m.Distance.COSINE)
    )
    vectors = {
        str(uuid.uuid4()): [float(i + 1), float((i * 7) % 5), float((i * 3) % 4)] for i in range(30)
    }
    tags = {pid: ("even" if i % 2 == 0 else "odd") for i, pid in enumerate(vectors)}
    writer.upsert(
        name,
        points=[
            m.PointStruct(id=pid, vector=v, payload={"tag": tags[pid], "n": i})
            for i, (pid, v) in enumerate(vectors.items())
        ],
        wait=True,
    )
    assert reader.count(name, exact=True).count == 30
    odd_filter = m.Filter(must=[m.FieldCondition(key="tag", match=m.MatchValue(value="odd"))])
    assert reader.count(name, count_filter=odd_filter, exact=True).count == 15

    query = [3.0, 1.0, 2.0]
    expected = sorted(
        (pid for pid in vectors if tags[pid] == "odd"),
        key=lambda pid: -_cosine(vectors[pid], query),
    )[:3]
    hits = reader.query_points(name, query=query, query_filter=odd_filter, limit=3).points
    assert [h.id for h in hits] == expected
    assert all(h.payload is not None and h.payload["tag"] == "odd" for h in hits)
    assert hits[0].score == pytest.approx(_cosine(vectors[expected[0]], query), abs=1e-5)

    first = next(iter(vectors))
    (record,) = reader.retrieve(name, ids=[first], with_vectors=True)
    assert record.payload == {"tag": tags[first], "n": 0}
    norm = math.sqrt(sum(x * x for x in vectors[first]))  # cosine collections store unit vectors
    assert record.vector == pytest.approx([x / norm for x in vectors[first]], abs=1e-5)

    writer.set_payload(name, payload={"seen": True}, points=[first], wait=True)
    assert reader.retrieve(name, ids=[first])[0].payload["seen"] is True

    writer.delete(name, points_selector=m.PointIdsList(points=[first]), wait=True)
    assert reader.retrieve(name, ids=[first]) == []
    writer.delete(name, points_selector=m.FilterSelector(filter=odd_filter), wait=True)
    assert reader.count(name, exact=True).count == 14
    page, _next = reader.scroll(name, limit=100)
    assert {p.payload["tag"] for p in page} == {"even"}
    writer.delete_collection(name)


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_api_key_is_enforced_when_configured() -> None:
    key = uuid.uuid4().hex
    with run_qdrant_rest(api_key=key) as server:
        # No background version check: it would race the server's shutdown.
        good = QdrantClient(url=server.url, api_key=key, timeout=10, check_compatibility=False)
        assert good.get_collections().collections == []
        bad = QdrantClient(url=server.url, api_key="wrong", timeout=10, check_compatibility=False)
        with pytest.raises(UnexpectedResponse) as denied:
            bad.get_collections()
        assert denied.value.status_code == 401
