"""Vector indexes: pgvector (tenant schema) or Qdrant (tenant collection)."""

from __future__ import annotations

from typing import Any

from memory_contract import limits as lim
from memory_runtime.ports import VectorIndex
from memory_runtime.vectors.common import VectorIndexError, VectorIndexUnavailable

__all__ = ["VectorIndexError", "VectorIndexUnavailable", "build_vector_index"]

BACKENDS = ("postgres", "qdrant")


def build_vector_index(
    backend: str,
    *,
    pool: Any,
    schema: str,
    extensions_schema: str,
    dimensions: int,
    distance: str,
    qdrant_url: str | None,
    qdrant_api_key: str | None,
    collection: str,
    qdrant_client: Any = None,
    hnsw_m: int = lim.HNSW_M_DEFAULT,
    hnsw_ef_construct: int = lim.HNSW_EF_CONSTRUCT_DEFAULT,
    qdrant_timeout_seconds: int = 5,
) -> VectorIndex:
    """The index for `vectors.backend`; `qdrant_client` lets tests inject a local engine."""
    if backend == "postgres":
        from memory_runtime.vectors.pgvector import PgVectorIndex

        if pool is None:
            raise VectorIndexError("the postgres vector backend needs a connection pool")
        return PgVectorIndex(
            pool,
            schema=schema,
            extensions_schema=extensions_schema,
            dimensions=dimensions,
            distance=distance,
            hnsw_m=hnsw_m,
            hnsw_ef_construct=hnsw_ef_construct,
        )
    if backend == "qdrant":
        from qdrant_client import QdrantClient

        from memory_runtime.vectors.qdrant import QdrantVectorIndex

        client = qdrant_client
        if client is None:
            if not qdrant_url:
                raise VectorIndexError("the qdrant vector backend needs MEMORY_QDRANT_URL")
            client = QdrantClient(
                url=qdrant_url, api_key=qdrant_api_key or None, timeout=qdrant_timeout_seconds
            )
        return QdrantVectorIndex(
            client,
            collection=collection,
            dimensions=dimensions,
            distance=distance,
            hnsw_m=hnsw_m,
            hnsw_ef_construct=hnsw_ef_construct,
        )
    raise VectorIndexError(f"unknown vector backend {backend!r}; expected one of {BACKENDS}")
