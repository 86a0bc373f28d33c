"""Who may claim a tenant name that holds no data yet (issue 14, item 1): the
chart's ValidatingAdmissionPolicy, rendered by the real helm and enforced by the
real kube-apiserver. A CR in one namespace claiming a name reserved to another
is refused at admission with a clear message; the owner's claim, a namespace's
labelled prefix and an exempt namespace are admitted; the CRD's own rules still
answer first; without the policy any namespace claims any free name again."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import wait_for
from tests.servers.kube import KubeCluster, install_crds

pytestmark = pytest.mark.integration

CHART = Path(__file__).resolve().parents[3] / "charts" / "somafractal-operator"
PREFIX_LABEL = "memory.somafractal.io/tenant-prefix"
POLICY_KINDS = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


def render(helm: str, release: str, *sets: str) -> list[dict[str, Any]]:
    args = ["--set", "postgres.adminDsn=postgresql://x"]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(
        [helm, "template", release, str(CHART), *args],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def claim(kube: KubeCluster, ns: str, name: str, tenant: str | None = None):  # type: ignore[no-untyped-def]
    """kubectl create a MemoryNamespace as a CR author would (the admin's kubectl)."""
    doc = {
        "apiVersion": "memory.somafractal.io/v1alpha1",
        "kind": "MemoryNamespace",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"tenant": tenant} if tenant else {},
    }
    return kube.kubectl_run("create", "-f", "-", input=yaml.safe_dump(doc), check=False)


@pytest.fixture
def namespaces(kube: KubeCluster) -> Iterator[tuple[str, dict[str, str]]]:
    """Four fresh namespaces carrying a label unique to this test (the binding's
    namespace selector: the policy never touches other tests' namespaces)."""
    install_crds(kube, "crds/")
    mark = f"claims-{uuid.uuid4().hex[:6]}"
    names = {role: f"{role}-{uuid.uuid4().hex[:8]}" for role in ("team", "other", "lab", "plat")}
    for ns in names.values():
        kube.kubectl_run("create", "namespace", ns)
        kube.kubectl_run("label", "namespace", ns, f"{mark}=yes")
    try:
        yield mark, names
    finally:
        for ns in names.values():
            kube.kubectl_run("delete", "memns", "--all", "-n", ns, "--wait=false", check=False)
            kube.kubectl_run("delete", "namespace", ns, "--wait=false", check=False)


def test_a_tenant_name_reserved_to_one_namespace_is_refused_to_another(
    helm: str, kube: KubeCluster, namespaces: tuple[str, dict[str, str]]
) -> None:
    mark, ns = namespaces
    team, other, shop, plat = ns["team"], ns["other"], ns["lab"], ns["plat"]
    assert not POLICY_KINDS & {d["kind"] for d in render(helm, "off")}, "off by default"
    release = f"sfo-{mark}"
    docs = render(
        helm, release,
        "admission.tenantNames.enabled=true",
        f"admission.tenantNames.namespaceLabels.{mark}=yes",
        f"admission.tenantNames.exemptNamespaces={{{plat}}}",
    )  # fmt: skip
    policy = [d for d in docs if d["kind"] in POLICY_KINDS]
    assert {d["kind"] for d in policy} == POLICY_KINDS
    kube.kubectl_run("label", "namespace", shop, f"{PREFIX_LABEL}=shop")
    kube.kubectl_run("apply", "-f", "-", input=yaml.safe_dump_all(policy))
    try:
        # The API server loads a new policy within moments; until then a claim
        # gets through, so undo it and ask again.
        def refused() -> bool:
            out = claim(kube, other, "grab", f"{team}-app")
            if out.returncode == 0:
                kube.kubectl_run("delete", "memns", "grab", "-n", other, "--wait=false")
                return False
            return True

        wait_for(refused, timeout=60, what="the policy in force")
        out = claim(kube, other, "grab", f"{team}-app")
        assert out.returncode != 0
        assert "denied request" in out.stderr, out.stderr
        assert (
            f'tenant name "{team}-app" is not reserved to namespace {other}: its tenants are'
            f' named "{other}" or start with "{other}-"'
        ) in out.stderr, out.stderr
        # The name defaults to metadata.name: the same rule holds for it.
        assert claim(kube, other, team).returncode != 0

        # The owner claims it; the other namespace claims its own names.
        assert claim(kube, team, "app", f"{team}-app").returncode == 0
        assert claim(kube, team, team).returncode == 0  # the bare namespace name
        assert claim(kube, other, "mine", f"{other}-mine").returncode == 0

        # A labelled namespace has the label's prefix instead of its name.
        assert claim(kube, shop, "web", "shop-web").returncode == 0
        assert claim(kube, shop, "shop").returncode == 0
        labelled = claim(kube, shop, "own", f"{shop}-own")
        assert labelled.returncode != 0
        assert 'start with "shop-"' in labelled.stderr, labelled.stderr
        # "shop" reserves shop-*, not every name that begins with "shop".
        assert claim(kube, shop, "x", "shopping").returncode != 0

        # An exempt namespace (a platform team's) claims any name.
        assert claim(kube, plat, "any", "anything-goes").returncode == 0

        # The CRD's schema and CEL rules answer first, with their own message.
        bad = claim(kube, other, "bad", "bad-")
        assert bad.returncode != 0
        assert "spec.tenant" in bad.stderr, bad.stderr
        assert "should match" in bad.stderr, bad.stderr
        assert "denied request" not in bad.stderr, bad.stderr
        unnamed = claim(kube, other, "x" * 50)  # no spec.tenant, no valid tenant name
        assert "metadata.name is not a valid tenant" in unnamed.stderr, unnamed.stderr
        assert "denied request" not in unnamed.stderr, unnamed.stderr

        # Only CREATE is checked: updates of existing CRs (finalizers, spec
        # changes) go through even after the namespace's prefix changed.
        kube.kubectl_run("label", "namespace", shop, f"{PREFIX_LABEL}=store", "--overwrite")
        patched = kube.kubectl_run(
            "patch", "memns", "web", "-n", shop, "--type=merge",
            "-p", '{"metadata": {"labels": {"touched": "yes"}}}', check=False,
        )  # fmt: skip
        assert patched.returncode == 0, patched.stderr
    finally:
        for doc in policy:
            kube.kubectl_run("delete", doc["kind"], doc["metadata"]["name"], check=False)

    # Without the policy, the old rule: any namespace claims any free name.
    def admitted() -> bool:
        out = claim(kube, other, "late", f"{team}-late")
        return out.returncode == 0

    wait_for(admitted, timeout=60, what="the claim admitted once the policy is gone")
