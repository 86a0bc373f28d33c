"""Versioned schema migrations, applied as the tenant role inside its own schema.

Files are `migrations/NNNN_name.sql`. Each runs in its own transaction together
with its `schema_migrations` row, so a failed migration leaves nothing behind.
Replicas starting together take turns on a lock of the `schema_migrations`
table itself: an object in the tenant's own schema, which no other tenant can
lock (a database-wide advisory lock keyed on the schema name could be taken by
anyone who can compute the key). The connection's lock and statement timeouts
bound every wait.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """A migration cannot be applied (wrong schema, changed file, SQL error)."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """The packaged migrations in version order; versions must be unique."""
    found: list[Migration] = []
    folder = resources.files("memory_runtime.storage") / "migrations"
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version number")
    return found


def search_path(schema: str, extensions_schema: str) -> str:
    return f"{schema}, {extensions_schema}" if extensions_schema else schema


# Migrations may build indexes on big tables: a longer statement timeout than
# requests get, but never none; waiting for another replica's migration is
# bounded too (the pod restarts and tries again).
MIGRATION_STATEMENT_TIMEOUT_MS = 30 * 60 * 1000
MIGRATION_LOCK_TIMEOUT_MS = 60 * 1000


def _create_ledger(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> None:
    statement = sql.SQL(
        "CREATE TABLE IF NOT EXISTS {}.schema_migrations ("
        " version int PRIMARY KEY, name text NOT NULL,"
        " checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    ).format(sql.Identifier(schema))
    try:
        conn.execute(statement)
    except psycopg.errors.UniqueViolation:
        # another replica created it at the same moment (IF NOT EXISTS is not atomic)
        conn.execute(statement)


def migrate(
    conninfo: str,
    schema: str,
    extensions_schema: str,
    *,
    lock_timeout_ms: int = MIGRATION_LOCK_TIMEOUT_MS,
    statement_timeout_ms: int = MIGRATION_STATEMENT_TIMEOUT_MS,
) -> list[int]:
    """Apply pending migrations; return the versions applied now (empty if none)."""
    applied_now: list[int] = []
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        for name, value in (
            ("search_path", search_path(schema, extensions_schema)),
            ("lock_timeout", str(lock_timeout_ms)),
            ("statement_timeout", str(statement_timeout_ms)),
        ):
            conn.execute("SELECT set_config(%s, %s, false)", (name, value))
        current = conn.execute("SELECT current_schema()").fetchone()
        if current is None or current[0] != schema:
            raise MigrationError(
                f"schema {schema!r} does not exist or is not usable by this role; "
                "the operator (or embedded mode) must create it first"
            )
        _create_ledger(conn, schema)
        for migration in load_migrations():
            with conn.transaction():
                # self-conflicting: one migrator at a time, readers unaffected
                conn.execute("LOCK TABLE schema_migrations IN SHARE ROW EXCLUSIVE MODE")
                row = conn.execute(
                    "SELECT checksum FROM schema_migrations WHERE version = %s",
                    (migration.version,),
                ).fetchone()
                if row is not None:
                    if row[0] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name} was changed "
                            "after it was applied; add a new migration instead"
                        )
                    continue
                try:
                    conn.execute(migration.sql.encode())
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} failed: "
                        f"{exc.diag.message_primary or exc}"
                    ) from exc
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
                applied_now.append(migration.version)
    return applied_now
