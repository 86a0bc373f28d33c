"""adapters/kube.py against a real kube-apiserver: server-side apply under one
field manager (and no-op re-apply), create races, status patches, Events,
listing claims, and errors classified temporary/permanent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kopf
import pytest

from memory_operator.adapters.kube import KubeApi, kubeconfig_login
from memory_operator.manifests import FIELD_MANAGER
from memory_operator.ports import KubeError, KubeRejected, KubeUnavailable
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
    assert isinstance(err.value, KubeRejected)
    assert not err.value.temporary
    unreachable = kopf.ConnectionInfo(server=f"https://127.0.0.1:{free_port()}", insecure=True)
    down = KubeApi(lambda **_: unreachable, timeout=2)
    with pytest.raises(KubeError) as err:
        down.get("ConfigMap", kube_namespace, "cm")
    assert err.value.status == 0
    assert isinstance(err.value, KubeUnavailable)
    assert err.value.temporary
    down.close()


def test_kubeconfig_login_through_kopf(kube: KubeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kopf's kubeconfig reader (what `--kubeconfig` and a bare $KUBECONFIG use)
    gives KubeApi the cluster's address, CA file and token."""
    monkeypatch.setenv("KUBECONFIG", kube.kubeconfig)
    info = kubeconfig_login()
    assert (info.server, info.token) == (kube.server, kube.token)
    api = KubeApi(kubeconfig_login)
    assert api.get("ConfigMap", "default", "absent") is None  # authenticated: a 404, not a 401
    assert isinstance(list(api.list_memory_namespaces()), list)  # authenticated: no 401
    api.close()


def test_a_rejected_token_logs_in_again_once(kube: KubeCluster, kube_namespace: str) -> None:
    """A 401 (a rotated service-account token) calls the login again and retries once;
    a login that stays wrong is a permanent 401, not a loop."""
    tokens = iter(["expired", kube.token])
    calls: list[str] = []

    def rotating(**_: Any) -> kopf.ConnectionInfo:
        calls.append("login")
        return kopf.ConnectionInfo(server=kube.server, token=next(tokens), ca_path=kube.ca_file)

    api = KubeApi(rotating)
    assert api.get("ConfigMap", kube_namespace, "absent") is None
    assert calls == ["login", "login"]
    api.close()

    def wrong(**_: Any) -> kopf.ConnectionInfo:
        calls.append("wrong")
        return kopf.ConnectionInfo(server=kube.server, token="wrong", ca_path=kube.ca_file)

    calls.clear()
    api = KubeApi(wrong)
    with pytest.raises(KubeError) as err:
        api.get("ConfigMap", kube_namespace, "absent")
    assert err.value.status == 401
    assert isinstance(err.value, KubeRejected)
    assert not err.value.temporary
    assert calls == ["wrong", "wrong"]
    api.close()
