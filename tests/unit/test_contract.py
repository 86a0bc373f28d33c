"""memory_contract: the one place the operator and the runtime agree on names,
environment, defaults and bounds. The rendered environment is checked against
the runtime's Settings model itself, the CRD's numbers against the contract's."""

from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from memory_contract import limits as lim
from memory_contract.env import ENV_PREFIX, field_name
from memory_contract.naming import TENANT_MAX_CHARS, TENANT_PATTERN
from memory_operator import manifests as m
from memory_operator.config import OperatorConfig, load_config
from memory_operator.naming import derive_names
from memory_operator.spec import MemoryNamespaceSpec, parse_spec
from memory_runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "memorynamespaces.memory.somafractal.io.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
SPEC_SCHEMA = SCHEMA["properties"]["spec"]["properties"]

BASE_ENV = {"SOMAFRACTAL_POSTGRES_ADMIN_DSN": "postgresql://admin:pw@127.0.0.1:5432/memory"}
FULL_ENV = {
    **BASE_ENV,
    "SOMAFRACTAL_POSTGRES_RUNTIME_HOST": "pg.db.svc",
    "SOMAFRACTAL_REDIS_ADMIN_URL": "redis://default:x@127.0.0.1:6379/0",
    "SOMAFRACTAL_KAFKA_BOOTSTRAP": "127.0.0.1:9093",
    "SOMAFRACTAL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "SOMAFRACTAL_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "SOMAFRACTAL_KAFKA_ADMIN_USERNAME": "admin",
    "SOMAFRACTAL_KAFKA_ADMIN_PASSWORD": "pw",
    "SOMAFRACTAL_QDRANT_URL": "http://qdrant:6333",
    "SOMAFRACTAL_QDRANT_API_KEY": "qdrant-admin-key",
}


def test_the_contract_needs_only_the_standard_library() -> None:
    for source in (ROOT / "memory_contract").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top == "memory_contract" or top in sys.stdlib_module_names, (source, name)


@pytest.mark.parametrize("dockerfile", ["operator/Dockerfile", "runtime/Dockerfile"])
def test_both_images_ship_the_contract(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    assert re.search(r"^COPY memory_contract /app/memory_contract$", text, re.M)
    # the build context holds it, and the image's cache key changes when it does
    assert "!memory_contract/" in (ROOT / ".dockerignore").read_text().splitlines()
    build = (ROOT / "scripts" / "build-images.sh").read_text()
    assert len(re.findall(r"files_hash [^\n]*memory_contract", build)) == 2


def test_the_operator_spells_no_runtime_variable_itself() -> None:
    # each name comes from memory_contract.env (env_name of a Settings field)
    for source in (ROOT / "operator" / "memory_operator").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not node.value.startswith(ENV_PREFIX), (source.name, node.value)


def _resolved_env(spec: MemoryNamespaceSpec, config: OperatorConfig) -> dict[str, str]:
    """The runtime container's environment as the kubelet builds it from what the
    operator renders: the ConfigMap (envFrom) plus each Secret reference."""
    cr = {"metadata": {"name": "acme", "namespace": "tenants", "uid": "u-1"}}
    names = derive_names(config.name_prefix, spec.tenant, "acme", "tenants")
    passwords = {k: m.new_secret() for k in m.PASSWORD_KEYS}
    secrets = {
        names.credentials_secret: m.credentials_data(spec, names, config, passwords),
        m.token_ref(spec, names)[0]: {m.token_ref(spec, names)[1]: m.new_secret()},
    }
    configmap = m.runtime_config(spec, names, config)
    container = m.render_deployment(cr, spec, names, config, "h")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["envFrom"] == [{"configMapRef": {"name": names.objects}}]
    # the credentials Secret holds the variables the Deployment references, no more
    held = set(secrets[names.credentials_secret]) - set(m.PASSWORD_KEYS)
    refs = [entry["valueFrom"]["secretKeyRef"] for entry in container["env"]]
    assert held == {r["key"] for r in refs if r["name"] == names.credentials_secret}
    env = dict(configmap)
    for entry in container["env"]:
        ref = entry["valueFrom"]["secretKeyRef"]
        assert entry["name"] not in env, f"{entry['name']} is both in the ConfigMap and a Secret"
        env[entry["name"]] = secrets[ref["name"]][ref["key"]]
    return env


CASES = {
    "qdrant, events over SASL": (FULL_ENV, {}),
    "postgres, no events": (
        BASE_ENV,
        {
            "vectors": {
                "backend": "postgres",
                "dimensions": 1536,
                "hnsw": {"m": 32, "efConstruct": 64},
            },
            "embedding": {"provider": "http", "url": "http://embed:8080"},
            "decay": {"halfLifeHours": 12.5, "pruneBelow": 0.2},
            "api": {"rateLimit": {"requestsPerMinute": 5, "burst": 2}, "maxBodyBytes": 2048},
            "storage": {"maxMemories": 10},
        },
    ),
    "qdrant, events off by spec": (
        FULL_ENV,
        {"tenant": "team-b", "events": {"enabled": False}, "api": {"mcp": {"enabled": False}}},
    ),
}


@pytest.mark.parametrize(("operator_env", "raw_spec"), CASES.values(), ids=CASES.keys())
def test_the_rendered_environment_is_what_the_runtime_settings_read(
    operator_env: dict[str, str], raw_spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(operator_env)
    spec = parse_spec(raw_spec, "acme")
    env = _resolved_env(spec, config)
    # every variable the operator renders is a field of the runtime's Settings ...
    unread = {var for var in env if field_name(var) not in Settings.model_fields}
    assert not unread, f"the runtime reads no {sorted(unread)}"
    # ... and the runtime accepts every value (its model validators included)
    for var in [v for v in os.environ if v.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    settings = Settings()
    for var, value in env.items():
        parsed = getattr(settings, field_name(var))
        if isinstance(parsed, bool):
            assert value == str(parsed).lower(), var
        elif isinstance(parsed, int | float):
            assert float(value) == parsed, var
        else:
            assert value == parsed, var
    # what the operator created is what the runtime addresses
    names = derive_names(config.name_prefix, spec.tenant, "acme", "tenants")
    assert settings.schema_name == names.schema
    assert settings.redis_key_prefix == names.key_prefix
    if spec.vectors.backend == "qdrant":
        assert settings.collection_name == names.collection
    assert settings.vector_dimensions == spec.vectors.dimensions
    assert settings.vector_hnsw_m == spec.vectors.hnsw.m
    assert settings.vector_hnsw_ef_construct == spec.vectors.hnsw.ef_construct
    assert settings.rate_limit_burst == spec.api.rate_limit.burst
    assert settings.max_body_bytes == spec.api.max_body_bytes


def test_the_runtime_refuses_dimensions_its_backend_cannot_index(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MEMORY_VECTOR_BACKEND", "postgres")
    monkeypatch.setenv("MEMORY_VECTOR_DIMENSIONS", str(lim.MAX_DIMENSIONS_BY_BACKEND["postgres"]))
    assert Settings().vector_dimensions == 2000
    monkeypatch.setenv("MEMORY_VECTOR_DIMENSIONS", "2001")
    with pytest.raises(ValueError, match=r"at most 2000 with vectors\.backend postgres"):
        Settings()


def test_backends_share_one_dimension_bound_with_the_api() -> None:
    assert max(lim.MAX_DIMENSIONS_BY_BACKEND.values()) == lim.MAX_DIMENSIONS
    assert set(lim.MAX_DIMENSIONS_BY_BACKEND) == set(lim.BACKENDS)
    assert lim.dimensions_problem("qdrant", lim.MAX_DIMENSIONS) is None
    assert lim.dimensions_problem("qdrant", lim.MAX_DIMENSIONS + 1)
    assert "use vectors.backend qdrant" in (lim.dimensions_problem("postgres", 2001) or "")


def test_the_crd_says_what_the_contract_says() -> None:
    vectors = SPEC_SCHEMA["vectors"]
    props = vectors["properties"]
    assert props["dimensions"]["maximum"] == lim.MAX_DIMENSIONS
    assert props["dimensions"]["default"] == lim.DEFAULT_DIMENSIONS
    assert props["distance"]["enum"] == list(lim.DISTANCES)
    assert props["distance"]["default"] == lim.DEFAULT_DISTANCE
    assert set(props["backend"]["enum"]) == set(lim.BACKENDS)
    provider = SPEC_SCHEMA["embedding"]["properties"]["provider"]["enum"]
    assert set(provider) == set(lim.EMBEDDING_PROVIDERS)
    rules = " ".join(rule["rule"] for rule in vectors["x-kubernetes-validations"])
    assert f"self.dimensions <= {lim.MAX_DIMENSIONS_BY_BACKEND['postgres']}" in rules
    hnsw = props["hnsw"]["properties"]
    assert (hnsw["m"]["minimum"], hnsw["m"]["maximum"], hnsw["m"]["default"]) == (
        lim.HNSW_M_MIN,
        lim.HNSW_M_MAX,
        lim.HNSW_M_DEFAULT,
    )
    ef = hnsw["efConstruct"]
    assert (ef["minimum"], ef["maximum"], ef["default"]) == (
        lim.HNSW_EF_CONSTRUCT_MIN,
        lim.HNSW_EF_CONSTRUCT_MAX,
        lim.HNSW_EF_CONSTRUCT_DEFAULT,
    )
    api = SPEC_SCHEMA["api"]["properties"]
    rate = api["rateLimit"]["properties"]
    assert rate["requestsPerMinute"]["default"] == lim.DEFAULT_RATE_LIMIT_PER_MINUTE
    assert rate["burst"]["default"] == lim.DEFAULT_RATE_LIMIT_BURST
    body = api["maxBodyBytes"]
    assert (body["minimum"], body["maximum"], body["default"]) == (
        lim.MIN_MAX_BODY_BYTES,
        lim.MAX_MAX_BODY_BYTES,
        lim.DEFAULT_MAX_BODY_BYTES,
    )
    decay = SPEC_SCHEMA["decay"]["properties"]
    assert decay["halfLifeHours"]["default"] == lim.DEFAULT_DECAY_HALF_LIFE_HOURS
    assert decay["pruneBelow"]["default"] == lim.DEFAULT_DECAY_PRUNE_BELOW
    assert SPEC_SCHEMA["embedding"]["properties"]["model"]["default"] == lim.DEFAULT_EMBEDDING_MODEL
    spec_rules = " ".join(
        rule["rule"] for rule in SCHEMA["properties"]["spec"]["x-kubernetes-validations"]
    )
    assert len(lim.LOCAL_MODEL_DIMENSIONS) == 1  # the rule names the one bundled model
    for model, dimensions in lim.LOCAL_MODEL_DIMENSIONS.items():
        assert f"self.embedding.model : '{model}') == '{model}'" in spec_rules
        assert f"self.vectors.dimensions : {dimensions}) == {dimensions}" in spec_rules
    tenant = SPEC_SCHEMA["tenant"]
    assert tenant["pattern"] == TENANT_PATTERN.pattern
    assert tenant["maxLength"] == TENANT_MAX_CHARS
    top_rules = " ".join(rule["rule"] for rule in SCHEMA["x-kubernetes-validations"])
    assert f"matches('{TENANT_PATTERN.pattern}')" in top_rules
