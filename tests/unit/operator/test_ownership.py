"""ownership.py and its use in sql.py: who may take, re-password or delete a tenant's data."""

from __future__ import annotations

import dataclasses

import pytest

from memory_operator.domain import DatabaseTarget
from memory_operator.ownership import Adoption, NotOwner, Owner, check_delete, check_take
from memory_operator.sql import RoleState, TenantState, plan_delete, plan_tenant

NS1 = Owner("ns1", "acme", "uid-1")
NS1_AGAIN = Owner("ns1", "acme-again", "uid-3")
NS2 = Owner("ns2", "thief", "uid-2")
VERIFIER = "SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB"
ROLE = RoleState(
    login=True, superuser=False, createdb=False, createrole=False, inherit=False,
    replication=False, bypassrls=False, password_matches=False,
)  # fmt: skip


def target(owner: Owner, adoption: Adoption = Adoption.NONE) -> DatabaseTarget:
    return DatabaseTarget("mem_acme", "mem_acme", "new-password", owner=owner, adoption=adoption)


def existing(record: Owner | None) -> TenantState:
    text = record.record() if record else None
    return TenantState(
        database="db", role=ROLE, schema_owner="mem_acme", role_connect=True,
        role_record=text, schema_record=text,
    )  # fmt: skip


def test_record_round_trips_and_foreign_text_is_no_record() -> None:
    assert Owner.parse(NS1.record()) == NS1
    assert Owner.parse("created by the DBA") is None
    assert Owner.parse('{"namespace": "ns1", "name": "x", "uid": "u"}') is None  # not ours
    assert Owner.parse(None) is None


def test_fresh_tenant_records_its_owner_on_role_and_schema() -> None:
    fresh = TenantState(database="db", role=None, schema_owner=None)
    sql = [s.as_string() for s in plan_tenant(fresh, target(NS1), VERIFIER)]
    assert f"COMMENT ON ROLE \"mem_acme\" IS '{NS1.record()}'" in sql
    assert f"COMMENT ON SCHEMA \"mem_acme\" IS '{NS1.record()}'" in sql


def test_another_namespace_never_resets_the_password() -> None:
    with pytest.raises(NotOwner, match="ns1/acme"):
        plan_tenant(existing(NS1), target(NS2), VERIFIER)
    with pytest.raises(NotOwner):
        plan_tenant(existing(NS1), target(NS2, Adoption.UNRECORDED), VERIFIER)


def test_same_namespace_adopts_and_rewrites_the_record() -> None:
    sql = [s.as_string() for s in plan_tenant(existing(NS1), target(NS1_AGAIN), VERIFIER)]
    assert any(s.startswith('ALTER ROLE "mem_acme" WITH PASSWORD') for s in sql)
    assert f"COMMENT ON ROLE \"mem_acme\" IS '{NS1_AGAIN.record()}'" in sql


def test_administrator_adoption_takes_any_owner() -> None:
    sql = [s.as_string() for s in plan_tenant(existing(NS1), target(NS2, Adoption.ANY), VERIFIER)]
    assert f"COMMENT ON SCHEMA \"mem_acme\" IS '{NS2.record()}'" in sql


def test_unrecorded_data_needs_status_or_administrator() -> None:
    with pytest.raises(NotOwner, match="without an owner record"):
        plan_tenant(existing(None), target(NS1), VERIFIER)
    assert plan_tenant(existing(None), target(NS1, Adoption.UNRECORDED), VERIFIER)


def test_own_data_plans_nothing_once_recorded() -> None:
    converged = dataclasses.replace(
        existing(NS1), role=dataclasses.replace(ROLE, password_matches=True)
    )
    assert plan_tenant(converged, target(NS1), VERIFIER) == []


def test_only_the_recorded_uid_deletes() -> None:
    kw = {"role_exists": True, "schema_exists": True}
    rec = {"role_record": NS1.record(), "schema_record": NS1.record()}
    assert plan_delete(target(NS1), **kw, **rec)
    for other in (NS1_AGAIN, NS2):
        with pytest.raises(NotOwner):
            plan_delete(target(other), **kw, **rec)
    with pytest.raises(NotOwner):
        plan_delete(target(NS1), **kw)  # unrecorded, not named by its status
    assert plan_delete(target(NS1, Adoption.UNRECORDED), **kw)
    check_take("x", NS1, NS1, Adoption.NONE)
    with pytest.raises(NotOwner):
        check_delete("x", NS2, NS1, Adoption.ANY)
