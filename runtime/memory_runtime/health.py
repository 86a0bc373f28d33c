"""Dependency health: one circuit breaker per dependency and a background prober.

A request asks `breaker.allow()` before it touches a dependency. After
`threshold` failures in a row (or one failed trial) the breaker opens: for
`open_seconds` every request skips the dependency at once and degrades
(hybrid recall without its vector side, rate limiting failing open, writes
left `index_pending`, 503 for PostgreSQL) instead of waiting on timeouts. Then
one request at a time may try again (half-open); its success closes the breaker.

The `HealthMonitor` probes each dependency on a thread of its own, so a hung
dependency never delays another's probe, and publishes a snapshot that
`/readyz`, `/stats` and the metrics read without any I/O of their own. A probe
that has not answered within its timeout is reported `hung` and counts as one
failure: a probe that is merely slow once on a loaded host must not take the
tenant down, so a hung dependency opens the breaker when the next round finds
the same probe still unanswered (or a request times out meanwhile). A probe
that fails outright (refused, reset) opens it at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger("memory_runtime.health")

BreakerState = Literal["closed", "open", "half_open"]


class Breaker:
    """A circuit breaker (thread-safe); `clock` is injectable for tests."""

    def __init__(
        self,
        name: str,
        *,
        threshold: int = 2,
        open_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1 or open_seconds <= 0:
            raise ValueError("a breaker needs threshold >= 1 and open_seconds > 0")
        self.name = name
        self.threshold = threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._state: BreakerState = "closed"
        self._failures = 0
        self._open_until = 0.0
        self._trial = False  # a half-open trial is in flight
        self.last_error: str | None = None
        self.opened_total = 0

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._current()

    def _current(self) -> BreakerState:
        if self._state == "open" and self._clock() >= self._open_until:
            self._state, self._trial = "half_open", False
        return self._state

    def allow(self) -> bool:
        """May this call use the dependency? (In half-open state: one trial at a time.)"""
        with self._lock:
            state = self._current()
            if state == "closed":
                return True
            if state == "half_open" and not self._trial:
                self._trial = True
                return True
            return False

    def success(self) -> None:
        with self._lock:
            if self._state != "closed":
                log.info("%s answers again: circuit closed", self.name)
            self._state, self._failures, self._trial = "closed", 0, False
            self.last_error = None

    def failure(self, error: str) -> None:
        with self._lock:
            self.last_error = error
            self._failures += 1
            state = self._current()
            if state == "half_open" or (state == "closed" and self._failures >= self.threshold):
                if state == "closed":
                    log.warning("%s failing (%s): circuit open", self.name, error)
                    self.opened_total += 1
                self._state, self._trial = "open", False
                self._open_until = self._clock() + self.open_seconds

    def trip(self, error: str) -> None:
        """Open now (a probe saw the dependency refuse or fail outright)."""
        with self._lock:
            self._failures = max(self._failures, self.threshold - 1)
        self.failure(error)


class Unavailable(RuntimeError):
    """A dependency is skipped because its circuit is open."""


@dataclass
class Probe:
    """The latest probe result of one dependency."""

    status: Literal["ok", "error", "hung", "unknown"] = "unknown"
    error: str | None = None  # an exception class or "timeout": never a message
    info: Mapping[str, Any] | None = None
    checked_at: float | None = None  # time.time() of the last finished probe
    latency_seconds: float | None = None


class HealthMonitor:
    """Probes dependencies in the background; `snapshot()` never does I/O."""

    def __init__(
        self,
        checks: Mapping[str, Callable[[], Mapping[str, Any] | None]],
        breakers: Mapping[str, Breaker],
        *,
        interval: float = 1.0,
        timeout: float = 1.0,
        on_change: Callable[[str, Probe, Breaker | None], None] | None = None,
        on_hung: Mapping[str, Callable[[], object]] | None = None,
        hung_action_after: float = 0.0,
    ) -> None:
        self.checks = dict(checks)
        self.breakers = dict(breakers)
        self.interval = interval
        self.timeout = timeout
        # `on_hung` acts (e.g. cuts connections) only once probes have gone
        # unanswered this long: a probe that is merely slow on a loaded host
        # opens the circuit, but must not kill a healthy export or import.
        self.hung_action_after = hung_action_after
        self._failing_since: dict[str, float] = {}
        self._on_change = on_change
        self._on_hung = dict(on_hung or {})
        self._probes: dict[str, Probe] = {name: Probe() for name in checks}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # one single-thread executor per dependency: a hung probe blocks only itself
        self._executors = {
            name: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"probe-{name}")
            for name in checks
        }
        self._pending: dict[str, tuple[Future[Any], float]] = {}

    def probe_once(self, name: str) -> Probe:
        """Run (or keep waiting on) one probe for at most `timeout` seconds."""
        pending = self._pending.get(name)
        reported_hung = pending is not None  # this probe was unanswered a round ago
        if pending is None:
            pending = (self._executors[name].submit(self.checks[name]), time.monotonic())
            self._pending[name] = pending
        future, started = pending
        breaker = self.breakers.get(name)
        try:
            info = future.result(timeout=max(0.0, started + self.timeout - time.monotonic()))
        except FutureTimeout:
            # still waiting: the dependency accepts connections but does not answer
            probe = Probe("hung", "timeout", None, time.time(), time.monotonic() - started)
            if breaker is not None:
                breaker.failure("timeout")
        except Exception as exc:
            del self._pending[name]
            # a probe already reported hung that ends with its client giving up
            # (a read timeout) still had no answer: it stays hung, not an error
            # one round later (a silent server's status would alternate)
            status: Literal["hung", "error"] = "hung" if reported_hung else "error"
            probe = Probe(status, type(exc).__name__, None, time.time(), None)
            if breaker is not None:
                breaker.trip(type(exc).__name__)
        else:
            del self._pending[name]
            probe = Probe("ok", None, info, time.time(), time.monotonic() - started)
            if breaker is not None:
                breaker.success()
        self._act_if_hung(name, probe)
        with self._lock:
            self._probes[name] = probe
        if self._on_change is not None:
            self._on_change(name, probe, breaker)
        return probe

    def _act_if_hung(self, name: str, probe: Probe) -> None:
        # a hung server often ends a probe with a connect timeout (an error),
        # and the next probe starts over: count from the first unanswered one
        if probe.status == "ok":
            self._failing_since.pop(name, None)
            return
        since = self._failing_since.setdefault(name, time.monotonic())
        hung = self._on_hung.get(name)
        if hung is not None and time.monotonic() - since >= self.hung_action_after:
            hung()

    def probe_all(self) -> None:
        """One round over every dependency, in parallel (start-up, tests)."""
        threads = [
            threading.Thread(target=self.probe_once, args=(name,), daemon=True)
            for name in self.checks
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _run(self, name: str) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.probe_once(name)
            except Exception:  # never let the prober die
                log.exception("probe of %s failed", name)

    def start(self) -> None:
        self._stop.clear()
        for name in self.checks:
            t = threading.Thread(target=self._run, args=(name,), name=f"health-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.interval + 1)
        self._threads.clear()
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per dependency: status, error, breaker state, age of the last probe."""
        with self._lock:
            probes = dict(self._probes)
        out: dict[str, dict[str, Any]] = {}
        for name, probe in probes.items():
            entry: dict[str, Any] = {"status": probe.status, **(probe.info or {})}
            if probe.error:
                entry["error"] = probe.error
            breaker = self.breakers.get(name)
            if breaker is not None:
                entry["circuit"] = breaker.state
            if probe.checked_at is not None:
                entry["checked_seconds_ago"] = round(max(0.0, time.time() - probe.checked_at), 3)
            out[name] = entry
        for name, breaker in self.breakers.items():
            if name not in out:  # request-driven only (e.g. the http embedder)
                state = breaker.state
                out[name] = {"status": "ok" if state == "closed" else "error", "circuit": state}
                if breaker.last_error and state != "closed":
                    out[name]["error"] = breaker.last_error
        return out
