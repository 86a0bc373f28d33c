"""The operator at fleet scale, against a real kube-apiserver, PostgreSQL and Redis
(the Qdrant REST stand-in, in-process): a burst of CRs all reach Ready without a
resync, tenant claims come from the watch-fed index (no list per reconcile), and two operator
processes with Kopf peering hand over after a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

import memory_contract
import memory_operator
from memory_operator import conditions as c
from memory_operator.adapters.kube import KubeApi
from memory_operator.adapters.postgres import PostgresAdmin
from memory_operator.adapters.qdrant import QdrantAdmin
from memory_operator.adapters.redis import RedisAdmin
from memory_operator.reconcile import Backends
from tests.e2e.harness import (
    GROUP_PATH,
    CountingKube,
    PodFaker,
    WriteLog,
    delete,
    kube_api,
    make_deployment_available,
    memory_namespace,
    new_namespace,
    operator_config,
    running_operator,
    wait_for,
)
from tests.servers._process import free_port
from tests.servers.kube import KubeCluster, install_crds
from tests.servers.postgres import PostgresServer
from tests.servers.qdrant_rest import in_process_qdrant
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
RESYNC_NEVER = 86400  # no timer pass can rescue a stuck tenant during these tests


@pytest.fixture(scope="module")
def api(kube: KubeCluster) -> Iterator[KubeApi]:
    install_crds(kube, "crds/")
    client = kube_api(kube)
    yield client
    client.close()


def _items(api: KubeApi, ns: str) -> list[dict[str, Any]]:
    return (api._request("GET", f"{GROUP_PATH}/namespaces/{ns}/memorynamespaces") or {}).get(
        "items", []
    )


def _reason(obj: dict[str, Any], type_: str = c.READY) -> tuple[str, str] | None:
    cond = c.get_condition((obj.get("status") or {}).get("conditions") or [], type_)
    return (cond["status"], cond["reason"]) if cond else None


def _drop_finalizers(api: KubeApi, ns: str) -> None:
    def drop(name: str) -> None:
        api._request(
            "PATCH",
            f"{GROUP_PATH}/namespaces/{ns}/memorynamespaces/{name}",
            body={"metadata": {"finalizers": None}},
            content_type="application/merge-patch+json",
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(drop, [o["metadata"]["name"] for o in _items(api, ns)]))


def test_burst_of_200_crs_all_ready_without_a_resync(
    kube: KubeCluster, api: KubeApi, pg_database: str, redis_server: RedisServer
) -> None:
    """200 CRs applied at once: tenants race on shared catalog rows (the database's
    ACL); every race is retried, so all become Ready with no resync to rescue them."""
    ns = new_namespace(api, "burst")
    prefix = f"b{uuid.uuid4().hex[:6]}"
    config = operator_config(
        postgres_dsn=pg_database,
        redis_url=redis_server.url,
        qdrant_url="http://qdrant.test:6333",
        prefix=prefix,
        resync_seconds=RESYNC_NEVER,
        namespaces=(ns,),
    )
    backends = Backends(
        database=PostgresAdmin(pg_database),
        vectors=QdrantAdmin(in_process_qdrant().http),
        cache=RedisAdmin(redis_server.url),
    )
    faker = PodFaker(api)
    faker.start()
    try:
        with running_operator(kube, config, CountingKube(api, WriteLog()), backends):
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda i: memory_namespace(api, ns, f"t{i:03d}"), range(200)))

            def all_ready() -> bool:
                items = _items(api, ns)
                stuck = [
                    (o["metadata"]["name"], _reason(o))
                    for o in items
                    if (_reason(o) or ("", ""))[1].endswith("Rejected")
                ]
                assert not stuck, f"permanent errors: {stuck[:5]}"
                return sum(_reason(o) == ("True", "Ready") for o in items) == 200

            wait_for(all_ready, timeout=900, interval=2, what="200 CRs Ready")
    finally:
        faker.stop.set()
        _drop_finalizers(api, ns)
        delete(api, f"/api/v1/namespaces/{ns}")


def test_claims_of_1000_crs_come_from_the_index(
    kube: KubeCluster, api: KubeApi, pg_database: str
) -> None:
    """1,000 CRs (paused: the claim check runs, no backend is touched) and two that
    claim the same tenant, all there before the operator starts (a restart): every
    one is reconciled under Kopf's worker limit, the older claim wins, the newer
    reports TenantConflict, and the CRs are listed once, at start, never per pass."""
    ns = new_namespace(api, "claims")
    config = operator_config(
        postgres_dsn=pg_database,
        prefix=f"c{uuid.uuid4().hex[:6]}",
        resync_seconds=RESYNC_NEVER,
        namespaces=(ns,),
    )
    counting = CountingKube(api, WriteLog())
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda i: memory_namespace(api, ns, f"p{i:04d}", {"paused": True}), range(1000)
            )
        )
    memory_namespace(api, ns, "newer", {"tenant": "p0007", "paused": True})
    try:
        with running_operator(kube, config, counting, Backends(PostgresAdmin(pg_database))):

            def all_seen() -> bool:
                items = _items(api, ns)
                return len(items) == 1001 and all(
                    _reason(o, c.PAUSED) or _reason(o) == ("False", "TenantConflict") for o in items
                )

            wait_for(all_seen, timeout=900, interval=2, what="1,001 CRs reconciled")
            by_name = {o["metadata"]["name"]: o for o in _items(api, ns)}
            assert _reason(by_name["newer"]) == ("False", "TenantConflict")
            assert (
                f"{ns}/p0007"
                in c.get_condition(by_name["newer"]["status"]["conditions"], c.READY)["message"]
            )
            assert _reason(by_name["p0007"], c.PAUSED) == ("True", "PausedBySpec")
            assert counting.lists == 1  # the operator's index, filled at start
    finally:
        _drop_finalizers(api, ns)  # the operator is gone: 1,001 finalize passes are not the point
        delete(api, f"/api/v1/namespaces/{ns}")


def _operator_process(
    kube: KubeCluster, env: dict[str, str], priority: int, log: Path
) -> tuple[subprocess.Popen[bytes], int]:
    metrics_port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "memory_operator", "--kubeconfig", kube.kubeconfig],
        env={
            **env,
            "SOMAFRACTAL_PEERING_PRIORITY": str(priority),
            "SOMAFRACTAL_METRICS_PORT": str(metrics_port),
            "SOMAFRACTAL_LIVENESS_PORT": str(free_port()),
        },
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return proc, metrics_port


def _reconciles(port: int) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return -1.0
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("controller_runtime_reconcile_total{")
    )


def test_standby_takes_over_after_the_active_is_killed(
    kube: KubeCluster, api: KubeApi, postgres: PostgresServer, tmp_path: Path
) -> None:
    """Two real operator processes with Kopf peering and a 5 s resync: only the
    higher priority one reconciles (Kopf's handlers and the resync loop); after a
    SIGKILL, the standby reconciles new CRs and resyncs the existing ones within
    the peering lifetime."""
    ns = new_namespace(api, "peer")
    prefix = f"k{uuid.uuid4().hex[:6]}"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        # The operator this test imports (a worktree's), not whichever the venv
        # installed, and the contract beside it (what operator/Dockerfile copies).
        "PYTHONPATH": os.pathsep.join(
            str(Path(module.__file__).resolve().parents[1])  # operator/, the repository
            for module in (memory_operator, memory_contract)
        ),
        "SOMAFRACTAL_POSTGRES_ADMIN_DSN": postgres.admin_dsn,
        "SOMAFRACTAL_NAME_PREFIX": prefix,
        "SOMAFRACTAL_WATCH_NAMESPACES": ns,
        "SOMAFRACTAL_RESYNC_SECONDS": "5",
        "SOMAFRACTAL_PEERING_NAME": "somafractal-test",
        "SOMAFRACTAL_PEERING_LIFETIME": "10",
        "SOMAFRACTAL_LOG_FORMAT": "plain",
    }
    active, active_port = _operator_process(kube, env, 200, tmp_path / "active.log")
    standby = None
    try:
        wait_for(lambda: _reconciles(active_port) >= 0, timeout=60, what="active metrics")
        memory_namespace(api, ns, "one", {"vectors": {"backend": "postgres"}})
        wait_for(
            lambda: (
                _reason(api.get("MemoryNamespace", ns, "one") or {}, c.SCHEMA_READY)
                == ("True", "SchemaReady")
            ),
            timeout=60,
            what="the active operator reconciles",
        )
        standby, standby_port = _operator_process(kube, env, 100, tmp_path / "standby.log")
        wait_for(lambda: _reconciles(standby_port) >= 0, timeout=60, what="standby metrics")
        memory_namespace(api, ns, "two", {"vectors": {"backend": "postgres"}})
        wait_for(
            lambda: (
                _reason(api.get("MemoryNamespace", ns, "two") or {}, c.SCHEMA_READY)
                == ("True", "SchemaReady")
            ),
            timeout=60,
            what="the active operator reconciles a CR created with both running",
        )
        # Two resync walks of the active (two CRs each) while the standby lives.
        mark = _reconciles(active_port)
        wait_for(lambda: _reconciles(active_port) >= mark + 4, timeout=60, what="active resyncs")
        assert _reconciles(standby_port) == 0  # the standby never reconciled anything
        assert "reconciled" not in (tmp_path / "standby.log").read_text()

        active.send_signal(signal.SIGKILL)
        active.wait(10)
        memory_namespace(api, ns, "three", {"vectors": {"backend": "postgres"}})
        wait_for(
            lambda: (
                _reason(api.get("MemoryNamespace", ns, "three") or {}, c.SCHEMA_READY)
                == ("True", "SchemaReady")
            ),
            timeout=90,
            what="the standby takes over",
        )
        # Its resync loop runs too: "one" has no change for Kopf, only a resync passes it.
        wait_for(
            lambda: f"reconciled {ns}/one:" in (tmp_path / "standby.log").read_text(),
            timeout=30,
            what="the standby resyncs",
        )
        # And its Deployment watch: a rollout that finishes reconciles its CR at once.
        make_deployment_available(api, ns, "three-memory")
        wait_for(
            lambda: (
                f"reconciled {ns}/three after its Deployment changed"
                in (tmp_path / "standby.log").read_text()
            ),
            timeout=60,
            what="the standby's Deployment watch",
        )
    finally:
        delete(api, f"{GROUP_PATH}/namespaces/{ns}/memorynamespaces")
        if standby is not None:
            wait_for(lambda: not _items(api, ns), timeout=120, what="CRs finalized")
            standby.terminate()
            standby.wait(30)
        if active.poll() is None:
            active.kill()
        delete(api, f"/api/v1/namespaces/{ns}")
