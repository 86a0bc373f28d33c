"""Derived names, deterministic from the operator's prefix and the tenant. Pure.

Limits: PostgreSQL identifiers 63 bytes, Kafka topic names 249 chars, Kubernetes
object names 63 (Services) / 253 (Secrets, ConfigMaps). The tenant pattern
(<= 40 chars) and the prefix pattern (<= 20 chars) keep every name inside them;
`derive_names` still checks, so a future pattern change can't slip past.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from memory_contract.naming import RUNTIME_PORT, TENANT_PATTERN, key_prefix, sql_name
from memory_operator.spec import InvalidSpecError

# Lower-case alphanumerics only: valid unquoted in SQL, in topic names, in Redis
# ACL user names and in Kubernetes label values.
PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9]{0,19}$")
PG_IDENTIFIER_MAX_BYTES = 63
KAFKA_TOPIC_MAX = 249
DNS_LABEL_MAX = 63


@dataclass(frozen=True)
class Names:
    tenant: str
    schema: str
    role: str
    collection: str
    topics: tuple[str, ...]
    events_topic: str
    cache_user: str
    key_prefix: str
    kafka_user: str
    objects: str  # ConfigMap, Deployment, Service
    token_secret: str
    credentials_secret: str
    endpoint: str


def validate_prefix(prefix: str) -> str:
    if not PREFIX_PATTERN.match(prefix):
        raise ValueError(f"name prefix {prefix!r} must match {PREFIX_PATTERN.pattern}")
    return prefix


def derive_names(prefix: str, tenant: str, name: str, namespace: str) -> Names:
    """All names for one CR. Raises InvalidSpecError if a name would not fit a system's limit."""
    validate_prefix(prefix)
    if not TENANT_PATTERN.match(tenant):
        raise InvalidSpecError(
            "InvalidTenant", f"tenant {tenant!r} must match {TENANT_PATTERN.pattern}"
        )
    sql = sql_name(prefix, tenant)
    topic = f"{prefix}.{tenant}.events"
    objects = f"{name}-memory"
    if len(sql.encode()) > PG_IDENTIFIER_MAX_BYTES:
        raise InvalidSpecError("NameTooLong", f"PostgreSQL identifier {sql!r} exceeds 63 bytes")
    if len(topic) > KAFKA_TOPIC_MAX:
        raise InvalidSpecError("NameTooLong", f"Kafka topic {topic!r} exceeds 249 characters")
    if len(objects) > DNS_LABEL_MAX:
        raise InvalidSpecError("NameTooLong", f"Service name {objects!r} exceeds 63 characters")
    user = f"{prefix}-{tenant}"
    return Names(
        tenant=tenant,
        schema=sql,
        role=sql,
        collection=sql,
        topics=(topic,),
        events_topic=topic,
        cache_user=user,
        key_prefix=key_prefix(prefix, tenant),
        kafka_user=user,
        objects=objects,
        token_secret=f"{name}-memory-token",
        credentials_secret=f"{name}-memory-credentials",
        endpoint=f"http://{objects}.{namespace}.svc:{RUNTIME_PORT}",
    )
