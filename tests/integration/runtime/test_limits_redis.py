"""The Redis token bucket: atomic, shared between limiter instances, keys under the prefix."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from memory_runtime.limits import RateLimiterError, RedisRateLimiter, build_rate_limiter
from tests.servers.redis import RedisServer, load_runtime_functions

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    load_runtime_functions(redis_server.url)
    c = redis.Redis.from_url(redis_server.url)
    c.flushdb()
    yield c
    c.close()


def test_burst_then_denied(client: redis.Redis) -> None:
    limiter = build_rate_limiter(client, "mem:acme", per_minute=1, burst=3)
    assert isinstance(limiter, RedisRateLimiter)
    decisions = [limiter.acquire("tok1") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    denied = decisions[-1]
    # One token per minute: the next one is (nearly) a minute away.
    assert 55 <= denied.retry_after_seconds <= 60
    assert denied.limit == 3


def test_bucket_lives_under_the_tenant_prefix_and_expires(client: redis.Redis) -> None:
    limiter = build_rate_limiter(client, "mem:acme", per_minute=60, burst=5)
    limiter.acquire("tok-a")
    keys = {k.decode() for k in client.keys("*")}
    assert keys == {"mem:acme:ratelimit:tok-a"}
    ttl_ms = client.pttl("mem:acme:ratelimit:tok-a")
    # One token used at 1/s: full again in about a second (+1 s slack in the script).
    assert 0 < ttl_ms <= 2000


def test_two_instances_share_one_bucket(client: redis.Redis, redis_server: RedisServer) -> None:
    # Two limiters with their own connections, like two replicas of the runtime.
    a = build_rate_limiter(client, "mem:acme", per_minute=1, burst=10)
    b = build_rate_limiter(redis.Redis.from_url(redis_server.url), "mem:acme", 1, 10)
    results: list[bool] = []
    lock = threading.Lock()

    def worker(limiter: object) -> None:
        for _ in range(15):
            allowed = limiter.acquire("shared").allowed  # type: ignore[attr-defined]
            with lock:
                results.append(allowed)

    threads = [threading.Thread(target=worker, args=(lim,)) for lim in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 60
    assert sum(results) == 10  # one bucket, taken atomically: never more than burst
    other_tenant = build_rate_limiter(client, "mem:other", 1, 10)
    assert other_tenant.acquire("shared").allowed


def test_tokens_come_back(client: redis.Redis) -> None:
    limiter = build_rate_limiter(client, "mem:acme", per_minute=60_000, burst=1)
    assert limiter.acquire("fast").allowed
    time.sleep(0.05)  # 1000 tokens/s: plenty refilled by now
    assert limiter.acquire("fast").allowed


def test_unreachable_redis_is_a_limiter_error() -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    limiter = build_rate_limiter(dead, "mem:acme", 60, 5)
    with pytest.raises(RateLimiterError, match="unavailable"):
        limiter.acquire("tok")


def test_works_as_the_tenant_acl_user_the_operator_creates(
    client: redis.Redis, redis_server: RedisServer
) -> None:
    # Same rules as the operator's Redis adapter: keys confined to the tenant prefix.
    from memory_operator.acl import REDIS_COMMAND_RULES

    client.execute_command(
        "ACL", "SETUSER", "rl-tenant", "reset", "on", ">rl-secret", "~mem:acme:*",
        *REDIS_COMMAND_RULES,
    )  # fmt: skip
    tenant = redis.Redis.from_url(redis_server.url_for("rl-tenant", "rl-secret"))
    try:
        limiter = build_rate_limiter(tenant, "mem:acme", per_minute=1, burst=2)
        assert [limiter.acquire("t").allowed for _ in range(3)] == [True, True, False]
        # Outside its prefix the same user is refused: the limiter can't leak across tenants.
        outside = build_rate_limiter(tenant, "mem:other", per_minute=1, burst=2)
        with pytest.raises(RateLimiterError):
            outside.acquire("t")
    finally:
        tenant.close()
        client.execute_command("ACL", "DELUSER", "rl-tenant")
