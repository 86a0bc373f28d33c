"""memctl --from-secret: endpoint and token from the tenant's Secret and Service,
read from a real kube-apiserver with a kubeconfig, then used against a real runtime.

No operator runs here: the test lays out what the operator renders (a
MemoryNamespace, its token Secret owned by it, its Service) by hand. The
Service is a LoadBalancer whose status points at the loopback port the test
runtime listens on, so the address memctl reads is one it can reach.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from typing import Any
from urllib.parse import urlsplit

import pytest

from memory_client.cli import main, parser, resolve_target
from tests.integration.runtime.conftest import ADMIN_TOKEN, READ_TOKEN
from tests.servers.kube import KubeCluster, install_crds

pytestmark = pytest.mark.integration


def apply(kube: KubeCluster, obj: dict[str, Any]) -> dict[str, Any]:
    out = kube.kubectl_run("apply", "-o", "json", "-f", "-", input=json.dumps(obj))
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def tenant_objects(kube: KubeCluster, namespace: str, port: int, tokens: str) -> None:
    install_crds(kube, "crds/")
    cr = apply(
        kube,
        {
            "apiVersion": "memory.somafractal.io/v1alpha1",
            "kind": "MemoryNamespace",
            "metadata": {"name": "acme", "namespace": namespace},
            "spec": {"tenant": "acme"},
        },
    )
    owner = {
        "apiVersion": "memory.somafractal.io/v1alpha1",
        "kind": "MemoryNamespace",
        "name": "acme",
        "uid": cr["metadata"]["uid"],
        "controller": True,
    }
    apply(
        kube,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "acme-memory-token",
                "namespace": namespace,
                "ownerReferences": [owner],
            },
            "data": {"token": base64.b64encode(tokens.encode()).decode()},
        },
    )
    apply(
        kube,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "acme-memory", "namespace": namespace, "ownerReferences": [owner]},
            "spec": {
                "type": "LoadBalancer",
                "selector": {"app.kubernetes.io/instance": "acme"},
                "ports": [{"name": "http", "port": port, "targetPort": "http"}],
            },
        },
    )


def test_from_secret_reads_token_and_service(
    kube: KubeCluster,
    kube_namespace: str,
    runtime_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = urlsplit(runtime_url).port
    assert port is not None
    # several tokens, as MEMORY_API_TOKENS holds them: memctl takes the strongest
    tenant_objects(kube, kube_namespace, port, f"read:{READ_TOKEN}\nadmin:{ADMIN_TOKEN}")
    monkeypatch.setenv("KUBECONFIG", kube.kubeconfig)
    for var in ("MEMORY_URL", "MEMORY_TOKEN", "MEMCTL_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    secret = ("--from-secret", "acme-memory-token", "-n", kube_namespace)

    # without a load balancer address: the Service's in-cluster name (not dialled
    # here: resolving it would ask a DNS server outside this machine)
    target = resolve_target(parser().parse_args([*secret, "stats"]))
    assert target.url == f"http://acme-memory.{kube_namespace}.svc:{port}"
    assert target.token == ADMIN_TOKEN

    kube.kubectl_run(
        "-n", kube_namespace, "patch", "service", "acme-memory", "--subresource=status",
        "--type=merge", "-p", '{"status":{"loadBalancer":{"ingress":[{"ip":"127.0.0.1"}]}}}',
    )  # fmt: skip
    assert main([*secret, "store", "from a kubeconfig", "--coordinate", "4,4"]) == 0
    capsys.readouterr()
    assert main([*secret, "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["tenant"], stats["memories"]) == ("acme", 1)
    # export needs admin: the admin token of the two was chosen
    assert main([*secret, "export"]) == 0
    assert b"from a kubeconfig" in capsys.readouterr().out.encode()

    # a flag still outranks the Secret (e.g. through kubectl port-forward)
    assert main(["--url", "http://127.0.0.1:1", *secret, "stats"]) == 1
    assert "127.0.0.1:1" in capsys.readouterr().err

    # no such Secret: a usage error naming it
    missing = subprocess.run(
        [sys.executable, "-m", "memory_client.cli", "--from-secret", "nope", "-n", kube_namespace,
         "stats"],
        env={**os.environ, "KUBECONFIG": kube.kubeconfig},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert missing.returncode == 2
    assert f"Secret {kube_namespace}/nope" in missing.stderr
