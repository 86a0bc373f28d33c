"""Job locks in Redis: token-checked release/extend, expiry, and mutual exclusion of
jobs running on separate connections (as separate replicas would)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from memory_runtime.jobs import PeriodicJob, RedisLock, build_lock
from tests.servers.redis import RedisServer, load_runtime_functions

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    load_runtime_functions(redis_server.url)
    c = redis.Redis.from_url(redis_server.url)
    yield c
    c.close()


def key() -> str:
    return f"mem:acme:lock:{uuid.uuid4().hex}"


def test_set_nx_with_token_and_compare_and_delete(client: redis.Redis) -> None:
    k = key()
    a = build_lock(client, k, 30)
    assert isinstance(a, RedisLock)
    token = a.acquire()
    assert token is not None
    assert client.get(k) == token.encode()
    assert 0 < client.pttl(k) <= 30_000
    b = build_lock(client, k, 30)
    assert b.acquire() is None
    b.release("someone-else")  # wrong token: nothing deleted
    assert client.get(k) == token.encode()
    assert not b.extend("someone-else")
    assert a.extend(token)
    a.release(token)
    assert client.get(k) is None


def test_expired_lock_can_be_taken_and_old_holder_cannot_release_it(client: redis.Redis) -> None:
    k = key()
    a = build_lock(client, k, 0.2)
    old = a.acquire()
    assert old is not None
    b = build_lock(client, k, 30)
    new = None
    deadline = time.monotonic() + 30
    while new is None and time.monotonic() < deadline:
        new = b.acquire()
        time.sleep(0.05)
    assert new is not None
    a.release(old)  # the stale holder must not free the new holder's lock
    assert client.get(k) == new.encode()
    assert not a.extend(old)
    b.release(new)


def test_two_jobs_on_separate_connections_never_run_concurrently(
    client: redis.Redis, redis_server: RedisServer
) -> None:
    k = key()
    active = 0
    peak = 0
    total = 0
    guard = threading.Lock()
    enough = threading.Event()

    def work() -> int:
        nonlocal active, peak, total
        with guard:
            active += 1
            peak = max(peak, active)
        enough.wait(0.02)
        with guard:
            active -= 1
            total += 1
            if total >= 15:
                enough.set()
        return 1

    other = redis.Redis.from_url(redis_server.url)
    jobs = [
        PeriodicJob("prune-a", 0, work, build_lock(client, k, 10)),
        PeriodicJob("prune-b", 0, work, build_lock(other, k, 10)),
    ]
    try:
        for job in jobs:
            job.start()
        assert enough.wait(60)
    finally:
        for job in jobs:
            job.stop()
        other.close()
    assert peak == 1
    assert sum(j.runs for j in jobs) == total
    assert client.get(k) is None  # released after the last run


def test_a_run_longer_than_the_ttl_keeps_its_lock(
    client: redis.Redis, redis_server: RedisServer
) -> None:
    k = key()
    started = threading.Event()
    finish = threading.Event()

    def long_run() -> int:
        started.set()
        finish.wait(30)
        return 1

    job = PeriodicJob("long", 3600, long_run, build_lock(client, k, 0.6))
    runner = threading.Thread(target=job.run_once)
    runner.start()
    assert started.wait(30)
    rival_client = redis.Redis.from_url(redis_server.url)
    rival = build_lock(rival_client, k, 10)
    try:
        # Well past the 0.6 s TTL, the lock is still held thanks to extension.
        for _ in range(15):
            assert rival.acquire() is None
            time.sleep(0.1)
    finally:
        finish.set()
        runner.join(30)
        rival_client.close()
    assert job.runs == 1
    assert client.get(k) is None


def test_redis_down_counts_as_a_failure_not_a_crash() -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    job = PeriodicJob("relay", 60, lambda: 1, build_lock(dead, key(), 10))
    assert job.run_once() is None
    assert job.failures == 1
    assert "lock unavailable" in (job.last_error or "")


def test_locks_work_as_the_tenant_acl_user(client: redis.Redis, redis_server: RedisServer) -> None:
    from memory_operator.acl import REDIS_COMMAND_RULES

    client.execute_command(
        "ACL", "SETUSER", "lock-tenant", "reset", "on", ">lock-secret", "~mem:acme:*",
        *REDIS_COMMAND_RULES,
    )  # fmt: skip
    tenant = redis.Redis.from_url(redis_server.url_for("lock-tenant", "lock-secret"))
    try:
        runs: list[int] = []
        job = PeriodicJob("prune", 60, lambda: runs.append(1) or 1, build_lock(tenant, key(), 10))
        assert job.run_once() == 1
        assert runs == [1]
        outside = PeriodicJob("x", 60, lambda: 1, build_lock(tenant, "mem:other:lock:x", 10))
        assert outside.run_once() is None  # the ACL keeps it out of other tenants' keys
        assert outside.failures == 1
    finally:
        tenant.close()
        client.execute_command("ACL", "DELUSER", "lock-tenant")
