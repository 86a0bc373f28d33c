"""The operator reacts to its Deployments (like controller-runtime's Owns()):
with a resync far in the future and no retry loop, a rollout that becomes
available makes the tenant Ready, and a deleted Deployment comes back at once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from memory_operator import conditions as c
from memory_operator import metrics
from memory_operator.adapters.kube import KubeApi
from memory_operator.adapters.postgres import PostgresAdmin
from memory_operator.adapters.qdrant import QdrantAdmin
from memory_operator.reconcile import Backends
from tests.e2e.harness import (
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
from tests.servers.qdrant_rest import in_process_qdrant

pytestmark = pytest.mark.integration


@pytest.fixture
def ns_and_api(kube: KubeCluster, postgres: PostgresServer) -> Iterator[tuple[str, KubeApi]]:
    install_crds(kube, "crds/")
    api = kube_api(kube)
    ns = new_namespace(api, "w")
    config = operator_config(
        postgres_dsn=postgres.admin_dsn,
        qdrant_url="http://qdrant.test:6333",
        prefix=f"w{uuid.uuid4().hex[:6]}",
        resync_seconds=3600,  # the resync loop can't be what makes this test pass
        namespaces=(ns,),
    )
    backends = Backends(
        database=PostgresAdmin(postgres.admin_dsn), vectors=QdrantAdmin(in_process_qdrant().http)
    )
    with running_operator(kube, config, api, backends):
        yield ns, api
        delete(api, f"/apis/memory.somafractal.io/v1alpha1/namespaces/{ns}/memorynamespaces")
        crs = f"/apis/memory.somafractal.io/v1alpha1/namespaces/{ns}/memorynamespaces"
        wait_for(lambda: not (api._request("GET", crs) or {}).get("items"), timeout=60)
    delete(api, f"/api/v1/namespaces/{ns}")
    api.close()


def _ready(api: KubeApi, ns: str, name: str) -> str | None:
    cond = c.get_condition(
        (fetch(api, ns, name).get("status") or {}).get("conditions", []), "Ready"
    )
    return cond["status"] if cond else None


def test_rollout_and_deleted_deployment_drive_reconcile(ns_and_api: tuple[str, KubeApi]) -> None:
    ns, api = ns_and_api
    memory_namespace(api, ns, "epsilon", {"vectors": {"backend": "postgres"}})
    wait_for(lambda: api.get("Deployment", ns, "epsilon-memory"), timeout=60, what="Deployment")
    # Status is written at the end of the pass that applied the Deployment.
    wait_for(lambda: _ready(api, ns, "epsilon") == "False", timeout=60, what="Ready=False")
    make_deployment_available(api, ns, "epsilon-memory")
    wait_for(lambda: _ready(api, ns, "epsilon") == "True", timeout=60, what="Ready via watch")

    uid = api.get("Deployment", ns, "epsilon-memory")["metadata"]["uid"]  # type: ignore[index]
    delete(api, f"/apis/apps/v1/namespaces/{ns}/deployments/epsilon-memory")

    def recreated() -> bool:
        dep = api.get("Deployment", ns, "epsilon-memory")
        return dep is not None and dep["metadata"]["uid"] != uid

    wait_for(recreated, timeout=60, what="Deployment recreated")
    wait_for(lambda: _ready(api, ns, "epsilon") == "False", timeout=60, what="Ready flips")


def _passes() -> float:
    return sum(
        metrics.REGISTRY.get_sample_value(
            "controller_runtime_reconcile_total",
            {"controller": metrics.CONTROLLER, "result": result},
        )
        or 0.0
        for result in (metrics.SUCCESS, metrics.ERROR, metrics.REQUEUE)
    )


def test_a_started_operator_reconciles_each_cr_once(
    kube: KubeCluster, postgres: PostgresServer
) -> None:
    """A restart: the resync loop's first walk reconciles every CR once; the
    initial listing of the Deployments is no change and runs no second pass (nor
    does Kopf, which has handled the CR before)."""
    install_crds(kube, "crds/")
    api = kube_api(kube)
    ns = new_namespace(api, "once")
    config = operator_config(
        postgres_dsn=postgres.admin_dsn,
        qdrant_url="http://qdrant.test:6333",
        prefix=f"o{uuid.uuid4().hex[:6]}",
        resync_seconds=3600,
        namespaces=(ns,),
    )
    backends = Backends(
        database=PostgresAdmin(postgres.admin_dsn), vectors=QdrantAdmin(in_process_qdrant().http)
    )
    memory_namespace(api, ns, "zeta", {"vectors": {"backend": "postgres"}})
    with running_operator(kube, config, api, backends):  # the operator's first life
        wait_for(lambda: api.get("Deployment", ns, "zeta-memory"), timeout=60, what="Deployment")
        make_deployment_available(api, ns, "zeta-memory")
        wait_for(lambda: _ready(api, ns, "zeta") == "True", timeout=60, what="Ready")
    before = _passes()
    with running_operator(kube, config, api, backends):
        wait_for(lambda: _passes() > before, timeout=120, what="the first pass")
        time.sleep(5)  # a pass caused by the Deployment's listing would follow at once
        assert _passes() - before == 1
        delete(api, f"/apis/memory.somafractal.io/v1alpha1/namespaces/{ns}/memorynamespaces")
        crs = f"/apis/memory.somafractal.io/v1alpha1/namespaces/{ns}/memorynamespaces"
        wait_for(lambda: not (api._request("GET", crs) or {}).get("items"), timeout=60)
    delete(api, f"/api/v1/namespaces/{ns}")
    api.close()
