"""OpenAI-compatible embeddings over HTTP: POST {url}/v1/embeddings."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import httpx

from memory_runtime.ports import EmbeddingError

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
MAX_BATCH = 256  # stay under common provider limits on inputs per request


class HttpEmbedder:
    """Calls an OpenAI-compatible embeddings endpoint; checks shape and dimension."""

    def __init__(
        self,
        url: str,
        model: str,
        dimensions: int,
        *,
        api_key: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not url or not url.startswith(("http://", "https://")):
            raise EmbeddingError(f"embedding url must be an http(s) URL, got {url!r}")
        if dimensions <= 0:
            raise EmbeddingError(f"embedding dimensions must be positive, got {dimensions}")
        # Accept both "https://host" and "https://host/v1" as the configured base.
        base = url.rstrip("/")
        self._endpoint = base + ("/embeddings" if base.endswith("/v1") else "/v1/embeddings")
        self._model = model
        self._dimensions = dimensions
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers, transport=transport)

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def close(self) -> None:
        self._client.close()

    def ping(self, timeout: float = 2.0) -> None:
        """The health probe: any HTTP answer from the endpoint (GET is usually a
        405) means the provider serves; it costs no embedding. Raises if it is
        down or does not answer within `timeout`."""
        self._client.get(self._endpoint, timeout=timeout)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if isinstance(texts, str):
            raise EmbeddingError("embed() takes a sequence of texts, not a single string")
        out: list[list[float]] = []
        for start in range(0, len(texts), MAX_BATCH):
            out.extend(self._embed_batch(list(texts[start : start + MAX_BATCH])))
        return out

    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        try:
            response = self._client.post(
                self._endpoint, json={"model": self._model, "input": texts}
            )
        except httpx.HTTPError as exc:
            raise EmbeddingError(f"embedding provider {self._endpoint} unreachable: {exc}") from exc
        if response.status_code != 200:
            raise EmbeddingError(
                f"embedding provider {self._endpoint} answered HTTP {response.status_code}: "
                f"{response.text[:200]}"
            )
        try:
            body: Any = response.json()
            data = body["data"]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError(
                f"embedding provider {self._endpoint} sent a response without 'data'"
            ) from exc
        return _parse_data(data, len(texts), self._dimensions)


def _parse_data(data: Any, expected: int, dimensions: int) -> list[list[float]]:
    """Validate the OpenAI `data` list and return vectors in input order."""
    if not isinstance(data, list) or len(data) != expected:
        got = len(data) if isinstance(data, list) else type(data).__name__
        raise EmbeddingError(f"embedding provider returned {got} vectors for {expected} inputs")
    vectors: list[list[float] | None] = [None] * expected
    for position, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("embedding"), list):
            raise EmbeddingError("embedding provider returned an item without an 'embedding' list")
        # OpenAI may return items out of order; `index` says where each belongs.
        index = item.get("index", position)
        if not isinstance(index, int) or not 0 <= index < expected or vectors[index] is not None:
            raise EmbeddingError(f"embedding provider returned a bad index {index!r}")
        vector = item["embedding"]
        if len(vector) != dimensions:
            raise EmbeddingError(
                f"embedding provider returned {len(vector)} dimensions, expected {dimensions}"
            )
        try:
            floats = [float(x) for x in vector]
        except (TypeError, ValueError) as exc:
            raise EmbeddingError("embedding provider returned non-numeric values") from exc
        if not all(math.isfinite(x) for x in floats):
            raise EmbeddingError("embedding provider returned non-finite values")
        vectors[index] = floats
    return [v for v in vectors if v is not None]
