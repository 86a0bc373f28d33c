"""PeriodicJob: run a function every N seconds on a daemon thread, under a lock
so that only one replica runs it at a time."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from memory_runtime.jobs.locks import JobLock

log = logging.getLogger("memory_runtime.jobs")


class PeriodicJob:
    def __init__(
        self, name: str, interval_seconds: float, fn: Callable[[], int], lock: JobLock
    ) -> None:
        if interval_seconds < 0:
            raise ValueError(f"job interval must be >= 0, got {interval_seconds}")
        self.name = name
        self.interval_seconds = interval_seconds
        self._fn = fn
        self._lock = lock
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
        self.last_result = result
        self.last_error = None
        self.last_run_at = time.time()
        if result:
            log.info("job %s: %s", self.name, result)
        return result

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
            self.run_once()
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
