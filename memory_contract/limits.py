"""Defaults and bounds of what a tenant configures, per vector backend.

The CRD (crds/memorynamespaces.memory.somafractal.io.yaml), the operator's spec
model and the runtime's Settings all take their numbers from here; the CRD is
YAML, so tests/unit/test_contract.py checks its numbers against these.
"""

from __future__ import annotations

from typing import Literal, get_args

Backend = Literal["qdrant", "postgres"]
Distance = Literal["Cosine", "Dot", "Euclid"]  # also Qdrant's own spelling of them
EmbeddingProvider = Literal["local", "http", "none"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)
DISTANCES: tuple[Distance, ...] = get_args(Distance)
EMBEDDING_PROVIDERS: tuple[EmbeddingProvider, ...] = get_args(EmbeddingProvider)
DEFAULT_DISTANCE: Distance = "Cosine"

# Vector dimensions. pgvector's HNSW index refuses more than 2,000 (its page
# layout); Qdrant takes up to 65,536, but the API caps every backend at 4,096,
# past the largest common embedding models, so a request body of vectors stays
# small and float32 distance sums stay finite (models.MAX_VECTOR_ELEMENT).
DEFAULT_DIMENSIONS = 384
MAX_DIMENSIONS = 4096
MAX_DIMENSIONS_BY_BACKEND = {"postgres": 2000, "qdrant": MAX_DIMENSIONS}
_WHY = {"postgres": "the pgvector HNSW index limit", "qdrant": "the API's limit"}

# HNSW graph parameters (both engines call them m and ef_construct[ion]).
HNSW_M_DEFAULT, HNSW_M_MIN, HNSW_M_MAX = 16, 4, 128
HNSW_EF_CONSTRUCT_DEFAULT, HNSW_EF_CONSTRUCT_MIN, HNSW_EF_CONSTRUCT_MAX = 100, 4, 1000

# Dimensions of the bundled local embedding models.
DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
LOCAL_MODEL_DIMENSIONS = {DEFAULT_EMBEDDING_MODEL: DEFAULT_DIMENSIONS}

DEFAULT_RATE_LIMIT_PER_MINUTE = 600
DEFAULT_RATE_LIMIT_BURST = 100
DEFAULT_MAX_BODY_BYTES = 5 * 2**20
MIN_MAX_BODY_BYTES = 1024
MAX_MAX_BODY_BYTES = 2**30

DEFAULT_DECAY_HALF_LIFE_HOURS = 720.0
DEFAULT_DECAY_PRUNE_BELOW = 0.05


def dimensions_problem(backend: str, dimensions: int) -> str | None:
    """Why `dimensions` can't work with `backend`, or None."""
    most = MAX_DIMENSIONS_BY_BACKEND[backend]
    if 1 <= dimensions <= most:
        return None
    hint = "; use vectors.backend qdrant for more" if most < MAX_DIMENSIONS else ""
    return (
        f"vectors.dimensions must be at most {most} with vectors.backend {backend}"
        f" ({_WHY[backend]}), got {dimensions}{hint}"
    )
