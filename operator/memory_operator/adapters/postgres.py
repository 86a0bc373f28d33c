"""PostgreSQL adapter: a tenant's login role and schema (I/O only; planning is in sql.py).

Every call observes the catalog first and issues nothing when it already
matches; the writes of one call run in one transaction, so a failure leaves
nothing half-applied.

Concurrency: tenants share catalog rows (the database's ACL in pg_database,
the extensions schema's ACL, pg_authid). Two transactions granting on the same
row make the second fail with "tuple concurrently updated" once the first
commits. So one adapter applies one plan at a time (plans take milliseconds;
observing runs in parallel), and a race with any other session (another
process, a DBA) is retried: observe again, plan again, a few times with
jittered backoff, then a temporary error for the caller's own backoff.

Why ~420 lines: observe, apply and delete for a role and a schema, the bulk
catalog read a resync shares, and the retry around catalog races.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from memory_operator.domain import DatabaseTarget, Outcome, PlanError
from memory_operator.metrics import record_backend
from memory_operator.ownership import NotOwner
from memory_operator.ports import BackendNotOwner, BackendRejected, BackendUnavailable
from memory_operator.snapshot import WINDOW_SECONDS, SharedByKey
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

BACKEND = "postgres"
RACE_ATTEMPTS = 5

# SQLSTATEs of races that a fresh observe + plan resolves: serialization failure,
# deadlock, a concurrent insert of the same catalog key (two CREATE ROLE x). A lock
# timeout is not retried here (it already waited 10 s): a temporary error.
_RACE_SQLSTATES = frozenset({"40001", "40P01", "23505"})
# Concurrent updates of one catalog row raise an internal error with no SQLSTATE of its own.
_RACE_MESSAGES = ("tuple concurrently updated", "tuple concurrently deleted")


def _last_error(exc: PoolTimeout) -> str:
    # The pool says only that it timed out; the connection error is its cause.
    cause = exc.__cause__ or exc.__context__
    return str(cause or exc).strip()


class _Race(Exception):
    """A concurrent catalog change got in the way; observing again will do."""


def is_race(exc: psycopg.Error) -> bool:
    if exc.sqlstate in _RACE_SQLSTATES:
        return True
    return any(m in str(exc) for m in _RACE_MESSAGES)


_ROLE_QUERY = """
SELECT r.oid, r.rolcanlogin, r.rolsuper, r.rolcreatedb, r.rolcreaterole, r.rolinherit,
       r.rolreplication, r.rolbypassrls,
       ARRAY(SELECT m.roleid::regrole::text FROM pg_auth_members m WHERE m.member = r.oid),
       r.rolconnlimit,
       shobj_description(r.oid, 'pg_authid'),
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
FROM pg_roles r WHERE r.rolname = %s
"""

# Explicit grants only (aclexplode over the effective ACL, defaults included), so
# PUBLIC's privileges and the role's own are told apart.
_STATE_QUERY = """
WITH db AS (
  SELECT a.grantee, a.privilege_type FROM pg_database d,
         aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
  WHERE d.datname = current_database()
), pub AS (
  SELECT a.grantee, a.privilege_type FROM pg_namespace n,
         aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
  WHERE n.nspname = 'public'
), ext AS (
  SELECT a.grantee, a.privilege_type FROM pg_namespace n,
         aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
  WHERE n.nspname = %(ext)s
)
SELECT current_database(),
  (SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %(schema)s),
  EXISTS (SELECT 1 FROM db WHERE grantee = %(oid)s::oid AND privilege_type = 'CONNECT'),
  EXISTS (SELECT 1 FROM db WHERE grantee = %(oid)s::oid AND privilege_type = 'CREATE'),
  EXISTS (SELECT 1 FROM db WHERE grantee = 0 AND privilege_type = 'CREATE'),
  EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'public'),
  EXISTS (SELECT 1 FROM pub WHERE grantee = %(oid)s::oid AND privilege_type = 'CREATE'),
  EXISTS (SELECT 1 FROM pub WHERE grantee = 0 AND privilege_type = 'CREATE'),
  EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %(ext)s),
  (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'vector'),
  EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector'),
  EXISTS (SELECT 1 FROM ext WHERE grantee = %(oid)s::oid AND privilege_type = 'USAGE'),
  (SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %(schema)s)
"""


# The bulk read of a resync (tenant_unchanged): every role with its secret (so a
# superuser admin only: pg_authid), every schema, and the shared ACLs, in one
# session. Role attributes in _ROLE_QUERY's order.
_CATALOG_ROLES = """
SELECT r.oid, r.rolname, r.rolcanlogin, r.rolsuper, r.rolcreatedb, r.rolcreaterole,
       r.rolinherit, r.rolreplication, r.rolbypassrls,
       ARRAY(SELECT m.roleid::regrole::text FROM pg_auth_members m WHERE m.member = r.oid),
       r.rolconnlimit, shobj_description(r.oid, 'pg_authid'), r.rolpassword
FROM pg_authid r WHERE r.rolname !~ '^pg_'
"""
_CATALOG_SCHEMAS = """
SELECT nspname, pg_get_userbyid(nspowner), obj_description(oid, 'pg_namespace')
FROM pg_namespace WHERE nspname !~ '^pg_'
"""
_CATALOG_GRANTS = """
SELECT 'db', a.grantee::bigint, a.privilege_type FROM pg_database d,
       aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
WHERE d.datname = current_database()
UNION ALL
SELECT n.nspname, a.grantee::bigint, a.privilege_type FROM pg_namespace n,
       aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
WHERE n.nspname IN ('public', %(ext)s)
"""
_CATALOG_REST = """
SELECT current_database(),
  EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'public'),
  EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %(ext)s),
  (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'vector'),
  EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector'),
  (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
"""


class PostgresAdmin:
    """DatabaseAdmin over an admin DSN (superuser, or CREATEROLE + database owner)."""

    def __init__(
        self,
        dsn: str,
        *,
        connect_timeout: int = 5,
        max_connections: int = 4,
        read_window: float = WINDOW_SECONDS,
    ) -> None:
        self._dsn = dsn
        # extensions schema -> the catalog of every tenant (None: admin can't read it)
        self._catalog: SharedByKey[Catalog | None] = SharedByKey(self._read_catalog, read_window)
        # role -> (stored secret, password fingerprint) found to match: a PBKDF2 per
        # tenant and pass is the largest CPU cost of a resync on shared reads.
        self._matched: dict[str, tuple[str, str]] = {}
        self._connect_timeout = connect_timeout
        self._apply_lock = threading.Lock()  # one plan at a time: see the module docstring
        # A resync observes every tenant: reuse admin sessions instead of paying a
        # connection and a SCRAM handshake per call. Opened on first use; sessions
        # are checked before use, so a restarted server costs one reconnect.
        self._pool = ConnectionPool(
            dsn,
            min_size=0,
            max_size=max_connections,
            kwargs={
                "autocommit": True,
                "connect_timeout": connect_timeout,
                # A tenant's sessions may hold locks (e.g. on its schema): wait a
                # while, then fail as a temporary error instead of hanging.
                "options": "-c lock_timeout=10s -c statement_timeout=60s",
            },
            check=ConnectionPool.check_connection,
            timeout=connect_timeout,
            max_idle=60,
            open=False,
        )
        self._pool_open = threading.Lock()

    def close(self) -> None:
        self._pool.close()

    # -- plumbing ---------------------------------------------------------------
    @contextmanager
    def _timed(self, operation: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            record_backend(BACKEND, operation, time.perf_counter() - start)

    @contextmanager
    def _connect(self) -> Iterator[psycopg.Connection[Any]]:
        with self._pool_open:
            if self._pool.closed:
                self._pool.open(wait=False)
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise BackendUnavailable(BACKEND, f"cannot connect: {_last_error(exc)}") from exc
        except NotOwner as exc:
            raise BackendNotOwner(BACKEND, str(exc)) from exc
        except PlanError as exc:
            raise BackendRejected(BACKEND, str(exc)) from exc
        except psycopg.Error as exc:
            if is_race(exc):
                raise _Race(str(exc).strip()) from exc
            if isinstance(exc, psycopg.OperationalError):
                # Connection lost, shutdown, statement timeout: transient.
                raise BackendUnavailable(BACKEND, str(exc).strip()) from exc
            # Privilege, dependency or syntax errors will not heal by retrying.
            raise BackendRejected(BACKEND, str(exc).strip()) from exc

    # -- observe ------------------------------------------------------------------
    def _password_ok(
        self, conn: psycopg.Connection[Any], target: DatabaseTarget, admin_is_superuser: bool
    ) -> bool:
        if admin_is_superuser:
            stored = conn.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (target.role,)
            ).fetchone()
            return password_matches(stored[0] if stored else None, target.password, target.role)
        # A non-superuser admin cannot read pg_authid: log in as the role instead
        # (a read-only check; a failed login means the password must be set).
        params = conninfo_to_dict(self._dsn)
        params.update(user=target.role, password=target.password)
        try:
            with psycopg.connect(
                make_conninfo("", **params), connect_timeout=self._connect_timeout
            ):
                return True
        except psycopg.Error:
            return False

    def _observe_state(self, conn: psycopg.Connection[Any], target: DatabaseTarget) -> TenantState:
        role_row = conn.execute(_ROLE_QUERY, (target.role,)).fetchone()
        role: RoleState | None = None
        oid = None
        if role_row is not None:
            oid = role_row[0]
            role = RoleState(
                login=role_row[1],
                superuser=role_row[2],
                createdb=role_row[3],
                createrole=role_row[4],
                inherit=role_row[5],
                replication=role_row[6],
                bypassrls=role_row[7],
                password_matches=self._password_ok(conn, target, bool(role_row[11])),
                member_of=tuple(role_row[8]),
                connection_limit=role_row[9],
            )
        row = conn.execute(
            _STATE_QUERY, {"schema": target.schema, "ext": target.extensions_schema, "oid": oid}
        ).fetchone()
        assert row is not None  # a SELECT without FROM always returns one row
        return TenantState(
            database=row[0],
            role=role,
            schema_owner=row[1],
            role_connect=row[2],
            role_db_create=row[3],
            public_db_create=row[4],
            public_schema_exists=row[5],
            role_public_create=row[6],
            public_public_create=row[7],
            ext_schema_exists=row[8],
            vector_schema=row[9],
            vector_available=row[10],
            role_ext_usage=row[11],
            role_record=role_row[10] if role_row is not None else None,
            schema_record=row[12],
        )

    def _read_catalog(self, ext: object) -> Catalog | None:
        with self._connect() as conn, self._timed("catalog"):
            rest = conn.execute(_CATALOG_REST, {"ext": ext}).fetchone()
            assert rest is not None
            if not rest[5]:
                return None  # no pg_authid without superuser: every tenant reads exactly
            roles = {
                row[1]: (
                    row[0],
                    RoleState(
                        login=row[2],
                        superuser=row[3],
                        createdb=row[4],
                        createrole=row[5],
                        inherit=row[6],
                        replication=row[7],
                        bypassrls=row[8],
                        password_matches=False,
                        member_of=tuple(row[9]),
                        connection_limit=row[10],
                    ),
                    row[12],
                    row[11],
                )
                for row in conn.execute(_CATALOG_ROLES)
            }
            schemas = {row[0]: (row[1], row[2]) for row in conn.execute(_CATALOG_SCHEMAS)}
            grants: dict[str, set[tuple[int, str]]] = {}
            for where, grantee, privilege in conn.execute(_CATALOG_GRANTS, {"ext": ext}):
                grants.setdefault(where, set()).add((int(grantee), privilege))
        return Catalog(
            database=rest[0],
            roles=roles,
            schemas=schemas,
            db_grants=frozenset(grants.get("db", ())),
            public_grants=frozenset(grants.get("public", ())) if rest[1] else None,
            ext_grants=frozenset(grants.get(str(ext), ())) if rest[2] else None,
            vector_schema=rest[3],
            vector_available=rest[4],
        )

    def tenant_unchanged(self, target: DatabaseTarget, not_before: float) -> bool:
        """True when the shared catalog read (one for all tenants, loaded no earlier
        than `not_before`) shows nothing to do for `target`. False is no verdict:
        ensure_tenant decides on an exact read."""
        try:
            catalog = self._catalog.get(target.extensions_schema, not_before)
        except _Race:
            return False
        if catalog is None:
            return False
        state = tenant_state(catalog, target, lambda stored: self._matches(stored, target))
        try:
            return not plan_tenant(state, target, verifier="")
        except (PlanError, NotOwner):
            return False

    def _matches(self, stored: str | None, target: DatabaseTarget) -> bool:
        fingerprint = hashlib.sha256(target.password.encode()).hexdigest()
        if stored is not None and self._matched.get(target.role) == (stored, fingerprint):
            return True
        ok = password_matches(stored, target.password, target.role)
        if ok and stored is not None:
            self._matched[target.role] = (stored, fingerprint)
        return ok

    def _apply(self, conn: psycopg.Connection[Any], statements: list[sql.Composed]) -> None:
        with self._timed("apply"), self._apply_lock, conn.transaction():
            for statement in statements:
                conn.execute(statement)

    def _retrying(self, once: Callable[[], Outcome]) -> Outcome:
        """Run observe+plan+apply again after a race, with jittered backoff."""
        for attempt in range(RACE_ATTEMPTS):
            try:
                return once()
            except _Race as race:
                last = race
                time.sleep(random.uniform(0.05, 0.1) * 2**attempt)
        raise BackendUnavailable(
            BACKEND, f"concurrent catalog changes, {RACE_ATTEMPTS} attempts: {last}"
        )

    # -- DatabaseAdmin --------------------------------------------------------------
    def ensure_tenant(self, target: DatabaseTarget) -> Outcome:
        return self._retrying(lambda: self._ensure_tenant(target))

    def delete_tenant(self, target: DatabaseTarget) -> Outcome:
        return self._retrying(lambda: self._delete_tenant(target))

    def _ensure_tenant(self, target: DatabaseTarget) -> Outcome:
        with self._connect() as conn:
            with self._timed("observe"):
                state = self._observe_state(conn, target)
            # PBKDF2 costs CPU: derive a new secret only when one will be written.
            rewrite = state.role is None or not state.role.password_matches
            verifier = scram_verifier(target.password, os.urandom(16)) if rewrite else ""
            plan = plan_tenant(state, target, verifier)
            if not plan:
                return Outcome.UNCHANGED
            self._apply(conn, plan)
        return Outcome.CREATED if state.role is None else Outcome.UPDATED

    def _delete_tenant(self, target: DatabaseTarget) -> Outcome:
        self._matched.pop(target.role, None)
        with self._connect() as conn:
            with self._timed("observe"):
                row = conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %(r)s),"
                    " EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %(s)s),"
                    " (SELECT shobj_description(oid, 'pg_authid') FROM pg_roles"
                    "  WHERE rolname = %(r)s),"
                    " (SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace"
                    "  WHERE nspname = %(s)s)",
                    {"r": target.role, "s": target.schema},
                ).fetchone()
            assert row is not None
            plan = plan_delete(
                target,
                role_exists=row[0],
                schema_exists=row[1],
                role_record=row[2],
                schema_record=row[3],
            )
            if not plan:
                return Outcome.UNCHANGED
            if row[0]:
                # Sessions of the role (runtime pods being torn down) would keep
                # working after DROP ROLE; end them first. An admin without
                # pg_signal_backend can't: those sessions end with their pods.
                with suppress(psycopg.errors.InsufficientPrivilege):
                    conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE usename = %s AND pid <> pg_backend_pid()",
                        (target.role,),
                    )
            self._apply(conn, plan)
        return Outcome.DELETED
