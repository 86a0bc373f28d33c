"""naming.py: deterministic names within every system's limits."""

from __future__ import annotations

import pytest

from memory_operator.naming import derive_names
from memory_operator.spec import InvalidSpecError


def test_names_for_acme() -> None:
    n = derive_names("mem", "acme", "acme", "tenants")
    assert (n.schema, n.role, n.collection) == ("mem_acme", "mem_acme", "mem_acme")
    assert n.topics == ("mem.acme.events",)
    assert (n.cache_user, n.key_prefix) == ("mem-acme", "mem:acme")
    assert n.kafka_user == "mem-acme"
    assert n.objects == "acme-memory"
    assert n.token_secret == "acme-memory-token"
    assert n.credentials_secret == "acme-memory-credentials"
    assert n.endpoint == "http://acme-memory.tenants.svc:9595"


def test_dashes_become_underscores_in_sql_only() -> None:
    n = derive_names("soma", "team-a", "cr", "ns")
    assert n.schema == "soma_team_a"
    assert n.events_topic == "soma.team-a.events"
    assert n.cache_user == "soma-team-a"
    assert n.objects == "cr-memory"


def test_longest_prefix_and_tenant_fit_postgres() -> None:
    n = derive_names("p" * 20, "t" * 40, "x", "ns")
    assert len(n.schema.encode()) <= 63
    assert len(n.events_topic) <= 249


def test_bad_prefix_and_tenant_rejected() -> None:
    with pytest.raises(ValueError, match="prefix"):
        derive_names("Mem", "acme", "acme", "ns")
    with pytest.raises(InvalidSpecError):
        derive_names("mem", "-acme", "acme", "ns")


def test_resource_name_over_service_limit() -> None:
    with pytest.raises(InvalidSpecError) as err:
        derive_names("mem", "acme", "y" * 57, "ns")
    assert err.value.reason == "NameTooLong"
