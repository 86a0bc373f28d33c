"""The backend steps of a pass (SchemaReady, CollectionReady, TopicsReady,
CacheReady) and the deletion of a tenant's backend data. Each step builds its
target from the pass (steps.Pass), calls the backend through the reconciler
(per-backend limits, shared reads, typed errors) and reports a StepOutcome.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from memory_operator import conditions as c
from memory_operator import manifests as m
from memory_operator.conditions import Reason
from memory_operator.domain import CacheUserTarget, CollectionTarget, DatabaseTarget, TopicsTarget
from memory_operator.naming import Names
from memory_operator.ownership import Adoption, Owner
from memory_operator.policy import qdrant_isolation_gap
from memory_operator.spec import MemoryNamespaceSpec
from memory_operator.steps import Pass, StepOutcome

if TYPE_CHECKING:
    from memory_operator.reconcile import Reconciler


def schema(r: Reconciler, p: Pass) -> StepOutcome:
    names = p.names
    target = database_target(r, p)
    database = r.backends.database
    outcome = r.ensure(
        "postgres",
        database.ensure_tenant,
        getattr(database, "tenant_unchanged", None),
        target,
    )
    r.record(p, outcome, "Schema", f"PostgreSQL schema {names.schema} and role {names.role}")
    return StepOutcome.done(
        Reason.SCHEMA_READY,
        f"schema {names.schema} owned by role {names.role}"
        f" (connection limit {target.connection_limit})",
    )


def collection(r: Reconciler, p: Pass) -> StepOutcome:
    spec, names = p.spec, p.names
    if spec.vectors.backend == "postgres":
        # The pgvector table lives in the tenant schema; the runtime creates it.
        return StepOutcome.done(
            Reason.PGVECTOR_IN_SCHEMA, f"vectors are stored with pgvector in schema {names.schema}"
        )
    vectors = r.backends.vectors
    if vectors is None:
        return StepOutcome.failed(
            "permanent",
            Reason.QDRANT_NOT_CONFIGURED,
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
    outcome = r.backend_call("qdrant", lambda: vectors.ensure_collection(target))
    r.record(p, outcome, "Collection", f"Qdrant collection {names.collection}")
    ready = f"collection {names.collection} ({spec.vectors.dimensions}d)"
    gap = qdrant_isolation_gap(r.config)
    if gap:  # only reachable with SOMAFRACTAL_QDRANT_TENANT_ISOLATION=off (check_policy)
        return StepOutcome.done(
            Reason.QDRANT_NOT_ISOLATED,
            f"{ready}; NOT isolated: {gap}, so every tenant can read every collection"
            " (SOMAFRACTAL_QDRANT_TENANT_ISOLATION=off)",
        )
    return StepOutcome.done(Reason.COLLECTION_READY, ready)


def topics_target(
    r: Reconciler, spec: MemoryNamespaceSpec, names: Names, passwords: dict[str, str]
) -> TopicsTarget:
    sasl = r.config.kafka is not None and r.config.kafka.sasl
    return TopicsTarget(
        names=names.topics,
        partitions=spec.events.partitions,
        replication_factor=spec.events.replication_factor,
        retention_ms=spec.events.retention_hours * 3_600_000,
        principal=names.kafka_user if sasl else None,
        password=passwords[m.KAFKA_PASSWORD_KEY] if sasl else None,
    )


def topics(r: Reconciler, p: Pass) -> StepOutcome:
    spec, names = p.spec, p.names
    if not spec.events.enabled:
        return StepOutcome.done(Reason.EVENTS_DISABLED, "spec.events.enabled is false")
    events = r.backends.events
    if events is None or r.config.kafka is None:
        return StepOutcome.done(
            Reason.KAFKA_NOT_CONFIGURED, "the operator has no Kafka configured; events are off"
        )
    target = topics_target(r, spec, names, p.passwords)
    if p.new_credentials:  # new passwords in this pass
        target = dataclasses.replace(target, verify_password=True)
    outcome = r.ensure(
        "kafka",
        events.ensure_topics,
        getattr(events, "topics_unchanged", None),
        target,
    )
    what = f"Kafka topics {', '.join(names.topics)}"
    if target.principal:
        what += f" with SCRAM user {names.kafka_user} and ACLs"
    r.record(p, outcome, "Topics", what)
    return StepOutcome.done(
        Reason.TOPICS_READY, f"{', '.join(names.topics)} ({spec.events.partitions} partitions)"
    )


def cache(r: Reconciler, p: Pass) -> StepOutcome:
    names = p.names
    cache = r.backends.cache
    if cache is None or r.config.redis is None:
        return StepOutcome.done(
            Reason.REDIS_NOT_CONFIGURED, "the operator has no Redis configured; limits are per pod"
        )
    target = CacheUserTarget(
        username=names.cache_user,
        password=p.passwords[m.REDIS_PASSWORD_KEY],
        key_prefix=names.key_prefix,
    )
    unchanged = getattr(cache, "user_unchanged", None)
    outcome = r.ensure("redis", cache.ensure_user, unchanged, target)
    r.record(p, outcome, "CacheUser", f"Redis ACL user {names.cache_user}")
    return StepOutcome.done(
        Reason.CACHE_READY, f"user {names.cache_user} limited to {names.key_prefix}:*"
    )


def delete_backends(r: Reconciler, p: Pass) -> None:
    spec, names = p.spec, p.names
    # Credentials are still needed for the targets; read, never create, them.
    live = r.kube_call("get", lambda: r.kube.get("Secret", p.namespace, names.credentials_secret))
    pw = m.decode_secret_data(live)
    p.passwords = {k: pw.get(k, "") for k in m.PASSWORD_KEYS}
    # PostgreSQL first: it holds the ownership record, so data recorded to another
    # owner stops the deletion before any backend is touched (BackendNotOwner).
    db = database_target(r, p)
    out = r.backend_call("postgres", lambda: r.backends.database.delete_tenant(db))
    r.record(p, out, "Schema", f"PostgreSQL schema {names.schema} (CASCADE) and role {names.role}")
    vectors, events, cache = r.backends.vectors, r.backends.events, r.backends.cache
    if spec.vectors.backend == "qdrant" and vectors is not None:
        out = r.backend_call("qdrant", lambda: vectors.delete_collection(names.collection))
        r.record(p, out, "Collection", f"Qdrant collection {names.collection}")
    if events is not None:
        target = topics_target(r, spec, names, p.passwords)
        out = r.backend_call("kafka", lambda: events.delete_topics(target))
        r.record(p, out, "Topics", f"Kafka topics {', '.join(names.topics)}")
    if cache is not None:
        user = CacheUserTarget(
            names.cache_user, p.passwords[m.REDIS_PASSWORD_KEY], names.key_prefix
        )
        out = r.backend_call("redis", lambda: cache.delete_user(user))
        r.record(p, out, "CacheUser", f"Redis ACL user {names.cache_user}")


def database_target(r: Reconciler, p: Pass) -> DatabaseTarget:
    """The tenant's database, with its owner record and what else it may adopt."""
    cr, names = p.cr, p.names
    status = cr.get("status") or {}
    if (names.tenant, p.namespace) in r.config.adoptions:
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
        extensions_schema=r.config.postgres.extensions_schema,
        pgvector=p.spec.vectors.backend == "postgres",
        connection_limit=m.connection_limit(p.spec.api.replicas, r.config.runtime_db_pool_size),
        owner=Owner.of(cr),
        adoption=adoption,
    )
