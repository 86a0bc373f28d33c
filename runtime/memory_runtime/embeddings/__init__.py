"""Embedding providers: `local` (bundled all-MiniLM-L6-v2, onnxruntime), `http`, `none`."""

from __future__ import annotations

import functools

from memory_runtime.embeddings.http import HttpEmbedder
from memory_runtime.embeddings.local import MODEL_NAME, LocalEmbedder
from memory_runtime.embeddings.none import NoEmbedder
from memory_runtime.ports import Embedder, EmbeddingError

__all__ = ["HttpEmbedder", "LocalEmbedder", "NoEmbedder", "build_embedder"]

LOCAL_DIMENSIONS = 384
PROVIDERS = ("local", "http", "none")


@functools.cache
def _shared_local(threads: int) -> LocalEmbedder:
    # One copy of the weights per process, however many embedders are built.
    return LocalEmbedder(threads=threads)


def build_embedder(
    provider: str, model: str, url: str, dimensions: int, threads: int = 0
) -> Embedder:
    """The embedder for a namespace's `spec.embedding`; raises EmbeddingError on bad config.

    `threads` sets the local model's intra-op threads (0: from the CPU limit, at most 2).
    """
    if provider == "local":
        # Only the bundled model ships; refusing others beats silently using it.
        if model and model.removeprefix("sentence-transformers/") != MODEL_NAME:
            raise EmbeddingError(
                f"the local provider only ships {MODEL_NAME}, not {model!r}; use provider http"
            )
        if dimensions != LOCAL_DIMENSIONS:
            raise EmbeddingError(
                f"{MODEL_NAME} produces {LOCAL_DIMENSIONS} dimensions but the namespace "
                f"declares {dimensions}"
            )
        return _shared_local(threads)
    if provider == "http":
        return HttpEmbedder(url, model, dimensions)
    if provider == "none":
        if dimensions <= 0:
            raise EmbeddingError(f"embedding dimensions must be positive, got {dimensions}")
        return NoEmbedder(dimensions)
    raise EmbeddingError(f"unknown embedding provider {provider!r}; expected one of {PROVIDERS}")
