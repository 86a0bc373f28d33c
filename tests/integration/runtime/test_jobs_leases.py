"""Background jobs under PostgreSQL leases (issue 15 item 4, issue 14 item 4).

Leases live in the tenant's own schema: jobs run once across replicas with or
without Redis, a SIGKILLed holder stalls a job for about its TTL (seconds),
and another tenant can neither take nor block them. Every runtime connection
has lock and statement timeouts.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from memory_runtime.jobs import PeriodicJob, PostgresLease
from memory_runtime.storage.migrate import migrate
from memory_runtime.storage.postgres import DatabaseUnavailable, PostgresStore
from tests.integration.runtime.conftest import (
    ADMIN_TOKEN,
    Tenant,
    bearer,
    drop_tenant,
    make_tenant,
    tenant_settings,
)

pytestmark = pytest.mark.integration


def store_for(tenant: Tenant, size: int = 2) -> PostgresStore:
    s = PostgresStore(tenant.dsn, tenant.schema, "extensions", min_size=1, max_size=size)
    s.open()
    return s


@pytest.fixture
def stores(migrated: Tenant) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores = two replicas' pools on the same tenant schema."""
    a, b = store_for(migrated), store_for(migrated)
    yield a, b
    a.close()
    b.close()


def test_lease_is_token_checked_and_runs_out(stores) -> None:  # type: ignore[no-untyped-def]
    a, b = stores
    mine, rival = PostgresLease(a, "relay", 0.5), PostgresLease(b, "relay", 0.5)
    token = mine.acquire()
    assert token is not None
    assert rival.acquire() is None  # held
    assert PostgresLease(b, "prune", 0.5).acquire() is not None  # another job: free
    rival.release("not-the-token")  # a wrong token releases nothing
    assert rival.acquire() is None
    assert mine.extend(token)
    assert not mine.extend("not-the-token")
    time.sleep(0.7)  # not renewed: it ran out
    taken = rival.acquire()
    assert taken is not None
    assert not mine.extend(token)  # the old holder cannot renew it back
    mine.release(token)  # nor free the new holder's lease
    assert mine.acquire() is None
    rival.release(taken)
    assert mine.acquire() is not None


def test_two_replicas_never_run_a_job_at_once(stores) -> None:  # type: ignore[no-untyped-def]
    active = peak = total = 0
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
        return 0

    jobs = [
        PeriodicJob(f"relay-{n}", 0, work, PostgresLease(s, "relay")) for n, s in enumerate(stores)
    ]
    for job in jobs:
        job.start()
    try:
        assert enough.wait(60)
    finally:
        for job in jobs:
            job.stop()
    assert peak == 1
    assert sum(j.runs for j in jobs) == total
    assert sum(j.skipped for j in jobs) > 0  # they did contend


def test_a_run_longer_than_the_ttl_keeps_its_lease(stores) -> None:  # type: ignore[no-untyped-def]
    a, b = stores
    started, finish = threading.Event(), threading.Event()

    def long_run() -> int:
        started.set()
        finish.wait(30)
        return 1

    job = PeriodicJob("long", 3600, long_run, PostgresLease(a, "index", 0.6))
    runner = threading.Thread(target=job.run_once)
    runner.start()
    assert started.wait(30)
    rival = PostgresLease(b, "index", 10)
    try:
        for _ in range(15):  # well past the 0.6 s TTL: renewed while it works
            assert rival.acquire() is None
            time.sleep(0.1)
    finally:
        finish.set()
        runner.join(30)
    assert job.runs == 1
    assert rival.acquire() is not None  # released after the run


def test_failures_are_counted_and_the_lease_released(stores) -> None:  # type: ignore[no-untyped-def]
    a, _ = stores
    calls: list[int] = []

    def flaky() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("index went away")
        return 1

    job = PeriodicJob("index", 60, flaky, PostgresLease(a, "index"))
    assert job.run_once() is None
    assert job.failures == 1
    assert "index went away" in (job.last_error or "")
    assert job.run_once() == 1  # the failed run released its lease
    assert job.last_error is None


def test_a_draining_job_runs_batches_back_to_back_while_there_is_work(stores) -> None:  # type: ignore[no-untyped-def]
    a, _ = stores
    backlog = [500, 500, 120, 0, 7]
    calls: list[int] = []

    def batch() -> int:
        calls.append(backlog.pop(0))
        return calls[-1]

    job = PeriodicJob("index", 3600, batch, PostgresLease(a, "index"), drain=True)
    job.start()
    try:
        deadline = time.monotonic() + 30
        while len(calls) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        job.stop(timeout=5)
    assert calls == [500, 500, 120, 0]  # then it waits its interval (an hour)
    assert job.describe()["rate_per_second"] > 0


def test_database_down_is_a_job_failure_not_a_crash(tenant: Tenant) -> None:
    closed = PostgresStore(
        tenant.dsn, tenant.schema, "extensions", wait_seconds=0.5
    )  # never opened
    job = PeriodicJob("relay", 60, lambda: 1, PostgresLease(closed, "relay"))
    assert job.run_once() is None
    assert job.failures == 1
    assert "lock unavailable" in (job.last_error or "")
    with pytest.raises(DatabaseUnavailable):
        PostgresLease(closed, "relay").acquire()


def old_migration_lock_key(schema: str) -> int:
    """The advisory key the runtime used to migrate under (anyone could compute it)."""
    digest = hashlib.sha256(f"migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


HOLDER = """
import sys, time
from memory_runtime.jobs import PeriodicJob, PostgresLease
from memory_runtime.storage.postgres import PostgresStore
store = PostgresStore(sys.argv[1], sys.argv[2], "extensions")
store.open()
def work():
    print("holding", flush=True)
    time.sleep(3600)
    return 1
PeriodicJob("relay", 60, work, PostgresLease(store, "relay", 2.0)).run_once()
"""


def test_a_sigkilled_holder_stalls_the_job_for_seconds_not_minutes(
    stores, migrated: Tenant
) -> None:  # type: ignore[no-untyped-def]
    a, _ = stores
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, migrated.dsn, migrated.schema],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        lease = PostgresLease(a, "relay")
        time.sleep(3)  # longer than its 2 s TTL: it renewed the lease meanwhile
        assert lease.acquire() is None
        os.kill(holder.pid, signal.SIGKILL)
        killed = time.monotonic()
        holder.wait(10)
        token = None
        while token is None and time.monotonic() - killed < 30:
            token = lease.acquire()
            time.sleep(0.1)
        stalled = time.monotonic() - killed
    finally:
        if holder.poll() is None:
            holder.kill()
    assert token is not None
    assert stalled < 10  # the lease's 2 s TTL (+ scheduling), not the old 300 s


def test_another_tenant_can_neither_take_nor_block_this_tenants_locks(
    pg_database: str, migrated: Tenant
) -> None:
    """Tenant B, with its own rendered credentials, holds every lock it can
    name for tenant A (the advisory keys A used to use, computable from A's
    schema name) and tries A's lock tables; A's quota writes and migrations
    go on untouched."""
    attacker = make_tenant(pg_database, "evil")
    try:
        with psycopg.connect(attacker.dsn, autocommit=True) as b:
            b.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"{migrated.schema}:quota",))
            b.execute("SELECT pg_advisory_lock(%s)", (old_migration_lock_key(migrated.schema),))
            b.execute(
                "SELECT pg_advisory_lock(hashtext(%s))", (f"{migrated.schema}.memory_vectors",)
            )
            for table in ("job_leases", "runtime_locks", "schema_migrations", "memories"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege), b.transaction():
                    b.execute(
                        sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                            sql.Identifier(migrated.schema, table)
                        )
                    )
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                b.execute(
                    sql.SQL("SELECT * FROM {}").format(
                        sql.Identifier(migrated.schema, "job_leases")
                    )
                )

            done: list[object] = []

            def tenant_a_works() -> None:
                migrate(migrated.dsn, migrated.schema, "extensions")
                from fastapi.testclient import TestClient

                from memory_runtime.api import create_app

                settings = tenant_settings(migrated, max_memories=10)
                with TestClient(create_app(settings)) as c:
                    r = c.post("/memories", json={"payload": {"a": 1}}, headers=bearer(ADMIN_TOKEN))
                    done.append(r.status_code)
                own = store_for(migrated)
                done.append(PostgresLease(own, "relay").acquire() is not None)
                own.close()

            worker = threading.Thread(target=tenant_a_works, daemon=True)
            worker.start()
            worker.join(60)  # before: blocked until B let go (forever here)
            assert done == [201, True]
    finally:
        drop_tenant(attacker)
