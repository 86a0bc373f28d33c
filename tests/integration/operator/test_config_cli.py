"""`python -m memory_operator` validates its configuration at start: OK exits 0
with --check-config, a bad variable exits 2 naming it (what a CrashLoopBackOff
log would show)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import delete, kube_api, memory_namespace, wait_for
from tests.servers._process import free_port, stop_popen
from tests.servers.kube import KubeCluster, install_crds
from tests.servers.postgres import PostgresServer

pytestmark = pytest.mark.integration


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [sys.executable, "-m", "memory_operator", "--check-config"],
        env={**base, **env}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_valid_config_from_mounted_secret_files(postgres: PostgresServer, tmp_path: Path) -> None:
    dsn = tmp_path / "postgres-admin-dsn"
    dsn.write_text(postgres.admin_dsn + "\n")
    out = _run({"SOMAFRACTAL_POSTGRES_ADMIN_DSN_FILE": str(dsn), "SOMAFRACTAL_NAME_PREFIX": "mem"})
    assert out.returncode == 0, out.stderr
    assert "configuration OK" in out.stdout


PG = {"SOMAFRACTAL_POSTGRES_ADMIN_DSN": "postgresql://a@h/d"}
SASL = {"SOMAFRACTAL_KAFKA_BOOTSTRAP": "k:9092", "SOMAFRACTAL_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({}, "SOMAFRACTAL_POSTGRES_ADMIN_DSN"),
        ({**PG, "SOMAFRACTAL_RESYNC_SECONDS": "x"}, "SOMAFRACTAL_RESYNC_SECONDS"),
        ({**PG, **SASL}, "SOMAFRACTAL_KAFKA_SASL_MECHANISM"),
    ],
)
def test_invalid_config_exits_2_naming_the_variable(env: dict[str, str], fragment: str) -> None:
    out = _run(env)
    assert out.returncode == 2
    assert fragment in out.stderr


def test_operator_process_runs_kopf_with_liveness_and_metrics(
    kube: KubeCluster, pg_database: str, kube_namespace: str, tmp_path: Path
) -> None:
    """`python -m memory_operator` as a pod would run it: config from env and a
    mounted file, Kopf's login from the kubeconfig, liveness and metrics ports."""
    install_crds(kube, "crds/")
    dsn = tmp_path / "postgres-admin-dsn"
    dsn.write_text(pg_database)
    live, metrics_port = free_port(), free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "SOMAFRACTAL_POSTGRES_ADMIN_DSN_FILE": str(dsn),
        "SOMAFRACTAL_NAME_PREFIX": "proc",
        "SOMAFRACTAL_WATCH_NAMESPACES": kube_namespace,
        "SOMAFRACTAL_LIVENESS_PORT": str(live),
        "SOMAFRACTAL_METRICS_PORT": str(metrics_port),
        "SOMAFRACTAL_LOG_FORMAT": "json",
    }
    log = (tmp_path / "operator.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "memory_operator", "--kubeconfig", kube.kubeconfig],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    api = kube_api(kube)
    try:

        def get(url: str) -> httpx.Response | None:
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "operator.log").read_text()[-3000:])
            try:
                return httpx.get(url, timeout=2)
            except httpx.HTTPError:
                return None

        wait_for(lambda: get(f"http://127.0.0.1:{live}/healthz"), timeout=60, what="liveness")
        memory_namespace(api, kube_namespace, "proc", {"vectors": {"backend": "postgres"}})

        def schema_ready() -> bool:
            obj = api.get("MemoryNamespace", kube_namespace, "proc") or {}
            conds = (obj.get("status") or {}).get("conditions") or []
            return any(c["type"] == "SchemaReady" and c["status"] == "True" for c in conds)

        try:
            wait_for(schema_ready, timeout=60, what="SchemaReady from the operator process")
        except AssertionError as err:
            log_tail = (tmp_path / "operator.log").read_text()[-4000:]
            raise AssertionError(f"{err}\n{log_tail}") from None
        text = get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert text is not None
        assert 'controller_runtime_reconcile_total{controller="memorynamespace"' in text.text
        # Structured logs: the operator's own lines are JSON objects.
        lines = (tmp_path / "operator.log").read_text().splitlines()
        assert any(line.startswith("{") and '"message"' in line for line in lines)
        delete(
            api,
            f"/apis/memory.somafractal.io/v1alpha1/namespaces/{kube_namespace}/memorynamespaces/proc",
        )
        wait_for(lambda: api.get("MemoryNamespace", kube_namespace, "proc") is None, timeout=60)
    finally:
        stop_popen(proc)
        api.close()
