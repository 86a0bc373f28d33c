"""Pure PostgreSQL planning: observed catalog state in, the minimal statements out."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from memory_operator.domain import DatabaseTarget, PlanError
from memory_operator.sql import (
    Catalog,
    RoleState,
    TenantState,
    password_matches,
    plan_delete,
    plan_tenant,
    scram_verifier,
    tenant_state,
)

TARGET = DatabaseTarget(
    schema="mem_acme", role="mem_acme", password="s3cret-token", pgvector=True, connection_limit=18
)
VERIFIER = "SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB"

GOOD_ROLE = RoleState(
    login=True,
    superuser=False,
    createdb=False,
    createrole=False,
    inherit=False,
    replication=False,
    bypassrls=False,
    password_matches=True,
    connection_limit=18,
)
CONVERGED = TenantState(
    database="tenants",
    role=GOOD_ROLE,
    schema_owner="mem_acme",
    role_connect=True,
    ext_schema_exists=True,
    vector_schema="extensions",
    role_ext_usage=True,
)


def render(stmts: list) -> list[str]:
    return [s.as_string() for s in stmts]


def test_converged_state_plans_nothing() -> None:
    assert plan_tenant(CONVERGED, TARGET, VERIFIER) == []


def test_fresh_database_plans_everything_in_order() -> None:
    fresh = TenantState(database="tenants", role=None, schema_owner=None)
    assert render(plan_tenant(fresh, TARGET, VERIFIER)) == [
        'CREATE ROLE "mem_acme" WITH LOGIN NOCREATEDB NOCREATEROLE NOINHERIT'
        f" CONNECTION LIMIT 18 PASSWORD '{VERIFIER}'",
        'CREATE SCHEMA "mem_acme" AUTHORIZATION "mem_acme"',
        'GRANT CONNECT ON DATABASE "tenants" TO "mem_acme"',
        'CREATE SCHEMA IF NOT EXISTS "extensions"',
        'CREATE EXTENSION IF NOT EXISTS vector SCHEMA "extensions"',
        'GRANT USAGE ON SCHEMA "extensions" TO "mem_acme"',
    ]


def test_without_pgvector_the_extension_is_not_touched() -> None:
    fresh = TenantState(database="tenants", role=None, schema_owner=None)
    target = dataclasses.replace(TARGET, pgvector=False)
    assert not any("extension" in s.lower() for s in render(plan_tenant(fresh, target, VERIFIER)))


def test_only_differing_role_attributes_are_altered() -> None:
    role = dataclasses.replace(GOOD_ROLE, createdb=True, inherit=True)
    stmts = render(plan_tenant(dataclasses.replace(CONVERGED, role=role), TARGET, VERIFIER))
    assert stmts == ['ALTER ROLE "mem_acme" WITH NOCREATEDB NOINHERIT']


def test_connection_limit_is_kept_in_sync() -> None:
    # A role from before limits existed (-1, none) and one whose replicas changed.
    for have in (-1, 9):
        role = dataclasses.replace(GOOD_ROLE, connection_limit=have)
        state = dataclasses.replace(CONVERGED, role=role)
        assert render(plan_tenant(state, TARGET, VERIFIER)) == [
            'ALTER ROLE "mem_acme" WITH CONNECTION LIMIT 18'
        ]
    with pytest.raises(PlanError, match="connection limit"):
        plan_tenant(CONVERGED, dataclasses.replace(TARGET, connection_limit=-2), VERIFIER)


def test_password_mismatch_rewrites_only_the_password() -> None:
    role = dataclasses.replace(GOOD_ROLE, password_matches=False)
    stmts = render(plan_tenant(dataclasses.replace(CONVERGED, role=role), TARGET, VERIFIER))
    assert stmts == [f"ALTER ROLE \"mem_acme\" WITH PASSWORD '{VERIFIER}'"]


def test_memberships_and_create_rights_are_revoked() -> None:
    state = dataclasses.replace(
        CONVERGED,
        role=dataclasses.replace(GOOD_ROLE, member_of=("pg_read_all_data",)),
        role_db_create=True,
        public_db_create=True,
        role_public_create=True,
        public_public_create=True,
    )
    assert render(plan_tenant(state, TARGET, VERIFIER)) == [
        'REVOKE "pg_read_all_data" FROM "mem_acme"',
        'REVOKE CREATE ON DATABASE "tenants" FROM "mem_acme"',
        'REVOKE CREATE ON DATABASE "tenants" FROM PUBLIC',
        'REVOKE CREATE ON SCHEMA public FROM "mem_acme"',
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
    ]


def test_schema_owned_by_someone_else_is_handed_back() -> None:
    state = dataclasses.replace(CONVERGED, schema_owner="intruder")
    assert render(plan_tenant(state, TARGET, VERIFIER)) == [
        'ALTER SCHEMA "mem_acme" OWNER TO "mem_acme"'
    ]


def test_identifiers_are_quoted() -> None:
    target = dataclasses.replace(TARGET, role='we"ird', schema="Mixed Case", pgvector=False)
    fresh = TenantState(database="db", role=None, schema_owner=None)
    stmts = render(plan_tenant(fresh, target, VERIFIER))
    assert stmts[1] == 'CREATE SCHEMA "Mixed Case" AUTHORIZATION "we""ird"'


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("role", "r" * 64, "longer than 63 bytes"),
        ("schema", "", "must not be empty"),
        ("schema", "pg_tenant", "reserved prefix"),
        ("password", "", "must not be empty"),
        ("password", "pässword", "ASCII"),
    ],
)
def test_bad_input_is_refused(field: str, value: str, message: str) -> None:
    target = dataclasses.replace(TARGET, **{field: value})
    with pytest.raises(PlanError, match=message):
        plan_tenant(CONVERGED, target, VERIFIER)


def test_vector_in_another_schema_is_a_permanent_error() -> None:
    state = dataclasses.replace(CONVERGED, vector_schema="public")
    with pytest.raises(PlanError, match="installed in schema 'public'"):
        plan_tenant(state, TARGET, VERIFIER)


def test_missing_pgvector_is_a_permanent_error() -> None:
    state = dataclasses.replace(CONVERGED, vector_schema=None, vector_available=False)
    with pytest.raises(PlanError, match="not available"):
        plan_tenant(state, TARGET, VERIFIER)


def test_scram_verifier_round_trips_and_rejects_other_passwords() -> None:
    verifier = scram_verifier("correct horse", b"0123456789abcdef")
    assert verifier.startswith("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$")
    assert password_matches(verifier, "correct horse", "r")
    assert not password_matches(verifier, "correct horsE", "r")
    assert not password_matches(None, "correct horse", "r")
    assert not password_matches("SCRAM-SHA-256$garbage", "correct horse", "r")


def test_md5_secrets_are_understood() -> None:
    stored = "md5" + hashlib.md5(b"pwalice").hexdigest()  # PostgreSQL: md5(password || role)
    assert password_matches(stored, "pw", "alice")
    assert not password_matches(stored, "pw", "bob")


def test_delete_plan() -> None:
    assert plan_delete(TARGET, role_exists=False, schema_exists=False) == []
    assert render(plan_delete(TARGET, role_exists=True, schema_exists=True)) == [
        'DROP SCHEMA "mem_acme" CASCADE',
        'REASSIGN OWNED BY "mem_acme" TO CURRENT_USER',
        'DROP OWNED BY "mem_acme"',
        'DROP ROLE "mem_acme"',
    ]


def _catalog(**changes: object) -> Catalog:
    base = Catalog(
        database="tenants",
        roles={"mem_acme": (42, dataclasses.replace(GOOD_ROLE, password_matches=False), "S", None)},
        schemas={"mem_acme": ("mem_acme", None)},
        db_grants=frozenset({(42, "CONNECT"), (10, "CREATE")}),
        public_grants=frozenset({(10, "CREATE")}),
        ext_grants=frozenset({(42, "USAGE")}),
        vector_schema="extensions",
        vector_available=True,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_tenant_state_from_the_bulk_catalog_is_the_one_tenants_state() -> None:
    state = tenant_state(_catalog(), TARGET, lambda stored: stored == "S")
    assert state == CONVERGED
    assert plan_tenant(state, TARGET, VERIFIER) == []


def test_tenant_state_from_the_bulk_catalog_shows_drift() -> None:
    gone = tenant_state(_catalog(schemas={}, roles={}), TARGET, lambda _: True)
    assert (gone.role, gone.schema_owner, gone.role_connect) == (None, None, False)
    wrong_password = tenant_state(_catalog(), TARGET, lambda _: False)
    assert "PASSWORD" in " ".join(render(plan_tenant(wrong_password, TARGET, VERIFIER)))
    public_create = tenant_state(_catalog(db_grants=frozenset({(0, "CREATE")})), TARGET, bool)
    assert render(plan_tenant(public_create, TARGET, VERIFIER)) == [
        'GRANT CONNECT ON DATABASE "tenants" TO "mem_acme"',
        'REVOKE CREATE ON DATABASE "tenants" FROM PUBLIC',
    ]
