"""Shared bulk reads (snapshot.py): when a read is shared and when it is loaded again."""

from __future__ import annotations

import threading
import time

import pytest

from memory_operator.snapshot import Shared, SharedByKey


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_read_is_shared_within_the_window_and_loaded_again_after_it() -> None:
    clock, loads = Clock(), []
    shared = Shared(lambda: loads.append(clock.now) or len(loads), window=5.0, clock=clock)
    assert shared.get(not_before=float("-inf")) == 1
    clock.now += 4.9
    assert shared.get(not_before=float("-inf")) == 1  # shared
    clock.now += 0.1
    assert shared.get(not_before=float("-inf")) == 2  # the window is over
    assert shared.loads == 2


def test_the_window_counts_from_the_end_of_the_load() -> None:
    clock = Clock()

    def slow_load() -> float:
        clock.now += 4.0  # a large fleet's list on a busy host
        return clock.now

    shared = Shared(slow_load, window=5.0, clock=clock)
    assert shared.get(float("-inf")) == 104.0
    clock.now += 4.9
    assert shared.get(float("-inf")) == 104.0  # still shared, 8.9 s after the load began
    assert shared.get(not_before=100.0) == 104.0  # the load began at 100
    assert shared.get(not_before=100.1) == 112.9  # began before that pass: loaded again


def test_a_read_older_than_the_callers_previous_pass_is_never_served() -> None:
    """A tenant's pass never sees a read loaded before its own previous pass ended:
    drift made after that pass (and the operator's own writes) are seen."""
    clock = Clock()
    shared = Shared(lambda: clock.now, window=60.0, clock=clock)
    assert shared.get(not_before=float("-inf")) == 100.0
    clock.now = 101.0
    assert shared.get(not_before=100.0) == 100.0  # loaded at 100: allowed
    assert shared.get(not_before=100.5) == 101.0  # loaded again
    assert shared.get(not_before=100.5) == 101.0  # and that one is shared


def test_concurrent_callers_share_one_load() -> None:
    calls = []

    def load() -> int:
        calls.append(1)
        time.sleep(0.05)
        return len(calls)

    shared = Shared(load, window=60.0)
    out: list[int] = []
    threads = [
        threading.Thread(target=lambda: out.append(shared.get(float("-inf")))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == [1] * 8
    assert len(calls) == 1


def test_a_failed_load_is_not_cached() -> None:
    attempts = []

    def load() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("down")
        return "ok"

    shared = Shared(load, window=60.0)
    with pytest.raises(ConnectionError):
        shared.get(float("-inf"))
    assert shared.get(float("-inf")) == "ok"


def test_by_key_loads_each_key_once_and_drops_expired_keys() -> None:
    clock, loaded = Clock(), []
    by_key = SharedByKey(lambda key: loaded.append(key) or key, window=5.0, clock=clock)
    assert by_key.get(("Secret", "a"), float("-inf")) == ("Secret", "a")
    assert by_key.get(("Secret", "a"), float("-inf")) == ("Secret", "a")
    assert by_key.get(("Secret", "b"), float("-inf")) == ("Secret", "b")
    assert loaded == [("Secret", "a"), ("Secret", "b")]
    clock.now += 10
    by_key.get(("Service", "a"), float("-inf"))
    assert len(by_key._by_key) == 1  # the expired keys' values are gone
