"""Circuit breaker states and the monitor's hung-probe detection (no servers)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from memory_runtime.guards import guarded
from memory_runtime.health import Breaker, HealthMonitor
from memory_runtime.vectors.common import VectorIndexError, VectorIndexUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_and_half_opens_for_one_trial() -> None:
    clock = Clock()
    b = Breaker("dep", threshold=2, open_seconds=5, clock=clock)
    b.failure("E")
    assert b.allow()  # one failure: still closed
    b.failure("E")
    assert b.state == "open"
    assert not b.allow()
    clock.now = 5.0
    assert b.allow()  # the one trial
    assert not b.allow()  # others keep skipping while it runs
    b.failure("E")  # the trial failed: open again for a full period
    assert b.state == "open"
    clock.now = 9.9
    assert not b.allow()
    clock.now = 10.0
    assert b.allow()
    b.success()
    assert b.state == "closed"
    assert b.allow()
    assert b.allow()


def test_guarded_skips_an_open_circuit_and_input_errors_do_not_count() -> None:
    b = Breaker("vectors", threshold=1, open_seconds=60)
    with pytest.raises(VectorIndexError):
        guarded(
            b, _raise(VectorIndexError("bad filter")), VectorIndexUnavailable, (VectorIndexError,)
        )
    assert b.state == "closed"  # the caller's mistake, not an outage
    with pytest.raises(ConnectionError):
        guarded(b, _raise(ConnectionError()), VectorIndexUnavailable, (VectorIndexError,))
    calls = []
    with pytest.raises(VectorIndexUnavailable, match="circuit open"):
        guarded(b, lambda: calls.append(1), VectorIndexUnavailable)
    assert calls == []  # never reached the dependency


def test_monitor_reports_a_probe_that_does_not_answer_as_hung() -> None:
    release = threading.Event()
    hung_calls: list[int] = []
    breaker = Breaker("slow", threshold=2)
    monitor = HealthMonitor(
        {"slow": lambda: release.wait(30) and None, "fine": lambda: {"x": 1}},
        {"slow": breaker},
        timeout=0.2,
        on_hung={"slow": lambda: hung_calls.append(1)},
    )
    monitor.probe_all()
    snap = monitor.snapshot()
    assert snap["slow"]["status"] == "hung"
    assert snap["slow"]["error"] == "timeout"
    assert snap["slow"]["circuit"] == "closed"  # one slow probe is one failure
    assert monitor.probe_once("slow").status == "hung"  # the same probe, still unanswered
    assert monitor.snapshot()["slow"]["circuit"] == "open"
    assert snap["fine"] == {
        "status": "ok",
        "x": 1,
        "checked_seconds_ago": snap["fine"]["checked_seconds_ago"],
    }
    assert hung_calls == [1, 1]
    release.set()
    for _ in range(50):  # the same call finally answers
        if monitor.probe_once("slow").status == "ok":
            break
        time.sleep(0.05)
    assert monitor.snapshot()["slow"]["circuit"] == "closed"
    monitor.stop()


def test_a_hung_probe_opens_the_circuit_but_acts_on_hung_only_after_the_grace() -> None:
    release = threading.Event()
    hung_calls: list[float] = []
    breaker = Breaker("db", threshold=2)
    monitor = HealthMonitor(
        {"db": lambda: release.wait(30) and None},
        {"db": breaker},
        timeout=0.1,
        on_hung={"db": lambda: hung_calls.append(time.monotonic())},
        hung_action_after=0.6,
    )
    started = time.monotonic()
    assert monitor.probe_once("db").status == "hung"
    assert monitor.probe_once("db").status == "hung"
    assert breaker.state == "open"  # new requests skip it at once
    assert hung_calls == []  # but nothing in flight is cut yet
    while not hung_calls and time.monotonic() - started < 5:
        monitor.probe_once("db")  # the same probe, still waiting
    assert hung_calls
    assert hung_calls[0] - started >= 0.6
    release.set()
    monitor.stop()


def _raise(exc: Exception):  # type: ignore[no-untyped-def]
    def call() -> None:
        raise exc

    return call


def test_one_slow_probe_on_a_loaded_host_leaves_the_circuit_closed() -> None:
    # a probe that answers late once (CI load) must not answer 503 for the tenant
    answer = threading.Event()
    breaker = Breaker("db", threshold=2)
    monitor = HealthMonitor({"db": lambda: answer.wait(30) and None}, {"db": breaker}, timeout=0.1)
    assert monitor.probe_once("db").status == "hung"
    assert breaker.state == "closed"
    assert breaker.allow()
    answer.set()
    time.sleep(0.2)  # the late answer arrives before the next round
    assert monitor.probe_once("db").status == "ok"
    assert breaker.state == "closed"
    monitor.stop()


def test_a_refused_probe_opens_the_circuit_at_once() -> None:
    breaker = Breaker("db", threshold=2)
    monitor = HealthMonitor({"db": _raise(ConnectionRefusedError())}, {"db": breaker})
    assert monitor.probe_once("db").status == "error"
    assert breaker.state == "open"
    monitor.stop()


def test_a_hung_probe_whose_client_gives_up_stays_hung() -> None:
    # a silent server: the probe is reported hung, then its own client times out;
    # that is still no answer, not an error (readyz would alternate hung/error)
    gave_up = threading.Event()

    def silent() -> None:
        gave_up.wait(30)
        raise httpx.ReadTimeout("timed out")  # what the http embedder's ping raises

    breaker = Breaker("embedder", threshold=2)
    monitor = HealthMonitor({"embedder": silent}, {"embedder": breaker}, timeout=0.1)
    assert monitor.probe_once("embedder").status == "hung"
    gave_up.set()
    time.sleep(0.2)
    probe = monitor.probe_once("embedder")
    assert probe.status == "hung"
    assert probe.error == "ReadTimeout"
    assert breaker.state == "open"
    assert monitor.probe_once("embedder").status == "error"  # a new probe refused at once
    monitor.stop()
