"""Operator configuration from the environment and mounted Secret files.

Every variable `SOMAFRACTAL_X` may instead be given as `SOMAFRACTAL_X_FILE`, a
path to a file holding the value (how the Helm chart mounts Secrets). Loaded
once at start and validated: a bad value stops the operator with a message that
names the variable, instead of failing later inside a reconcile.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from memory_contract.naming import DEFAULT_PREFIX
from memory_operator.naming import validate_prefix

ENV_PREFIX = "SOMAFRACTAL_"
DEFAULT_RUNTIME_IMAGE = "ghcr.io/somafractal/memory-runtime:0.1.0"


class ConfigError(ValueError):
    """The operator's configuration is invalid; the message names the variable."""


@dataclass(frozen=True)
class PostgresConfig:
    admin_dsn: str  # what the operator uses (superuser or a role with CREATEROLE)
    host: str  # what tenant pods use to reach the same server
    port: int
    database: str
    extensions_schema: str = "extensions"


@dataclass(frozen=True)
class RedisConfig:
    admin_url: str
    host: str
    port: int
    db: int = 0


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap: str  # for the operator's admin client
    runtime_bootstrap: str  # for tenant pods
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    admin_username: str = ""
    admin_password: str = ""

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL")

    def admin_client_config(self) -> dict[str, str]:
        """confluent-kafka AdminClient settings (what adapters.kafka.KafkaAdmin takes)."""
        conf = {"bootstrap.servers": self.bootstrap, "security.protocol": self.security_protocol}
        if self.sasl:
            conf.update(
                {
                    "sasl.mechanism": self.sasl_mechanism,
                    "sasl.username": self.admin_username,
                    "sasl.password": self.admin_password,
                }
            )
        return conf


@dataclass(frozen=True)
class QdrantConfig:
    url: str  # for the operator
    runtime_url: str  # for tenant pods
    api_key: str = ""
    # What tenant pods get: "jwt" (a collection-scoped token signed with the API
    # key; Qdrant needs service.jwt_rbac) or "api-key" (the key itself: only for
    # servers without JWT RBAC, and then tenants are not isolated in Qdrant).
    tenant_auth: str = "jwt"
    # False only when the administrator said SOMAFRACTAL_QDRANT_TENANT_ISOLATION=off:
    # then tenants get Qdrant access without per-tenant scoping (and their CRs say so).
    isolation_required: bool = True

    @property
    def isolated(self) -> bool:
        """Tenants get a collection-scoped token (not the admin key, not no key)."""
        return bool(self.api_key) and self.tenant_auth == "jwt"


@dataclass(frozen=True)
class OperatorConfig:
    postgres: PostgresConfig
    redis: RedisConfig | None = None
    kafka: KafkaConfig | None = None
    qdrant: QdrantConfig | None = None
    runtime_image: str = DEFAULT_RUNTIME_IMAGE
    image_pull_policy: str = "IfNotPresent"
    name_prefix: str = DEFAULT_PREFIX
    resync_seconds: float = 300.0
    watch_namespaces: tuple[str, ...] = ()  # empty: all namespaces
    metrics_port: int = 8080
    liveness_port: int = 8081
    log_format: str = "json"
    # What a CR author may choose (docs/THREAT-MODEL.md). Images: exact references or
    # prefixes ending in "*"; the runtime image is always allowed.
    runtime_image_allowlist: tuple[str, ...] = ()
    # URL prefixes spec.embedding.url must start with; empty: any http(s) URL.
    embedding_url_allowlist: tuple[str, ...] = ()
    # The runtime's PostgreSQL pool per pod (rendered as MEMORY_DATABASE_POOL_SIZE);
    # the tenant role's CONNECTION LIMIT is derived from it.
    runtime_db_pool_size: int = 8
    # A NetworkPolicy per tenant: API port from the tenant's namespace plus namespaces
    # matching api_ingress_namespaces ("*": all), metrics port from metrics_namespaces.
    network_policy: bool = True
    api_ingress_namespaces: dict[str, str] | None = None  # None: own namespace only
    metrics_namespaces: dict[str, str] | None = field(  # None: no one
        default_factory=lambda: {"kubernetes.io/metadata.name": "monitoring"}
    )
    # Administrator's hand-over of existing tenant data: (tenant, namespace) pairs.
    adoptions: frozenset[tuple[str, str]] = frozenset()
    # Two or more replicas: Kopf peering through this peering object ("" = one replica).
    peering_name: str = ""
    peering_priority: int | None = None  # None: random at start (distinct per replica)
    peering_lifetime: int = 15  # seconds a silent peer counts as alive (takeover time)
    workers: int = 8  # reconciles running at once
    backend_concurrency: int = 4  # calls to each backend at once (PostgreSQL, Kafka, ...)


def _read(env: Mapping[str, str], name: str) -> str | None:
    key = ENV_PREFIX + name
    if env.get(key):
        return env[key]
    path = env.get(key + "_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as err:
            raise ConfigError(f"{key}_FILE: cannot read {path}: {err.strerror}") from err
    return None


def _require(env: Mapping[str, str], name: str) -> str:
    value = _read(env, name)
    if not value:
        raise ConfigError(f"{ENV_PREFIX}{name} (or {ENV_PREFIX}{name}_FILE) is required")
    return value


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = _read(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name}={raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{ENV_PREFIX}{name}={value} must be between {lo} and {hi}")
    return value


def _host_port(url: str, var: str, default_port: int) -> tuple[str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port or default_port
    except ValueError as err:
        raise ConfigError(f"{ENV_PREFIX}{var}: {err}") from None
    if not parts.hostname:
        raise ConfigError(f"{ENV_PREFIX}{var} must include a host, got {url!r}")
    return parts.hostname, port


def _postgres(env: Mapping[str, str]) -> PostgresConfig:
    dsn = _require(env, "POSTGRES_ADMIN_DSN")
    if not dsn.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{ENV_PREFIX}POSTGRES_ADMIN_DSN must be a postgresql:// URL")
    host, port = _host_port(dsn, "POSTGRES_ADMIN_DSN", 5432)
    database = urlsplit(dsn).path.lstrip("/") or "postgres"
    return PostgresConfig(
        admin_dsn=dsn,
        host=_read(env, "POSTGRES_RUNTIME_HOST") or host,
        port=_int(env, "POSTGRES_RUNTIME_PORT", port, 1, 65535),
        database=database,
        extensions_schema=_read(env, "POSTGRES_EXTENSIONS_SCHEMA") or "extensions",
    )


def _redis(env: Mapping[str, str]) -> RedisConfig | None:
    url = _read(env, "REDIS_ADMIN_URL")
    if not url:
        return None
    if not url.startswith(("redis://", "rediss://")):
        raise ConfigError(f"{ENV_PREFIX}REDIS_ADMIN_URL must be a redis:// URL")
    host, port = _host_port(url, "REDIS_ADMIN_URL", 6379)
    return RedisConfig(
        admin_url=url,
        host=_read(env, "REDIS_RUNTIME_HOST") or host,
        port=_int(env, "REDIS_RUNTIME_PORT", port, 1, 65535),
    )


def _kafka(env: Mapping[str, str]) -> KafkaConfig | None:
    bootstrap = _read(env, "KAFKA_BOOTSTRAP")
    if not bootstrap:
        return None
    protocol = (_read(env, "KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").upper()
    if protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
        raise ConfigError(f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL={protocol!r} is not supported")
    mechanism = (_read(env, "KAFKA_SASL_MECHANISM") or "").upper()
    username = password = ""
    if protocol.startswith("SASL"):
        if mechanism not in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
            # Tenant users are SCRAM credentials the operator creates; PLAIN users can't be.
            raise ConfigError(
                f"{ENV_PREFIX}KAFKA_SASL_MECHANISM must be SCRAM-SHA-512 or SCRAM-SHA-256"
                f" with {protocol}"
            )
        username = _require(env, "KAFKA_ADMIN_USERNAME")
        password = _require(env, "KAFKA_ADMIN_PASSWORD")
    return KafkaConfig(
        bootstrap=bootstrap,
        runtime_bootstrap=_read(env, "KAFKA_RUNTIME_BOOTSTRAP") or bootstrap,
        security_protocol=protocol,
        sasl_mechanism=mechanism if protocol.startswith("SASL") else "",
        admin_username=username,
        admin_password=password,
    )


def _qdrant(env: Mapping[str, str]) -> QdrantConfig | None:
    url = _read(env, "QDRANT_URL")
    if not url:
        return None
    if not url.startswith(("http://", "https://")) and url != ":memory:":
        raise ConfigError(f"{ENV_PREFIX}QDRANT_URL must be an http(s) URL")
    tenant_auth = _read(env, "QDRANT_TENANT_AUTH") or "jwt"
    if tenant_auth not in ("jwt", "api-key"):
        raise ConfigError(f"{ENV_PREFIX}QDRANT_TENANT_AUTH={tenant_auth!r} must be jwt or api-key")
    isolation = _read(env, "QDRANT_TENANT_ISOLATION") or "required"
    if isolation not in ("required", "off"):
        raise ConfigError(
            f"{ENV_PREFIX}QDRANT_TENANT_ISOLATION={isolation!r} must be required or off"
        )
    return QdrantConfig(
        url=url,
        runtime_url=_read(env, "QDRANT_RUNTIME_URL") or url,
        api_key=_read(env, "QDRANT_API_KEY") or "",
        tenant_auth=tenant_auth,
        isolation_required=isolation == "required",
    )


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in (_read(env, name) or "").split(",") if v.strip())


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (_read(env, name) or "").lower()
    if not raw:
        return default
    if raw not in ("true", "false"):
        raise ConfigError(f"{ENV_PREFIX}{name}={raw!r} must be true or false")
    return raw == "true"


def _selector(env: Mapping[str, str], name: str, default: str) -> dict[str, str] | None:
    """A namespace label selector "k=v,k2=v2"; "*" is every namespace ({}), "none" no
    namespace (None)."""
    raw = _read(env, name)
    raw = default if raw is None else raw.strip()
    if not raw or raw == "none":
        return None
    if raw == "*":
        return {}
    out: dict[str, str] = {}
    for item in raw.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{ENV_PREFIX}{name}: {item!r} is not a label key=value pair")
        out[key.strip()] = value.strip()
    return out


def _embedding_prefixes(env: Mapping[str, str]) -> tuple[str, ...]:
    prefixes = _list(env, "EMBEDDING_URL_ALLOWLIST")
    for prefix in prefixes:
        parts = urlsplit(prefix)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"{ENV_PREFIX}EMBEDDING_URL_ALLOWLIST: {prefix!r} is not an http(s) URL prefix"
            )
    return prefixes


def _adoptions(env: Mapping[str, str]) -> frozenset[tuple[str, str]]:
    """SOMAFRACTAL_ADOPT=tenant=namespace,...: that namespace may take over the tenant's
    existing data whoever it is recorded to (docs/OPERATOR.md, ownership)."""
    out: set[tuple[str, str]] = set()
    for item in (_read(env, "ADOPT") or "").split(","):
        if not item.strip():
            continue
        tenant, sep, namespace = (part.strip() for part in item.partition("="))
        if not sep or not tenant or not namespace:
            raise ConfigError(f"{ENV_PREFIX}ADOPT: {item.strip()!r} is not tenant=namespace")
        out.add((tenant, namespace))
    return frozenset(out)


def load_config(env: Mapping[str, str] | None = None) -> OperatorConfig:
    """Build and validate the configuration; raises ConfigError naming the bad variable."""
    env = os.environ if env is None else env
    prefix = _read(env, "NAME_PREFIX") or DEFAULT_PREFIX
    try:
        validate_prefix(prefix)
    except ValueError as err:
        raise ConfigError(f"{ENV_PREFIX}NAME_PREFIX: {err}") from None
    pull = _read(env, "IMAGE_PULL_POLICY") or "IfNotPresent"
    if pull not in ("Always", "IfNotPresent", "Never"):
        raise ConfigError(
            f"{ENV_PREFIX}IMAGE_PULL_POLICY={pull!r} must be Always/IfNotPresent/Never"
        )
    log_format = _read(env, "LOG_FORMAT") or "json"
    if log_format not in ("json", "plain"):
        raise ConfigError(f"{ENV_PREFIX}LOG_FORMAT={log_format!r} must be json or plain")
    namespaces = tuple(
        ns.strip() for ns in (_read(env, "WATCH_NAMESPACES") or "").split(",") if ns.strip()
    )
    return OperatorConfig(
        postgres=_postgres(env),
        redis=_redis(env),
        kafka=_kafka(env),
        qdrant=_qdrant(env),
        runtime_image=_read(env, "RUNTIME_IMAGE") or DEFAULT_RUNTIME_IMAGE,
        image_pull_policy=pull,
        name_prefix=prefix,
        resync_seconds=float(_int(env, "RESYNC_SECONDS", 300, 5, 86400)),
        watch_namespaces=namespaces,
        metrics_port=_int(env, "METRICS_PORT", 8080, 1, 65535),
        liveness_port=_int(env, "LIVENESS_PORT", 8081, 1, 65535),
        log_format=log_format,
        runtime_image_allowlist=_list(env, "RUNTIME_IMAGE_ALLOWLIST"),
        embedding_url_allowlist=_embedding_prefixes(env),
        runtime_db_pool_size=_int(env, "RUNTIME_DB_POOL_SIZE", 8, 1, 64),
        network_policy=_bool(env, "NETWORK_POLICY", True),
        api_ingress_namespaces=_selector(env, "API_INGRESS_NAMESPACES", ""),
        metrics_namespaces=_selector(
            env, "METRICS_NAMESPACES", "kubernetes.io/metadata.name=monitoring"
        ),
        adoptions=_adoptions(env),
        peering_name=_read(env, "PEERING_NAME") or "",
        peering_priority=(
            _int(env, "PEERING_PRIORITY", 0, 1, 2**31 - 1)
            if _read(env, "PEERING_PRIORITY")
            else None
        ),
        peering_lifetime=_int(env, "PEERING_LIFETIME", 15, 5, 300),
        workers=_int(env, "WORKERS", 8, 1, 64),
        backend_concurrency=_int(env, "BACKEND_CONCURRENCY", 4, 1, 64),
    )
