"""Session fixtures: real servers on free 127.0.0.1 ports (see docs/TESTING.md).

Each server starts on first use, once per pytest session, and is stopped at the
end of the session whatever the tests did. A server that cannot start is an
error naming its log file under .test-logs/<component>/, never a skip.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers._process import cache_lock
from tests.servers.kafka import KafkaServer, run_kafka
from tests.servers.kube import KubeCluster, run_kube
from tests.servers.postgres import PostgresServer, fresh_database, run_postgres
from tests.servers.qdrant_rest import run_qdrant_rest
from tests.servers.redis import RedisServer, run_redis


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """PostgreSQL 18 + pgvector; `.admin_dsn` is the superuser URL of database `postgres`."""
    with run_postgres() as server:
        yield server


@pytest.fixture
def pg_database(postgres: PostgresServer) -> Iterator[str]:
    """Superuser DSN of a fresh empty database, dropped after the test."""
    with fresh_database(postgres) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Redis 6.2 with ACLs; `.url` authenticates as the `default` (admin) user."""
    with run_redis() as server:
        yield server


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaServer]:
    """Kafka 4.1 KRaft: `.bootstrap` (PLAINTEXT, super user) and `.sasl_bootstrap` (SCRAM, ACLs)."""
    with run_kafka() as server:
        yield server


@pytest.fixture(scope="session")
def kube() -> Iterator[KubeCluster]:
    """etcd + kube-apiserver + kube-controller-manager; `.kubeconfig` is an admin kubeconfig."""
    with run_kube() as cluster:
        yield cluster


@pytest.fixture
def kube_namespace(kube: KubeCluster) -> Iterator[str]:
    """A fresh namespace, deleted (without waiting) after the test."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    kube.kubectl_run("create", "namespace", name)
    try:
        yield name
    finally:
        kube.kubectl_run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def qdrant_url() -> Iterator[str]:
    """URL of the TEST-ONLY Qdrant REST stand-in (tests/servers/qdrant_rest.py), no API key.

    For tests where two processes share one Qdrant; in-process code can use
    QdrantClient(":memory:") directly."""
    with run_qdrant_rest() as server:
        yield server.url


@pytest.fixture(scope="session")
def helm() -> str:
    """Path of the helm binary scripts/build-helm.sh keeps in the cache."""
    root = Path(__file__).resolve().parents[1]
    with cache_lock("build-helm"):
        out = subprocess.run(
            [str(root / "scripts" / "build-helm.sh")],
            capture_output=True, text=True, check=True, timeout=1800,
        )  # fmt: skip
    return str(Path(out.stdout.strip().splitlines()[-1]) / "helm")
