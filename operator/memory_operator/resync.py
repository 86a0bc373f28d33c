"""The periodic resync: one loop for all CRs instead of a Kopf timer per CR.

Every `interval` seconds (and at start, in place of Kopf's resume handlers) the
loop lists the MemoryNamespaces page by page and runs each one's pass on a pool
of `workers` threads; it keeps no body once a pass is done. A Kopf timer per CR
kept each CR's latest body and a task for as long as the CR existed (its
memory per CR: bench/README.md, operator at 1,000 tenants).

A pass that failed temporarily is retried with the same backoff as Kopf's
retries (handlers.backoff), on a fresh GET of the CR, not at the next walk.
The loop runs only while `is_active()`: with peering, while Kopf would let this
replica work (peering.py's rule, read from the peering object by `PeeringGate`);
a walk stops when that turns false, and a replica that becomes active walks at
once (a standby taking over catches up on what it did not see).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, cast

from memory_operator.kube_types import MemoryNamespace
from memory_operator.manifests import KIND
from memory_operator.peering import active, others
from memory_operator.ports import KubePort
from memory_operator.reconcile import Result

log = logging.getLogger("memory_operator.resync")

# One pass: the CR as listed and its retry count -> its Result (None: skipped).
Pass = Callable[[MemoryNamespace, int], "Result | None"]
TICK = 1.0  # seconds between the loop's checks (due retries, the peering state)
LIST_RETRY = 5.0  # seconds before a walk whose listing failed is tried again
FIRST_WALK_WAIT = 30.0  # at most this long for `first_after` before the first walk


@dataclass
class _Failed:
    namespace: str
    name: str
    retry: int  # how many passes failed in a row before the next one
    due: float


class Retries:
    """CRs whose last pass failed temporarily, and when each is due again. No I/O."""

    def __init__(self, backoff: Callable[[int], float]) -> None:
        self._backoff = backoff
        self._guard = threading.Lock()
        self._failed: dict[str, _Failed] = {}  # uid -> its next retry

    def retry_of(self, uid: str) -> int:
        with self._guard:
            failed = self._failed.get(uid)
            return failed.retry if failed else 0

    def record(self, cr: MemoryNamespace, retry: int, result: Result | None, now: float) -> None:
        meta = cr["metadata"]
        with self._guard:
            if result is not None and result.error == "temporary":
                self._failed[meta["uid"]] = _Failed(
                    meta["namespace"], meta["name"], retry + 1, now + self._backoff(retry)
                )
            else:  # done, skipped, or permanent (retried at the next walk, as Kopf's timer)
                self._failed.pop(meta["uid"], None)

    def take_due(self, now: float) -> list[tuple[str, _Failed]]:
        """The retries due now; each is not due again until `record` or `later`."""
        with self._guard:
            due = [(uid, f) for uid, f in self._failed.items() if f.due <= now]
            for _, failed in due:
                failed.due = float("inf")  # its pass is on its way
            return due

    def later(self, uid: str, due: float) -> None:
        with self._guard:
            if uid in self._failed:
                self._failed[uid].due = due

    def forget(self, uid: str) -> None:
        with self._guard:
            self._failed.pop(uid, None)

    def __len__(self) -> int:
        with self._guard:
            return len(self._failed)


class PeeringGate:
    """Whether this replica may work now: Kopf's rule over the peering object(s),
    read at most once per `recheck` seconds. Unreadable means paused: a pass
    that two replicas might run at once is worse than one that waits."""

    def __init__(
        self,
        kube: KubePort,
        name: str,
        namespaces: tuple[str, ...],
        identity: str,
        priority: int,
        recheck: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Cluster-wide: one ClusterKopfPeering; else a KopfPeering per namespace,
        # and Kopf pauses when any of them says so.
        self._objects: list[tuple[Literal["ClusterKopfPeering", "KopfPeering"], str]] = (
            [("KopfPeering", ns) for ns in namespaces]
            if namespaces
            else [("ClusterKopfPeering", "")]
        )
        self._kube, self._name = kube, name
        self._identity, self._priority = identity, priority
        self._recheck, self._clock = recheck, clock
        self._checked = float("-inf")
        self._active = False

    def __call__(self) -> bool:
        if self._clock() - self._checked >= self._recheck:
            self._active = self._read()
            self._checked = self._clock()
        return self._active

    def _read(self) -> bool:
        now = datetime.now(UTC)
        try:
            for kind, ns in self._objects:
                obj = self._kube.get(kind, ns, self._name) or {}
                peers = others(obj.get("status"), self._identity, now)
                if not active(peers, self._priority, now):
                    return False
        except Exception as err:
            log.warning("reading the peering object failed, pausing the resync: %s", err)
            return False
        return True


class Resync:
    """The loop (a thread) and its pool; `start()` and `stop()` from Kopf's
    startup and cleanup handlers."""

    def __init__(
        self,
        kube: KubePort,
        run_pass: Pass,
        *,
        interval: float,
        namespaces: tuple[str, ...],
        workers: int,
        backoff: Callable[[int], float],
        is_active: Callable[[], bool] = lambda: True,
        first_after: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._first_after = first_after
        self._kube = kube
        self._run_pass = run_pass
        self._interval = interval
        self._namespaces = namespaces or ("",)  # "": every namespace
        self._workers = workers
        self._is_active = is_active
        self._clock = clock
        self.retries = Retries(backoff)
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="resync")
        self._thread = threading.Thread(target=self._loop, name="resync", daemon=True)
        self.walks = 0  # completed walks (tests)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _loop(self) -> None:
        # The first walk replaces Kopf's resume handlers. It waits (a little) for
        # `first_after`: Kopf's own initial listing of the CRs done, so that the
        # listed bodies Kopf queues and the walk's reads are not in memory at once.
        deadline = self._clock() + FIRST_WALK_WAIT
        while self._first_after is not None and not self._first_after.is_set():
            if self._stop.wait(0.2) or self._clock() >= deadline:
                break
        next_walk = self._clock()
        was_active = False
        while not self._stop.is_set():
            is_active = self._is_active()
            if is_active and (not was_active or self._clock() >= next_walk):
                # A replica that just became active walks at once.
                try:
                    completed = self._walk()
                    next_walk = self._clock() + self._interval
                    is_active = completed
                except Exception as err:
                    log.warning("resync: listing MemoryNamespaces failed: %s", err)
                    next_walk = self._clock() + LIST_RETRY
            if is_active:
                self._retry_due()
            was_active = is_active
            self._stop.wait(TICK)

    def _walk(self) -> bool:
        """One pass per CR; False when it stopped because the replica was paused
        (or the operator stops). At most 2 x workers listed CRs wait for a thread."""
        slots = threading.Semaphore(self._workers * 2)
        pending: set[Future[None]] = set()
        guard = threading.Lock()
        completed = True
        try:
            for ns in self._namespaces:
                # list_objects, not list_memory_namespaces: the latter stands for a
                # claims listing, which the index makes unneeded (test_fleet counts it).
                for cr in cast(Iterable[MemoryNamespace], self._kube.list_objects(KIND, ns, "")):
                    if self._stop.is_set() or not self._is_active():
                        completed = False
                        break
                    slots.acquire()
                    future = self._pool.submit(self._one, cr)

                    def done(f: Future[None]) -> None:
                        slots.release()
                        with guard:
                            pending.discard(f)

                    with guard:
                        pending.add(future)
                    future.add_done_callback(done)
                    del cr
                if not completed:
                    break
        finally:
            with guard:
                waiting = list(pending)
            for future in waiting:
                future.result()
        if completed:
            self.walks += 1
        return completed

    def _one(self, cr: MemoryNamespace) -> None:
        uid = cr["metadata"]["uid"]
        retry = self.retries.retry_of(uid)
        try:
            result = self._run_pass(cr, retry)
        except Exception as err:  # unexpected: retried like a temporary error
            log.exception("resync pass of %s failed", cr["metadata"].get("name"))
            result = Result(status={}, error="temporary", reason="Error", message=str(err))
        self.retries.record(cr, retry, result, self._clock())

    def _retry_due(self) -> None:
        for uid, failed in self.retries.take_due(self._clock()):
            if self._stop.is_set() or not self._is_active():
                self.retries.later(uid, self._clock())
                continue
            try:
                cr = self._kube.get(KIND, failed.namespace, failed.name)
            except Exception as err:
                log.warning("resync retry: reading %s failed: %s", failed.name, err)
                self.retries.later(uid, self._clock() + LIST_RETRY)
                continue
            if cr is None or cr["metadata"].get("uid") != uid:
                self.retries.forget(uid)  # gone (or replaced: its own passes cover it)
                continue
            self._pool.submit(self._one, cr)
