"""The `none` provider: clients send their own vectors; text is never embedded."""

from __future__ import annotations

from collections.abc import Sequence

from memory_runtime.ports import EmbeddingError


class NoEmbedder:
    def __init__(self, dimensions: int) -> None:
        self._dimensions = dimensions

    @property
    def dimensions(self) -> int:
        # Known from the namespace spec, so client vectors can still be validated.
        return self._dimensions

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        raise EmbeddingError("this namespace has no embedding provider; send vectors")
