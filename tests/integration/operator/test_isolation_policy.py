"""Issue 14, items 2, 3, 13 and 14: what a CR author gets is bounded by the
operator's configuration, and a refusal is a clear reason with nothing deployed.

Two tenants in two namespaces against a real kube-apiserver, PostgreSQL and
Redis; Qdrant is the test-only REST stand-in (a shared server, no API key), so
one tenant's rendered Qdrant settings can be tried against another's collection.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from qdrant_client import QdrantClient

from memory_operator import conditions as c
from memory_operator.adapters.kube import KubeApi
from memory_operator.adapters.postgres import PostgresAdmin
from memory_operator.adapters.qdrant import QdrantAdmin
from memory_operator.adapters.redis import RedisAdmin
from memory_operator.policy import TOKEN_SECRET_LABEL
from memory_operator.reconcile import Backends, Reconciler, Result
from tests.e2e.harness import delete, fetch, kube_api, memory_namespace, operator_config
from tests.servers.kube import KubeCluster, install_crds
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.integration

MEMNS = "/apis/memory.somafractal.io/v1alpha1/namespaces/{}/memorynamespaces"


@pytest.fixture(scope="module")
def api(kube: KubeCluster) -> Iterator[KubeApi]:
    install_crds(kube, "crds/")
    client = kube_api(kube)
    yield client
    client.close()


@pytest.fixture
def two_namespaces(kube: KubeCluster, kube_namespace: str) -> Iterator[tuple[str, str]]:
    other = f"t-{uuid.uuid4().hex[:12]}"
    kube.kubectl_run("create", "namespace", other)
    try:
        yield kube_namespace, other
    finally:
        kube.kubectl_run("delete", "namespace", other, "--wait=false", check=False)


@dataclass
class Operator:
    api: KubeApi
    reconciler: Reconciler

    def reconcile(self, ns: str, name: str) -> Result:
        return self.reconciler.reconcile(fetch(self.api, ns, name))


@pytest.fixture
def make_operator(
    api: KubeApi,
    two_namespaces: tuple[str, str],
    pg_database: str,
    redis_server: RedisServer,
    qdrant_url: str,
) -> Iterator[Any]:
    clients: list[Any] = []

    def build(extra: dict[str, str] | None = None, qdrant_api_key: str | None = None) -> Operator:
        config = operator_config(
            postgres_dsn=pg_database,
            redis_url=redis_server.url,
            qdrant_url=qdrant_url,
            qdrant_api_key=qdrant_api_key,
            extra=extra,
        )
        qdrant = QdrantAdmin.connect(qdrant_url, qdrant_api_key)
        redis_admin = RedisAdmin(redis_server.url)
        clients.extend([qdrant, redis_admin])
        backends = Backends(
            database=PostgresAdmin(config.postgres.admin_dsn),
            vectors=qdrant,
            cache=redis_admin,
        )
        return Operator(api, Reconciler(config, api, backends))

    yield build
    for client in clients:
        client.close()
    for ns in two_namespaces:  # tenants are cluster-wide claims: leave none behind
        delete(api, MEMNS.format(ns))


def _secret(api: KubeApi, ns: str, name: str) -> dict[str, str] | None:
    s = api.get("Secret", ns, name)
    if s is None:
        return None
    return {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}


def _ready(api: KubeApi, ns: str, name: str) -> dict[str, Any]:
    cond = c.get_condition(fetch(api, ns, name).get("status", {}).get("conditions", []), c.READY)
    assert cond is not None
    return cond


def _nothing_deployed(api: KubeApi, ns: str, name: str) -> None:
    for kind in ("Deployment", "ConfigMap", "Service", "NetworkPolicy"):
        assert api.get(kind, ns, f"{name}-memory") is None, kind
    assert api.get("Secret", ns, f"{name}-memory-credentials") is None


# -- item 2: images and token Secrets ------------------------------------------------------


def test_image_outside_the_allow_list_is_refused_and_nothing_deployed(
    make_operator: Any, two_namespaces: tuple[str, str]
) -> None:
    ns1, _ = two_namespaces
    op = make_operator(extra={"SOMAFRACTAL_RUNTIME_IMAGE_ALLOWLIST": "registry.test/approved/*"})
    pg = {"vectors": {"backend": "postgres"}}
    memory_namespace(op.api, ns1, "evil", {**pg, "api": {"image": "attacker.test/miner:1"}})
    result = op.reconcile(ns1, "evil")
    assert result.error == "permanent"
    ready = _ready(op.api, ns1, "evil")
    assert (ready["status"], ready["reason"]) == ("False", "ImageNotAllowed")
    assert "attacker.test/miner:1" in ready["message"]
    _nothing_deployed(op.api, ns1, "evil")

    # The configured runtime image and images under an allow-listed prefix are fine.
    memory_namespace(op.api, ns1, "good", {**pg, "api": {"image": "registry.test/approved/rt:2"}})
    assert op.reconcile(ns1, "good").error is None
    live = op.api.get("Deployment", ns1, "good-memory")
    assert live is not None
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry.test/approved/rt:2"
    )


def test_token_secret_must_opt_in_before_its_value_reaches_a_pod(
    make_operator: Any, two_namespaces: tuple[str, str]
) -> None:
    """A CR author who may not read Secrets names another team's Secret: refused."""
    ns1, _ = two_namespaces
    op = make_operator()
    victim = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "payments-db", "namespace": ns1},
        "data": {"password": base64.b64encode(b"s3cret-payments-password").decode()},
    }
    op.api.create(victim)
    spec = {
        "vectors": {"backend": "postgres"},
        "api": {"tokenSecretRef": {"name": "payments-db", "key": "password"}},
    }
    memory_namespace(op.api, ns1, "thief", spec)
    result = op.reconcile(ns1, "thief")
    assert result.error == "permanent"
    assert result.reason == "TokenSecretNotAllowed"
    ready = _ready(op.api, ns1, "thief")
    assert ready["reason"] == "TokenSecretNotAllowed"
    assert TOKEN_SECRET_LABEL in ready["message"]
    assert op.api.get("Deployment", ns1, "thief-memory") is None

    # Labelled for this CR, the same Secret is used.
    victim["metadata"]["labels"] = {TOKEN_SECRET_LABEL: "thief"}
    op.api.apply(victim)
    assert op.reconcile(ns1, "thief").error is None
    dep = op.api.get("Deployment", ns1, "thief-memory")
    assert dep is not None
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    ref = next(e for e in env if e["name"] == "MEMORY_API_TOKENS")["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "payments-db", "key": "password"}


# -- item 3: Qdrant without per-tenant scoping --------------------------------------------


def test_qdrant_without_scoping_is_refused_by_default(
    make_operator: Any, two_namespaces: tuple[str, str], qdrant_url: str
) -> None:
    ns1, ns2 = two_namespaces
    op = make_operator()  # Qdrant with no API key: no way to scope a tenant
    tenants = {ns1: f"q{uuid.uuid4().hex[:8]}", ns2: f"q{uuid.uuid4().hex[:8]}"}
    for ns, tenant in tenants.items():
        memory_namespace(op.api, ns, tenant, {"vectors": {"backend": "qdrant"}})
        result = op.reconcile(ns, tenant)
        assert (result.error, result.reason) == ("permanent", "QdrantNotIsolated")
        ready = _ready(op.api, ns, tenant)
        assert ready["reason"] == "QdrantNotIsolated"
        assert "SOMAFRACTAL_QDRANT_TENANT_ISOLATION=off" in ready["message"]
        _nothing_deployed(op.api, ns, tenant)
    qdrant = QdrantClient(url=qdrant_url, check_compatibility=False)
    names = {col.name for col in qdrant.get_collections().collections}
    qdrant.close()
    assert not {f"mem_{t}" for t in tenants.values()} & names

    # The pgvector backend needs no Qdrant scoping.
    memory_namespace(op.api, ns1, "pgonly", {"vectors": {"backend": "postgres"}})
    assert op.reconcile(ns1, "pgonly").error is None


def test_qdrant_isolation_off_is_explicit_and_every_cr_says_so(
    make_operator: Any, two_namespaces: tuple[str, str]
) -> None:
    ns1, ns2 = two_namespaces
    op = make_operator(extra={"SOMAFRACTAL_QDRANT_TENANT_ISOLATION": "off"})
    a, b = f"a{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"
    memory_namespace(op.api, ns1, a, {"vectors": {"backend": "qdrant"}})
    memory_namespace(op.api, ns2, b, {"vectors": {"backend": "qdrant"}})
    for ns, name in ((ns1, a), (ns2, b)):
        assert op.reconcile(ns, name).error is None
        cond = c.get_condition(fetch(op.api, ns, name)["status"]["conditions"], c.COLLECTION_READY)
        assert cond is not None
        assert (cond["status"], cond["reason"]) == ("True", "QdrantNotIsolated")
        assert "every tenant can read every collection" in cond["message"]

    # What "not isolated" means: B, with only its own rendered settings, reads A's collection.
    b_config = op.api.get("ConfigMap", ns2, f"{b}-memory")["data"]
    b_creds = _secret(op.api, ns2, f"{b}-memory-credentials")
    assert b_creds is not None
    attacker = QdrantClient(
        url=b_config["MEMORY_QDRANT_URL"],
        api_key=b_creds["MEMORY_QDRANT_API_KEY"] or None,
        check_compatibility=False,
    )
    try:
        assert attacker.collection_exists(f"mem_{a}")
    finally:
        attacker.close()


# -- item 13: embedding.url -------------------------------------------------------------


def test_embedding_url_outside_the_allowed_prefixes_is_refused(
    make_operator: Any, two_namespaces: tuple[str, str]
) -> None:
    ns1, _ = two_namespaces
    op = make_operator(
        extra={"SOMAFRACTAL_EMBEDDING_URL_ALLOWLIST": "https://embed.example.test/v1/"}
    )
    base = {"vectors": {"backend": "postgres", "dimensions": 8}}
    for name, url in (
        ("internal", "http://kube-dns.kube-system.svc:53/v1/embeddings"),
        ("lookalike", "https://embed.example.test.evil.test/v1/embeddings"),
        ("sibling", "https://embed.example.test/v10/embeddings"),
    ):
        spec = {**base, "embedding": {"provider": "http", "model": "m", "url": url}}
        memory_namespace(op.api, ns1, name, spec)
        result = op.reconcile(ns1, name)
        assert (result.error, result.reason) == ("permanent", "EmbeddingUrlNotAllowed"), name
        assert _ready(op.api, ns1, name)["reason"] == "EmbeddingUrlNotAllowed"
        _nothing_deployed(op.api, ns1, name)
    ok = "https://embed.example.test/v1/embeddings"
    memory_namespace(op.api, ns1, "ok", {**base, "embedding": {"provider": "http", "url": ok}})
    assert op.reconcile(ns1, "ok").error is None


# -- item 14: NetworkPolicy ---------------------------------------------------------------


def test_runtime_pods_get_a_network_policy(
    make_operator: Any, two_namespaces: tuple[str, str]
) -> None:
    ns1, _ = two_namespaces
    op = make_operator(extra={"SOMAFRACTAL_API_INGRESS_NAMESPACES": "memory-clients=true"})
    memory_namespace(op.api, ns1, "net", {"vectors": {"backend": "postgres"}})
    assert op.reconcile(ns1, "net").error is None
    policy = op.api.get("NetworkPolicy", ns1, "net-memory")
    assert policy is not None
    cr = fetch(op.api, ns1, "net")
    assert policy["metadata"]["ownerReferences"][0]["uid"] == cr["metadata"]["uid"]
    dep = op.api.get("Deployment", ns1, "net-memory")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    by_port = {rule["ports"][0]["port"]: rule["from"] for rule in policy["spec"]["ingress"]}
    assert set(by_port) == {9595, 9596}
    assert by_port[9595] == [
        {"podSelector": {}},
        {"namespaceSelector": {"matchLabels": {"memory-clients": "true"}}},
    ]
    assert by_port[9596] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]

    # Drift is repaired: a widened policy is put back on the next pass.
    op.api._request(
        "PATCH",
        f"/apis/networking.k8s.io/v1/namespaces/{ns1}/networkpolicies/net-memory",
        body={"spec": {"ingress": [{}]}},  # allow everything from everywhere
        content_type="application/merge-patch+json",
    )
    result = op.reconcile(ns1, "net")
    assert "NetworkPolicy/net-memory" in result.writes
    repaired = op.api.get("NetworkPolicy", ns1, "net-memory")
    assert {r["ports"][0]["port"] for r in repaired["spec"]["ingress"]} == {9595, 9596}
