"""The whole operator (Kopf + handlers + reconciler + real adapters) running
in-process against a real kube-apiserver, PostgreSQL, Redis and the Qdrant REST
stand-in: create -> Ready, the finalizer and deletion policies, repair by the
resync loop, permanent errors, and no writes while nothing changes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from memory_operator import conditions as c
from memory_operator.adapters.kube import KubeApi
from memory_operator.adapters.postgres import PostgresAdmin
from memory_operator.adapters.qdrant import QdrantAdmin
from memory_operator.adapters.redis import RedisAdmin
from memory_operator.handlers import FINALIZER
from memory_operator.metrics import REGISTRY
from memory_operator.reconcile import Backends
from tests.e2e.harness import (
    CountingKube,
    WriteLog,
    delete,
    fetch,
    kube_api,
    make_deployment_available,
    memory_namespace,
    new_namespace,
    operator_config,
    running_operator,
    wait_for,
)
from tests.servers.kube import KubeCluster, install_crds
from tests.servers.postgres import PostgresServer
from tests.servers.qdrant_rest import InProcessQdrant, in_process_qdrant
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.integration


@dataclass
class Running:
    api: KubeApi
    ns: str
    prefix: str
    pg_dsn: str
    qdrant: InProcessQdrant
    log: WriteLog

    def schema(self, tenant: str) -> str:
        return f"{self.prefix}_{tenant.replace('-', '_')}"

    def schema_exists(self, tenant: str) -> bool:
        with psycopg.connect(self.pg_dsn) as conn:
            row = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema(tenant),)
            ).fetchone()
        return row is not None


def _reconciles() -> float:
    return sum(
        s.value
        for m in REGISTRY.collect()
        if m.name == "controller_runtime_reconcile"
        for s in m.samples
        if s.name == "controller_runtime_reconcile_total"
    )


@pytest.fixture(scope="module")
def operator(
    kube: KubeCluster, postgres: PostgresServer, redis_server: RedisServer
) -> Iterator[Running]:
    install_crds(kube, "crds/")
    api = kube_api(kube)
    ns = new_namespace(api, "h")
    prefix = f"h{uuid.uuid4().hex[:6]}"  # this module's tenants never collide with others'
    config = operator_config(
        postgres_dsn=postgres.admin_dsn,
        redis_url=redis_server.url,
        qdrant_url="http://qdrant.test:6333",
        prefix=prefix,
        resync_seconds=5,
        namespaces=(ns,),
    )
    qdrant = in_process_qdrant()
    backends = Backends(
        database=PostgresAdmin(postgres.admin_dsn),
        vectors=QdrantAdmin(qdrant.http),
        cache=RedisAdmin(redis_server.url),
    )
    log = WriteLog()
    with running_operator(kube, config, CountingKube(api, log), backends):
        yield Running(api, ns, prefix, postgres.admin_dsn, qdrant, log)
        # Let the operator release its finalizers before it stops.
        delete(api, f"/apis/memory.somafractal.io/v1alpha1/namespaces/{ns}/memorynamespaces")
        crs = f"/apis/memory.somafractal.io/v1alpha1/namespaces/{ns}/memorynamespaces"
        wait_for(
            lambda: not (api._request("GET", crs) or {}).get("items"),
            timeout=60,
            what="CRs finalized",
        )
    delete(api, f"/api/v1/namespaces/{ns}")
    api.close()


def _cond(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return c.get_condition((obj.get("status") or {}).get("conditions") or [], type_)


def _has(running: Running, ns: str, name: str, type_: str, status: str, reason: str | None = None):
    def check() -> bool:
        obj = running.api.get("MemoryNamespace", ns, name)
        cond = _cond(obj or {}, type_)
        return bool(
            cond and cond["status"] == status and (reason is None or cond["reason"] == reason)
        )

    return check


def _gone(api: KubeApi, ns: str, name: str):
    return lambda: api.get("MemoryNamespace", ns, name) is None


def test_create_to_ready_then_delete_with_delete_policy(
    operator: Running,
) -> None:
    ns = operator.ns
    memory_namespace(operator.api, ns, "alpha", {"deletionPolicy": "Delete"})
    wait_for(_has(operator, ns, "alpha", c.SCHEMA_READY, "True"), what="SchemaReady")
    wait_for(
        _has(operator, ns, "alpha", c.API_READY, "False", "DeploymentNotAvailable"),
        what="ApiReady=False while the Deployment is not available",
    )
    obj = fetch(operator.api, ns, "alpha")
    assert FINALIZER in obj["metadata"]["finalizers"]
    assert operator.schema_exists("alpha")
    make_deployment_available(operator.api, ns, "alpha-memory")
    # The create handler keeps polling the Deployment (TemporaryError with a short delay).
    wait_for(_has(operator, ns, "alpha", c.READY, "True"), timeout=90, what="Ready")

    delete(
        operator.api, f"/apis/memory.somafractal.io/v1alpha1/namespaces/{ns}/memorynamespaces/alpha"
    )
    wait_for(_gone(operator.api, ns, "alpha"), what="finalizer released")
    assert not operator.schema_exists("alpha")
    assert not operator.qdrant.engine.collection_exists(operator.schema("alpha"))


def test_retain_keeps_data_after_delete(operator: Running) -> None:
    ns = operator.ns
    memory_namespace(operator.api, ns, "beta")
    wait_for(_has(operator, ns, "beta", c.SCHEMA_READY, "True"), what="SchemaReady")
    delete(
        operator.api, f"/apis/memory.somafractal.io/v1alpha1/namespaces/{ns}/memorynamespaces/beta"
    )
    wait_for(_gone(operator.api, ns, "beta"), what="finalizer released")
    assert operator.schema_exists("beta")
    assert operator.qdrant.engine.collection_exists(operator.schema("beta"))


def test_resync_repairs_drift_and_idle_ready_object_is_not_written(
    operator: Running,
) -> None:
    ns = operator.ns
    memory_namespace(operator.api, ns, "gamma", {"deletionPolicy": "Delete"})
    wait_for(_has(operator, ns, "gamma", c.SCHEMA_READY, "True"), what="SchemaReady")
    make_deployment_available(operator.api, ns, "gamma-memory")
    wait_for(_has(operator, ns, "gamma", c.READY, "True"), timeout=90, what="Ready")

    # Idle: let the resync loop run a few passes, then compare resourceVersions.
    objects = [
        ("MemoryNamespace", "gamma"),
        ("ConfigMap", "gamma-memory"),
        ("Deployment", "gamma-memory"),
        ("Service", "gamma-memory"),
        ("Secret", "gamma-memory-credentials"),
        ("Secret", "gamma-memory-token"),
    ]

    def versions() -> dict[str, str]:
        return {
            f"{k}/{n}": operator.api.get(k, ns, n)["metadata"]["resourceVersion"]  # type: ignore[index]
            for k, n in objects
        }

    start = _reconciles()
    wait_for(lambda: _reconciles() >= start + 1, timeout=30, what="a resync pass")
    before = versions()
    operator.log.clear()
    mark = _reconciles()
    wait_for(lambda: _reconciles() >= mark + 2, timeout=30, what="two more resync passes")
    assert versions() == before
    assert not [w for w in operator.log.calls if "gamma" in w[1]]

    # Drift: drop the schema out of band; the resync loop brings it back.
    with psycopg.connect(operator.pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {operator.schema('gamma')} CASCADE")
    wait_for(lambda: operator.schema_exists("gamma"), timeout=30, what="schema restored")
    delete(
        operator.api, f"/apis/memory.somafractal.io/v1alpha1/namespaces/{ns}/memorynamespaces/gamma"
    )
    wait_for(_gone(operator.api, ns, "gamma"), what="finalizer released")


def test_invalid_spec_reports_permanent_error(operator: Running) -> None:
    ns = operator.ns
    # what the CRD can't know: the operator's image allow-list (bad specs are refused
    # at admission, tests/integration/operator/test_crd.py)
    memory_namespace(operator.api, ns, "delta", {"api": {"image": "registry.test/other:1"}})
    wait_for(_has(operator, ns, "delta", c.READY, "False", "ImageNotAllowed"), what="refused")
    assert not operator.schema_exists("delta")
    delete(
        operator.api, f"/apis/memory.somafractal.io/v1alpha1/namespaces/{ns}/memorynamespaces/delta"
    )
    wait_for(_gone(operator.api, ns, "delta"), what="deleted")


def _tenants(ns: str, ready: str) -> float:
    return (
        REGISTRY.get_sample_value("somafractal_memorynamespaces", {"namespace": ns, "ready": ready})
        or 0.0
    )


def test_tenant_readiness_gauge_follows_the_crs(operator: Running) -> None:
    ns = operator.ns
    memory_namespace(operator.api, ns, "eps", {"deletionPolicy": "Delete"})
    memory_namespace(operator.api, ns, "zeta", {"api": {"image": "registry.test/other:1"}})
    wait_for(_has(operator, ns, "zeta", c.READY, "False", "ImageNotAllowed"), what="refused")
    wait_for(_has(operator, ns, "eps", c.API_READY, "False"), what="eps waits for its Deployment")
    wait_for(lambda: _tenants(ns, "False") == 2, what="two CRs counted not Ready")
    assert _tenants(ns, "True") == 0

    make_deployment_available(operator.api, ns, "eps-memory")
    wait_for(_has(operator, ns, "eps", c.READY, "True"), timeout=90, what="Ready")
    wait_for(lambda: _tenants(ns, "True") == 1, what="eps counted Ready")
    assert _tenants(ns, "False") == 1

    for name in ("eps", "zeta"):
        delete(
            operator.api,
            f"/apis/memory.somafractal.io/v1alpha1/namespaces/{ns}/memorynamespaces/{name}",
        )
        wait_for(_gone(operator.api, ns, name), what=f"{name} deleted")
    wait_for(
        lambda: _tenants(ns, "True") == _tenants(ns, "False") == _tenants(ns, "Unknown") == 0,
        what="deleted CRs no longer counted",
    )
