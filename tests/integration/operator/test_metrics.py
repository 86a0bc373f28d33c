"""Operator metrics after real reconciles: controller-runtime names, results,
backend latency, and the Prometheus endpoint."""

from __future__ import annotations

import httpx
import pytest

from memory_operator import metrics
from memory_operator.adapters.postgres import PostgresAdmin
from memory_operator.reconcile import Backends, Reconciler
from tests.e2e.harness import delete, fetch, kube_api, memory_namespace, operator_config
from tests.servers._process import free_port
from tests.servers.kube import KubeCluster, install_crds

pytestmark = pytest.mark.integration


def _value(name: str, labels: dict[str, str]) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_reconcile_metrics_and_endpoint(
    kube: KubeCluster, pg_database: str, kube_namespace: str
) -> None:
    install_crds(kube, "crds/")
    api = kube_api(kube)
    config = operator_config(postgres_dsn=pg_database, prefix="met")
    reconciler = Reconciler(config, api, Backends(database=PostgresAdmin(pg_database)))
    ctl = {"controller": metrics.CONTROLLER}
    errors0 = _value("controller_runtime_reconcile_errors_total", ctl)
    requeue0 = _value("controller_runtime_reconcile_total", {**ctl, "result": "requeue"})
    error0 = _value("controller_runtime_reconcile_total", {**ctl, "result": "error"})
    pg0 = _value(
        "somafractal_backend_operation_seconds_count",
        {"backend": "postgres", "operation": "apply"},
    )
    hist0 = _value("controller_runtime_reconcile_time_seconds_count", ctl)

    memory_namespace(api, kube_namespace, "good", {"vectors": {"backend": "postgres"}})
    memory_namespace(api, kube_namespace, "bad")
    # The CRD refuses this model now; a CR stored before that rule still reaches the operator.
    bad = fetch(api, kube_namespace, "bad")
    bad["spec"]["embedding"]["model"] = "nope"
    assert reconciler.reconcile(fetch(api, kube_namespace, "good")).waiting
    assert reconciler.reconcile(bad).error == "permanent"

    assert (
        _value("controller_runtime_reconcile_total", {**ctl, "result": "requeue"}) == requeue0 + 1
    )
    assert _value("controller_runtime_reconcile_total", {**ctl, "result": "error"}) == error0 + 1
    assert _value("controller_runtime_reconcile_errors_total", ctl) == errors0 + 1
    assert _value("controller_runtime_reconcile_time_seconds_count", ctl) == hist0 + 2
    assert (
        _value(
            "somafractal_backend_operation_seconds_count",
            {"backend": "postgres", "operation": "apply"},
        )
        == pg0 + 1  # the adapter records its phases: one apply made the new tenant
    )

    port = free_port()
    metrics.serve(port, addr="127.0.0.1")
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'controller_runtime_reconcile_total{controller="memorynamespace",result="error"}' in text
    assert "controller_runtime_reconcile_time_seconds_bucket" in text
    assert 'somafractal_backend_operation_seconds_count{backend="kubernetes"' in text
    delete(
        api, f"/apis/memory.somafractal.io/v1alpha1/namespaces/{kube_namespace}/memorynamespaces"
    )
    api.close()
