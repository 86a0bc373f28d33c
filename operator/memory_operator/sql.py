"""Pure PostgreSQL planning for a tenant: observed catalog state in, statements out.

Shaped like crossplane's provider-sql: the adapter observes the catalog into a
`TenantState`, `plan_tenant` compares it with the `DatabaseTarget` and returns
only the statements needed to close the gap (an empty plan = no write at all).
No I/O here: psycopg.sql only composes and quotes identifiers.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from psycopg import sql

from memory_operator.domain import DatabaseTarget, PlanError
from memory_operator.ownership import Owner, check_delete, check_take

SCRAM_ITERATIONS = 4096  # PostgreSQL's default scram_iterations
_PG_IDENT_MAX = 63  # NAMEDATALEN - 1


@dataclass(frozen=True)
class RoleState:
    login: bool
    superuser: bool
    createdb: bool
    createrole: bool
    inherit: bool
    replication: bool
    bypassrls: bool
    password_matches: bool
    member_of: tuple[str, ...] = ()  # roles it was granted: each could widen its reach
    connection_limit: int = -1  # rolconnlimit; -1 means none


@dataclass(frozen=True)
class TenantState:
    """What the catalog says, as seen by the admin connection (one database)."""

    database: str
    role: RoleState | None  # None: the role does not exist
    schema_owner: str | None  # None: the schema does not exist
    role_connect: bool = False  # explicit CONNECT grant to the role on the database
    role_db_create: bool = False  # explicit CREATE grant to the role on the database
    public_db_create: bool = False  # PUBLIC may CREATE schemas in the database
    public_schema_exists: bool = True
    role_public_create: bool = False  # explicit CREATE grant to the role on schema public
    public_public_create: bool = False  # PUBLIC may CREATE in schema public
    ext_schema_exists: bool = False
    vector_schema: str | None = None  # schema the `vector` extension lives in, None if absent
    vector_available: bool = True  # pgvector is installed on the server
    role_ext_usage: bool = False  # explicit USAGE grant to the role on the extensions schema
    role_record: str | None = None  # COMMENT ON ROLE: the owner record (ownership.py)
    schema_record: str | None = None  # COMMENT ON SCHEMA


@dataclass(frozen=True)
class Catalog:
    """The catalog facts of every tenant at once (one bulk read, shared by a resync):
    the same facts `TenantState` holds for one tenant."""

    database: str
    roles: Mapping[str, tuple[int, RoleState, str | None, str | None]]
    # role name -> (oid, its state with password_matches unset, rolpassword, owner record)
    schemas: Mapping[str, tuple[str, str | None]]  # schema -> (owner, owner record)
    db_grants: frozenset[tuple[int, str]]  # (grantee oid, privilege) on the database; 0 = PUBLIC
    public_grants: frozenset[tuple[int, str]] | None  # on schema public; None: no such schema
    ext_grants: frozenset[tuple[int, str]] | None  # on the extensions schema; None: none
    vector_schema: str | None
    vector_available: bool


def tenant_state(
    catalog: Catalog, target: DatabaseTarget, password_ok: Callable[[str | None], bool]
) -> TenantState:
    """One tenant's TenantState out of the bulk Catalog; `password_ok(rolpassword)`
    says whether the stored secret is the target's password."""
    role = catalog.roles.get(target.role)
    oid = role[0] if role is not None else -1
    schema = catalog.schemas.get(target.schema)
    public, ext = catalog.public_grants, catalog.ext_grants
    return TenantState(
        database=catalog.database,
        role=(
            dataclasses.replace(role[1], password_matches=password_ok(role[2]))
            if role is not None
            else None
        ),
        schema_owner=schema[0] if schema is not None else None,
        role_connect=(oid, "CONNECT") in catalog.db_grants,
        role_db_create=(oid, "CREATE") in catalog.db_grants,
        public_db_create=(0, "CREATE") in catalog.db_grants,
        public_schema_exists=public is not None,
        role_public_create=public is not None and (oid, "CREATE") in public,
        public_public_create=public is not None and (0, "CREATE") in public,
        ext_schema_exists=ext is not None,
        vector_schema=catalog.vector_schema,
        vector_available=catalog.vector_available,
        role_ext_usage=ext is not None and (oid, "USAGE") in ext,
        role_record=role[3] if role is not None else None,
        schema_record=schema[1] if schema is not None else None,
    )


def validate_identifier(kind: str, name: str) -> None:
    """PostgreSQL truncates long identifiers silently; refuse instead of aliasing tenants."""
    if not name:
        raise PlanError(f"{kind} name must not be empty")
    if len(name.encode()) > _PG_IDENT_MAX:
        raise PlanError(f"{kind} name {name!r} is longer than {_PG_IDENT_MAX} bytes")
    if "\x00" in name:
        raise PlanError(f"{kind} name must not contain NUL")
    if name.startswith("pg_"):
        raise PlanError(f"{kind} name {name!r} uses the reserved prefix pg_")


def validate_password(password: str) -> None:
    # Restricting to ASCII makes SASLprep the identity, so our SCRAM verifier and
    # PostgreSQL's agree byte for byte (generated tokens are ASCII anyway).
    if not password:
        raise PlanError("password must not be empty")
    if not password.isascii() or "\x00" in password:
        raise PlanError("password must be ASCII without NUL characters")


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(_hmac(salted, b"Client Key")).digest()
    server_key = _hmac(salted, b"Server Key")
    return stored_key, server_key


def scram_verifier(password: str, salt: bytes, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 secret PostgreSQL stores in pg_authid.rolpassword.

    Sending this instead of the plain password keeps the password out of the
    server's statement log (what psql's \\password does)."""
    validate_password(password)
    stored_key, server_key = _scram_keys(password, salt, iterations)
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def password_matches(stored: str | None, password: str, role: str) -> bool:
    """Whether `password` is the one behind a stored rolpassword (SCRAM or legacy md5)."""
    if not stored:
        return False
    if stored.startswith("SCRAM-SHA-256$"):
        try:
            head, keys = stored[len("SCRAM-SHA-256$") :].split("$", 1)
            iterations_s, salt_b64 = head.split(":", 1)
            stored_b64, server_b64 = keys.split(":", 1)
            salt = base64.b64decode(salt_b64, validate=True)
            want_stored = base64.b64decode(stored_b64, validate=True)
            want_server = base64.b64decode(server_b64, validate=True)
            iterations = int(iterations_s)
        except ValueError:
            return False  # unparseable secret: treat as different, we will rewrite it
        stored_key, server_key = _scram_keys(password, salt, iterations)
        return hmac.compare_digest(stored_key, want_stored) and hmac.compare_digest(
            server_key, want_server
        )
    if stored.startswith("md5") and len(stored) == 35:
        digest = hashlib.md5((password + role).encode()).hexdigest()  # PostgreSQL's legacy format
        return hmac.compare_digest("md5" + digest, stored)
    return False


# Attributes the tenant role must have: (catalog field, keyword when true, keyword when false).
_ROLE_ATTRS: tuple[tuple[str, bool, str, str], ...] = (
    ("login", True, "LOGIN", "NOLOGIN"),
    ("superuser", False, "SUPERUSER", "NOSUPERUSER"),
    ("createdb", False, "CREATEDB", "NOCREATEDB"),
    ("createrole", False, "CREATEROLE", "NOCREATEROLE"),
    ("inherit", False, "INHERIT", "NOINHERIT"),
    ("replication", False, "REPLICATION", "NOREPLICATION"),
    ("bypassrls", False, "BYPASSRLS", "NOBYPASSRLS"),
)


def plan_tenant(state: TenantState, target: DatabaseTarget, verifier: str) -> list[sql.Composed]:
    """Statements that bring `state` to `target`; [] when nothing differs.

    `verifier` is the SCRAM secret to set if the password must be (re)written."""
    validate_identifier("role", target.role)
    validate_identifier("schema", target.schema)
    validate_identifier("extensions schema", target.extensions_schema)
    validate_password(target.password)
    if target.connection_limit < -1:
        raise PlanError(f"connection limit must be -1 or >= 0, got {target.connection_limit}")
    if target.pgvector:
        if target.extensions_schema == target.schema:
            raise PlanError("the extensions schema must differ from the tenant schema")
        if state.vector_schema is not None and state.vector_schema != target.extensions_schema:
            raise PlanError(
                f"extension vector is installed in schema {state.vector_schema!r}, "
                f"not {target.extensions_schema!r}; set the extensions schema to match"
            )
        if state.vector_schema is None and not state.vector_available:
            raise PlanError("the pgvector extension is not available on this server")

    owner = target.owner
    if owner is not None:  # before any statement: another owner's data is never touched
        if state.role is not None:
            check_take(
                f"role {target.role}", Owner.parse(state.role_record), owner, target.adoption
            )
        if state.schema_owner is not None:
            check_take(
                f"schema {target.schema}",
                Owner.parse(state.schema_record),
                owner,
                target.adoption,
            )

    role = sql.Identifier(target.role)
    schema = sql.Identifier(target.schema)
    db = sql.Identifier(state.database)
    out: list[sql.Composed] = []

    if state.role is None:
        # Only non-default attributes are spelled out: a CREATEROLE (non-superuser)
        # admin may not even mention SUPERUSER/REPLICATION/BYPASSRLS.
        out.append(
            sql.SQL(
                "CREATE ROLE {} WITH LOGIN NOCREATEDB NOCREATEROLE NOINHERIT"
                " CONNECTION LIMIT {} PASSWORD {}"
            ).format(role, sql.Literal(target.connection_limit), sql.Literal(verifier))
        )
    else:
        changes = [
            on if want else off
            for field, want, on, off in _ROLE_ATTRS
            if getattr(state.role, field) != want
        ]
        if changes:
            out.append(sql.SQL("ALTER ROLE {} WITH " + " ".join(changes)).format(role))
        if state.role.connection_limit != target.connection_limit:
            out.append(
                sql.SQL("ALTER ROLE {} WITH CONNECTION LIMIT {}").format(
                    role, sql.Literal(target.connection_limit)
                )
            )
        if not state.role.password_matches:
            out.append(
                sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(role, sql.Literal(verifier))
            )
        out.extend(
            sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(parent), role)
            for parent in sorted(state.role.member_of)
        )

    if state.schema_owner is None:
        out.append(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(schema, role))
    elif state.schema_owner != target.role:
        out.append(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(schema, role))
    if owner is not None:
        record = sql.Literal(owner.record())
        if state.role is None or state.role_record != owner.record():
            out.append(sql.SQL("COMMENT ON ROLE {} IS {}").format(role, record))
        if state.schema_owner is None or state.schema_record != owner.record():
            out.append(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(schema, record))

    if not state.role_connect:
        out.append(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, role))
    if state.role_db_create:
        out.append(sql.SQL("REVOKE CREATE ON DATABASE {} FROM {}").format(db, role))
    if state.public_db_create:
        # PUBLIC includes the tenant: without this it could create schemas anyway.
        out.append(sql.SQL("REVOKE CREATE ON DATABASE {} FROM PUBLIC").format(db))
    if state.public_schema_exists:
        if state.role_public_create:
            out.append(sql.SQL("REVOKE CREATE ON SCHEMA public FROM {}").format(role))
        if state.public_public_create:
            out.append(sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC").format())

    if target.pgvector:
        ext = sql.Identifier(target.extensions_schema)
        if not state.ext_schema_exists:
            out.append(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ext))
        if state.vector_schema is None:
            out.append(sql.SQL("CREATE EXTENSION IF NOT EXISTS vector SCHEMA {}").format(ext))
        if not state.role_ext_usage:
            out.append(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(ext, role))
    return out


def plan_delete(
    target: DatabaseTarget,
    *,
    role_exists: bool,
    schema_exists: bool,
    role_record: str | None = None,
    schema_record: str | None = None,
) -> list[sql.Composed]:
    """DROP SCHEMA ... CASCADE, then the role once nothing refers to it; [] when both are gone.
    Raises NotOwner when the data is not recorded to the target's owner."""
    validate_identifier("role", target.role)
    validate_identifier("schema", target.schema)
    if target.owner is not None:
        if role_exists:
            check_delete(
                f"role {target.role}", Owner.parse(role_record), target.owner, target.adoption
            )
        if schema_exists:
            check_delete(
                f"schema {target.schema}",
                Owner.parse(schema_record),
                target.owner,
                target.adoption,
            )
    role = sql.Identifier(target.role)
    out: list[sql.Composed] = []
    if schema_exists:
        out.append(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(target.schema)))
    if role_exists:
        out.extend(
            [
                # Objects it may own elsewhere in this database go to the admin, its
                # grants go away; only then can the role itself be dropped.
                sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(role),
                sql.SQL("DROP OWNED BY {}").format(role),
                sql.SQL("DROP ROLE {}").format(role),
            ]
        )
    return out
