"""Kubernetes objects for one tenant, rendered for server-side apply. Pure.

The runtime environment contract (docs/ARCHITECTURE.md) is rendered here:
non-secret settings into the ConfigMap, tenant credentials into the
credentials Secret, the API tokens into the token Secret.

Why ~500 lines: every object of a tenant (ConfigMap, two Secrets, Deployment
with its probes and hardening, Service, NetworkPolicy) rendered from one spec,
and the checks of what the API server reports back (availability, digests).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
from typing import Final, NamedTuple
from urllib.parse import quote

from memory_contract.env import env_name
from memory_contract.naming import METRICS_PORT, RUNTIME_PORT
from memory_operator.config import OperatorConfig
from memory_operator.kube_types import (
    ConfigMap,
    Container,
    Deployment,
    EnvVar,
    KopfPeering,
    KubeObject,
    MemoryNamespace,
    NetworkPolicy,
    NetworkPolicyIngressRule,
    NetworkPolicyPeer,
    ObjectMeta,
    OwnerReference,
    Rendered,
    ResourceRequirements,
    Secret,
    Service,
)
from memory_operator.naming import Names
from memory_operator.spec import MemoryNamespaceSpec

GROUP = "memory.somafractal.io"
API_VERSION = f"{GROUP}/v1alpha1"
KIND: Final = "MemoryNamespace"
FIELD_MANAGER = "somafractal-operator"
HASH_ANNOTATION = f"{GROUP}/applied-hash"
CONFIG_HASH_ANNOTATION = f"{GROUP}/config-hash"
TENANT_LABEL = f"{GROUP}/tenant"
MANAGED_BY = "somafractal-operator"

# Keys of the credentials Secret: generated passwords (persisted, reused) and the
# runtime variables built from them.
PG_PASSWORD_KEY = "postgres-password"
REDIS_PASSWORD_KEY = "redis-password"
KAFKA_PASSWORD_KEY = "kafka-password"
PASSWORD_KEYS = (PG_PASSWORD_KEY, REDIS_PASSWORD_KEY, KAFKA_PASSWORD_KEY)


class SecretSettings(NamedTuple):
    """The runtime settings the credentials Secret holds (fields of its Settings)."""

    database_url: str
    redis_url: str
    kafka_username: str
    kafka_password: str
    qdrant_api_key: str


SECRET_ENV = tuple(env_name(field) for field in SecretSettings._fields)
TOKENS_ENV = env_name("api_tokens")
TOKEN_KEY = "token"


def new_secret() -> str:
    """A URL-safe random secret (256 bits): fits SQL, Redis ACL and SCRAM without quoting."""
    return secrets.token_urlsafe(32)


def owner_reference(cr: MemoryNamespace) -> OwnerReference:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": cr["metadata"]["name"],
        "uid": cr["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def labels(cr: MemoryNamespace, names: Names) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "somafractal-memory",
        "app.kubernetes.io/instance": cr["metadata"]["name"],
        "app.kubernetes.io/component": "memory-api",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        TENANT_LABEL: names.tenant,
    }


def selector_labels(cr: MemoryNamespace) -> dict[str, str]:
    # Immutable on a Deployment: only labels that never change for this CR.
    return {
        "app.kubernetes.io/name": "somafractal-memory",
        "app.kubernetes.io/instance": cr["metadata"]["name"],
    }


def content_hash(data: object) -> str:
    """A short digest of JSON-serialisable data."""
    raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def _metadata(cr: MemoryNamespace, names: Names, name: str) -> ObjectMeta:
    return {
        "name": name,
        "namespace": cr["metadata"]["namespace"],
        "labels": labels(cr, names),
        "ownerReferences": [owner_reference(cr)],
    }


def _with_hash(obj: Rendered) -> Rendered:
    """Stamp the rendered content's hash so a later pass can tell that what we
    applied last is what we want now (fields we dropped need a new apply)."""
    obj["metadata"].setdefault("annotations", {})[HASH_ANNOTATION] = content_hash(obj)
    return obj


def _b64(data: dict[str, str]) -> dict[str, str]:
    return {k: base64.b64encode(v.encode()).decode() for k, v in sorted(data.items())}


def decode_secret_data(secret: Secret | None) -> dict[str, str]:
    if not secret:
        return {}
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def events_enabled(spec: MemoryNamespaceSpec, config: OperatorConfig) -> bool:
    return spec.events.enabled and config.kafka is not None


# Kubernetes' default RollingUpdate maxSurge (the Deployment renders no strategy):
# during a rollout up to a quarter more pods (rounded up) run beside the old ones.
ROLLOUT_SURGE = 0.25
# Connections a runtime pod opens beside its pool (the migration at start).
EXTRA_CONNECTIONS_PER_POD = 1


def connection_limit(replicas: int, pool_size: int) -> int:
    """The tenant role's CONNECTION LIMIT: every pod of a rollout with a full pool,
    plus the connections a pod opens outside it; at least one pod's worth (scaled
    to zero, a pod may still be starting or a rollout finishing)."""
    pods = max(1, replicas + math.ceil(replicas * ROLLOUT_SURGE))
    return pods * (pool_size + EXTRA_CONNECTIONS_PER_POD)


def runtime_config(
    spec: MemoryNamespaceSpec, names: Names, config: OperatorConfig
) -> dict[str, str]:
    """The non-secret half of the runtime environment contract."""
    qdrant = spec.vectors.backend == "qdrant" and config.qdrant is not None
    kafka = config.kafka if events_enabled(spec, config) else None
    settings = {
        "tenant": names.tenant,
        "database_schema": names.schema,
        "database_extensions_schema": config.postgres.extensions_schema,
        "database_pool_size": str(config.runtime_db_pool_size),
        "vector_backend": spec.vectors.backend,
        "vector_dimensions": str(spec.vectors.dimensions),
        "vector_distance": spec.vectors.distance,
        "vector_hnsw_m": str(spec.vectors.hnsw.m),
        "vector_hnsw_ef_construct": str(spec.vectors.hnsw.ef_construct),
        "qdrant_url": config.qdrant.runtime_url if qdrant and config.qdrant else "",
        "qdrant_collection": names.collection if qdrant else "",
        "redis_prefix": names.key_prefix,
        "events_enabled": "true" if kafka else "false",
        "kafka_bootstrap": kafka.runtime_bootstrap if kafka else "",
        "kafka_topic": names.events_topic if kafka else "",
        "kafka_security_protocol": kafka.security_protocol if kafka and kafka.sasl else "",
        "kafka_sasl_mechanism": kafka.sasl_mechanism if kafka and kafka.sasl else "",
        "embedding_provider": spec.embedding.provider,
        "embedding_model": spec.embedding.model,
        "embedding_url": spec.embedding.url,
        "decay_enabled": "true" if spec.decay.enabled else "false",
        "decay_half_life_hours": _num(spec.decay.half_life_hours),
        "decay_prune_below": _num(spec.decay.prune_below),
        "max_memories": str(spec.storage.max_memories),
        "rate_limit_per_minute": str(spec.api.rate_limit.requests_per_minute),
        "rate_limit_burst": str(spec.api.rate_limit.burst),
        "max_body_bytes": str(spec.api.max_body_bytes),
        "mcp_enabled": "true" if spec.api.mcp.enabled else "false",
        "migrate_on_start": "true",
        "host": "0.0.0.0",
        "port": str(RUNTIME_PORT),
        "metrics_port": str(METRICS_PORT),
    }
    return environment(settings)


def environment(settings: dict[str, str]) -> dict[str, str]:
    """The runtime's variables that set these Settings fields (memory_contract.env)."""
    return {env_name(field): value for field, value in settings.items()}


def _num(value: float) -> str:
    # 720.0 -> "720", 0.05 -> "0.05": stable strings, no float noise.
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def credentials_data(
    spec: MemoryNamespaceSpec, names: Names, config: OperatorConfig, passwords: dict[str, str]
) -> dict[str, str]:
    """The secret half of the environment contract plus the generated passwords."""
    pg = config.postgres
    db_url = (
        f"postgresql://{quote(names.role, safe='')}:{quote(passwords[PG_PASSWORD_KEY], safe='')}"
        f"@{pg.host}:{pg.port}/{quote(pg.database, safe='')}"
    )
    redis_url = ""
    if config.redis is not None:
        redis_url = (
            f"redis://{quote(names.cache_user, safe='')}:"
            f"{quote(passwords[REDIS_PASSWORD_KEY], safe='')}"
            f"@{config.redis.host}:{config.redis.port}/{config.redis.db}"
        )
    kafka_sasl = events_enabled(spec, config) and config.kafka is not None and config.kafka.sasl
    qdrant_key = ""
    if spec.vectors.backend == "qdrant" and config.qdrant is not None and config.qdrant.api_key:
        qdrant_key = (
            qdrant_jwt(config.qdrant.api_key, names.collection)
            if config.qdrant.tenant_auth == "jwt"
            else config.qdrant.api_key
        )
    return {
        PG_PASSWORD_KEY: passwords[PG_PASSWORD_KEY],
        REDIS_PASSWORD_KEY: passwords[REDIS_PASSWORD_KEY],
        KAFKA_PASSWORD_KEY: passwords[KAFKA_PASSWORD_KEY],
        **environment(
            SecretSettings(
                database_url=db_url,
                redis_url=redis_url,
                kafka_username=names.kafka_user if kafka_sasl else "",
                kafka_password=passwords[KAFKA_PASSWORD_KEY] if kafka_sasl else "",
                qdrant_api_key=qdrant_key,
            )._asdict()
        ),
    }


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def qdrant_jwt(api_key: str, collection: str) -> str:
    """A Qdrant JWT (HS256, signed with the server's API key) granting read/write
    on one collection only: the tenant never holds the admin key. Needs Qdrant's
    `service.jwt_rbac: true`. No exp/iat claims: the same token is rendered on
    every pass (rotating the API key rotates every tenant token)."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {"access": [{"collection": collection, "access": "rw"}]}
    payload = _b64url(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    signing = f"{header}.{payload}".encode()
    signature = _b64url(hmac.new(api_key.encode(), signing, hashlib.sha256).digest())
    return f"{header}.{payload}.{signature}"


def render_configmap(cr: MemoryNamespace, names: Names, data: dict[str, str]) -> ConfigMap:
    configmap: ConfigMap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(cr, names, names.objects),
        "data": dict(sorted(data.items())),
    }
    return _with_hash(configmap)


def render_secret(cr: MemoryNamespace, names: Names, name: str, data: dict[str, str]) -> Secret:
    secret: Secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(cr, names, name),
        "type": "Opaque",
        "data": _b64(data),
    }
    return _with_hash(secret)


def token_ref(spec: MemoryNamespaceSpec, names: Names) -> tuple[str, str]:
    """(secret name, key) holding the runtime's API tokens (TOKENS_ENV)."""
    ref = spec.api.token_secret_ref
    return (ref.name, ref.key) if ref else (names.token_secret, TOKEN_KEY)


def render_deployment(
    cr: MemoryNamespace,
    spec: MemoryNamespaceSpec,
    names: Names,
    config: OperatorConfig,
    config_hash: str,
) -> Deployment:
    token_secret, token_key = token_ref(spec, names)
    env: list[EnvVar] = [
        {
            "name": key,
            "valueFrom": {"secretKeyRef": {"name": names.credentials_secret, "key": key}},
        }
        for key in SECRET_ENV
    ]
    env.append(
        {
            "name": TOKENS_ENV,
            "valueFrom": {"secretKeyRef": {"name": token_secret, "key": token_key}},
        }
    )
    resources: ResourceRequirements = {}
    if spec.api.resources.requests:
        resources["requests"] = dict(spec.api.resources.requests)
    if spec.api.resources.limits:
        resources["limits"] = dict(spec.api.resources.limits)
    container: Container = {
        "name": "memory-api",
        "image": spec.api.image or config.runtime_image,
        "imagePullPolicy": config.image_pull_policy,
        "args": ["serve"],
        "ports": [
            {"name": "http", "containerPort": RUNTIME_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "envFrom": [{"configMapRef": {"name": names.objects}}],
        "env": env,
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 60,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if resources:
        container["resources"] = resources
    pod_labels = labels(cr, names)
    deployment: Deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(cr, names, names.objects),
        "spec": {
            "replicas": spec.api.replicas,
            "selector": {"matchLabels": selector_labels(cr)},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    # A changed ConfigMap or credential rolls the pods.
                    "annotations": {CONFIG_HASH_ANNOTATION: config_hash},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }
    return _with_hash(deployment)


def render_service(cr: MemoryNamespace, names: Names) -> Service:
    service: Service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(cr, names, names.objects),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(cr),
            "ports": [
                {"name": "http", "port": RUNTIME_PORT, "targetPort": "http", "protocol": "TCP"},
                {
                    "name": "metrics",
                    "port": METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }
    return _with_hash(service)


def render_network_policy(
    cr: MemoryNamespace, names: Names, config: OperatorConfig
) -> NetworkPolicy | None:
    """Ingress to the runtime pods: the API port from the tenant's own namespace (and
    the namespaces the operator configuration names), the metrics port only from the
    monitoring namespaces. None when the operator is configured without policies."""
    if not config.network_policy:
        return None
    api_from: list[NetworkPolicyPeer] = [{"podSelector": {}}]  # pods of the CR's namespace
    if config.api_ingress_namespaces is not None:
        selector = dict(sorted(config.api_ingress_namespaces.items()))
        api_from.append({"namespaceSelector": {"matchLabels": selector} if selector else {}})
    ingress: list[NetworkPolicyIngressRule] = [
        {"from": api_from, "ports": [{"protocol": "TCP", "port": RUNTIME_PORT}]}
    ]
    if config.metrics_namespaces is not None:
        selector = dict(sorted(config.metrics_namespaces.items()))
        ingress.append(
            {
                "from": [{"namespaceSelector": {"matchLabels": selector} if selector else {}}],
                "ports": [{"protocol": "TCP", "port": METRICS_PORT}],
            }
        )
    policy: NetworkPolicy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(cr, names, names.objects),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(cr)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }
    return _with_hash(policy)


def is_subset(desired: object, live: object) -> bool:
    """True when every field we render is present in `live` with the same value.
    The API server adds defaults (extra fields are fine); a changed or missing
    field is drift."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            k in live and is_subset(v, live[k]) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(desired) == len(live)
            and all(is_subset(d, x) for d, x in zip(desired, live, strict=True))
        )
    if isinstance(desired, int | float) and not isinstance(desired, bool):
        # Quantities may come back as strings ("1" for 1); compare textually.
        return desired == live or str(desired) == str(live)
    return desired == live


def needs_apply(desired: KubeObject, live: KubeObject | None) -> bool:
    """Apply when the object is missing, differs from what we render, or was
    last applied from different content (we may have dropped a field)."""
    if live is None:
        return True
    want = desired["metadata"]["annotations"][HASH_ANNOTATION]
    have = ((live.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION)
    return want != have or not is_subset(desired, live)


def deployment_available(live: Deployment | None, replicas: int) -> tuple[bool, str]:
    """(available, message) from a Deployment's status, as kubectl rollout status judges it."""
    if live is None:
        return False, "Deployment does not exist yet"
    status = live.get("status") or {}
    meta_gen = (live.get("metadata") or {}).get("generation", 0)
    if status.get("observedGeneration", 0) < meta_gen:
        return False, "Deployment controller has not observed the latest spec yet"
    if replicas == 0:
        return True, "scaled to zero replicas"
    available = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Available"), None
    )
    updated = status.get("updatedReplicas", 0)
    ready = status.get("availableReplicas", 0)
    if available is None or available.get("status") != "True" or ready < 1:
        return False, f"{ready}/{replicas} replicas available"
    if updated < replicas:
        return False, f"rollout in progress: {updated}/{replicas} replicas updated"
    return True, f"{ready}/{replicas} replicas available"


def render_peerings(peering_name: str, namespaces: tuple[str, ...]) -> list[KopfPeering]:
    """Kopf's peering objects: one cluster-wide, or one per watched namespace (Kopf
    peers where it watches). They must exist: without one, Kopf finds no peers and
    every replica would run."""
    if not namespaces:
        return [
            {
                "apiVersion": "kopf.dev/v1",
                "kind": "ClusterKopfPeering",
                "metadata": {"name": peering_name},
            }
        ]
    return [
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfPeering",
            "metadata": {"name": peering_name, "namespace": ns},
        }
        for ns in namespaces
    ]
