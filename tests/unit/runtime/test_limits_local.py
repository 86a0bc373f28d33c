"""In-process token bucket: capacity, refill, headers' numbers, thread safety."""

from __future__ import annotations

import threading

import pytest

from memory_runtime.limits import (
    LocalRateLimiter,
    UnlimitedRateLimiter,
    build_rate_limiter,
    decide,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_denied_with_retry_after() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(per_minute=60, burst=3, clock=clock)
    decisions = [limiter.acquire("tok") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert all(d.limit == 3 for d in decisions)
    denied = decisions[-1]
    assert denied.retry_after_seconds == 1  # 60/min = one token per second
    assert denied.reset_seconds == 3  # three tokens to refill the bucket
    assert decisions[0].retry_after_seconds == 0


def test_refill_over_time_caps_at_burst() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(per_minute=60, burst=2, clock=clock)
    assert limiter.acquire("k").allowed
    assert limiter.acquire("k").allowed
    assert not limiter.acquire("k").allowed
    clock.now += 1.0
    assert limiter.acquire("k").allowed
    assert not limiter.acquire("k").allowed
    clock.now += 3600.0  # long idle: refills to burst, not beyond
    assert [limiter.acquire("k").allowed for _ in range(3)] == [True, True, False]


def test_keys_are_independent() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(per_minute=1, burst=1, clock=clock)
    assert limiter.acquire("a").allowed
    assert not limiter.acquire("a").allowed
    assert limiter.acquire("b").allowed


def test_concurrent_acquires_never_exceed_burst() -> None:
    limiter = LocalRateLimiter(per_minute=1, burst=25)
    results: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(20):
            allowed = limiter.acquire("shared").allowed
            with lock:
                results.append(allowed)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 160
    assert sum(results) == 25


def test_idle_full_buckets_are_forgotten() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(per_minute=60_000, burst=1, clock=clock)
    limiter.MAX_KEYS = 5  # type: ignore[misc]
    for i in range(6):
        limiter.acquire(f"k{i}")
    clock.now += 10
    limiter.acquire("fresh-1")
    limiter.acquire("fresh-2")
    assert len(limiter._buckets) <= 5


def test_decide_numbers() -> None:
    per_ms = 600 / 60_000  # 10 tokens per second
    assert decide(4.5, 10, per_ms, True) == (4, 1, 0)  # 5.5 tokens to refill = 0.55 s -> 1
    assert decide(0.2, 10, per_ms, False) == (0, 1, 1)


def test_build_and_validation() -> None:
    assert isinstance(build_rate_limiter(None, "mem:acme", 600, 100), LocalRateLimiter)
    unlimited = build_rate_limiter(None, "mem:acme", 0, 100)
    assert isinstance(unlimited, UnlimitedRateLimiter)
    assert all(unlimited.acquire("x").allowed for _ in range(1000))
    with pytest.raises(ValueError, match="burst"):
        build_rate_limiter(None, "p", 10, 0)
    with pytest.raises(ValueError, match="per minute"):
        build_rate_limiter(None, "p", -1, 10)
