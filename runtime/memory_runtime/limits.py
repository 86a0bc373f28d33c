"""Token-bucket rate limiting per API token: in Redis (shared by replicas) or in-process.

A bucket holds up to `burst` tokens and refills at `per_minute / 60` tokens per
second; each request takes one. The Redis variant is one call of the Redis
function memory_contract.redis_functions.TOKEN_BUCKET (loaded by the operator; tenants may not
run scripts), so read-refill-take-write is atomic across replicas, and uses the
server clock so replicas with skewed clocks still agree.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis

from memory_contract.redis_functions import TOKEN_BUCKET


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int  # bucket capacity (burst)
    remaining: int  # whole tokens left after this request
    reset_seconds: int  # until the bucket is full again
    retry_after_seconds: int  # 0 when allowed; else until one token is back


class RateLimiter(Protocol):
    blocking: bool  # True if acquire() does I/O (callers keep it off the event loop)

    def acquire(self, key: str) -> RateDecision:
        """Take one token from `key`'s bucket (key: a non-secret token id, never the token)."""
        ...


class RateLimiterError(RuntimeError):
    """The limiter's store is unreachable; the caller decides to fail open or closed."""


def _validate(per_minute: int, burst: int) -> None:
    if per_minute < 0:
        raise ValueError(f"requests per minute must be >= 0, got {per_minute}")
    if burst < 1:
        raise ValueError(f"burst must be >= 1, got {burst}")


def decide(tokens: float, capacity: int, per_ms: float, allowed: bool) -> tuple[int, int, int]:
    """(remaining, reset_seconds, retry_after_seconds) for a bucket state. Pure."""
    remaining = max(0, math.floor(tokens))
    reset_ms = (capacity - tokens) / per_ms if per_ms > 0 else 0.0
    retry_ms = 0.0 if allowed else (1.0 - tokens) / per_ms
    return remaining, max(0, math.ceil(reset_ms / 1000)), max(0, math.ceil(retry_ms / 1000))


class UnlimitedRateLimiter:
    """requestsPerMinute = 0: limiting is off."""

    blocking = False  # acquire() does no I/O: callable on the event loop

    def __init__(self, burst: int) -> None:
        self._burst = burst

    def acquire(self, key: str) -> RateDecision:
        return RateDecision(True, self._burst, self._burst, 0, 0)


class LocalRateLimiter:
    """In-process buckets (embedded mode, one replica); thread-safe."""

    MAX_KEYS = 10_000
    blocking = False  # a dict update under a lock: callable on the event loop

    def __init__(
        self, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        _validate(per_minute, burst)
        self._capacity = burst
        self._per_ms = per_minute / 60_000.0
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at_ms)

    def acquire(self, key: str) -> RateDecision:
        now = self._clock() * 1000.0
        with self._lock:
            tokens, at = self._buckets.get(key, (float(self._capacity), now))
            tokens = min(float(self._capacity), tokens + max(0.0, now - at) * self._per_ms)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > self.MAX_KEYS:
                self._forget_full(now)
        remaining, reset, retry = decide(tokens, self._capacity, self._per_ms, allowed)
        return RateDecision(allowed, self._capacity, remaining, reset, retry)

    def _forget_full(self, now: float) -> None:
        # A bucket that has refilled completely is the same as no bucket: drop it.
        for key, (tokens, at) in list(self._buckets.items()):
            if tokens + (now - at) * self._per_ms >= self._capacity:
                del self._buckets[key]


class RedisRateLimiter:
    """Buckets at `<prefix>:ratelimit:<key>`, shared by every replica of the tenant."""

    blocking = True  # a Redis round trip: run it off the event loop

    def __init__(self, client: redis.Redis, prefix: str, per_minute: int, burst: int) -> None:
        _validate(per_minute, burst)
        if per_minute == 0:
            raise ValueError("per_minute 0 means no limit; use build_rate_limiter")
        self._client = client
        self._prefix = prefix.rstrip(":")
        self._capacity = burst
        self._per_ms = per_minute / 60_000.0

    def key_for(self, key: str) -> str:
        return f"{self._prefix}:ratelimit:{key}"

    def acquire(self, key: str) -> RateDecision:
        try:
            allowed_raw, tokens_raw = self._client.fcall(
                TOKEN_BUCKET, 1, self.key_for(key), self._capacity, repr(self._per_ms)
            )
        except redis.RedisError as exc:
            raise RateLimiterError(f"rate limiter store unavailable: {exc}") from exc
        tokens = float(tokens_raw)
        allowed = int(allowed_raw) == 1
        remaining, reset, retry = decide(tokens, self._capacity, self._per_ms, allowed)
        return RateDecision(allowed, self._capacity, remaining, reset, retry)


def build_rate_limiter(
    redis_client: redis.Redis | None, prefix: str, per_minute: int, burst: int
) -> RateLimiter:
    """Redis buckets when a client is given (cluster mode), in-process ones otherwise."""
    _validate(per_minute, burst)
    if per_minute == 0:
        return UnlimitedRateLimiter(burst)
    if redis_client is None:
        return LocalRateLimiter(per_minute, burst)
    return RedisRateLimiter(redis_client, prefix, per_minute, burst)
