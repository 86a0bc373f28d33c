"""The MemoryNamespace CRD against a real kube-apiserver: defaults, validation,
CEL immutability and monotonic rules, printer columns."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml

from tests.servers.kube import KubeCluster, install_crds

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def crd(kube: KubeCluster) -> KubeCluster:
    install_crds(kube, "crds/")
    return kube


@pytest.fixture(autouse=True)
def _cleanup(crd: KubeCluster, kube_namespace: str) -> Iterator[None]:
    # Tenant claims are cluster-wide: leave no CR behind in a terminating namespace.
    yield
    crd.kubectl_run("delete", "memns", "--all", "-n", kube_namespace, "--wait=false", check=False)


def _apply(kube: KubeCluster, ns: str, name: str, spec: dict, check: bool = False):
    doc = {
        "apiVersion": "memory.somafractal.io/v1alpha1",
        "kind": "MemoryNamespace",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }
    return kube.kubectl_run("apply", "-f", "-", input=yaml.safe_dump(doc), check=check)


def _get(kube: KubeCluster, ns: str, name: str) -> dict:
    out = kube.kubectl_run("get", "memns", name, "-n", ns, "-o", "json")
    return json.loads(out.stdout)


def test_defaults_are_applied(crd: KubeCluster, kube_namespace: str) -> None:
    assert _apply(crd, kube_namespace, "acme", {}).returncode == 0
    spec = _get(crd, kube_namespace, "acme")["spec"]
    assert spec["deletionPolicy"] == "Retain"
    assert spec["paused"] is False
    assert spec["vectors"] == {
        "backend": "qdrant",
        "dimensions": 384,
        "distance": "Cosine",
        "hnsw": {"m": 16, "efConstruct": 100},
        "onDisk": False,
    }
    assert spec["events"] == {
        "enabled": True,
        "partitions": 3,
        "replicationFactor": 1,
        "retentionHours": 168,
    }
    assert spec["embedding"]["model"] == "all-MiniLM-L6-v2"
    assert spec["decay"]["pruneBelow"] == 0.05
    assert spec["api"]["rateLimit"] == {"requestsPerMinute": 600, "burst": 100}
    assert spec["storage"]["maxMemories"] == 0
    assert "tenant" not in spec  # defaults to metadata.name in the operator


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"tenant": "Acme"}, "spec.tenant"),
        ({"deletionPolicy": "Purge"}, "spec.deletionPolicy"),
        ({"vectors": {"distance": "Manhattan"}}, "spec.vectors.distance"),
        ({"vectors": {"dimensions": 0}}, "spec.vectors.dimensions"),
        ({"events": {"partitions": 0}}, "spec.events.partitions"),
        ({"decay": {"pruneBelow": 2}}, "spec.decay.pruneBelow"),
        ({"embedding": {"provider": "http"}}, "spec.embedding.url is required"),
        ({"api": {"resources": {"limits": {"cpu": "lots"}}}}, "spec.api.resources.limits"),
        # Issue 14 item 13: what can never work is refused at admission, with a message.
        ({"tenant": "acme-"}, "spec.tenant"),
        (
            {"vectors": {"backend": "postgres", "dimensions": 2001}},
            "at most 2000 with vectors.backend postgres",
        ),
        # issue 19: the bundled local model's output size is fixed
        ({"vectors": {"dimensions": 768}}, "produces 384-dimensional vectors"),
        ({"embedding": {"model": "bge-large-en"}}, "produces 384-dimensional vectors"),
    ],
)
def test_bad_values_rejected(
    crd: KubeCluster, kube_namespace: str, spec: dict, fragment: str
) -> None:
    out = _apply(crd, kube_namespace, "bad", spec)
    assert out.returncode != 0
    assert fragment in out.stderr


def test_pgvector_at_its_limit_and_qdrant_above_it_are_admitted(
    crd: KubeCluster, kube_namespace: str
) -> None:
    pg = {"vectors": {"backend": "postgres", "dimensions": 2000}, "embedding": {"provider": "none"}}
    assert _apply(crd, kube_namespace, "pg", pg).returncode == 0
    big = {"vectors": {"backend": "qdrant", "dimensions": 4096}, "embedding": {"provider": "none"}}
    assert _apply(crd, kube_namespace, "big", big).returncode == 0
    http = {"vectors": {"dimensions": 1536}, "embedding": {"provider": "http", "url": "http://e"}}
    assert _apply(crd, kube_namespace, "http", http).returncode == 0


def test_name_that_is_no_tenant_needs_spec_tenant(crd: KubeCluster, kube_namespace: str) -> None:
    # metadata.name may contain dots; it is then no tenant name and spec.tenant is required.
    out = _apply(crd, kube_namespace, "acme.prod", {})
    assert out.returncode != 0
    assert "spec.tenant is unset and metadata.name is not a valid tenant" in out.stderr
    assert _apply(crd, kube_namespace, "acme.prod", {"tenant": "acme-prod"}).returncode == 0


def test_name_longer_than_service_limit_rejected(crd: KubeCluster, kube_namespace: str) -> None:
    out = _apply(crd, kube_namespace, "n" * 57, {"tenant": "ok"})
    assert out.returncode != 0
    assert "metadata.name" in out.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tenant": "other"}, "spec.tenant is immutable"),
        ({"vectors": {"dimensions": 768}}, "spec.vectors.dimensions is immutable"),
        ({"vectors": {"distance": "Dot"}}, "spec.vectors.distance is immutable"),
        ({"vectors": {"backend": "postgres"}}, "spec.vectors.backend is immutable"),
        ({"events": {"replicationFactor": 3}}, "spec.events.replicationFactor is immutable"),
        ({"events": {"partitions": 2}}, "may grow but never shrink"),
    ],
)
def test_immutable_and_monotonic_fields(
    crd: KubeCluster, kube_namespace: str, change: dict, message: str
) -> None:
    assert _apply(crd, kube_namespace, "acme", {"tenant": "acme"}).returncode == 0
    out = _apply(crd, kube_namespace, "acme", {"tenant": "acme", **change})
    assert out.returncode != 0
    assert message in out.stderr


def test_allowed_changes_pass(crd: KubeCluster, kube_namespace: str) -> None:
    assert _apply(crd, kube_namespace, "acme", {}).returncode == 0
    grown = {"events": {"partitions": 6}, "vectors": {"hnsw": {"m": 32}}, "paused": True}
    out = _apply(crd, kube_namespace, "acme", grown)
    assert out.returncode == 0, out.stderr
    spec = _get(crd, kube_namespace, "acme")["spec"]
    assert spec["events"]["partitions"] == 6
    assert spec["vectors"]["hnsw"]["m"] == 32
    # Adding spec.tenant equal to the name keeps the effective tenant: allowed.
    assert _apply(crd, kube_namespace, "acme", {**grown, "tenant": "acme"}).returncode == 0


def test_tenant_cannot_be_added_later_if_it_changes_the_effective_tenant(
    crd: KubeCluster, kube_namespace: str
) -> None:
    assert _apply(crd, kube_namespace, "acme", {}).returncode == 0
    out = _apply(crd, kube_namespace, "acme", {"tenant": "globex"})
    assert out.returncode != 0
    assert "spec.tenant is immutable" in out.stderr


def test_status_fields_are_kept_and_unknown_ones_pruned(
    crd: KubeCluster, kube_namespace: str
) -> None:
    assert _apply(crd, kube_namespace, "acme", {}).returncode == 0
    status = {
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "TenantConflict",
                "message": "m",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 1,
            }
        ],
        "tenant": "acme",
        "schema": "mem_acme",
        "role": "mem_acme",
        "collection": "mem_acme",
        "topics": ["mem.acme.events"],
        "cacheUser": "mem-acme",
        "keyPrefix": "mem:acme",
        "endpoint": "http://acme-memory.x.svc:9595",
        "tokenSecret": "acme-memory-token",
        "credentialsSecret": "acme-memory-credentials",
    }
    patch = json.dumps({"status": {**status, "bogus": 1}})
    crd.kubectl_run(
        "patch", "memns", "acme", "-n", kube_namespace, "--subresource=status",
        "--type=merge", "-p", patch,
    )  # fmt: skip
    got = _get(crd, kube_namespace, "acme")["status"]
    assert got == status
    table = crd.kubectl_run("get", "memns", "-n", kube_namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "TENANT", "READY", "REASON", "ENDPOINT", "AGE"]
    row = table[1].split()
    assert row[1:5] == ["acme", "False", "TenantConflict", "http://acme-memory.x.svc:9595"]


def test_samples_are_accepted_by_the_api_server(crd: KubeCluster, kube_namespace: str) -> None:
    from tests.servers._process import REPO_ROOT

    for path in sorted((REPO_ROOT / "samples").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        doc["metadata"]["namespace"] = kube_namespace
        out = crd.kubectl_run(
            "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(doc), check=False
        )
        assert out.returncode == 0, f"{path}: {out.stderr}"
