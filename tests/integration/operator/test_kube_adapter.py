"""adapters/kube.py against a real kube-apiserver: server-side apply under one
field manager (and no-op re-apply), create races, status patches, Events,
listing claims, and errors classified temporary/permanent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from memory_operator.adapters.kube import KubeApi, KubeError
from memory_operator.manifests import FIELD_MANAGER
from tests.e2e.harness import delete, kube_api, memory_namespace
from tests.servers._process import free_port
from tests.servers.kube import KubeCluster, install_crds

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(kube: KubeCluster) -> Iterator[KubeApi]:
    install_crds(kube, "crds/")
    client = kube_api(kube)
    yield client
    client.close()


def _cm(ns: str, data: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm", "namespace": ns},
        "data": data,
    }


def test_server_side_apply_is_owned_and_idempotent(api: KubeApi, kube_namespace: str) -> None:
    first = api.apply(_cm(kube_namespace, {"a": "1"}))
    managers = {(m["manager"], m["operation"]) for m in first["metadata"]["managedFields"]}
    assert (FIELD_MANAGER, "Apply") in managers
    again = api.apply(_cm(kube_namespace, {"a": "1"}))
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    # Dropping a field from what we apply removes it (we owned it).
    changed = api.apply(_cm(kube_namespace, {"b": "2"}))
    assert changed["data"] == {"b": "2"}


def test_create_returns_none_when_it_exists(api: KubeApi, kube_namespace: str) -> None:
    assert api.create(_cm(kube_namespace, {"a": "1"})) is not None
    assert api.create(_cm(kube_namespace, {"a": "other"})) is None
    live = api.get("ConfigMap", kube_namespace, "cm")
    assert live is not None
    assert live["data"] == {"a": "1"}
    assert api.get("ConfigMap", kube_namespace, "missing") is None


def test_status_patch_events_and_listing(api: KubeApi, kube_namespace: str) -> None:
    cr = memory_namespace(api, kube_namespace, "acme")
    out = api.patch_status(kube_namespace, "acme", {"schema": "mem_acme", "observedGeneration": 1})
    assert out["status"] == {"schema": "mem_acme", "observedGeneration": 1}
    assert out["metadata"]["generation"] == cr["metadata"]["generation"]  # spec untouched
    api.emit_event(cr, "Normal", "SchemaCreated", "schema mem_acme created")
    events = api._request(
        "GET", f"/api/v1/namespaces/{kube_namespace}/events",
        params={"fieldSelector": "involvedObject.name=acme"},
    )  # fmt: skip
    assert events is not None
    [event] = events["items"]
    assert (event["reason"], event["type"]) == ("SchemaCreated", "Normal")
    assert event["involvedObject"]["uid"] == cr["metadata"]["uid"]
    names = {
        (o["metadata"]["namespace"], o["metadata"]["name"]) for o in api.list_memory_namespaces()
    }
    assert (kube_namespace, "acme") in names
    delete(
        api,
        f"/apis/memory.somafractal.io/v1alpha1/namespaces/{kube_namespace}/memorynamespaces/acme",
    )


def test_errors_are_classified(api: KubeApi, kube_namespace: str, kube: KubeCluster) -> None:
    bad = _cm(kube_namespace, {"a": "1"})
    bad["metadata"]["name"] = "Not_A_Name"
    with pytest.raises(KubeError) as err:
        api.apply(bad)
    assert err.value.status == 422
    assert not err.value.temporary
    from kubernetes import client as k8s_client

    cfg = k8s_client.Configuration()
    cfg.host = f"https://127.0.0.1:{free_port()}"
    cfg.verify_ssl = False
    down = KubeApi(cfg, timeout=2)
    with pytest.raises(KubeError) as err:
        down.get("ConfigMap", kube_namespace, "cm")
    assert err.value.status == 0
    assert err.value.temporary
    down.close()
