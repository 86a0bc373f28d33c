"""Ports behind a circuit breaker: an open circuit answers at once, as the
dependency's own outage error, so every caller's degradation path applies
unchanged (the index -> pending / keyword-only recall, the embedder -> pending,
the rate limiter -> fail open)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from uuid import UUID

from memory_runtime.health import Breaker
from memory_runtime.limits import RateDecision, RateLimiter, RateLimiterError
from memory_runtime.ports import (
    Embedder,
    EmbeddingError,
    StagedWrite,
    VectorFilter,
    VectorHit,
    VectorIndex,
    VectorItem,
)
from memory_runtime.vectors.common import AfterCommit, VectorIndexError, VectorIndexUnavailable

T = TypeVar("T")


def guarded(
    breaker: Breaker,
    call: Callable[[], T],
    unavailable: Callable[[str], Exception],
    input_errors: tuple[type[Exception], ...] = (),
) -> T:
    """Run `call` unless the circuit is open; count its outcome.

    Errors in `input_errors` are the caller's fault, not the dependency's:
    they do not count against it."""
    if not breaker.allow():
        raise unavailable(f"{breaker.name} is unavailable (circuit open)")
    try:
        result = call()
    except input_errors:
        breaker.success()
        raise
    except Exception as exc:
        breaker.failure(type(exc).__name__)
        raise
    breaker.success()
    return result


class GuardedIndex:
    """A VectorIndex whose calls skip an engine that is down or hung."""

    def __init__(self, index: VectorIndex, breaker: Breaker) -> None:
        self.inner = index
        self.breaker = breaker

    def __getattr__(self, name: str) -> Any:  # dimensions, distance, ...
        return getattr(self.inner, name)

    def _call(self, call: Callable[[], T]) -> T:
        return guarded(self.breaker, call, VectorIndexUnavailable, (VectorIndexError,))

    def ensure(self) -> None:
        self._call(self.inner.ensure)

    def upsert(self, items: Sequence[VectorItem]) -> None:
        self._call(lambda: self.inner.upsert(items))

    def delete(self, memory_ids: Sequence[UUID]) -> None:
        self._call(lambda: self.inner.delete(memory_ids))

    def stage(self) -> StagedWrite:
        if self.breaker.state == "open":  # no write ahead: the upsert at commit is refused
            return AfterCommit(self)
        return GuardedStage(self.inner.stage(), self)

    def write_in_transaction(self, conn: Any, source: Any) -> bool:
        if not self.breaker.allow():  # the rows stay pending for catch-up
            return False
        return self.inner.write_in_transaction(conn, source)

    def search(self, vector: Sequence[float], top_k: int, flt: VectorFilter) -> list[VectorHit]:
        return self._call(lambda: self.inner.search(vector, top_k, flt))

    def count(self) -> int:
        return self._call(self.inner.count)

    def ping(self) -> None:
        self.inner.ping()  # the prober's own call: it must reach the engine


class GuardedStage:
    """A staged index write whose commit counts for (and obeys) the circuit."""

    def __init__(self, staged: StagedWrite, index: GuardedIndex) -> None:
        self.inner = staged
        self.index = index
        self.writes_ahead = staged.writes_ahead

    def write(self, items: Sequence[VectorItem]) -> None:
        self.inner.write(items)

    def commit(self, last: Callable[[Any], None] | None = None) -> None:
        try:
            self.index._call(lambda: self.inner.commit(last))
        except BaseException:
            self.inner.abort()  # an open circuit skipped the commit: roll back
            raise

    def abort(self) -> None:
        self.inner.abort()


class GuardedEmbedder:
    """An (http) embedder whose calls skip a provider that is down or hung."""

    def __init__(self, embedder: Embedder, breaker: Breaker) -> None:
        self.inner = embedder
        self.breaker = breaker

    @property
    def dimensions(self) -> int:
        return self.inner.dimensions

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return guarded(self.breaker, lambda: self.inner.embed(texts), EmbeddingError)


class GuardedRateLimiter:
    """A Redis rate limiter that fails open at once while Redis is down or hung."""

    def __init__(self, limiter: RateLimiter, breaker: Breaker) -> None:
        self.inner = limiter
        self.breaker = breaker
        self.blocking = limiter.blocking

    def acquire(self, key: str) -> RateDecision:
        return guarded(self.breaker, lambda: self.inner.acquire(key), RateLimiterError)
