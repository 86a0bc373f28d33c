"""The reconciler: one idempotent pass from a MemoryNamespace to everything its
tenant needs. No Kopf imports; handlers.py translates the Result.

Order (each step its own condition): credentials Secret -> PostgreSQL schema +
role (SchemaReady) -> vectors (CollectionReady) -> Kafka topics (TopicsReady)
-> Redis ACL user (CacheReady) -> token Secret, ConfigMap, Deployment, Service
(ApiReady, True once the Deployment is available) -> Ready.

Zero-write rule: every backend call is an idempotent `ensure_*` that returns
UNCHANGED when nothing was needed; every Kubernetes object is compared with
the live one before it is applied; status is patched only when it changed.

Shared reads (snapshot.py): a pass over a tenant that is Ready for its
generation first runs on bulk reads shared by the passes of a resync (the
tenant's Kubernetes objects from one labelled list per kind and namespace, each
backend's state read once for all tenants). It only ever concludes "nothing to
do"; anything else raises NeedsExact and the pass runs on exact reads.

Split by concern: steps.py (a pass's context, Pass, and what a step reports,
StepOutcome), backend_steps.py and kube_steps.py (the steps), shared_kube.py
(the KubePort of a pass on shared reads). What stays here, and why it is longer
than ~400 lines: the order of the steps and where a pass stops, the deletion,
and the one wrapper every Kubernetes and backend call goes through (per-backend
limits, shared reads, Kubernetes latency, typed errors -> StepError with a
conditions.Reason), each in one place.
"""

from __future__ import annotations

import copy
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from memory_operator import backend_steps, kube_steps
from memory_operator import conditions as c
from memory_operator import manifests as m
from memory_operator.claims import Claim, Claims, claims_from
from memory_operator.claims import owner as claim_owner
from memory_operator.conditions import EventReason, EventType, Reason
from memory_operator.config import OperatorConfig
from memory_operator.domain import Outcome
from memory_operator.kube_types import MemoryNamespace, MemoryNamespaceStatus
from memory_operator.metrics import (
    ERROR,
    REQUEUE,
    SUCCESS,
    reconcile_timer,
    record_result,
    timed_backend,
)
from memory_operator.naming import Names, derive_names
from memory_operator.policy import check_policy
from memory_operator.ports import (
    BackendError,
    BackendNotOwner,
    BackendRejected,
    BackendUnavailable,
    CacheAdmin,
    DatabaseAdmin,
    EventsAdmin,
    KubeError,
    KubePort,
    KubeRejected,
    KubeUnavailable,
    VectorAdmin,
)
from memory_operator.shared_kube import SharedKube, list_managed
from memory_operator.snapshot import WINDOW_SECONDS, NeedsExact, SharedByKey
from memory_operator.spec import InvalidSpecError, MemoryNamespaceSpec, parse_spec
from memory_operator.steps import ErrorKind, Pass, State, StepError, StepOutcome, run_step

log = logging.getLogger("memory_operator.reconcile")

T = TypeVar("T")


@dataclass
class Backends:
    database: DatabaseAdmin
    vectors: VectorAdmin | None = None  # None: no Qdrant configured
    events: EventsAdmin | None = None  # None: no Kafka configured
    cache: CacheAdmin | None = None  # None: no Redis configured


@dataclass
class Result:
    status: MemoryNamespaceStatus
    ready: bool = False
    error: ErrorKind | None = None
    reason: str = ""
    message: str = ""
    # Waiting for the Deployment: no error, no retry; its watch triggers the next pass.
    waiting: bool = False
    writes: list[str] = field(default_factory=list)  # what this pass changed, for logs/tests


class Reconciler:
    def __init__(
        self,
        config: OperatorConfig,
        kube: KubePort,
        backends: Backends,
        clock: Callable[[], str] = c.now_rfc3339,
        read_window: float = WINDOW_SECONDS,
    ) -> None:
        """read_window: seconds a shared bulk read serves passes (0: exact reads only)."""
        self.config = config
        self.kube = kube
        self.backends = backends
        self.clock = clock
        # None: this pass reads exactly; else the pass runs on shared reads loaded
        # no earlier than this (monotonic) time: see _shared_pass.
        self._not_before: float | None = None
        self._shared_objects: SharedByKey[dict[str, str]] | None = (
            SharedByKey(lambda key: list_managed(self.kube, key), read_window)
            if read_window > 0
            else None
        )
        self._passed_guard = threading.Lock()
        self._passed: dict[str, float] = {}  # CR uid -> when its last pass ended
        # A burst of CRs must not open a connection per worker on every backend at
        # once: each backend gets at most `backend_concurrency` calls in flight.
        self._limits = {
            backend: threading.BoundedSemaphore(config.backend_concurrency)
            for backend in ("postgres", "qdrant", "kafka", "redis")
        }

    # -- entry points ----------------------------------------------------

    def reconcile(
        self, cr: MemoryNamespace, claims: Claims | None = None, *, backends: bool = True
    ) -> Result:
        """One pass. `claims`: the operator's index of tenant claims (handlers.py);
        None lists every CR instead (for callers without a watch: tests, tools).
        backends=False (a change of the tenant's Deployment): the backend steps are
        skipped when all of them are True for the CR's current generation, so a
        rollout's status updates cost the Kubernetes step only; create, update,
        and the resync loop still check every backend."""

        def run(cr_: MemoryNamespace, claims_: Claims | None) -> Result:
            uid = str(cr_["metadata"].get("uid", ""))
            try:
                shared = self._shared_pass(cr_, claims_, backends=backends)
                return shared or self._reconcile(cr_, claims_, backends=backends)
            finally:
                with self._passed_guard:
                    self._passed[uid] = time.monotonic()

        return self._measured(run, cr, claims)

    def finalize(self, cr: MemoryNamespace, claims: Claims | None = None) -> Result:
        """Run on deletion (behind the finalizer). Result.error set: keep the finalizer."""
        with self._passed_guard:
            self._passed.pop(str(cr["metadata"].get("uid", "")), None)
        return self._measured(self._finalize, cr, claims)

    # -- shared reads ------------------------------------------------------

    def _shared_pass(
        self, cr: MemoryNamespace, claims: Claims | None, *, backends: bool
    ) -> Result | None:
        """The pass on shared bulk reads, when the tenant is Ready for its current
        generation; None when those reads can't vouch for "nothing to do" (the
        caller then runs the exact pass). Never writes to Kubernetes or a backend
        that has a shared read; a backend without one (Qdrant) is read exactly.
        Not for a pass started by a change of the Deployment (backends=False): it
        must see that change, which a shared read may predate."""
        if self._shared_objects is None or not backends:
            return None
        gen = int(cr["metadata"].get("generation") or 1)
        status = cr.get("status") or {}
        if status.get("observedGeneration") != gen or not c.all_true(
            status.get("conditions") or [], (*c.STEP_TYPES, c.READY), gen
        ):
            return None  # a first pass, a spec change, a tenant not Ready: exact reads
        with self._passed_guard:
            not_before = self._passed.get(str(cr["metadata"].get("uid", "")), float("-inf"))
        view = copy.copy(self)
        view._not_before = not_before
        view.kube = SharedKube(self.kube, self._shared_objects, not_before)
        try:
            result = view._reconcile(cr, claims, backends=backends)
        except NeedsExact as why:
            log.debug("exact pass for %s: %s", cr["metadata"].get("name"), why)
            return None
        return result if result.ready and not result.error else None

    def ensure(
        self,
        backend: str,
        exact: Callable[[T], Outcome],
        unchanged: Callable[[T, float], bool] | None,
        target: T,
    ) -> Outcome:
        """`exact(target)` (an observe, then writes only on drift); in a pass on shared
        reads, the backend's shared read instead, which may only say UNCHANGED."""
        not_before = self._not_before
        if not_before is None or unchanged is None:
            return self.backend_call(backend, lambda: exact(target))
        try:
            same = unchanged(target, not_before)  # the adapter times its bulk reads
        except BackendError as err:
            raise NeedsExact(f"{backend}: {err.message}") from err
        if not same:
            raise NeedsExact(f"{backend}: the shared read differs from the target")
        return Outcome.UNCHANGED

    def _measured(
        self,
        run: Callable[[MemoryNamespace, Claims | None], Result],
        cr: MemoryNamespace,
        claims: Claims | None,
    ) -> Result:
        """Time one pass and count its result; a Kubernetes failure outside a step
        (listing claims, status patch) becomes an error Result."""
        with reconcile_timer():
            try:
                result = run(cr, claims)
            except StepError as err:
                result = Result(
                    _status_of(cr),
                    error=err.kind,
                    reason=err.reason,
                    message=err.message,
                )
            except Exception:
                record_result(ERROR)
                raise
        record_result(ERROR if result.error else REQUEUE if result.waiting else SUCCESS)
        return result

    # -- reconcile -------------------------------------------------------

    def _reconcile(self, cr: MemoryNamespace, claims: Claims | None, *, backends: bool) -> Result:
        meta = cr["metadata"]
        gen = int(meta.get("generation") or 1)
        old = _status_of(cr)
        conds = list(old.get("conditions") or [])
        now = self.clock()
        writes: list[str] = []

        try:
            spec = parse_spec(cr.get("spec"), meta["name"])
            names = derive_names(
                self.config.name_prefix, spec.tenant, meta["name"], meta["namespace"]
            )
            check_policy(spec, self.config)
        except InvalidSpecError as err:
            conds = c.set_condition(conds, c.READY, c.FALSE, err.reason, err.message, gen, now)
            status: MemoryNamespaceStatus = {
                **old,
                "conditions": conds,
                "observedGeneration": gen,
            }
            return self._answer(
                cr,
                old,
                Result(
                    status, error="permanent", reason=err.reason, message=err.message, writes=writes
                ),
            )

        owner = self._tenant_owner(cr, spec.tenant, claims)
        if owner is not None:
            # Touch nothing: not even our derived names go to status, they aren't ours.
            msg = (
                f"tenant {spec.tenant!r} is already claimed by {owner.by.namespace}/{owner.by.name}"
                f" (created {owner.created}); the oldest claim wins"
            )
            conds = c.set_condition(conds, c.READY, c.FALSE, Reason.TENANT_CONFLICT, msg, gen, now)
            status = {**old, "conditions": conds, "observedGeneration": gen}
            return self._answer(
                cr, old, Result(status, reason=Reason.TENANT_CONFLICT, message=msg, writes=writes)
            )

        p = Pass(cr, spec, names, gen, now, writes)
        base: MemoryNamespaceStatus = {
            **old,
            **self._names_status(spec, names),
            "observedGeneration": gen,
        }

        if spec.paused:
            conds = c.set_condition(
                conds,
                c.PAUSED,
                c.TRUE,
                Reason.PAUSED_BY_SPEC,
                "spec.paused is true: external systems are not touched",
                gen,
                now,
            )
            paused = Result(
                {**base, "conditions": conds},
                ready=c.is_true(conds, c.READY),
                reason="Paused",
                message="paused",
                writes=writes,
            )
            return self._answer(cr, old, paused)
        conds = c.remove_condition(conds, c.PAUSED)

        try:
            kube_steps.credentials(self, p)
        except StepError as err:
            # No condition of its own: without credentials no later step can run.
            conds = c.set_condition(
                conds,
                c.READY,
                c.FALSE,
                Reason.CREDENTIALS_UNAVAILABLE,
                f"credentials Secret: {err.message}",
                gen,
                now,
            )
            no_credentials = Result(
                {**base, "conditions": conds},
                error=err.kind,
                reason=Reason.CREDENTIALS_UNAVAILABLE,
                message=err.message,
                writes=writes,
            )
            return self._answer(cr, old, no_credentials)

        steps: list[tuple[str, Callable[[Reconciler, Pass], StepOutcome]]] = []
        if backends or not c.all_true(conds, c.BACKEND_STEP_TYPES, gen):
            steps += [
                (c.SCHEMA_READY, backend_steps.schema),
                (c.COLLECTION_READY, backend_steps.collection),
                (c.TOPICS_READY, backend_steps.topics),
                (c.CACHE_READY, backend_steps.cache),
            ]
        steps.append((c.API_READY, kube_steps.runtime_objects))
        pending: StepOutcome | None = None  # the first step not done: what the pass reports
        for type_, step in steps:
            outcome = run_step(functools.partial(step, self, p))
            conds = c.set_condition(
                conds, type_, outcome.condition_status, outcome.reason, outcome.message, gen, now
            )
            if pending is None and outcome.state is not State.DONE:
                pending = outcome
            if outcome.state is State.FAILED:
                break  # later steps need this one

        conds = c.summarize(conds, gen, now)
        status = {**base, "conditions": conds}
        if pending is not None:
            result = Result(
                status,
                error=pending.error,
                reason=pending.reason,
                message=pending.message,
                waiting=pending.state is State.WAITING,
                writes=writes,
            )
        else:
            result = Result(
                status,
                ready=c.is_true(conds, c.READY),
                reason=Reason.READY,
                message="ready",
                writes=writes,
            )
        return self._answer(cr, old, result)

    # -- deletion ----------------------------------------------------------

    def _finalize(self, cr: MemoryNamespace, claims: Claims | None) -> Result:
        meta = cr["metadata"]
        status = _status_of(cr)
        try:
            spec = parse_spec(cr.get("spec"), meta["name"])
            names = derive_names(
                self.config.name_prefix, spec.tenant, meta["name"], meta["namespace"]
            )
        except InvalidSpecError:
            return Result(status, message="invalid spec: nothing was created, nothing to delete")
        if self._tenant_owner(cr, spec.tenant, claims) is not None:
            # The data belongs to the winning claim; never delete it from here.
            return Result(status, message="tenant conflict: nothing to delete")
        kept = (
            f"schema {names.schema}, role {names.role}"
            + (f", collection {names.collection}" if spec.vectors.backend == "qdrant" else "")
            + f", topics {', '.join(names.topics)}, Redis user {names.cache_user}"
        )
        if spec.paused or spec.deletion_policy == "Retain":
            why = "spec.paused is true" if spec.paused else "deletionPolicy is Retain"
            self.event(cr, EventType.NORMAL, EventReason.DATA_RETAINED, f"{why}: kept {kept}")
            return Result(status, message=f"retained {kept}")
        gen = int(meta.get("generation") or 1)
        p = Pass(cr, spec, names, gen, self.clock(), [])
        try:
            backend_steps.delete_backends(self, p)
        except StepError as err:
            if err.reason is Reason.TENANT_OWNED_ELSEWHERE:
                # Not ours to delete; keeping the finalizer would block the CR forever.
                self.event(
                    cr,
                    EventType.WARNING,
                    EventReason.DATA_NOT_OWNED,
                    f"nothing deleted: {err.message}",
                )
                return Result(
                    status,
                    reason=Reason.TENANT_OWNED_ELSEWHERE,
                    message=err.message,
                    writes=p.writes,
                )
            self.event(cr, EventType.WARNING, err.reason, f"deletion blocked: {err.message}")
            # The object stays (finalizer) and must not keep saying "all
            # resources are ready": Ready turns False and names the blocker.
            conds = c.set_condition(
                list(status.get("conditions") or []),
                c.READY,
                c.FALSE,
                Reason.DELETION_BLOCKED,
                f"deletion blocked by {err.reason}: {err.message}; the finalizer stays"
                " and deletion is retried",
                gen,
                p.now,
            )
            self._write_status(cr, status, {**status, "conditions": conds}, p.writes)
            return Result(
                status, error="temporary", reason=err.reason, message=err.message, writes=p.writes
            )
        return Result(status, message=f"deleted {kept}", writes=p.writes)

    # -- helpers -------------------------------------------------------------

    def _tenant_owner(
        self, cr: MemoryNamespace, tenant: str, claims: Claims | None
    ) -> Claim | None:
        """The claim that owns `tenant` if it isn't `cr` (claims.owner has the rule)."""
        if claims is None:
            claims = claims_from(
                self.kube_call("list", lambda: list(self.kube.list_memory_namespaces()))
            )
        return claim_owner(claims, tenant, Claim.of(cr))

    def _names_status(self, spec: MemoryNamespaceSpec, names: Names) -> MemoryNamespaceStatus:
        token_secret, _ = m.token_ref(spec, names)
        events_on = spec.events.enabled and self.config.kafka is not None
        return {
            "tenant": names.tenant,
            "schema": names.schema,
            "role": names.role,
            "collection": names.collection if spec.vectors.backend == "qdrant" else "",
            "topics": list(names.topics) if events_on else [],
            "cacheUser": names.cache_user if self.config.redis is not None else "",
            "keyPrefix": names.key_prefix,
            "endpoint": names.endpoint,
            "tokenSecret": token_secret,
            "credentialsSecret": names.credentials_secret,
        }

    def _answer(self, cr: MemoryNamespace, old: MemoryNamespaceStatus, result: Result) -> Result:
        """A pass's answer, once its status is written (unless it did not change)."""
        self._write_status(cr, old, result.status, result.writes)
        return result

    def _write_status(
        self,
        cr: MemoryNamespace,
        old: MemoryNamespaceStatus,
        new: MemoryNamespaceStatus,
        writes: list[str],
    ) -> None:
        if new == old:
            return
        meta = cr["metadata"]
        self.kube_call(
            "patch_status", lambda: self.kube.patch_status(meta["namespace"], meta["name"], new)
        )
        writes.append("status")

    def record(self, p: Pass, outcome: Outcome, noun: str, what: str) -> None:
        if outcome.wrote:
            p.wrote(f"{noun}:{outcome.value}")
            reason = EventReason(f"{noun}{outcome.value}")  # e.g. SchemaCreated
            self.event(p.cr, EventType.NORMAL, reason, f"{what}: {outcome.value.lower()}")

    def event(
        self, cr: MemoryNamespace, type_: EventType, reason: EventReason | Reason, message: str
    ) -> None:
        # An Event is a record, not state: failing to post one must not fail the pass.
        try:
            timed_backend(
                "kubernetes", "event", lambda: self.kube.emit_event(cr, type_, reason, message)
            )
        except Exception as err:
            log.warning("could not post Event %s: %s", reason, err)

    def backend_call(self, backend: str, fn: Callable[[], Outcome]) -> Outcome:
        try:
            with self._limits[backend]:
                return fn()  # the adapter records the latency of each of its phases
        except BackendNotOwner as err:
            raise StepError("permanent", Reason.TENANT_OWNED_ELSEWHERE, err.message) from err
        except BackendUnavailable as err:
            raise StepError("temporary", Reason.unavailable(backend), err.message) from err
        except BackendRejected as err:
            raise StepError("permanent", Reason.rejected(backend), err.message) from err
        except BackendError as err:
            raise StepError("temporary", Reason.error(backend), err.message) from err

    def kube_call(self, operation: str, fn: Callable[[], T]) -> T:
        if self._not_before is not None:  # shared reads: in memory, nothing to time
            return fn()
        try:
            return timed_backend("kubernetes", operation, fn)
        except KubeUnavailable as err:
            raise StepError("temporary", Reason.KUBERNETES_UNAVAILABLE, err.message) from err
        except KubeRejected as err:
            raise StepError("permanent", Reason.KUBERNETES_ERROR, err.message) from err
        except KubeError as err:
            raise StepError("temporary", Reason.KUBERNETES_ERROR, err.message) from err


def _status_of(cr: MemoryNamespace) -> MemoryNamespaceStatus:
    """A copy of the CR's status, to build the next one from."""
    return (cr.get("status") or MemoryNamespaceStatus()).copy()
