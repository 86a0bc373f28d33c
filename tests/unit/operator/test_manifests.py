"""manifests.py: objects for server-side apply, the runtime environment contract."""

from __future__ import annotations

import base64
import copy

from memory_contract.env import env_name, field_name
from memory_operator import manifests as m
from memory_operator.config import load_config
from memory_operator.naming import derive_names
from memory_operator.spec import parse_spec
from memory_runtime.settings import Settings

CR = {
    "apiVersion": m.API_VERSION,
    "kind": m.KIND,
    "metadata": {"name": "acme", "namespace": "tenants", "uid": "u-1", "generation": 1},
    "spec": {},
}
CFG = load_config(
    {
        "SOMAFRACTAL_POSTGRES_ADMIN_DSN": "postgresql://admin:pw@127.0.0.1:5432/memory",
        "SOMAFRACTAL_POSTGRES_RUNTIME_HOST": "pg.db.svc",
        "SOMAFRACTAL_REDIS_ADMIN_URL": "redis://default:x@127.0.0.1:6379/0",
        "SOMAFRACTAL_KAFKA_BOOTSTRAP": "127.0.0.1:9093",
        "SOMAFRACTAL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "SOMAFRACTAL_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "SOMAFRACTAL_KAFKA_ADMIN_USERNAME": "admin",
        "SOMAFRACTAL_KAFKA_ADMIN_PASSWORD": "pw",
        "SOMAFRACTAL_QDRANT_URL": "http://qdrant:6333",
        "SOMAFRACTAL_RUNTIME_IMAGE": "registry.local/memory:1",
    }
)
SPEC = parse_spec({}, "acme")
NAMES = derive_names("mem", "acme", "acme", "tenants")
PASSWORDS = {k: f"pw-{k}" for k in m.PASSWORD_KEYS}


def test_deployment_env_covers_the_whole_contract() -> None:
    config = m.runtime_config(SPEC, NAMES, CFG)
    dep = m.render_deployment(CR, SPEC, NAMES, CFG, "h")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    secret_vars = {e["name"] for e in container["env"]}
    # every variable is one the runtime reads (values: tests/unit/test_contract.py)
    assert {field_name(v) for v in set(config) | secret_vars} <= set(Settings.model_fields)
    # what the runtime keeps out of its repr is a secret: it comes from a Secret
    hidden = {env_name(f) for f, info in Settings.model_fields.items() if not info.repr}
    assert hidden <= secret_vars
    assert not set(config) & secret_vars  # nothing secret in the ConfigMap
    assert container["envFrom"] == [{"configMapRef": {"name": "acme-memory"}}]


def test_runtime_config_values() -> None:
    config = m.runtime_config(SPEC, NAMES, CFG)
    assert config["MEMORY_TENANT"] == "acme"
    assert config["MEMORY_DATABASE_SCHEMA"] == "mem_acme"
    assert config["MEMORY_QDRANT_COLLECTION"] == "mem_acme"
    assert config["MEMORY_KAFKA_TOPIC"] == "mem.acme.events"
    assert config["MEMORY_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert config["MEMORY_REDIS_PREFIX"] == "mem:acme"
    assert config["MEMORY_DECAY_HALF_LIFE_HOURS"] == "720"
    assert config["MEMORY_DECAY_PRUNE_BELOW"] == "0.05"
    assert config["MEMORY_EVENTS_ENABLED"] == "true"


def test_mcp_endpoint_is_on_by_default_and_switchable() -> None:
    assert m.runtime_config(SPEC, NAMES, CFG)["MEMORY_MCP_ENABLED"] == "true"
    off = parse_spec({"api": {"mcp": {"enabled": False}}}, "acme")
    assert m.runtime_config(off, NAMES, CFG)["MEMORY_MCP_ENABLED"] == "false"


def test_events_off_without_kafka_and_pgvector_has_no_qdrant() -> None:
    cfg = load_config({"SOMAFRACTAL_POSTGRES_ADMIN_DSN": "postgresql://a:b@h:1/d"})
    spec = parse_spec({"vectors": {"backend": "postgres"}}, "acme")
    config = m.runtime_config(spec, NAMES, cfg)
    assert config["MEMORY_EVENTS_ENABLED"] == "false"
    assert config["MEMORY_KAFKA_TOPIC"] == ""
    assert config["MEMORY_QDRANT_URL"] == ""
    creds = m.credentials_data(spec, NAMES, cfg, PASSWORDS)
    assert creds["MEMORY_REDIS_URL"] == ""
    assert creds["MEMORY_KAFKA_USERNAME"] == ""


def test_credentials_use_tenant_role_and_runtime_host() -> None:
    creds = m.credentials_data(SPEC, NAMES, CFG, {**PASSWORDS, m.PG_PASSWORD_KEY: "a/b@c"})
    assert creds["MEMORY_DATABASE_URL"] == "postgresql://mem_acme:a%2Fb%40c@pg.db.svc:5432/memory"
    assert creds["MEMORY_REDIS_URL"].startswith("redis://mem-acme:pw-redis-password@127.0.0.1")
    assert creds["MEMORY_KAFKA_USERNAME"] == "mem-acme"
    assert creds["MEMORY_KAFKA_PASSWORD"] == "pw-kafka-password"


def test_owned_objects_and_ssa_shape() -> None:
    secret = m.render_secret(CR, NAMES, NAMES.credentials_secret, {"k": "v"})
    assert base64.b64decode(secret["data"]["k"]) == b"v"
    for obj in (
        secret,
        m.render_configmap(CR, NAMES, {"A": "1"}),
        m.render_deployment(CR, SPEC, NAMES, CFG, "h"),
        m.render_service(CR, NAMES),
    ):
        meta = obj["metadata"]
        assert meta["namespace"] == "tenants"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "memory.somafractal.io/v1alpha1",
                "kind": "MemoryNamespace",
                "name": "acme",
                "uid": "u-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"]["memory.somafractal.io/tenant"] == "acme"
        assert m.HASH_ANNOTATION in meta["annotations"]


def test_deployment_details() -> None:
    spec = parse_spec(
        {"api": {"replicas": 3, "image": "mine:2", "resources": {"limits": {"cpu": "1"}}}}, "acme"
    )
    dep = m.render_deployment(CR, spec, NAMES, CFG, "abc")
    pod = dep["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert dep["spec"]["replicas"] == 3
    assert container["image"] == "mine:2"
    assert container["resources"] == {"limits": {"cpu": "1"}}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert [p["containerPort"] for p in container["ports"]] == [9595, 9596]
    assert pod["metadata"]["annotations"][m.CONFIG_HASH_ANNOTATION] == "abc"
    default = m.render_deployment(CR, SPEC, NAMES, CFG, "abc")
    assert (
        default["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/memory:1"
    )


def test_token_secret_ref_is_used() -> None:
    spec = parse_spec({"api": {"tokenSecretRef": {"name": "own", "key": "tokens"}}}, "acme")
    dep = m.render_deployment(CR, spec, NAMES, CFG, "h")
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MEMORY_API_TOKENS"]["valueFrom"]["secretKeyRef"] == {"name": "own", "key": "tokens"}


def test_needs_apply_detects_missing_drift_and_dropped_fields() -> None:
    desired = m.render_service(CR, NAMES)
    assert m.needs_apply(desired, None)
    live = copy.deepcopy(desired)
    live["spec"]["clusterIP"] = "10.0.0.7"  # server defaults are fine
    live["metadata"]["resourceVersion"] = "42"
    assert not m.needs_apply(desired, live)
    drifted = copy.deepcopy(live)
    drifted["spec"]["ports"][0]["port"] = 80
    assert m.needs_apply(desired, drifted)
    stale = copy.deepcopy(live)
    stale["metadata"]["annotations"][m.HASH_ANNOTATION] = "old"
    assert m.needs_apply(desired, stale)


def test_subset_compares_quantities_textually() -> None:
    assert m.is_subset({"replicas": 1}, {"replicas": 1, "x": 2})
    assert m.is_subset({"cpu": 1}, {"cpu": "1"})
    assert not m.is_subset({"a": [1, 2]}, {"a": [1]})
    assert not m.is_subset({"a": True}, {"a": "True"})


def test_deployment_available() -> None:
    dep = {"metadata": {"generation": 2}, "status": {"observedGeneration": 1}}
    assert m.deployment_available(dep, 1)[0] is False
    dep["status"] = {
        "observedGeneration": 2,
        "updatedReplicas": 1,
        "availableReplicas": 1,
        "conditions": [{"type": "Available", "status": "True"}],
    }
    assert m.deployment_available(dep, 1) == (True, "1/1 replicas available")
    assert m.deployment_available(dep, 2)[0] is False
    assert m.deployment_available(None, 1)[0] is False


def test_rendering_is_deterministic() -> None:
    a = m.render_deployment(CR, SPEC, NAMES, CFG, "h")
    b = m.render_deployment(CR, SPEC, NAMES, CFG, "h")
    assert a == b
    assert m.new_secret() != m.new_secret()


def _b64d(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_qdrant_tenant_gets_collection_scoped_jwt_not_the_admin_key() -> None:
    import hashlib
    import hmac
    import json

    env = {
        "SOMAFRACTAL_POSTGRES_ADMIN_DSN": "postgresql://a:b@h:1/d",
        "SOMAFRACTAL_QDRANT_URL": "http://q:6333",
        "SOMAFRACTAL_QDRANT_API_KEY": "admin-key",
    }
    creds = m.credentials_data(SPEC, NAMES, load_config(env), PASSWORDS)
    token = creds["MEMORY_QDRANT_API_KEY"]
    assert "admin-key" not in token
    header, payload, signature = token.split(".")
    assert json.loads(_b64d(header)) == {"alg": "HS256", "typ": "JWT"}
    assert json.loads(_b64d(payload)) == {"access": [{"collection": "mem_acme", "access": "rw"}]}
    expected = hmac.new(b"admin-key", f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert _b64d(signature) == expected
    # Deterministic, so an unchanged tenant's Secret is never rewritten.
    assert m.credentials_data(SPEC, NAMES, load_config(env), PASSWORDS) == creds
    plain = load_config({**env, "SOMAFRACTAL_QDRANT_TENANT_AUTH": "api-key"})
    assert m.credentials_data(SPEC, NAMES, plain, PASSWORDS)["MEMORY_QDRANT_API_KEY"] == "admin-key"
