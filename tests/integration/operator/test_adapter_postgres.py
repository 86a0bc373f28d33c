"""PostgresAdmin against a real PostgreSQL 18 + pgvector: isolation, idempotence, drift."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from memory_operator import metrics
from memory_operator.adapters.postgres import PostgresAdmin
from memory_operator.domain import DatabaseTarget, Outcome
from memory_operator.ownership import Owner
from memory_operator.ports import BackendRejected, BackendUnavailable
from tests.servers._process import free_port

pytestmark = pytest.mark.integration


def _ran(start: dict[tuple[str, str], float]) -> dict[str, float]:
    """PostgreSQL phases recorded (metrics) since `start`."""
    now = metrics.operation_counts()
    return {
        op: now.get(("postgres", op), 0) - start.get(("postgres", op), 0)
        for op in ("observe", "apply")
    }


def as_role(dsn: str, role: str, password: str) -> str:
    params = conninfo_to_dict(dsn)
    params.update(user=role, password=password)
    return make_conninfo(**params)


def target_for(tag: str, **kw: object) -> DatabaseTarget:
    name = f"mem_{tag}_{uuid.uuid4().hex[:8]}"
    return DatabaseTarget(schema=name, role=name, password=f"pw-{uuid.uuid4().hex}", **kw)


@pytest.fixture
def cleanup(pg_database: str) -> Iterator[list[DatabaseTarget]]:
    """Targets appended here are deleted (role is cluster-wide) before the database goes."""
    targets: list[DatabaseTarget] = []
    yield targets
    for target in targets:
        PostgresAdmin(pg_database).delete_tenant(target)


def catalog_snapshot(dsn: str, target: DatabaseTarget) -> list[tuple]:
    """Row versions (xmin) and ACLs of every catalog row ensure_tenant may write."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            """
            SELECT 'role', xmin::text, rolpassword FROM pg_authid WHERE rolname = %(r)s
            UNION ALL SELECT 'ns:' || nspname, xmin::text, nspacl::text FROM pg_namespace
              WHERE nspname IN (%(s)s, %(e)s, 'public')
            UNION ALL SELECT 'db', xmin::text, datacl::text FROM pg_database
              WHERE datname = current_database()
            UNION ALL SELECT 'ext', xmin::text, extversion FROM pg_extension
              WHERE extname = 'vector'
            UNION ALL SELECT 'member', xmin::text, roleid::text FROM pg_auth_members
              WHERE member = (SELECT oid FROM pg_roles WHERE rolname = %(r)s)
            ORDER BY 1
            """,
            {"r": target.role, "s": target.schema, "e": target.extensions_schema},
        ).fetchall()


def test_tenant_is_confined_to_its_schema(pg_database: str, cleanup: list) -> None:
    admin = PostgresAdmin(pg_database)
    a, b = target_for("a", pgvector=True), target_for("b", pgvector=True)
    cleanup.extend([a, b])
    assert admin.ensure_tenant(a) is Outcome.CREATED
    assert admin.ensure_tenant(b) is Outcome.CREATED

    with psycopg.connect(as_role(pg_database, b.role, b.password), autocommit=True) as conn:
        conn.execute(f'CREATE TABLE "{b.schema}".secrets (v text)')
        conn.execute(f"INSERT INTO \"{b.schema}\".secrets VALUES ('b-only')")

    with psycopg.connect(as_role(pg_database, a.role, a.password), autocommit=True) as conn:
        conn.execute(f'SET search_path = "{a.schema}", extensions')
        # Its own schema: tables and the vector type work.
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, v vector(3))")
        conn.execute("INSERT INTO items VALUES (1, '[1,0,0]'), (2, '[0,1,0]')")
        row = conn.execute("SELECT id FROM items ORDER BY v <-> '[0.9,0.1,0]' LIMIT 1").fetchone()
        assert row == (1,)
        # Another tenant's schema, the database, and public are closed to it.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f'SELECT * FROM "{b.schema}".secrets')
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE SCHEMA sneaky")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE public.sneaky (x int)")
        attrs = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolinherit FROM pg_roles"
            " WHERE rolname = current_user"
        ).fetchone()
        assert attrs == (False, False, False, False)


def test_second_ensure_writes_nothing(pg_database: str, cleanup: list) -> None:
    admin = PostgresAdmin(pg_database)
    target = target_for("idem", pgvector=True)
    cleanup.append(target)
    start = metrics.operation_counts()
    assert admin.ensure_tenant(target) is Outcome.CREATED
    assert _ran(start) == {"observe": 1, "apply": 1}
    before = catalog_snapshot(pg_database, target)
    assert [r[0] for r in before] == [
        "db",
        "ext",
        "ns:extensions",
        f"ns:{target.schema}",
        "ns:public",
        "role",
    ]

    start = metrics.operation_counts()
    assert admin.ensure_tenant(target) is Outcome.UNCHANGED
    assert _ran(start) == {"observe": 1, "apply": 0}  # no apply phase at all
    assert catalog_snapshot(pg_database, target) == before  # no catalog row rewritten


def test_password_set_by_postgres_itself_is_recognised(pg_database: str, cleanup: list) -> None:
    """Our SCRAM check agrees with PostgreSQL's own hashing of the same password."""
    admin = PostgresAdmin(pg_database)
    target = target_for("pgpw")
    cleanup.append(target)
    admin.ensure_tenant(target)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(f"ALTER ROLE \"{target.role}\" PASSWORD 'chosen-by-hand'")
    before = catalog_snapshot(pg_database, target)
    same = dataclasses.replace(target, password="chosen-by-hand")
    assert admin.ensure_tenant(same) is Outcome.UNCHANGED
    assert catalog_snapshot(pg_database, target) == before


def test_password_rotation(pg_database: str, cleanup: list) -> None:
    admin = PostgresAdmin(pg_database)
    old = target_for("rot")
    cleanup.append(old)
    admin.ensure_tenant(old)
    new = dataclasses.replace(old, password=f"rotated-{uuid.uuid4().hex}")
    assert admin.ensure_tenant(new) is Outcome.UPDATED
    assert admin.ensure_tenant(new) is Outcome.UNCHANGED

    with psycopg.connect(as_role(pg_database, new.role, new.password)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (new.role,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(as_role(pg_database, old.role, old.password))
    # The statement carried a SCRAM secret, never the password itself.
    with psycopg.connect(pg_database) as conn:
        (stored,) = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (new.role,)
        ).fetchone()
    assert stored.startswith("SCRAM-SHA-256$")
    assert new.password not in stored


def test_drift_is_repaired(pg_database: str, cleanup: list) -> None:
    admin = PostgresAdmin(pg_database)
    target = target_for("drift", pgvector=True)
    cleanup.append(target)
    admin.ensure_tenant(target)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        db = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        conn.execute(f'DROP SCHEMA "{target.schema}" CASCADE')
        conn.execute(f'GRANT CREATE ON DATABASE "{db}" TO "{target.role}"')
        conn.execute(f'GRANT pg_read_all_data TO "{target.role}"')
        conn.execute(f'ALTER ROLE "{target.role}" CREATEDB INHERIT')

    assert admin.ensure_tenant(target) is Outcome.UPDATED
    assert admin.ensure_tenant(target) is Outcome.UNCHANGED
    with psycopg.connect(pg_database) as conn:
        owner = conn.execute(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %s",
            (target.schema,),
        ).fetchone()
        assert owner == (target.role,)
        rights = conn.execute(
            "SELECT has_database_privilege(%(r)s, current_database(), 'CREATE'),"
            " pg_has_role(%(r)s, 'pg_read_all_data', 'MEMBER'), rolcreatedb, rolinherit"
            " FROM pg_roles WHERE rolname = %(r)s",
            {"r": target.role},
        ).fetchone()
    assert rights == (False, False, False, False)


def test_public_create_is_closed(pg_database: str, cleanup: list) -> None:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
    target = target_for("pub")
    cleanup.append(target)
    PostgresAdmin(pg_database).ensure_tenant(target)
    with (
        psycopg.connect(as_role(pg_database, target.role, target.password)) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("CREATE TABLE public.t (x int)")


def test_vector_in_another_schema_is_rejected_without_side_effects(
    pg_database: str, cleanup: list
) -> None:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector SCHEMA public")
    target = target_for("ext", pgvector=True)
    cleanup.append(target)
    with pytest.raises(BackendRejected, match="installed in schema 'public'"):
        PostgresAdmin(pg_database).ensure_tenant(target)
    with psycopg.connect(pg_database) as conn:
        role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (target.role,))
        assert role.fetchone() is None


def test_failed_statement_rolls_back_the_whole_plan(pg_database: str, cleanup: list) -> None:
    """A plan that fails half-way leaves nothing behind (one transaction per ensure)."""
    target = target_for("atomic", pgvector=True)
    cleanup.append(target)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        # Make CREATE EXTENSION fail after CREATE ROLE/SCHEMA already ran in the plan:
        # a type named like one the extension creates blocks it.
        conn.execute("CREATE SCHEMA extensions")
        conn.execute("CREATE TYPE extensions.vector AS (x int)")
    with pytest.raises(BackendRejected, match="vector"):
        PostgresAdmin(pg_database).ensure_tenant(target)
    with psycopg.connect(pg_database) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_roles WHERE rolname = %s", (target.role,)
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (target.schema,)
        ).fetchone() == (0,)


def test_delete_tenant(pg_database: str, cleanup: list) -> None:
    admin = PostgresAdmin(pg_database)
    target = target_for("del", pgvector=True)
    admin.ensure_tenant(target)
    with psycopg.connect(as_role(pg_database, target.role, target.password)) as conn:
        conn.execute(f'CREATE TABLE "{target.schema}".t (x int)')
        conn.commit()
    assert admin.delete_tenant(target) is Outcome.DELETED
    assert admin.delete_tenant(target) is Outcome.UNCHANGED
    with psycopg.connect(pg_database) as conn:
        assert conn.execute(
            "SELECT (SELECT count(*) FROM pg_roles WHERE rolname = %(n)s),"
            " (SELECT count(*) FROM pg_namespace WHERE nspname = %(n)s)",
            {"n": target.role},
        ).fetchone() == (0, 0)


def test_delete_ends_the_tenants_sessions_first(pg_database: str, cleanup: list) -> None:
    """A runtime still connected (even holding locks in its schema) doesn't block deletion."""
    admin = PostgresAdmin(pg_database)
    target = target_for("busy")
    cleanup.append(target)
    admin.ensure_tenant(target)
    tenant = psycopg.connect(as_role(pg_database, target.role, target.password))
    tenant.execute(f'CREATE TABLE "{target.schema}".t (x int)')
    tenant.commit()
    tenant.execute(f'LOCK TABLE "{target.schema}".t IN ACCESS EXCLUSIVE MODE')  # left open
    assert admin.delete_tenant(target) is Outcome.DELETED
    with pytest.raises(psycopg.OperationalError):
        tenant.execute("SELECT 1")
    tenant.close()


def test_unreachable_server_is_temporary() -> None:
    dsn = f"postgresql://postgres:x@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(BackendUnavailable, match="postgres: cannot connect"):
        PostgresAdmin(dsn, connect_timeout=2).ensure_tenant(target_for("down"))


def test_non_superuser_admin_checks_the_password_by_logging_in(
    pg_database: str, cleanup: list
) -> None:
    """A managed-PostgreSQL style admin (CREATEROLE, database owner) cannot read
    pg_authid; the adapter then verifies the password by logging in as the role."""
    admin_role = f"opadmin_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        db = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        conn.execute(f"CREATE ROLE {admin_role} LOGIN CREATEROLE PASSWORD 'adminpw'")
        # PostgreSQL 16+: the creator must be able to SET ROLE to own the schema for it.
        conn.execute(f"ALTER ROLE {admin_role} SET createrole_self_grant = 'set, inherit'")
        conn.execute(f'ALTER DATABASE "{db}" OWNER TO {admin_role}')
    try:
        admin = PostgresAdmin(as_role(pg_database, admin_role, "adminpw"))
        # With an owner: COMMENT ON ROLE/SCHEMA must work for such an admin too.
        target = target_for("managed", owner=Owner("ns", "cr", "uid-1"))
        cleanup.append(target)
        assert admin.ensure_tenant(target) is Outcome.CREATED
        before = catalog_snapshot(pg_database, target)
        assert admin.ensure_tenant(target) is Outcome.UNCHANGED
        assert catalog_snapshot(pg_database, target) == before
        rotated = dataclasses.replace(target, password="rotated-by-managed-admin")
        assert admin.ensure_tenant(rotated) is Outcome.UPDATED
        with psycopg.connect(as_role(pg_database, rotated.role, rotated.password)):
            pass
        assert admin.delete_tenant(rotated) is Outcome.DELETED
    finally:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{db}" OWNER TO CURRENT_USER')
            conn.execute(f"DROP OWNED BY {admin_role}")
            conn.execute(f"DROP ROLE {admin_role}")


def test_racing_grant_on_the_database_is_retried(pg_database: str, cleanup: list) -> None:
    """Another session's uncommitted GRANT on the shared pg_database row makes our
    GRANT CONNECT wait and then fail with "tuple concurrently updated" when it
    commits. That is a race, not a refusal: the adapter observes again and succeeds."""
    other, ours = target_for("other"), target_for("ours")
    cleanup.extend([other, ours])
    with psycopg.connect(pg_database, autocommit=True) as conn:
        db = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        conn.execute(f'CREATE ROLE "{other.role}" LOGIN')
    racer = psycopg.connect(pg_database)  # a transaction left open
    racer.execute(f'GRANT CONNECT ON DATABASE "{db}" TO "{other.role}"')
    outcome: list[object] = []

    def ensure() -> None:
        try:
            outcome.append(PostgresAdmin(pg_database).ensure_tenant(ours))
        except Exception as err:  # recorded, asserted below
            outcome.append(err)

    thread = threading.Thread(target=ensure)
    thread.start()
    try:
        with psycopg.connect(pg_database, autocommit=True) as watch:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # our GRANT waits on the racer's row lock
                row = watch.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE 'GRANT CONNECT%%'"
                ).fetchone()
                if row and row[0]:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("ensure_tenant never waited on the racing GRANT")
    finally:
        racer.commit()
        racer.close()
        thread.join(30)
    assert outcome == [Outcome.CREATED]
    with psycopg.connect(as_role(pg_database, ours.role, ours.password)):
        pass
