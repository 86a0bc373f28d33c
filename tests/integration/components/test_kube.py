"""kube-apiserver + kube-controller-manager smoke tests: CRD validation (schema, CEL),
defaulting and pruning, RBAC with static tokens, ownerReference garbage collection."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.servers.kube import KubeCluster, install_crds

pytestmark = pytest.mark.integration

CRD = Path(__file__).parent / "manifests" / "widgets-crd.yaml"
GROUP, VERSION, PLURAL = "smoke.somafractal.test", "v1", "widgets"


@pytest.fixture(scope="module")
def api(kube: KubeCluster) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=kube.kubeconfig)
    try:
        yield api_client
    finally:
        api_client.close()


@pytest.fixture(scope="module")
def widgets(kube: KubeCluster) -> list[str]:
    return install_crds(kube, CRD)


def _widget(name: str, spec: dict[str, object]) -> dict[str, object]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_install_crds_reports_established_crd(
    kube: KubeCluster, widgets: list[str], api: client.ApiClient
) -> None:
    assert widgets == ["widgets.smoke.somafractal.test"]
    crd = client.ApiextensionsV1Api(api).read_custom_resource_definition(widgets[0])
    conditions = {c.type: c.status for c in crd.status.conditions}
    assert conditions["Established"] == "True"


@pytest.mark.usefixtures("widgets")
def test_crd_schema_and_cel_rules_are_enforced(api: client.ApiClient, kube_namespace: str) -> None:
    objects = client.CustomObjectsApi(api)
    ns = kube_namespace

    with pytest.raises(ApiException) as bad_size:
        objects.create_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, _widget("too-big", {"size": 11})
        )
    assert bad_size.value.status == 422
    assert "spec.size" in bad_size.value.body

    with pytest.raises(ApiException) as bad_enum:
        objects.create_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, _widget("green", {"size": 1, "color": "green"})
        )
    assert bad_enum.value.status == 422
    assert "spec.color" in bad_enum.value.body

    created = objects.create_namespaced_custom_object(
        GROUP,
        VERSION,
        ns,
        PLURAL,
        _widget("ok", {"size": 3, "tenant": "acme", "unknownField": "dropped"}),
    )
    served = objects.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "ok")
    assert served["metadata"]["uid"] == created["metadata"]["uid"]
    # Defaulted by the schema; unknown fields pruned by the structural schema.
    assert served["spec"] == {"size": 3, "tenant": "acme", "color": "red"}

    with pytest.raises(ApiException) as immutable:
        objects.patch_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, "ok", {"spec": {"tenant": "other"}}
        )
    assert immutable.value.status == 422
    assert "tenant is immutable" in immutable.value.body
    # A mutable field still changes.
    objects.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "ok", {"spec": {"size": 4}})
    after = objects.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "ok")
    assert after["spec"]["size"] == 4
    assert after["spec"]["tenant"] == "acme"


def test_garbage_collector_deletes_dependents(api: client.ApiClient, kube_namespace: str) -> None:
    core = client.CoreV1Api(api)
    ns = kube_namespace
    owner = core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"), data={"a": "1"})
    )
    ref = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    core.create_namespaced_config_map(
        ns,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="dependent", owner_references=[ref])),
    )
    core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="unrelated"))
    )

    core.delete_namespaced_config_map("owner", ns, propagation_policy="Background")
    deadline = time.monotonic() + 60
    remaining = {"dependent", "unrelated"}
    while "dependent" in remaining and time.monotonic() < deadline:
        time.sleep(0.5)
        remaining = {cm.metadata.name for cm in core.list_namespaced_config_map(ns).items}
    assert "dependent" not in remaining
    assert "unrelated" in remaining


def test_unknown_token_is_unauthenticated(kube: KubeCluster) -> None:
    with _client_with_token(kube, uuid.uuid4().hex) as anon, pytest.raises(ApiException) as denied:
        client.CoreV1Api(anon).list_namespace()
    assert denied.value.status == 401


def test_rbac_applies_to_service_account_tokens(
    kube: KubeCluster, api: client.ApiClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(
        ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    token = core.create_namespaced_service_account_token(
        "reader", ns, client.AuthenticationV1TokenRequest(spec={"audiences": [kube.server]})
    ).status.token
    with _client_with_token(kube, token) as sa:
        with pytest.raises(ApiException) as forbidden:
            client.CoreV1Api(sa).list_namespaced_config_map(ns)
        assert forbidden.value.status == 403

        rbac.create_namespaced_role(
            ns,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="cm-reader"),
                rules=[
                    client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["list"])
                ],
            ),
        )
        rbac.create_namespaced_role_binding(
            ns,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="cm-reader"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="cm-reader"
                ),
                subjects=[client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=ns)],
            ),
        )
        # RBAC caches are refreshed by watch; allow a moment.
        deadline = time.monotonic() + 30
        while True:
            try:
                client.CoreV1Api(sa).list_namespaced_config_map(ns)
                break
            except ApiException as exc:
                if exc.status != 403 or time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        with pytest.raises(ApiException) as still_forbidden:
            client.CoreV1Api(sa).list_namespaced_secret(ns)
        assert still_forbidden.value.status == 403


def _client_with_token(kube: KubeCluster, token: str) -> client.ApiClient:
    cfg = client.Configuration()
    cfg.host = kube.server
    cfg.ssl_ca_cert = kube.ca_file
    cfg.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(cfg)
