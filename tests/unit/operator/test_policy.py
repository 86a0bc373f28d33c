"""policy.py and its configuration: what a CR author may choose (issue 14 items 2, 3, 13),
the connection limit (item 5) and the NetworkPolicy (item 14). Pure."""

from __future__ import annotations

from typing import Any

import pytest

from memory_operator import manifests as m
from memory_operator.config import ConfigError, OperatorConfig, load_config
from memory_operator.naming import derive_names
from memory_operator.policy import (
    TOKEN_SECRET_LABEL,
    check_policy,
    embedding_url_allowed,
    image_allowed,
    qdrant_isolation_gap,
    token_secret_opted_in,
)
from memory_operator.spec import InvalidSpecError, parse_spec

BASE = {
    "SOMAFRACTAL_POSTGRES_ADMIN_DSN": "postgresql://admin:pw@127.0.0.1:5432/memory",
    "SOMAFRACTAL_RUNTIME_IMAGE": "registry.test/memory-runtime:1",
}
CR = {"metadata": {"name": "acme", "namespace": "tenants", "uid": "u-1"}}
NAMES = derive_names("mem", "acme", "acme", "tenants")


def config(**extra: str) -> OperatorConfig:
    return load_config({**BASE, **{f"SOMAFRACTAL_{k}": v for k, v in extra.items()}})


def spec(raw: dict[str, Any]) -> Any:
    return parse_spec({"vectors": {"backend": "postgres"}, **raw}, "acme")


def test_only_the_runtime_image_by_default() -> None:
    cfg = config()
    assert image_allowed("registry.test/memory-runtime:1", cfg)
    assert not image_allowed("registry.test/memory-runtime:2", cfg)
    with pytest.raises(InvalidSpecError) as err:
        check_policy(spec({"api": {"image": "evil.test/x:1"}}), cfg)
    assert err.value.reason == "ImageNotAllowed"
    check_policy(spec({}), cfg)  # no image: the runtime image


def test_image_allow_list_exact_and_prefix() -> None:
    cfg = config(RUNTIME_IMAGE_ALLOWLIST="registry.test/approved/*, mirror.test/rt:3")
    assert image_allowed("registry.test/approved/rt:9", cfg)
    assert image_allowed("mirror.test/rt:3", cfg)
    assert not image_allowed("mirror.test/rt:4", cfg)
    assert not image_allowed("registry.test/approvedx/rt:1", cfg)
    assert not image_allowed("registry.test/other/rt:1", cfg)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://embed.test/v1/embeddings", True),
        ("https://embed.test/v1", True),
        ("https://embed.test/v10/embeddings", False),
        ("https://embed.test.evil.test/v1/embeddings", False),
        ("https://user@embed.test/v1/embeddings", False),
        ("http://embed.test/v1/embeddings", False),
        ("https://embed.test:8443/v1/embeddings", False),
        ("http://10.0.0.1/v1/embeddings", False),
        ("https://embed.test:bad/v1", False),
    ],
)
def test_embedding_url_prefixes_are_compared_parsed(url: str, allowed: bool) -> None:
    cfg = config(EMBEDDING_URL_ALLOWLIST="https://embed.test/v1/")
    assert embedding_url_allowed(url, cfg) is allowed


def test_no_embedding_allow_list_allows_any_url_and_bad_entries_are_config_errors() -> None:
    assert embedding_url_allowed("http://anything.internal/x", config())
    with pytest.raises(ConfigError, match="EMBEDDING_URL_ALLOWLIST"):
        config(EMBEDDING_URL_ALLOWLIST="embed.test/v1")


def test_qdrant_needs_scoping_unless_isolation_is_off() -> None:
    qdrant = spec({"vectors": {"backend": "qdrant"}})
    for cfg, gap in (
        (config(QDRANT_URL="http://q:6333"), "no SOMAFRACTAL_QDRANT_API_KEY"),
        (config(QDRANT_URL="http://q:6333", QDRANT_API_KEY="k", QDRANT_TENANT_AUTH="api-key"),
         "admin key"),
    ):  # fmt: skip
        assert gap in qdrant_isolation_gap(cfg)
        with pytest.raises(InvalidSpecError) as err:
            check_policy(qdrant, cfg)
        assert err.value.reason == "QdrantNotIsolated"
        check_policy(spec({}), cfg)  # pgvector tenants are unaffected
    off = config(QDRANT_URL="http://q:6333", QDRANT_TENANT_ISOLATION="off")
    check_policy(qdrant, off)
    assert qdrant_isolation_gap(off)
    scoped = config(QDRANT_URL="http://q:6333", QDRANT_API_KEY="k")
    check_policy(qdrant, scoped)
    assert qdrant_isolation_gap(scoped) == ""
    with pytest.raises(ConfigError, match="QDRANT_TENANT_ISOLATION"):
        config(QDRANT_URL="http://q:6333", QDRANT_TENANT_ISOLATION="maybe")


def test_token_secret_opt_in_names_the_cr() -> None:
    assert token_secret_opted_in({"metadata": {"labels": {TOKEN_SECRET_LABEL: "acme"}}}, "acme")
    assert not token_secret_opted_in({"metadata": {"labels": {TOKEN_SECRET_LABEL: "x"}}}, "acme")
    assert not token_secret_opted_in({"metadata": {}}, "acme")


def test_connection_limit_covers_a_rollout() -> None:
    assert m.connection_limit(1, 8) == 2 * 9  # one pod plus one surge pod
    assert m.connection_limit(4, 8) == 5 * 9
    assert m.connection_limit(5, 8) == 7 * 9  # surge rounds up
    assert m.connection_limit(0, 8) == 9
    assert (
        m.runtime_config(spec({}), NAMES, config(RUNTIME_DB_POOL_SIZE="3"))[
            "MEMORY_DATABASE_POOL_SIZE"
        ]
        == "3"
    )


def test_network_policy_rendering() -> None:
    policy = m.render_network_policy(CR, NAMES, config())
    assert policy is not None
    assert policy["spec"]["podSelector"] == {"matchLabels": m.selector_labels(CR)}
    api, metrics = policy["spec"]["ingress"]
    assert api == {"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": 9595}]}
    assert metrics["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    assert metrics["ports"] == [{"protocol": "TCP", "port": 9596}]
    # "*" opens the API to every namespace; an empty metrics selector closes metrics.
    wide = m.render_network_policy(
        CR, NAMES, config(API_INGRESS_NAMESPACES="*", METRICS_NAMESPACES="none")
    )
    assert wide is not None
    assert wide["spec"]["ingress"] == [
        {
            "from": [{"podSelector": {}}, {"namespaceSelector": {}}],
            "ports": [{"protocol": "TCP", "port": 9595}],
        }
    ]
    assert m.render_network_policy(CR, NAMES, config(NETWORK_POLICY="false")) is None
    with pytest.raises(ConfigError, match="API_INGRESS_NAMESPACES"):
        config(API_INGRESS_NAMESPACES="novalue")
