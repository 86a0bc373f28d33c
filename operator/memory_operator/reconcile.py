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
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import json
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

from memory_operator import conditions as c
from memory_operator import manifests as m
from memory_operator.claims import NOT_OWNER, Claim, Claims, claims_from
from memory_operator.claims import owner as claim_owner
from memory_operator.config import OperatorConfig
from memory_operator.domain import (
    CacheUserTarget,
    CollectionTarget,
    DatabaseTarget,
    Outcome,
    TopicsTarget,
)
from memory_operator.metrics import (
    ERROR,
    REQUEUE,
    SUCCESS,
    reconcile_timer,
    record_result,
    timed_backend,
)
from memory_operator.naming import Names, derive_names
from memory_operator.ownership import Adoption, Owner
from memory_operator.policy import (
    TOKEN_SECRET_LABEL,
    check_policy,
    qdrant_isolation_gap,
    token_secret_opted_in,
)
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
from memory_operator.snapshot import WINDOW_SECONDS, NeedsExact, SharedByKey
from memory_operator.spec import InvalidSpecError, MemoryNamespaceSpec, parse_spec

log = logging.getLogger("memory_operator.reconcile")

ErrorKind = Literal["temporary", "permanent"]
T = TypeVar("T")
# What a shared read of a namespace's objects keeps (the operator's own, by label).
MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={m.MANAGED_BY}"
SHARED_KINDS = ("Secret", "ConfigMap", "NetworkPolicy", "Deployment", "Service")


@dataclass
class Backends:
    database: DatabaseAdmin
    vectors: VectorAdmin | None = None  # None: no Qdrant configured
    events: EventsAdmin | None = None  # None: no Kafka configured
    cache: CacheAdmin | None = None  # None: no Redis configured


@dataclass
class Result:
    status: dict[str, Any]
    ready: bool = False
    error: ErrorKind | None = None
    reason: str = ""
    message: str = ""
    # Waiting for the Deployment: no error, no retry; its watch triggers the next pass.
    waiting: bool = False
    writes: list[str] = field(default_factory=list)  # what this pass changed, for logs/tests


class StepError(Exception):
    """A step (or the I/O under it) can't go on; _run turns it into a failed outcome."""

    def __init__(self, kind: ErrorKind, reason: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.reason = reason
        self.message = message


class State(enum.Enum):
    DONE = "done"  # the condition is True
    WAITING = "waiting"  # False for now, and that is no error (a rollout in progress)
    FAILED = "failed"  # False with an error; later steps don't run


@dataclass(frozen=True)
class StepOutcome:
    """What a step reports; its condition is written from it."""

    state: State
    reason: str
    message: str
    error: ErrorKind | None = None

    @classmethod
    def done(cls, reason: str, message: str) -> StepOutcome:
        return cls(State.DONE, reason, message)

    @classmethod
    def waiting(cls, reason: str, message: str) -> StepOutcome:
        return cls(State.WAITING, reason, message)

    @classmethod
    def failed(cls, kind: ErrorKind, reason: str, message: str) -> StepOutcome:
        return cls(State.FAILED, reason, message, kind)

    @property
    def condition_status(self) -> str:
        return c.TRUE if self.state is State.DONE else c.FALSE


@dataclass
class Pass:
    """One pass's context: the CR, what it asks for, and what the pass did so far.
    The steps read it and add to it (passwords, writes)."""

    cr: dict[str, Any]
    spec: MemoryNamespaceSpec
    names: Names
    generation: int
    now: str
    writes: list[str]  # what this pass changed, for logs/tests (Result.writes)
    passwords: dict[str, str] = field(default_factory=dict)  # the credentials Secret's
    new_credentials: bool = False  # the credentials Secret was written in this pass

    @property
    def name(self) -> str:
        return str(self.cr["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.cr["metadata"]["namespace"])

    def wrote(self, what: str) -> None:
        self.writes.append(what)


def _run(step: Callable[[Pass], StepOutcome], p: Pass) -> StepOutcome:
    try:
        return step(p)
    except StepError as err:
        return StepOutcome.failed(err.kind, err.reason, err.message)


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
            SharedByKey(self._list_managed, read_window) if read_window > 0 else None
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
        self, cr: dict[str, Any], claims: Claims | None = None, *, backends: bool = True
    ) -> Result:
        """One pass. `claims`: the operator's index of tenant claims (handlers.py);
        None lists every CR instead (for callers without a watch: tests, tools).
        backends=False (a change of the tenant's Deployment): the backend steps are
        skipped when all of them are True for the CR's current generation, so a
        rollout's status updates cost the Kubernetes step only; create, update,
        and the resync loop still check every backend."""

        def run(cr_: dict[str, Any], claims_: Claims | None) -> Result:
            uid = str(cr_["metadata"].get("uid", ""))
            try:
                shared = self._shared_pass(cr_, claims_, backends=backends)
                return shared or self._reconcile(cr_, claims_, backends=backends)
            finally:
                with self._passed_guard:
                    self._passed[uid] = time.monotonic()

        return self._measured(run, cr, claims)

    def finalize(self, cr: dict[str, Any], claims: Claims | None = None) -> Result:
        """Run on deletion (behind the finalizer). Result.error set: keep the finalizer."""
        with self._passed_guard:
            self._passed.pop(str(cr["metadata"].get("uid", "")), None)
        return self._measured(self._finalize, cr, claims)

    # -- shared reads ------------------------------------------------------

    def _shared_pass(
        self, cr: dict[str, Any], claims: Claims | None, *, backends: bool
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
        view.kube = _SharedKube(self.kube, self._shared_objects, not_before)
        try:
            result = view._reconcile(cr, claims, backends=backends)
        except NeedsExact as why:
            log.debug("exact pass for %s: %s", cr["metadata"].get("name"), why)
            return None
        return result if result.ready and not result.error else None

    def _list_managed(self, key: Hashable) -> dict[str, str]:
        kind, namespace = cast(tuple[str, str], key)
        items = self.kube.list_objects(kind, namespace, MANAGED_SELECTOR)
        return {item["metadata"]["name"]: _comparable(item) for item in items}

    def _ensure(
        self,
        backend: str,
        operation: str,
        exact: Callable[[T], Outcome],
        unchanged: Callable[[T, float], bool] | None,
        target: T,
    ) -> Outcome:
        """`exact(target)` (an observe, then writes only on drift); in a pass on shared
        reads, the backend's shared read instead, which may only say UNCHANGED."""
        not_before = self._not_before
        if not_before is None or unchanged is None:
            return self._backend(backend, operation, lambda: exact(target))
        try:
            same = timed_backend(backend, "shared_read", lambda: unchanged(target, not_before))
        except BackendError as err:
            raise NeedsExact(f"{backend}: {err.message}") from err
        if not same:
            raise NeedsExact(f"{backend}: the shared read differs from the target")
        return Outcome.UNCHANGED

    def _measured(
        self,
        run: Callable[[dict[str, Any], Claims | None], Result],
        cr: dict[str, Any],
        claims: Claims | None,
    ) -> Result:
        """Time one pass and count its result; a Kubernetes failure outside a step
        (listing claims, status patch) becomes an error Result."""
        with reconcile_timer():
            try:
                result = run(cr, claims)
            except StepError as err:
                result = Result(
                    dict(cr.get("status") or {}),
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

    def _reconcile(self, cr: dict[str, Any], claims: Claims | None, *, backends: bool) -> Result:
        meta = cr["metadata"]
        gen = int(meta.get("generation") or 1)
        old = dict(cr.get("status") or {})
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
            status = {**old, "conditions": conds, "observedGeneration": gen}
            self._write_status(cr, old, status, writes)
            return Result(
                status, error="permanent", reason=err.reason, message=err.message, writes=writes
            )

        owner = self._tenant_owner(cr, spec.tenant, claims)
        if owner is not None:
            # Touch nothing: not even our derived names go to status, they aren't ours.
            msg = (
                f"tenant {spec.tenant!r} is already claimed by {owner.namespace}/{owner.name}"
                f" (created {owner.created}); the oldest claim wins"
            )
            conds = c.set_condition(conds, c.READY, c.FALSE, "TenantConflict", msg, gen, now)
            status = {**old, "conditions": conds, "observedGeneration": gen}
            self._write_status(cr, old, status, writes)
            return Result(status, reason="TenantConflict", message=msg, writes=writes)

        p = Pass(cr, spec, names, gen, now, writes)
        base = {**old, **self._names_status(spec, names), "observedGeneration": gen}

        if spec.paused:
            conds = c.set_condition(
                conds,
                c.PAUSED,
                c.TRUE,
                "PausedBySpec",
                "spec.paused is true: external systems are not touched",
                gen,
                now,
            )
            status = {**base, "conditions": conds}
            self._write_status(cr, old, status, writes)
            return Result(
                status,
                ready=c.is_true(conds, c.READY),
                reason="Paused",
                message="paused",
                writes=writes,
            )
        conds = c.remove_condition(conds, c.PAUSED)

        try:
            self._credentials(p)
        except StepError as err:
            # No condition of its own: without credentials no later step can run.
            conds = c.set_condition(
                conds,
                c.READY,
                c.FALSE,
                "CredentialsUnavailable",
                f"credentials Secret: {err.message}",
                gen,
                now,
            )
            status = {**base, "conditions": conds}
            self._write_status(cr, old, status, writes)
            return Result(
                status,
                error=err.kind,
                reason="CredentialsUnavailable",
                message=err.message,
                writes=writes,
            )

        steps: list[tuple[str, Callable[[Pass], StepOutcome]]] = []
        if backends or not c.all_true(conds, c.BACKEND_STEP_TYPES, gen):
            steps += [
                (c.SCHEMA_READY, self._schema),
                (c.COLLECTION_READY, self._collection),
                (c.TOPICS_READY, self._topics),
                (c.CACHE_READY, self._cache),
            ]
        steps.append((c.API_READY, self._objects))
        pending: StepOutcome | None = None  # the first step not done: what the pass reports
        for type_, step in steps:
            outcome = _run(step, p)
            conds = c.set_condition(
                conds, type_, outcome.condition_status, outcome.reason, outcome.message, gen, now
            )
            if pending is None and outcome.state is not State.DONE:
                pending = outcome
            if outcome.state is State.FAILED:
                break  # later steps need this one

        conds = c.summarize(conds, gen, now)
        status = {**base, "conditions": conds}
        self._write_status(cr, old, status, writes)
        if pending is not None:
            return Result(
                status,
                error=pending.error,
                reason=pending.reason,
                message=pending.message,
                waiting=pending.state is State.WAITING,
                writes=writes,
            )
        return Result(
            status, ready=c.is_true(conds, c.READY), reason="Ready", message="ready", writes=writes
        )

    # -- steps -------------------------------------------------------------

    def _credentials(self, p: Pass) -> None:
        """Generated passwords live in the credentials Secret before any backend
        sees them, so a crash between steps never loses a password. Sets p.passwords."""
        names = p.names
        live = self._kube(
            "get", lambda: self.kube.get("Secret", p.namespace, names.credentials_secret)
        )
        existing = m.decode_secret_data(live)
        passwords = {k: existing.get(k) or m.new_secret() for k in m.PASSWORD_KEYS}
        desired = m.render_secret(
            p.cr,
            names,
            names.credentials_secret,
            m.credentials_data(p.spec, names, self.config, passwords),
        )
        if live is None:
            created = self._kube("create", lambda: self.kube.create(desired))
            if created is None:  # a concurrent pass created it first: use its passwords
                live = self._kube(
                    "get", lambda: self.kube.get("Secret", p.namespace, names.credentials_secret)
                )
                if live:
                    self._credentials(p)
                else:
                    p.passwords = passwords
                return
            p.wrote(f"Secret/{names.credentials_secret}")
            p.new_credentials = True
            self._event(
                p.cr,
                "Normal",
                "CredentialsCreated",
                f"generated tenant credentials in Secret {names.credentials_secret}",
            )
        elif m.needs_apply(desired, live):
            self._kube("apply", lambda: self.kube.apply(desired))
            p.wrote(f"Secret/{names.credentials_secret}")
            p.new_credentials = True
        p.passwords = passwords

    def _schema(self, p: Pass) -> StepOutcome:
        names = p.names
        target = self._database_target(p)
        database = self.backends.database
        outcome = self._ensure(
            "postgres",
            "ensure_tenant",
            database.ensure_tenant,
            getattr(database, "tenant_unchanged", None),
            target,
        )
        self._record(
            p, outcome, "Schema", f"PostgreSQL schema {names.schema} and role {names.role}"
        )
        return StepOutcome.done(
            "SchemaReady",
            f"schema {names.schema} owned by role {names.role}"
            f" (connection limit {target.connection_limit})",
        )

    def _collection(self, p: Pass) -> StepOutcome:
        spec, names = p.spec, p.names
        if spec.vectors.backend == "postgres":
            # The pgvector table lives in the tenant schema; the runtime creates it.
            return StepOutcome.done(
                "PgvectorInSchema", f"vectors are stored with pgvector in schema {names.schema}"
            )
        vectors = self.backends.vectors
        if vectors is None:
            return StepOutcome.failed(
                "permanent",
                "QdrantNotConfigured",
                "vectors.backend is qdrant but the operator has no Qdrant configured"
                " (SOMAFRACTAL_QDRANT_URL); use vectors.backend: postgres",
            )
        target = CollectionTarget(
            name=names.collection,
            dimensions=spec.vectors.dimensions,
            distance=spec.vectors.distance,
            hnsw_m=spec.vectors.hnsw.m,
            hnsw_ef_construct=spec.vectors.hnsw.ef_construct,
            on_disk=spec.vectors.on_disk,
        )
        outcome = self._backend(
            "qdrant", "ensure_collection", lambda: vectors.ensure_collection(target)
        )
        self._record(p, outcome, "Collection", f"Qdrant collection {names.collection}")
        ready = f"collection {names.collection} ({spec.vectors.dimensions}d)"
        gap = qdrant_isolation_gap(self.config)
        if gap:  # only reachable with SOMAFRACTAL_QDRANT_TENANT_ISOLATION=off (check_policy)
            return StepOutcome.done(
                "QdrantNotIsolated",
                f"{ready}; NOT isolated: {gap}, so every tenant can read every collection"
                " (SOMAFRACTAL_QDRANT_TENANT_ISOLATION=off)",
            )
        return StepOutcome.done("CollectionReady", ready)

    def _topics_target(
        self, spec: MemoryNamespaceSpec, names: Names, passwords: dict[str, str]
    ) -> TopicsTarget:
        sasl = self.config.kafka is not None and self.config.kafka.sasl
        return TopicsTarget(
            names=names.topics,
            partitions=spec.events.partitions,
            replication_factor=spec.events.replication_factor,
            retention_ms=spec.events.retention_hours * 3_600_000,
            principal=names.kafka_user if sasl else None,
            password=passwords[m.KAFKA_PASSWORD_KEY] if sasl else None,
        )

    def _topics(self, p: Pass) -> StepOutcome:
        spec, names = p.spec, p.names
        if not spec.events.enabled:
            return StepOutcome.done("EventsDisabled", "spec.events.enabled is false")
        events = self.backends.events
        if events is None or self.config.kafka is None:
            return StepOutcome.done(
                "KafkaNotConfigured", "the operator has no Kafka configured; events are off"
            )
        target = self._topics_target(spec, names, p.passwords)
        if p.new_credentials:  # new passwords in this pass
            target = dataclasses.replace(target, verify_password=True)
        outcome = self._ensure(
            "kafka",
            "ensure_topics",
            events.ensure_topics,
            getattr(events, "topics_unchanged", None),
            target,
        )
        what = f"Kafka topics {', '.join(names.topics)}"
        if target.principal:
            what += f" with SCRAM user {names.kafka_user} and ACLs"
        self._record(p, outcome, "Topics", what)
        return StepOutcome.done(
            "TopicsReady", f"{', '.join(names.topics)} ({spec.events.partitions} partitions)"
        )

    def _cache(self, p: Pass) -> StepOutcome:
        names = p.names
        cache = self.backends.cache
        if cache is None or self.config.redis is None:
            return StepOutcome.done(
                "RedisNotConfigured", "the operator has no Redis configured; limits are per pod"
            )
        target = CacheUserTarget(
            username=names.cache_user,
            password=p.passwords[m.REDIS_PASSWORD_KEY],
            key_prefix=names.key_prefix,
        )
        unchanged = getattr(cache, "user_unchanged", None)
        outcome = self._ensure("redis", "ensure_user", cache.ensure_user, unchanged, target)
        self._record(p, outcome, "CacheUser", f"Redis ACL user {names.cache_user}")
        return StepOutcome.done(
            "CacheReady", f"user {names.cache_user} limited to {names.key_prefix}:*"
        )

    def _objects(self, p: Pass) -> StepOutcome:
        """The runtime's Kubernetes objects; done once its Deployment is available."""
        spec, names = p.spec, p.names
        token_fingerprint = self._token_secret(p)
        config_data = m.runtime_config(spec, names, self.config)
        creds = m.credentials_data(spec, names, self.config, p.passwords)
        config_hash = m.content_hash([config_data, creds, token_fingerprint])
        policy = m.render_network_policy(p.cr, names, self.config)
        self._apply(p, m.render_configmap(p.cr, names, config_data))
        if policy is not None:
            self._apply(p, policy)  # before pods exist
        deployment = self._apply(
            p, m.render_deployment(p.cr, spec, names, self.config, config_hash)
        )
        self._apply(p, m.render_service(p.cr, names))
        available, message = m.deployment_available(deployment, spec.api.replicas)
        if available:
            return StepOutcome.done("DeploymentAvailable", f"Deployment {names.objects}: {message}")
        return StepOutcome.waiting(
            "DeploymentNotAvailable", f"Deployment {names.objects}: {message}"
        )

    def _apply(self, p: Pass, desired: dict[str, Any]) -> dict[str, Any] | None:
        """Apply `desired` unless the live object already matches; the object as it is now."""
        kind, name = desired["kind"], desired["metadata"]["name"]
        live = self._kube("get", lambda: self.kube.get(kind, p.namespace, name))
        if not m.needs_apply(desired, live):
            return live
        applied: dict[str, Any] = self._kube("apply", lambda: self.kube.apply(desired))
        p.wrote(f"{kind}/{name}")
        return applied

    def _token_secret(self, p: Pass) -> str:
        """Ensure the API token Secret; returns a fingerprint (not the token) for the
        pod-template hash so a rotated token rolls the pods."""
        cr, spec, names = p.cr, p.spec, p.names
        secret_name, key = m.token_ref(spec, names)
        live = self._kube("get", lambda: self.kube.get("Secret", p.namespace, secret_name))
        data = m.decode_secret_data(live)
        if spec.api.token_secret_ref is not None:
            if live is not None and not token_secret_opted_in(live, p.name):
                # The CR author may not be allowed to read Secrets: only a Secret that
                # names this CR gets into its pods.
                raise StepError(
                    "permanent",
                    "TokenSecretNotAllowed",
                    f"api.tokenSecretRef: Secret {secret_name} has not opted in; label it"
                    f" {TOKEN_SECRET_LABEL}={p.name} to let this"
                    " MemoryNamespace use it",
                )
            if not data.get(key):
                raise StepError(
                    "temporary",
                    "TokenSecretNotFound",
                    f"api.tokenSecretRef: Secret {secret_name} with key {key!r} not found",
                )
            return m.content_hash(data[key])
        token = data.get(key) or m.new_secret()
        desired = m.render_secret(cr, names, secret_name, {key: token})
        if live is None:
            if self._kube("create", lambda: self.kube.create(desired)) is None:
                return self._token_secret(p)  # lost a race; reuse theirs
            p.wrote(f"Secret/{secret_name}")
            self._event(
                cr, "Normal", "TokenCreated", f"generated API token in Secret {secret_name}"
            )
        elif m.needs_apply(desired, live):
            self._kube("apply", lambda: self.kube.apply(desired))
            p.wrote(f"Secret/{secret_name}")
        return m.content_hash(token)

    # -- deletion ----------------------------------------------------------

    def _finalize(self, cr: dict[str, Any], claims: Claims | None) -> Result:
        meta = cr["metadata"]
        status = dict(cr.get("status") or {})
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
            self._event(cr, "Normal", "DataRetained", f"{why}: kept {kept}")
            return Result(status, message=f"retained {kept}")
        gen = int(meta.get("generation") or 1)
        p = Pass(cr, spec, names, gen, self.clock(), [])
        try:
            self._delete_external(p)
        except StepError as err:
            if err.reason == NOT_OWNER:
                # Not ours to delete; keeping the finalizer would block the CR forever.
                self._event(cr, "Warning", "DataNotOwned", f"nothing deleted: {err.message}")
                return Result(status, reason=NOT_OWNER, message=err.message, writes=p.writes)
            self._event(cr, "Warning", err.reason, f"deletion blocked: {err.message}")
            # The object stays (finalizer) and must not keep saying "all
            # resources are ready": Ready turns False and names the blocker.
            conds = c.set_condition(
                list(status.get("conditions") or []),
                c.READY,
                c.FALSE,
                "DeletionBlocked",
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

    def _delete_external(self, p: Pass) -> None:
        spec, names = p.spec, p.names
        # Credentials are still needed for the targets; read, never create, them.
        live = self._kube(
            "get", lambda: self.kube.get("Secret", p.namespace, names.credentials_secret)
        )
        pw = m.decode_secret_data(live)
        p.passwords = {k: pw.get(k, "") for k in m.PASSWORD_KEYS}
        # PostgreSQL first: it holds the ownership record, so data recorded to another
        # owner stops the deletion before any backend is touched (BackendNotOwner).
        db = self._database_target(p)
        out = self._backend(
            "postgres", "delete_tenant", lambda: self.backends.database.delete_tenant(db)
        )
        self._record(
            p, out, "Schema", f"PostgreSQL schema {names.schema} (CASCADE) and role {names.role}"
        )
        vectors, events, cache = self.backends.vectors, self.backends.events, self.backends.cache
        if spec.vectors.backend == "qdrant" and vectors is not None:
            out = self._backend(
                "qdrant", "delete_collection", lambda: vectors.delete_collection(names.collection)
            )
            self._record(p, out, "Collection", f"Qdrant collection {names.collection}")
        if events is not None:
            target = self._topics_target(spec, names, p.passwords)
            out = self._backend("kafka", "delete_topics", lambda: events.delete_topics(target))
            self._record(p, out, "Topics", f"Kafka topics {', '.join(names.topics)}")
        if cache is not None:
            user = CacheUserTarget(
                names.cache_user, p.passwords[m.REDIS_PASSWORD_KEY], names.key_prefix
            )
            out = self._backend("redis", "delete_user", lambda: cache.delete_user(user))
            self._record(p, out, "CacheUser", f"Redis ACL user {names.cache_user}")

    # -- helpers -------------------------------------------------------------

    def _database_target(self, p: Pass) -> DatabaseTarget:
        """The tenant's database, with its owner record and what else it may adopt."""
        cr, names = p.cr, p.names
        status = cr.get("status") or {}
        if (names.tenant, p.namespace) in self.config.adoptions:
            adoption = Adoption.ANY  # the administrator's explicit hand-over
        elif status.get("schema") == names.schema and c.is_true(
            status.get("conditions") or [], c.SCHEMA_READY
        ):
            adoption = Adoption.UNRECORDED  # the operator made it for this CR (no record then)
        else:
            adoption = Adoption.NONE
        return DatabaseTarget(
            schema=names.schema,
            role=names.role,
            password=p.passwords[m.PG_PASSWORD_KEY],
            extensions_schema=self.config.postgres.extensions_schema,
            pgvector=p.spec.vectors.backend == "postgres",
            connection_limit=m.connection_limit(
                p.spec.api.replicas, self.config.runtime_db_pool_size
            ),
            owner=Owner.of(cr),
            adoption=adoption,
        )

    def _tenant_owner(self, cr: dict[str, Any], tenant: str, claims: Claims | None) -> Claim | None:
        """The claim that owns `tenant` if it isn't `cr` (claims.owner has the rule)."""
        if claims is None:
            claims = claims_from(
                self._kube("list", lambda: list(self.kube.list_memory_namespaces()))
            )
        return claim_owner(claims, tenant, Claim.of(cr))

    def _names_status(self, spec: MemoryNamespaceSpec, names: Names) -> dict[str, Any]:
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

    def _write_status(
        self,
        cr: dict[str, Any],
        old: dict[str, Any],
        new: dict[str, Any],
        writes: list[str],
    ) -> None:
        if new == old:
            return
        meta = cr["metadata"]
        self._kube(
            "patch_status", lambda: self.kube.patch_status(meta["namespace"], meta["name"], new)
        )
        writes.append("status")

    def _record(self, p: Pass, outcome: Outcome, noun: str, what: str) -> None:
        if outcome.wrote:
            p.wrote(f"{noun}:{outcome.value}")
            self._event(
                p.cr, "Normal", f"{noun}{outcome.value}", f"{what}: {outcome.value.lower()}"
            )

    def _event(self, cr: dict[str, Any], type_: str, reason: str, message: str) -> None:
        # An Event is a record, not state: failing to post one must not fail the pass.
        try:
            timed_backend(
                "kubernetes", "event", lambda: self.kube.emit_event(cr, type_, reason, message)
            )
        except Exception as err:
            log.warning("could not post Event %s: %s", reason, err)

    def _backend(self, backend: str, operation: str, fn: Callable[[], Outcome]) -> Outcome:
        try:
            with self._limits[backend]:
                return timed_backend(backend, operation, fn)
        except BackendNotOwner as err:
            raise StepError("permanent", NOT_OWNER, err.message) from err
        except BackendUnavailable as err:
            raise StepError("temporary", f"{_title(backend)}Unavailable", err.message) from err
        except BackendRejected as err:
            raise StepError("permanent", f"{_title(backend)}Rejected", err.message) from err
        except BackendError as err:
            raise StepError("temporary", f"{_title(backend)}Error", err.message) from err

    def _kube(self, operation: str, fn: Callable[[], Any]) -> Any:
        if self._not_before is not None:  # shared reads: in memory, nothing to time
            return fn()
        try:
            return timed_backend("kubernetes", operation, fn)
        except KubeUnavailable as err:
            raise StepError("temporary", "KubernetesUnavailable", err.message) from err
        except KubeRejected as err:
            raise StepError("permanent", "KubernetesError", err.message) from err
        except KubeError as err:
            raise StepError("temporary", "KubernetesError", err.message) from err


def _title(backend: str) -> str:
    return {"postgres": "Postgres", "qdrant": "Qdrant", "kafka": "Kafka", "redis": "Redis"}.get(
        backend, backend.title()
    )


def _comparable(obj: dict[str, Any]) -> str:
    """What a shared read keeps of a live object: all but managedFields (the
    largest part of most objects, never compared), as compact JSON (several times
    smaller than the dict it is parsed back into for one pass)."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return json.dumps({**obj, "metadata": meta}, separators=(",", ":"))


class _SharedKube:
    """The KubePort of a pass on shared reads: GETs of the operator's own objects
    are served from one labelled list per kind and namespace; anything it can't
    serve, and every write, raises NeedsExact. Events pass through (they follow a
    write that a backend without a shared read made on an exact read)."""

    def __init__(
        self,
        kube: KubePort,
        objects: SharedByKey[dict[str, str]],
        not_before: float,
    ) -> None:
        self._kube = kube
        self._objects = objects
        self._not_before = not_before

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind not in SHARED_KINDS:
            raise NeedsExact(f"{kind} is not read in bulk")
        try:
            live = self._objects.get((kind, namespace), self._not_before).get(name)
        except KubeError as err:
            raise NeedsExact(f"list {kind}: {err.message}") from err
        if live is None:  # missing, or not labelled ours (a tokenSecretRef Secret)
            raise NeedsExact(f"{kind}/{name} not in the shared read")
        return json.loads(live)

    def emit_event(self, cr: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self._kube.emit_event(cr, type_, reason, message)

    def list_memory_namespaces(self, namespace: str | None = None) -> Iterable[dict[str, Any]]:
        return self._kube.list_memory_namespaces(namespace)

    def list_objects(self, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        raise NeedsExact("no lists on a shared pass")

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        raise NeedsExact(f"{obj['kind']}/{obj['metadata']['name']} differs")

    def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        raise NeedsExact(f"{obj['kind']}/{obj['metadata']['name']} missing")

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        raise NeedsExact("status differs")
