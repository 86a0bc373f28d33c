"""spec.py: defaults mirror the CRD; what the CRD can't check is a permanent error."""

from __future__ import annotations

import pytest

from memory_operator.spec import InvalidSpecError, effective_tenant, parse_spec


def test_empty_spec_gets_design_defaults_and_tenant_from_name() -> None:
    spec = parse_spec({}, "acme")
    assert spec.tenant == "acme"
    assert spec.deletion_policy == "Retain"
    assert spec.paused is False
    assert (spec.vectors.backend, spec.vectors.dimensions, spec.vectors.distance) == (
        "qdrant",
        384,
        "Cosine",
    )
    assert (spec.vectors.hnsw.m, spec.vectors.hnsw.ef_construct) == (16, 100)
    assert (spec.events.partitions, spec.events.replication_factor) == (3, 1)
    assert spec.events.retention_hours == 168
    assert spec.embedding.model == "all-MiniLM-L6-v2"
    assert spec.decay.half_life_hours == 720
    assert spec.api.rate_limit.requests_per_minute == 600
    assert spec.api.max_body_bytes == 5_242_880
    assert spec.api.mcp.enabled is True
    assert spec.api.token_secret_ref is None


def test_camel_case_fields_are_read() -> None:
    spec = parse_spec(
        {
            "tenant": "team-a",
            "deletionPolicy": "Delete",
            "vectors": {"backend": "postgres", "hnsw": {"efConstruct": 200}, "onDisk": True},
            "api": {"tokenSecretRef": {"name": "mine"}, "rateLimit": {"burst": 5}},
        },
        "whatever",
    )
    assert spec.tenant == "team-a"
    assert spec.deletion_policy == "Delete"
    assert spec.vectors.hnsw.ef_construct == 200
    assert spec.vectors.on_disk is True
    assert spec.api.token_secret_ref is not None
    assert spec.api.token_secret_ref.key == "token"
    assert spec.api.rate_limit.burst == 5


def test_name_that_is_not_a_tenant_needs_explicit_tenant() -> None:
    with pytest.raises(InvalidSpecError) as err:
        parse_spec({}, "acme.prod")
    assert err.value.reason == "InvalidTenant"
    assert "set spec.tenant" in err.value.message
    assert parse_spec({"tenant": "acme"}, "acme.prod").tenant == "acme"


def test_name_too_long_for_service() -> None:
    with pytest.raises(InvalidSpecError) as err:
        parse_spec({"tenant": "a"}, "x" * 57)
    assert err.value.reason == "NameTooLong"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"embedding": {"provider": "http"}}, "embedding.url is required"),
        ({"vectors": {"dimensions": 768}}, "produces 384-dimensional vectors"),
        ({"embedding": {"model": "bge-large"}}, "not a bundled local model"),
        ({"vectors": {"distance": "Manhattan"}}, "spec.vectors.distance"),
        ({"events": {"partitions": 0}}, "spec.events.partitions"),
        ({"tenant": "Acme"}, "must match"),
        ({"tenant": "acme-"}, "must match"),  # derived Secret/Service names end in "-"
        (
            {
                "vectors": {"backend": "postgres", "dimensions": 2001},
                "embedding": {"provider": "none"},
            },
            "at most 2000 with vectors.backend postgres",
        ),
        ({"unknown": 1}, "spec.unknown"),
    ],
)
def test_invalid_specs_are_permanent_with_clear_message(raw: dict, fragment: str) -> None:
    with pytest.raises(InvalidSpecError) as err:
        parse_spec(raw, "acme")
    assert err.value.reason == "InvalidSpec"
    assert fragment in err.value.message


def test_other_dimensions_are_fine_without_local_model() -> None:
    spec = parse_spec({"vectors": {"dimensions": 768}, "embedding": {"provider": "none"}}, "acme")
    assert spec.vectors.dimensions == 768


def test_effective_tenant_works_on_invalid_specs() -> None:
    obj = {"metadata": {"name": "n"}, "spec": {"tenant": "t", "vectors": {"dimensions": -1}}}
    assert effective_tenant(obj) == "t"
    assert effective_tenant({"metadata": {"name": "n"}}) == "n"
