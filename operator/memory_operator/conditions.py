"""Kubernetes-style status conditions. Pure.

Conventions (k8s API conventions / metav1.Condition): type, status
("True"/"False"/"Unknown"), CamelCase reason, human message,
lastTransitionTime that changes only when status flips, observedGeneration.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import UTC, datetime

from memory_operator.kube_types import Condition, MemoryNamespace

SCHEMA_READY = "SchemaReady"
COLLECTION_READY = "CollectionReady"
TOPICS_READY = "TopicsReady"
CACHE_READY = "CacheReady"
API_READY = "ApiReady"
READY = "Ready"
PAUSED = "Paused"
BACKEND_STEP_TYPES: tuple[str, ...] = (SCHEMA_READY, COLLECTION_READY, TOPICS_READY, CACHE_READY)
STEP_TYPES: tuple[str, ...] = (*BACKEND_STEP_TYPES, API_READY)

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


class Reason(enum.StrEnum):
    """Every reason a condition can carry: one place, so a typo fails at once
    instead of reaching a user. docs/OPERATOR.md ("Conditions and reasons") lists
    the same set (tests/unit/operator/test_reasons_documented.py keeps them equal)."""

    # True
    READY = "Ready"
    SCHEMA_READY = "SchemaReady"
    COLLECTION_READY = "CollectionReady"
    PGVECTOR_IN_SCHEMA = "PgvectorInSchema"
    QDRANT_NOT_ISOLATED = "QdrantNotIsolated"  # True with isolation off; else a policy refusal
    TOPICS_READY = "TopicsReady"
    EVENTS_DISABLED = "EventsDisabled"
    KAFKA_NOT_CONFIGURED = "KafkaNotConfigured"
    CACHE_READY = "CacheReady"
    REDIS_NOT_CONFIGURED = "RedisNotConfigured"
    DEPLOYMENT_AVAILABLE = "DeploymentAvailable"
    PAUSED_BY_SPEC = "PausedBySpec"
    # False: a backend (ports.Backend* errors, per backend)
    POSTGRES_UNAVAILABLE = "PostgresUnavailable"
    POSTGRES_REJECTED = "PostgresRejected"
    POSTGRES_ERROR = "PostgresError"
    QDRANT_UNAVAILABLE = "QdrantUnavailable"
    QDRANT_REJECTED = "QdrantRejected"
    QDRANT_ERROR = "QdrantError"
    KAFKA_UNAVAILABLE = "KafkaUnavailable"
    KAFKA_REJECTED = "KafkaRejected"
    KAFKA_ERROR = "KafkaError"
    REDIS_UNAVAILABLE = "RedisUnavailable"
    REDIS_REJECTED = "RedisRejected"
    REDIS_ERROR = "RedisError"
    QDRANT_NOT_CONFIGURED = "QdrantNotConfigured"
    TENANT_OWNED_ELSEWHERE = "TenantOwnedElsewhere"  # ownership.py: another owner's data
    # False: Kubernetes and the runtime's objects
    KUBERNETES_UNAVAILABLE = "KubernetesUnavailable"
    KUBERNETES_ERROR = "KubernetesError"
    DEPLOYMENT_NOT_AVAILABLE = "DeploymentNotAvailable"
    TOKEN_SECRET_NOT_FOUND = "TokenSecretNotFound"
    TOKEN_SECRET_NOT_ALLOWED = "TokenSecretNotAllowed"
    CREDENTIALS_UNAVAILABLE = "CredentialsUnavailable"
    # False on Ready only: the spec, the operator's policy, the tenant's claim, deletion
    INVALID_SPEC = "InvalidSpec"
    INVALID_TENANT = "InvalidTenant"
    NAME_TOO_LONG = "NameTooLong"
    IMAGE_NOT_ALLOWED = "ImageNotAllowed"
    EMBEDDING_URL_NOT_ALLOWED = "EmbeddingUrlNotAllowed"
    TENANT_CONFLICT = "TenantConflict"
    DELETION_BLOCKED = "DeletionBlocked"
    # Unknown
    RECONCILING = "Reconciling"

    @classmethod
    def unavailable(cls, backend: str) -> Reason:
        return cls(f"{_BACKEND_TITLES[backend]}Unavailable")

    @classmethod
    def rejected(cls, backend: str) -> Reason:
        return cls(f"{_BACKEND_TITLES[backend]}Rejected")

    @classmethod
    def error(cls, backend: str) -> Reason:
        return cls(f"{_BACKEND_TITLES[backend]}Error")


_BACKEND_TITLES = {"postgres": "Postgres", "qdrant": "Qdrant", "kafka": "Kafka", "redis": "Redis"}


class EventType(enum.StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


class EventReason(enum.StrEnum):
    """Every reason of an Event the operator posts on a MemoryNamespace (docs/OPERATOR.md,
    "Events", lists the same set). A Warning that deletion is blocked carries the
    blocking step's condition Reason instead."""

    CREDENTIALS_CREATED = "CredentialsCreated"
    TOKEN_CREATED = "TokenCreated"
    SCHEMA_CREATED = "SchemaCreated"
    SCHEMA_UPDATED = "SchemaUpdated"
    SCHEMA_DELETED = "SchemaDeleted"
    COLLECTION_CREATED = "CollectionCreated"
    COLLECTION_UPDATED = "CollectionUpdated"
    COLLECTION_DELETED = "CollectionDeleted"
    TOPICS_CREATED = "TopicsCreated"
    TOPICS_UPDATED = "TopicsUpdated"
    TOPICS_DELETED = "TopicsDeleted"
    CACHE_USER_CREATED = "CacheUserCreated"
    CACHE_USER_UPDATED = "CacheUserUpdated"
    CACHE_USER_DELETED = "CacheUserDeleted"
    DATA_RETAINED = "DataRetained"
    DATA_NOT_OWNED = "DataNotOwned"


# metav1.Condition caps message at 32768 bytes; backend errors can be long.
MAX_MESSAGE = 4096


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Iterable[Condition],
    type_: str,
    status: str,
    reason: Reason | str,
    message: str,
    generation: int,
    now: str,
) -> list[Condition]:
    """Return a new list with `type_` set; lastTransitionTime kept unless status flips.
    `reason` must be a Reason (a plain string is checked against it: ValueError)."""
    if status not in (TRUE, FALSE, UNKNOWN):
        raise ValueError(f"condition status must be True, False or Unknown, not {status!r}")
    reason = Reason(reason)
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.get("type") != type_:
            out.append(cond.copy())
            continue
        found = True
        ltt = cond.get("lastTransitionTime") if cond.get("status") == status else now
        out.append(_make(type_, status, reason, message, generation, ltt or now))
    if not found:
        out.append(_make(type_, status, reason, message, generation, now))
    return out


def remove_condition(conditions: Iterable[Condition], type_: str) -> list[Condition]:
    return [c.copy() for c in conditions if c.get("type") != type_]


def get_condition(conditions: Iterable[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def is_true(conditions: Iterable[Condition], type_: str) -> bool:
    cond = get_condition(conditions, type_)
    return cond is not None and cond.get("status") == TRUE


def ready_status(cr: MemoryNamespace) -> str:
    """The CR's Ready status as monitoring should see it: Unknown until the
    operator has judged the current spec (no Ready condition, or one observed
    for an older generation)."""
    metadata = cr.get("metadata") or {}
    cond = get_condition((cr.get("status") or {}).get("conditions") or [], READY)
    if cond is None or cond.get("status") not in (TRUE, FALSE):
        return UNKNOWN
    generation = metadata.get("generation")
    if generation is not None and cond.get("observedGeneration", generation) < generation:
        return UNKNOWN
    return str(cond["status"])


def all_true(conditions: Iterable[Condition], types: Iterable[str], generation: int) -> bool:
    """Every condition of `types` is True and was set for `generation`."""
    by_type = {cond.get("type"): cond for cond in conditions}
    return all(
        (cond := by_type.get(t)) is not None
        and cond.get("status") == TRUE
        and cond.get("observedGeneration") == generation
        for t in types
    )


def summarize(conditions: Iterable[Condition], generation: int, now: str) -> list[Condition]:
    """Set Ready from the step conditions: True only when every step is True;
    otherwise False (or Unknown) with the first failing step's reason and message."""
    conds = list(conditions)
    for type_ in STEP_TYPES:
        cond = get_condition(conds, type_)
        if cond is None:
            return set_condition(
                conds,
                READY,
                UNKNOWN,
                Reason.RECONCILING,
                f"{type_} not evaluated yet",
                generation,
                now,
            )
        if cond["status"] != TRUE:
            return set_condition(
                conds,
                READY,
                FALSE if cond["status"] == FALSE else UNKNOWN,
                cond["reason"],
                f"{type_}: {cond.get('message', '')}",
                generation,
                now,
            )
    return set_condition(
        conds, READY, TRUE, Reason.READY, "all resources are ready", generation, now
    )


def _make(
    type_: str, status: str, reason: str, message: str, generation: int, ltt: str
) -> Condition:
    return {
        "type": type_,
        "status": status,
        "reason": str(reason),
        "message": message[:MAX_MESSAGE],
        "lastTransitionTime": ltt,
        "observedGeneration": generation,
    }
