"""The Helm chart, rendered by a real helm and applied to the real apiserver:
it lints, refuses to render without admin credentials, and the operator runs
with exactly the chart's ServiceAccount, RBAC, environment and mounted Secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import GROUP_PATH, delete, fetch, kube_api, memory_namespace, wait_for
from tests.servers._process import free_port, stop_popen
from tests.servers.kube import KubeCluster, install_crds

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "somafractal-operator"
ADMIN_MOUNT = "/etc/somafractal/admin/"


def _helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)


def test_chart_lints(helm: str) -> None:
    out = _helm(helm, "lint", str(CHART), "--strict", "--set", "postgres.adminDsn=postgresql://x")
    assert out.returncode == 0, out.stdout + out.stderr


def test_chart_refuses_to_render_without_admin_credentials(helm: str) -> None:
    out = _helm(helm, "template", "sfo", str(CHART))
    assert out.returncode != 0
    assert "postgres.adminDsn (or existingSecret) is required" in out.stderr


def _operator_env(docs: list[dict[str, Any]], secret_dir: Path) -> dict[str, str]:
    """The operator container's environment as the chart renders it, with the
    Secret's keys written where the pod would mount them."""
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    secret = next(d for d in docs if d["kind"] == "Secret")
    for key, value in secret["stringData"].items():
        (secret_dir / key).write_text(value)
    env: dict[str, str] = {}
    for var in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
        value = var["value"]
        if value.startswith(ADMIN_MOUNT):
            value = str(secret_dir / value.removeprefix(ADMIN_MOUNT))
        env[var["name"]] = value
    return env


def test_operator_runs_with_the_charts_service_account_and_environment(
    helm: str, kube: KubeCluster, pg_database: str, kube_namespace: str, tmp_path: Path
) -> None:
    install_crds(kube, "crds/")
    release = f"sfo-{kube_namespace}"
    rendered = _helm(
        helm, "template", release, str(CHART), "-n", kube_namespace,
        "--set", f"postgres.adminDsn={pg_database}",
        "--set", f"watchNamespaces={{{kube_namespace}}}",
        "--set", "namePrefix=chart",
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    assert {d["kind"] for d in docs} >= {
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Secret", "Deployment",
    }  # fmt: skip
    kube.kubectl_run("apply", "-n", kube_namespace, "-f", "-", input=rendered.stdout)
    sa = f"system:serviceaccount:{kube_namespace}:{release}"
    try:
        # The RBAC is scoped: what the operator needs, nothing cluster-admin-like.
        can = kube.kubectl_run("auth", "can-i", "delete", "nodes", "--as", sa, check=False)
        assert can.stdout.strip() == "no"
        token = kube.kubectl_run("create", "token", release, "-n", kube_namespace).stdout.strip()
        kubeconfig = tmp_path / "sa.kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump({
                "apiVersion": "v1", "kind": "Config", "current-context": "sa",
                "clusters": [{"name": "c", "cluster": {
                    "server": kube.server, "certificate-authority": kube.ca_file}}],
                "users": [{"name": "sa", "user": {"token": token}}],
                "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
            })
        )  # fmt: skip
        secret_dir = tmp_path / "admin"
        secret_dir.mkdir()
        env = _operator_env(docs, secret_dir)
        env |= {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),
            "SOMAFRACTAL_METRICS_PORT": str(free_port()),
            "SOMAFRACTAL_LIVENESS_PORT": str(free_port()),
        }
        _run_operator_as_service_account(kube, kubeconfig, env, kube_namespace, tmp_path)
    finally:
        for kind in ("clusterrolebinding", "clusterrole"):
            kube.kubectl_run("delete", kind, release, "--ignore-not-found", check=False)


def _run_operator_as_service_account(
    kube: KubeCluster, kubeconfig: Path, env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    log_path = tmp_path / "operator.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "memory_operator", "--kubeconfig", str(kubeconfig)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    api = kube_api(kube)
    try:
        memory_namespace(api, namespace, "charted", {"vectors": {"backend": "postgres"}})

        def reconciled() -> bool:
            assert proc.poll() is None, log_path.read_text()[-4000:]
            status = fetch(api, namespace, "charted").get("status") or {}
            conds = {c["type"]: c for c in status.get("conditions") or []}
            return conds.get("SchemaReady", {}).get("status") == "True" and bool(
                status.get("endpoint")
            )

        try:
            wait_for(reconciled, timeout=90, what="SchemaReady + endpoint as the chart's SA")
        except AssertionError as err:
            raise AssertionError(f"{err}\n{log_path.read_text()[-4000:]}") from None
        # Every per-tenant object was written with the chart's RBAC.
        for kind, name in [
            ("Secret", "charted-memory-credentials"),
            ("Secret", "charted-memory-token"),
            ("ConfigMap", "charted-memory"),
            ("Deployment", "charted-memory"),
            ("Service", "charted-memory"),
        ]:
            assert api.get(kind, namespace, name) is not None, f"{kind} {name} missing"
        assert fetch(api, namespace, "charted")["status"]["schema"] == "chart_charted"
        # Deletion runs the finalizer, which also needs the chart's RBAC.
        delete(api, f"{GROUP_PATH}/namespaces/{namespace}/memorynamespaces/charted")
        wait_for(lambda: api.get("MemoryNamespace", namespace, "charted") is None, timeout=60)
    finally:
        stop_popen(proc)
        api.close()
