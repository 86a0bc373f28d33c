"""Kopf wiring only: events in, Reconciler out, Result -> Kopf errors.

Create and update (spec changes) run `Reconciler.reconcile` from Kopf's
handlers; the periodic resync, and the pass over every CR at start, run the
same pass from one loop (resync.py), not from a Kopf timer and resume handler
per CR. Deletion runs `Reconciler.finalize` behind our own finalizer. Handlers
are registered into an explicit registry so tests and `python -m memory_operator`
build the operator the same way.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import kopf

from memory_operator import metrics
from memory_operator.adapters.kube import KubeApi, Login
from memory_operator.claims import Claims
from memory_operator.config import OperatorConfig
from memory_operator.fleet import Fleet
from memory_operator.kube_types import MemoryNamespace, ObjectMeta, OwnedEvent, OwnerReference
from memory_operator.manifests import GROUP, KIND, MANAGED_BY
from memory_operator.owned_watch import OwnedWatch
from memory_operator.ports import KubeError
from memory_operator.reconcile import Reconciler, Result
from memory_operator.resync import PeeringGate, Resync

VERSION = "v1alpha1"
PLURAL = "memorynamespaces"
FINALIZER = f"{GROUP}/finalizer"
MAX_BACKOFF = 300.0
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
# CRs Kopf works on at once per thread of the pool: enough to keep every thread
# busy while some CRs sleep out a retry's backoff, few enough that a burst does
# not hold every CR's task in memory.
WORKER_QUEUE = 4

log = logging.getLogger("memory_operator.handlers")


class Listings:
    """Which watch events of the tenants' Deployments are news. Kopf's listing
    events (type None) come at start, where the resync loop's first walk
    reconciles every CR anyway, and again after the watch is re-established: then a Deployment
    whose resourceVersion moved since this process last saw it changed in the
    gap and is news; one seen at that version, or never seen, is not."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._versions: dict[str, str] = {}  # Deployment uid -> resourceVersion

    def is_news(self, event: OwnedEvent) -> bool:
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {}
        uid, version = meta.get("uid", ""), meta.get("resourceVersion", "")
        with self._guard:
            if event.get("type") == "DELETED":
                self._versions.pop(uid, None)
                return True
            seen = self._versions.get(uid)
            self._versions[uid] = version
        if event.get("type") is None:
            return seen is not None and seen != version
        return True


class _Locks:
    """One lock per object: change handlers, the resync loop and deletion never
    run a pass for the same CR at the same time (they run in thread pools)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def get(self, uid: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(uid, threading.Lock())

    def drop(self, uid: str) -> None:
        with self._guard:
            self._locks.pop(uid, None)


def backoff(retry: int) -> float:
    """5 s, 10 s, 20 s ... capped at 5 minutes."""
    return min(5.0 * 2.0 ** min(retry, 10), MAX_BACKOFF)


def raise_for(result: Result, retry: int) -> None:
    """Translate a Result into Kopf's error semantics. Waiting for the Deployment
    is not an error: the Deployment watch (on_deployment) reconciles the owner
    when the Deployment changes; retrying here instead would rewrite Kopf's
    progress annotations on the CR every few seconds while a rollout is stuck."""
    if result.error == "permanent":
        raise kopf.PermanentError(f"{result.reason}: {result.message}")
    if result.error == "temporary":
        raise kopf.TemporaryError(f"{result.reason}: {result.message}", delay=backoff(retry))


def setup(
    registry: kopf.OperatorRegistry,
    reconciler: Reconciler,
    config: OperatorConfig,
    login: Login | None = None,
    peer: tuple[str, int] | None = None,
) -> None:
    """Register every handler of the operator into `registry`. `peer`: this
    process's Kopf peering identity and priority (None: standalone)."""
    locks = _Locks()
    listings = Listings()
    fleet = Fleet()
    running: list[Resync | OwnedWatch] = []  # the resync loop and the Deployment watch
    owners = _Coalesced(config.workers)  # Deployment changes -> one pass per owner at a time
    kopf_listed = _Countdown()  # Kopf's initial listing of the CRs, processed

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: object) -> None:
        # Our own finalizer name; Kopf's bookkeeping in annotations, not in status.
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration"
        )
        # The reconciler posts specific Events itself; Kopf's per-handler
        # "succeeded" Events would be a write on every timer tick.
        settings.posting.enabled = False
        settings.execution.max_workers = config.workers
        # Kopf works on at most this many CRs at once (per watched namespace); the
        # others wait as queued watch events, not as tasks holding a body, a diff
        # and handler arguments each (memory during a burst: bench/README.md).
        # Possible because the operator keeps its own index (fleet.py), not Kopf's.
        # A CR waiting out a retry's backoff keeps its slot, so the limit is
        # several times the thread pool; an idle CR gives its slot back after
        # 0.1 s, not Kopf's default 5 s: a slot held while idle made slots, not
        # threads, the limit of a resync (measured: bench/README.md).
        settings.queueing.worker_limit = config.workers * WORKER_QUEUE
        settings.queueing.idle_timeout = 0.1
        settings.watching.server_timeout = 300
        # Kopf's initial listing of the CRs in pages, not one response of them all.
        settings.watching.chunk_size = 100
        settings.peering.lifetime = config.peering_lifetime
        settings.peering.stealth = True  # no log line per keep-alive
        # The index is complete before Kopf's watch starts: no pass sees a partial one.
        # Listed page by page: each CR is reduced to its claim and readiness at once.
        try:
            fleet.fill(
                cr
                for namespace in config.watch_namespaces or (None,)
                for cr in reconciler.kube.list_memory_namespaces(namespace)
            )
        except KubeError as err:
            raise kopf.TemporaryError(f"listing MemoryNamespaces: {err}", delay=5) from err
        metrics.TENANTS.watch(fleet.readiness)
        kopf_listed.start(sum(fleet.readiness().values()))
        gate = (
            PeeringGate(reconciler.kube, config.peering_name, config.watch_namespaces, *peer)
            if peer is not None and config.peering_name
            else (lambda: True)
        )
        resync = Resync(
            reconciler.kube,
            resync_pass,
            interval=config.resync_seconds,
            namespaces=config.watch_namespaces,
            workers=config.workers,
            backoff=backoff,
            is_active=gate,
            first_after=kopf_listed.done,
        )
        # Like controller-runtime's Owns(): a change to a tenant's Deployment
        # (rollout progress, deletion, edits) reconciles its MemoryNamespace. Our
        # own watch, not Kopf's: it keeps no Deployment bodies (owned_watch.py).
        deployments = OwnedWatch(
            KubeApi(login) if login is not None else reconciler.kube,  # type: ignore[arg-type]
            "Deployment",
            f"{MANAGED_BY_LABEL}={MANAGED_BY}",
            config.watch_namespaces,
            on_deployment,
            is_active=gate,
        )
        running.extend((resync, deployments))
        resync.start()
        deployments.start()

    @kopf.on.cleanup(registry=registry)
    def unwatch(**_: object) -> None:
        metrics.TENANTS.watch(None)
        while running:
            running.pop().stop()
        owners.stop()

    if login is not None:
        kopf.on.login(registry=registry)(login)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    def index(event: kopf.RawEvent, body: kopf.Body, **_: object) -> None:
        # Every watch event of a CR (status patches included) before its other
        # handlers: the claims and readiness this replica knows.
        if event.get("type") == "DELETED":
            fleet.remove(body.metadata["uid"])
        else:
            fleet.put(cast(MemoryNamespace, body))  # read only: no copy per event
        if event.get("type") is None:
            kopf_listed.tick()

    def run(cr: MemoryNamespace, claims: Claims, listed: bool = False) -> Result | None:
        if cr["metadata"].get("deletionTimestamp"):
            return None  # deletion owns the object now
        uid = cr["metadata"]["uid"]
        with locks.get(uid):
            if listed and not fleet.live(uid):
                # Listed by the resync before its deletion began (or after it ended).
                return None
            result = reconciler.reconcile(cr, claims)
        log.info(
            "reconciled %s/%s: ready=%s reason=%s writes=%s",
            cr["metadata"]["namespace"],
            cr["metadata"]["name"],
            result.ready,
            result.reason,
            ",".join(result.writes) or "none",
        )
        return result

    def resync_pass(cr: MemoryNamespace, retry: int) -> Result | None:
        # Level-based: drift (a dropped schema, topic, Deployment) is repaired here.
        return run(cr, fleet, listed=True)

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
    def on_change(body: kopf.Body, retry: int, **_: object) -> None:
        result = run(_plain(body), fleet)
        if result is not None:
            raise_for(result, retry)

    def on_deployment(event: OwnedEvent) -> None:
        # A digested watch event (owned_watch.digest) of a tenant's Deployment.
        if not listings.is_news(event):
            # At start the resync loop's first walk reconciles every CR: a pass per
            # listed Deployment was a second pass per tenant.
            return
        meta = event["object"]["metadata"]
        for owner in meta["ownerReferences"]:
            owners.submit(owner["uid"], functools.partial(owner_changed, meta, owner))

    def owner_changed(meta: ObjectMeta, owner: OwnerReference) -> None:
        ns = meta["namespace"]
        try:
            cr = reconciler.kube.get(KIND, ns, owner["name"])
            if cr is None or cr["metadata"].get("uid") != owner.get("uid"):
                return
            if cr["metadata"].get("deletionTimestamp"):
                return
            with locks.get(owner["uid"]):
                # Only the Kubernetes step when the backends are Ready for this
                # generation: a rollout changes the Deployment's status many times.
                result = reconciler.reconcile(cr, fleet, backends=False)
        except Exception as err:  # not retried: log, the resync covers
            log.warning(
                "reconcile after Deployment %s/%s changed failed: %s", ns, meta["name"], err
            )
            return
        if result.writes:
            log.info(
                "reconciled %s/%s after its Deployment changed: writes=%s",
                ns,
                owner["name"],
                ",".join(result.writes),
            )

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    def on_delete(body: kopf.Body, retry: int, **_: object) -> None:
        cr = _plain(body)
        uid = cr["metadata"]["uid"]
        with locks.get(uid):
            result = reconciler.finalize(cr, fleet)
        where = f"{cr['metadata']['namespace']}/{cr['metadata']['name']}"
        if result.error:  # the finalizer stays; Kopf retries
            log.warning("deletion of %s blocked: %s: %s", where, result.reason, result.message)
        else:
            log.info("finalized %s: %s", where, result.message)
        raise_for(result, retry)
        locks.drop(uid)


class _Countdown:
    """Set `done` once `start`'s count of ticks has come (at once for 0)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._left = 0
        self.done = threading.Event()

    def start(self, count: int) -> None:
        with self._guard:
            self._left = count
        if count <= 0:
            self.done.set()

    def tick(self) -> None:
        with self._guard:
            self._left -= 1
            if self._left <= 0:
                self.done.set()


class _Coalesced:
    """Runs work per key on a pool, at most one queued run per key: a run reads
    the current state when it starts, so events arriving before it need no run
    of their own (a rollout's many status updates make a few passes)."""

    def __init__(self, workers: int) -> None:
        self._guard = threading.Lock()
        self._queued: set[str] = set()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="owned")

    def submit(self, key: str, work: Callable[[], None]) -> None:
        with self._guard:
            if key in self._queued:
                return
            self._queued.add(key)
        self._pool.submit(self._run, key, work)

    def _run(self, key: str, work: Callable[[], None]) -> None:
        with self._guard:
            self._queued.discard(key)
        work()

    def stop(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _plain(body: kopf.Body) -> MemoryNamespace:
    """Kopf's Body is a live view; the reconciler works on a plain snapshot."""
    plain = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": dict(body["metadata"]),
        "spec": _deep(body.get("spec") or {}),
        "status": _deep(body.get("status") or {}),
    }
    return cast(MemoryNamespace, plain)  # the API server validated it against the CRD


def _deep(value: Any) -> Any:  # any JSON value, in Kopf's views of it
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _deep(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_deep(v) for v in value]
    return value
