"""End to end: kubectl apply a MemoryNamespace -> the operator (Kopf, in-process)
reconciles it against real PostgreSQL, Redis, Kafka (SASL/SCRAM + ACLs) and
Qdrant -> the Deployment becomes available -> `kubectl wait --for=condition=Ready`
-> the runtime (`python -m memory_runtime serve`) starts with ONLY the
environment the operator rendered (ConfigMap + Secrets, resolved the way the
kubelet resolves the pod template) -> store and recall over HTTP with the
tenant's token -> delete: Retain keeps the data, Delete removes it."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
import yaml
from confluent_kafka.admin import AdminClient
from qdrant_client import QdrantClient

from memory_operator.adapters.kafka import KafkaAdmin
from memory_operator.adapters.kube import KubeApi
from memory_operator.adapters.postgres import PostgresAdmin
from memory_operator.adapters.qdrant import QdrantAdmin
from memory_operator.adapters.redis import RedisAdmin
from memory_operator.reconcile import Backends
from tests.e2e.harness import (
    delete,
    kube_api,
    make_deployment_available,
    operator_config,
    running_operator,
    wait_for,
)
from tests.servers._process import free_port, stop_popen
from tests.servers.kafka import KafkaServer
from tests.servers.kube import KubeCluster, install_crds
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    kube: KubeCluster
    api: KubeApi
    ns: str
    prefix: str
    pg_dsn: str
    redis: redis.Redis
    kafka: KafkaServer
    qdrant: QdrantClient


@pytest.fixture
def stack(
    kube: KubeCluster,
    pg_database: str,
    redis_server: RedisServer,
    kafka: KafkaServer,
    qdrant_url: str,
    kube_namespace: str,
) -> Iterator[Stack]:
    """The operator running in-process against every real backend, for one test."""
    install_crds(kube, "crds/")
    api = kube_api(kube)
    prefix = f"e{uuid.uuid4().hex[:6]}"
    config = operator_config(
        postgres_dsn=pg_database,
        redis_url=redis_server.url,
        kafka_bootstrap=kafka.sasl_bootstrap,
        kafka_sasl=(kafka.admin_username, kafka.admin_password),
        qdrant_url=qdrant_url,
        prefix=prefix,
        resync_seconds=60,
        namespaces=(kube_namespace,),
    )
    qdrant = QdrantClient(url=qdrant_url)
    backends = Backends(
        database=PostgresAdmin(pg_database),
        vectors=QdrantAdmin(qdrant),
        events=KafkaAdmin(config.kafka.admin_client_config()),  # type: ignore[union-attr]
        cache=RedisAdmin(redis_server.url),
    )
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    with running_operator(kube, config, api, backends):
        yield Stack(kube, api, kube_namespace, prefix, pg_database, r, kafka, qdrant)
        # Finalize anything a failed test left while the operator still runs.
        delete(
            api,
            f"/apis/memory.somafractal.io/v1alpha1/namespaces/{kube_namespace}/memorynamespaces",
        )
    r.close()
    qdrant.close()
    api.close()


def _env_from_pod_template(api: KubeApi, ns: str, deployment: str) -> dict[str, str]:
    """Resolve the container's envFrom/env exactly as the kubelet would."""
    dep = api.get("Deployment", ns, deployment)
    assert dep is not None
    container = dep["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        cm = api.get("ConfigMap", ns, src["configMapRef"]["name"])
        assert cm is not None
        env.update(cm["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        secret = api.get("Secret", ns, ref["name"])
        assert secret is not None, ref
        env[var["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return env


@pytest.fixture
def runtime_proc() -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str], log: Path) -> str:
        port, metrics = free_port(), free_port()
        full = {
            **env,
            # Only what a container would add: its own address, and the OS basics.
            "MEMORY_HOST": "127.0.0.1",
            "MEMORY_PORT": str(port),
            "MEMORY_METRICS_PORT": str(metrics),
            "HF_HUB_OFFLINE": "1",
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),
        }
        out = log.open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "memory_runtime", "serve"],
            env=full, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"runtime exited {proc.returncode}: {log.read_text()[-3000:]}")
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=120, interval=0.5, what="runtime /healthz")
        return url

    yield start
    for p in procs:
        stop_popen(p, grace=20)


def _apply(stack: Stack, ns: str, name: str, spec: dict[str, Any]) -> None:
    doc = {
        "apiVersion": "memory.somafractal.io/v1alpha1",
        "kind": "MemoryNamespace",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }
    stack.kube.kubectl_run("apply", "-f", "-", input=yaml.safe_dump(doc))


def _ready(stack: Stack, ns: str, name: str) -> None:
    wait_for(
        lambda: stack.api.get("Deployment", ns, f"{name}-memory") is not None,
        timeout=60,
        what="the operator to create the Deployment",
    )
    make_deployment_available(stack.api, ns, f"{name}-memory")
    out = stack.kube.kubectl_run(
        "wait", "--for=condition=Ready", f"memns/{name}", "-n", ns, "--timeout=120s", check=False
    )
    assert out.returncode == 0, out.stderr


def _store_and_recall(url: str, token: str) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        assert (
            http.post(
                "/memories", json={"payload": {}}, headers={"Authorization": "Bearer x"}
            ).status_code
            == 401
        )
        stored = http.post(
            "/memories",
            json={"coordinate": [1, 2], "payload": {"text": "The launch is planned for March"},
                  "memory_type": "semantic", "tags": ["plan"]},
        )  # fmt: skip
        assert stored.status_code == 201, stored.text
        http.post(
            "/memories",
            json={"coordinate": [3, 4], "payload": {"text": "Cats like to sleep in the sun"}},
        )
        found = http.post("/memories/search", json={"query": "when is the launch?", "top_k": 2})
        assert found.status_code == 200, found.text
        hits = found.json()["hits"]
        assert hits, found.text
        top = hits[0]
        record = top.get("memory", top)
        assert record["coordinate"] == [1.0, 2.0]
        return str(record["id"])


def _schema_exists(dsn: str, schema: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return (
            conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
            is not None
        )


def _topic_exists(kafka: KafkaServer, topic: str) -> bool:
    return topic in AdminClient(kafka.admin_config).list_topics(timeout=10).topics


def _delete(stack: Stack, ns: str, name: str) -> None:
    stack.kube.kubectl_run("delete", "memns", name, "-n", ns, "--timeout=90s")
    assert stack.api.get("MemoryNamespace", ns, name) is None


def test_pgvector_tenant_end_to_end_with_retain(
    stack: Stack, kube_namespace: str, runtime_proc: Any, tmp_path: Path
) -> None:
    ns, name = kube_namespace, f"acme-{stack.prefix}"
    _apply(stack, ns, name, {"vectors": {"backend": "postgres"}})
    _ready(stack, ns, name)
    env = _env_from_pod_template(stack.api, ns, f"{name}-memory")
    # The runtime gets tenant credentials only, never admin ones.
    sql = f"{stack.prefix}_{name.replace('-', '_')}"
    assert env["MEMORY_DATABASE_URL"].startswith(f"postgresql://{sql}:")
    assert env["MEMORY_REDIS_URL"].startswith(f"redis://{stack.prefix}-{name}:")
    assert env["MEMORY_KAFKA_USERNAME"] == f"{stack.prefix}-{name}"
    url = runtime_proc(env, tmp_path / "runtime.log")
    _store_and_recall(url, env["MEMORY_API_TOKENS"])

    schema = sql
    _delete(stack, ns, name)
    assert _schema_exists(stack.pg_dsn, schema)  # Retain
    with psycopg.connect(stack.pg_dsn) as conn:
        count = conn.execute(f"SELECT count(*) FROM {schema}.memories").fetchone()
    assert count is not None
    assert count[0] == 2
    assert _topic_exists(stack.kafka, f"{stack.prefix}.{name}.events")


def test_qdrant_tenant_end_to_end_with_delete(
    stack: Stack, kube_namespace: str, runtime_proc: Any, tmp_path: Path
) -> None:
    ns, name = kube_namespace, f"globex-{stack.prefix}"
    _apply(stack, ns, name, {"deletionPolicy": "Delete"})
    _ready(stack, ns, name)
    env = _env_from_pod_template(stack.api, ns, f"{name}-memory")
    assert env["MEMORY_VECTOR_BACKEND"] == "qdrant"
    url = runtime_proc(env, tmp_path / "runtime.log")
    _store_and_recall(url, env["MEMORY_API_TOKENS"])
    collection = f"{stack.prefix}_{name.replace('-', '_')}"
    assert stack.qdrant.count(collection).count == 2

    _delete(stack, ns, name)
    assert not _schema_exists(stack.pg_dsn, collection)
    assert not stack.qdrant.collection_exists(collection)
    assert not _topic_exists(stack.kafka, f"{stack.prefix}.{name}.events")
    assert stack.redis.execute_command("ACL", "GETUSER", f"{stack.prefix}-{name}") is None
