"""Versioned schema migrations, applied as the tenant role inside its own schema.

Files are `migrations/NNNN_name.sql`. Each runs in its own transaction together
with its `schema_migrations` row, so a failed migration leaves nothing behind.
An advisory lock keyed on the schema serialises replicas starting together.
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


def _lock_key(schema: str) -> int:
    # 63-bit key from the schema name: one migrator per schema at a time
    return int.from_bytes(hashlib.sha256(f"migrate:{schema}".encode()).digest()[:8], "big") >> 1


def migrate(conninfo: str, schema: str, extensions_schema: str) -> list[int]:
    """Apply pending migrations; return the versions applied now (empty if none)."""
    applied_now: list[int] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "SELECT set_config('search_path', %s, false)",
            (search_path(schema, extensions_schema),),
        )
        current = conn.execute("SELECT current_schema()").fetchone()
        if current is None or current[0] != schema:
            raise MigrationError(
                f"schema {schema!r} does not exist or is not usable by this role; "
                "the operator (or embedded mode) must create it first"
            )
        for migration in load_migrations():
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(schema),))
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {}.schema_migrations ("
                        " version int PRIMARY KEY, name text NOT NULL,"
                        " checksum text NOT NULL,"
                        " applied_at timestamptz NOT NULL DEFAULT now())"
                    ).format(sql.Identifier(schema))
                )
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
