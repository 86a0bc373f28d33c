"""VectorIndex on Qdrant: one collection per tenant, point id = memory id.

Filterable fields live in the payload (with payload indexes) and every filter is
a Qdrant Filter evaluated during the HNSW search, never after it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from memory_contract.limits import DISTANCES, HNSW_EF_CONSTRUCT_DEFAULT, HNSW_M_DEFAULT
from memory_runtime.filters import MAX_COORDINATE_DIMS, as_utc, coord_key, qdrant_filter
from memory_runtime.ports import VectorFilter, VectorHit, VectorItem
from memory_runtime.vectors.common import (
    AfterCommit,
    Shaped,
    VectorIndexError,
    VectorIndexUnavailable,
    check_top_k,
    check_vector,
    normalise_distance,
    similarity,
)

# Qdrant spells the distances as the contract does (memory_contract.limits.DISTANCES).
_DISTANCES: dict[str, models.Distance] = {name: models.Distance(name) for name in DISTANCES}

_KEYWORD_FIELDS = ("memory_type", "tags", "agent_id", "user_id", "session_id")


class QdrantVectorIndex(Shaped):
    def __init__(
        self,
        client: QdrantClient,
        *,
        collection: str,
        dimensions: int,
        distance: str,
        hnsw_m: int = HNSW_M_DEFAULT,
        hnsw_ef_construct: int = HNSW_EF_CONSTRUCT_DEFAULT,
        on_disk: bool = False,
    ) -> None:
        if dimensions <= 0:
            raise VectorIndexError(f"dimensions must be positive, got {dimensions}")
        self._client = client
        self._collection = collection
        self._dimensions = dimensions
        self._distance = normalise_distance(distance)
        self._m = hnsw_m
        self._ef_construct = hnsw_ef_construct
        self._on_disk = on_disk

    def stage(self) -> AfterCommit:
        return AfterCommit(self)  # no transactions to write ahead in

    def write_in_transaction(self, conn: Any, source: Any) -> bool:
        return False  # another server: written after the memories commit

    def begin_bulk_load(self, expected_rows: int = 0) -> bool:
        return False  # Qdrant builds its graph in the background (its optimizer)

    def finish_bulk_load(self) -> None:
        return None

    def ensure(self) -> None:
        # In cluster mode the operator owns the collection; create it only if missing.
        if not self._client.collection_exists(self._collection):
            self._client.create_collection(
                self._collection,
                vectors_config=models.VectorParams(
                    size=self._dimensions,
                    distance=_DISTANCES[self._distance],
                    on_disk=self._on_disk,
                ),
                hnsw_config=models.HnswConfigDiff(m=self._m, ef_construct=self._ef_construct),
            )
        else:
            self._check_existing()
        for field in _KEYWORD_FIELDS:
            self._index(field, models.PayloadSchemaType.KEYWORD)
        for field in ("created_at", "occurred_at"):
            self._index(field, models.PayloadSchemaType.DATETIME)
        for i in range(MAX_COORDINATE_DIMS):
            self._index(coord_key(i), models.PayloadSchemaType.FLOAT)

    def _check_existing(self) -> None:
        info = self._client.get_collection(self._collection)
        params = info.config.params.vectors
        if isinstance(params, models.VectorParams) and (
            params.size != self._dimensions or params.distance != _DISTANCES[self._distance]
        ):
            raise VectorIndexError(
                f"collection {self._collection} is {params.size}-d {params.distance}, the "
                f"namespace declares {self._dimensions}-d {self._distance}"
            )

    def _index(self, field: str, schema: models.PayloadSchemaType) -> None:
        # Idempotent on the server; the local engine (tests) ignores them and warns.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            self._client.create_payload_index(self._collection, field, field_schema=schema)

    def upsert(self, items: Sequence[VectorItem]) -> None:
        if not items:
            return
        points = [
            models.PointStruct(
                id=str(item.memory_id),
                vector=check_vector(item.vector, self._dimensions),
                payload=_payload(item),
            )
            for item in items
        ]
        self._client.upsert(self._collection, points=points, wait=True)

    def delete(self, memory_ids: Sequence[UUID]) -> None:
        if not memory_ids:
            return
        self._client.delete(
            self._collection,
            points_selector=models.PointIdsList(points=[str(m) for m in memory_ids]),
            wait=True,
        )

    def search(self, vector: Sequence[float], top_k: int, flt: VectorFilter) -> list[VectorHit]:
        check_top_k(top_k)
        query = check_vector(vector, self._dimensions)
        try:
            response = self._client.query_points(
                self._collection,
                query=query,
                query_filter=qdrant_filter(flt),
                limit=top_k,
                with_payload=False,
                with_vectors=False,
            )
        except (ResponseHandlingException, httpx.TransportError) as exc:
            raise VectorIndexUnavailable("qdrant is unreachable") from exc
        except UnexpectedResponse as exc:
            # 5xx: the engine failed; 404: the collection is not there (yet). Any
            # other status means we sent something wrong: let it surface.
            if exc.status_code is None or exc.status_code >= 500 or exc.status_code == 404:
                raise VectorIndexUnavailable(f"qdrant answered {exc.status_code}") from exc
            raise
        return [
            VectorHit(memory_id=UUID(str(p.id)), similarity=similarity(self._distance, p.score))
            for p in response.points
        ]

    def count(self) -> int:
        return int(self._client.count(self._collection, exact=True).count)

    def ping(self) -> None:
        if not self._client.collection_exists(self._collection):
            raise VectorIndexError(f"qdrant collection {self._collection} does not exist")


def _payload(item: VectorItem) -> dict[str, Any]:
    if len(item.coordinate) > MAX_COORDINATE_DIMS:
        raise VectorIndexError(f"coordinates have at most {MAX_COORDINATE_DIMS} dimensions")
    payload: dict[str, Any] = {
        "memory_type": item.memory_type,
        "tags": list(item.tags),
        "agent_id": item.agent_id,
        "user_id": item.user_id,
        "session_id": item.session_id,
        "metadata": item.metadata,
        "created_at": as_utc(item.created_at).isoformat(),
        "coordinate": [float(c) for c in item.coordinate],
        "occurred_at": as_utc(item.occurred_at).isoformat(),
    }
    for i, c in enumerate(item.coordinate):
        payload[coord_key(i)] = float(c)
    return payload
