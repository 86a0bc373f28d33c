"""PeriodicJob with in-process locks: mutual exclusion, failure counting, start/stop."""

from __future__ import annotations

import threading
import uuid

import pytest

from memory_runtime.jobs import LocalLock, PeriodicJob, build_lock


def unique_key() -> str:
    return f"test:lock:{uuid.uuid4().hex}"


def test_local_lock_is_shared_by_key_and_token_checked() -> None:
    key = unique_key()
    a, b = build_lock(None, key, 10), build_lock(None, key, 10)
    assert isinstance(a, LocalLock)
    token = a.acquire()
    assert token is not None
    assert b.acquire() is None  # same key: held
    assert build_lock(None, unique_key(), 10).acquire() is not None  # other key: free
    b.release("not-the-token")  # a wrong token releases nothing
    assert b.acquire() is None
    assert a.extend(token)
    assert not a.extend("not-the-token")
    a.release(token)
    second = b.acquire()
    assert second is not None
    assert not a.extend(token)  # the old token no longer holds it
    b.release(second)


def test_run_once_returns_the_result_and_counts() -> None:
    job = PeriodicJob("count", 60, lambda: 7, build_lock(None, unique_key(), 10))
    assert job.run_once() == 7
    assert job.run_once() == 7
    assert (job.runs, job.failures, job.skipped, job.last_result) == (2, 0, 0, 7)


def test_failures_are_counted_and_the_lock_is_released() -> None:
    key = unique_key()
    calls = {"n": 0}

    def flaky() -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database went away")
        return 1

    job = PeriodicJob("flaky", 60, flaky, build_lock(None, key, 10))
    assert job.run_once() is None
    assert job.failures == 1
    assert "database went away" in (job.last_error or "")
    assert job.run_once() == 1  # the failed run released the lock
    assert job.last_error is None


def test_busy_lock_skips_without_running() -> None:
    key = unique_key()
    holder = build_lock(None, key, 10)
    token = holder.acquire()
    assert token is not None
    ran = []
    job = PeriodicJob("skip", 60, lambda: ran.append(1) or 1, build_lock(None, key, 10))
    assert job.run_once() is None
    assert ran == []
    assert job.skipped == 1
    holder.release(token)
    assert job.run_once() == 1


def test_two_jobs_sharing_a_lock_never_overlap() -> None:
    key = unique_key()
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
        enough.wait(0.01)  # hold the lock a while so overlaps would show
        with guard:
            active -= 1
            total += 1
            if total >= 20:
                enough.set()
        return 1

    jobs = [PeriodicJob(f"j{i}", 0, work, build_lock(None, key, 10)) for i in range(3)]
    for job in jobs:
        job.start()
    assert enough.wait(60)
    for job in jobs:
        job.stop()
    assert peak == 1
    assert sum(j.runs for j in jobs) == total
    assert sum(j.skipped for j in jobs) > 0  # they did contend for the lock
    assert not any(j.running for j in jobs)


def test_start_runs_repeatedly_and_stop_ends_the_thread() -> None:
    ticks = threading.Semaphore(0)

    def tick() -> int:
        ticks.release()
        return 0

    job = PeriodicJob("tick", 0.01, tick, build_lock(None, unique_key(), 10))
    job.start()
    job.start()  # idempotent
    for _ in range(3):
        assert ticks.acquire(timeout=30)
    job.stop()
    assert not job.running
    assert job.runs >= 3


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="interval"):
        PeriodicJob("x", -1, lambda: 0, build_lock(None, unique_key(), 10))
    with pytest.raises(ValueError, match="ttl"):
        build_lock(None, unique_key(), 0)
    with pytest.raises(ValueError, match="key"):
        build_lock(None, "", 10)
