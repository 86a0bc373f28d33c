"""PeriodicJob: run a function every N seconds on a daemon thread, under a lease
so that only one replica runs it at a time.

A draining job (`drain=True`: index catch-up, outbox relay) runs its next
batch at once while the last one did work, so a backlog is worked off at the
speed of the dependency it writes to, and waits `interval_seconds` only once
there is nothing left."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from memory_runtime.jobs.locks import JobLock

log = logging.getLogger("memory_runtime.jobs")


class PeriodicJob:
    RATE_WINDOW_SECONDS = 60.0

    def __init__(
        self,
        name: str,
        interval_seconds: float,
        fn: Callable[[], int],
        lock: JobLock,
        *,
        drain: bool = False,
    ) -> None:
        if interval_seconds < 0:
            raise ValueError(f"job interval must be >= 0, got {interval_seconds}")
        self.name = name
        self.interval_seconds = interval_seconds
        self._fn = fn
        self._lock = lock
        self.drain = drain
        self._done: deque[tuple[float, int]] = deque()  # (monotonic time, items) per run
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Observable counters (stats, tests, logs).
        self.runs = 0  # fn completed
        self.failures = 0  # fn (or the lock store) raised
        self.skipped = 0  # another holder had the lock
        self.last_result: int | None = None
        self.last_error: str | None = None
        self.last_run_at: float | None = None  # time.time() of the last completed run

    def run_once(self) -> int | None:
        """Run fn if the lock is free: fn's result, or None (lock busy or fn failed)."""
        try:
            token = self._lock.acquire()
        except Exception as exc:  # lock store down: the job waits for the next tick
            self._failed(f"lock unavailable: {exc}")
            return None
        if token is None:
            self.skipped += 1
            return None
        done = threading.Event()
        keeper = threading.Thread(
            target=self._keep_lock, args=(token, done), name=f"job-{self.name}-lock", daemon=True
        )
        keeper.start()
        try:
            result = self._fn()
        except Exception as exc:
            log.exception("job %s failed", self.name)
            self._failed(repr(exc))
            return None
        finally:
            done.set()
            keeper.join()
            try:
                self._lock.release(token)
            except Exception as exc:  # it will expire on its own
                log.warning("job %s: lock release failed: %s", self.name, exc)
        self.runs += 1
        self._count(result)
        self.last_result = result
        self.last_error = None
        self.last_run_at = time.time()
        if result:
            log.info("job %s: %s", self.name, result)
        return result

    def _count(self, items: int) -> None:
        now = time.monotonic()
        self._done.append((now, int(items or 0)))
        while self._done and self._done[0][0] < now - self.RATE_WINDOW_SECONDS:
            self._done.popleft()

    def rate_per_second(self) -> float:
        """Items per second over the last minute of runs (0 when idle)."""
        window = list(self._done)
        total = sum(n for _, n in window)
        if not total:
            return 0.0
        span = max(1.0, time.monotonic() - window[0][0])
        return round(total / span, 1)

    def describe(self) -> dict[str, object]:
        return {
            "runs": self.runs,
            "failures": self.failures,
            "skipped": self.skipped,
            "last_result": self.last_result,
            "last_error": self.last_error,
            "rate_per_second": self.rate_per_second(),
        }

    def _failed(self, message: str) -> None:
        self.failures += 1
        self.last_error = message
        log.warning("job %s: %s (failures: %d)", self.name, message, self.failures)

    def _keep_lock(self, token: str, done: threading.Event) -> None:
        # A run longer than the lock's TTL must keep the lock, or a second replica
        # would start the same job concurrently: extend every third of the TTL.
        period = max(0.05, self._lock.ttl_seconds / 3)
        while not done.wait(period):
            try:
                if not self._lock.extend(token):
                    log.error("job %s lost its lock while running", self.name)
                    return
            except Exception as exc:
                log.warning("job %s: lock extend failed: %s", self.name, exc)

    def _loop(self) -> None:
        while not self._stop.is_set():
            result = self.run_once()
            if self.drain and result:
                continue  # a backlog: the next batch at once
            self._stop.wait(self.interval_seconds)

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"job-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current run (if any) finishes."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
