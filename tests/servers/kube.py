"""A control plane for tests: etcd + kube-apiserver + kube-controller-manager,
and with `real_node=True` a real node (kube-scheduler, containerd, kubelet:
tests/servers/node.py) whose pods run the project's images.

The binaries come from scripts/build-kube.sh (built once from the Go module
proxy into ~/.cache/somafractal/kube-<v>-etcd-<v>/bin; the script is a no-op when
they exist). Without a node, Pods never run, but the API server validates
(structural schemas, CEL), RBAC applies, and the controller manager
garbage-collects by ownerReferences, deletes namespaces and maintains
Deployment/ReplicaSet objects.

Certificates (a throwaway CA, the serving cert, the service-account key pair)
are made with the `openssl` CLI. Clients authenticate with static tokens.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tests.servers._process import (
    REPO_ROOT,
    ServerStartError,
    cache_lock,
    free_port,
    log_dir,
    spawn,
    stopping,
    wait_until,
)

if TYPE_CHECKING:
    from tests.servers.node import Node

BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-kube.sh"
SERVICE_CIDR = "10.0.0.0/20"  # room for the 1,000-tenant benchmark's Services


@dataclass(frozen=True)
class KubeCluster:
    kubeconfig: str  # admin kubeconfig (user `admin` in group system:masters)
    server: str  # https://127.0.0.1:<port>
    token: str  # the admin's bearer token
    ca_file: str  # CA that signed the API server's serving certificate
    kubectl: str
    bin_dir: Path
    log_dir: Path
    node: Node | None = None  # the real node, when started with real_node=True

    def kubectl_run(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster as the admin."""
        proc = subprocess.run(
            [self.kubectl, "--kubeconfig", self.kubeconfig, *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def get_json(self, path: str) -> Any:
        """GET an API path as the admin; return the decoded JSON body."""
        req = urllib.request.Request(
            self.server + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        ctx = ssl.create_default_context(cafile=self.ca_file)
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return json.loads(resp.read())


def kube_bin_dir() -> Path:
    """Run scripts/build-kube.sh (a no-op when cached) and return its bin directory."""
    with cache_lock("build-kube"):
        out = subprocess.run(
            [str(BUILD_SCRIPT)], capture_output=True, text=True, check=False, timeout=3 * 3600
        )
    if out.returncode != 0:
        raise ServerStartError(
            f"kube: {BUILD_SCRIPT} failed ({out.returncode}):\n{out.stderr[-3000:]}"
        )
    bin_dir = Path(out.stdout.strip().splitlines()[-1])
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl"):
        if not os.access(bin_dir / name, os.X_OK):
            raise ServerStartError(f"kube: {bin_dir / name} missing after {BUILD_SCRIPT}")
    return bin_dir


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ServerStartError(f"kube: openssl {args[0]} failed: {proc.stderr.strip()}")


def _make_pki(pki: Path) -> None:
    """CA, API server serving cert (127.0.0.1 / kubernetes.default.svc), SA signing keys."""
    if shutil.which("openssl") is None:
        raise ServerStartError("kube: the `openssl` CLI is required to make test certificates")
    pki.mkdir(parents=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3",
        "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=somafractal-test-ca",
        cwd=pki,
    )  # fmt: skip
    (pki / "serving.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc,"
        "DNS:kubernetes.default.svc.cluster.local\n"
    )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "apiserver.key",
        "-out", "apiserver.csr", "-subj", "/CN=kube-apiserver",
        cwd=pki,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "3", "-extfile", "serving.ext", "-out", "apiserver.crt",
        cwd=pki,
    )  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def _kubeconfig(server: str, ca_file: Path, user: str, token: str) -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "test", "cluster": {"server": server, "certificate-authority": str(ca_file)}}
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
        "current-context": "test",
    }
    return yaml.safe_dump(config, sort_keys=False)


def _https_ok(url: str, *, ca_file: Path | None, token: str | None = None) -> bool:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if ca_file is None:
        # The controller manager serves a self-signed cert we never see; /healthz is public.
        ctx = ssl._create_unverified_context()
    else:
        ctx = ssl.create_default_context(cafile=str(ca_file))
    with urllib.request.urlopen(
        urllib.request.Request(url, headers=headers), context=ctx, timeout=3
    ) as r:
        return r.status == 200 and r.read().strip() == b"ok"


@contextmanager
def run_kube(*, startup_timeout: float = 180.0, real_node: bool = False) -> Iterator[KubeCluster]:
    bin_dir = kube_bin_dir()
    logs = log_dir("kube-node" if real_node else "kube")
    for name in ("etcd.log", "kube-apiserver.log", "kube-controller-manager.log"):
        (logs / name).write_text("")
    workdir = Path(tempfile.mkdtemp(prefix="somafractal-kube-"))
    t_start = time.monotonic()
    try:
        pki = workdir / "pki"
        _make_pki(pki)
        admin_token = secrets.token_hex(24)
        kcm_token = secrets.token_hex(24)
        tokens = workdir / "tokens.csv"
        tokens.write_text(
            f'{admin_token},admin,admin-uid,"system:masters"\n'
            # The controller manager runs every controller under one identity
            # (--use-service-account-credentials=false), so it needs full rights.
            f'{kcm_token},system:kube-controller-manager,kcm-uid,"system:masters"\n'
        )
        tokens.chmod(0o600)

        etcd_port, etcd_peer = free_port(), free_port()
        api_port, kcm_port = free_port(), free_port()
        server_url = f"https://127.0.0.1:{api_port}"
        admin_kubeconfig = workdir / "admin.kubeconfig"
        admin_kubeconfig.write_text(_kubeconfig(server_url, pki / "ca.crt", "admin", admin_token))
        kcm_kubeconfig = workdir / "kcm.kubeconfig"
        kcm_kubeconfig.write_text(
            _kubeconfig(server_url, pki / "ca.crt", "system:kube-controller-manager", kcm_token)
        )

        with ExitStack() as stack:
            etcd = spawn(
                "etcd",
                [
                    bin_dir / "etcd",
                    "--name=test",
                    f"--data-dir={workdir / 'etcd'}",
                    f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                    f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                    f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                    f"--initial-cluster=test=http://127.0.0.1:{etcd_peer}",
                    "--unsafe-no-fsync",  # disposable data; fsync is most of etcd's latency
                    "--log-level=warn",
                ],
                logs / "etcd.log",
            )
            stack.enter_context(stopping(etcd))
            wait_until(
                etcd,
                lambda: (
                    json.loads(
                        urllib.request.urlopen(
                            f"http://127.0.0.1:{etcd_port}/health", timeout=2
                        ).read()
                    )["health"]
                    == "true"
                ),
                timeout=startup_timeout,
                what=f"etcd /health on 127.0.0.1:{etcd_port}",
            )

            apiserver = spawn(
                "kube-apiserver",
                [
                    bin_dir / "kube-apiserver",
                    f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    f"--secure-port={api_port}",
                    f"--tls-cert-file={pki / 'apiserver.crt'}",
                    f"--tls-private-key-file={pki / 'apiserver.key'}",
                    f"--cert-dir={workdir / 'certs'}",
                    f"--token-auth-file={tokens}",
                    "--authorization-mode=RBAC",
                    f"--service-account-issuer={server_url}",
                    f"--service-account-key-file={pki / 'sa.pub'}",
                    f"--service-account-signing-key-file={pki / 'sa.key'}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    *(
                        # logs/exec reach the kubelet by the node's IP, not by resolving
                        # its name through this machine's DNS
                        ["--kubelet-preferred-address-types=InternalIP"]
                        if real_node
                        # No kubelet will mount SA tokens; the plugin would reject pod specs.
                        else ["--disable-admission-plugins=ServiceAccount"]
                    ),
                    "--allow-privileged=true",
                    "--profiling=false",
                    "--v=1",
                ],
                logs / "kube-apiserver.log",
            )
            stack.enter_context(stopping(apiserver))
            wait_until(
                apiserver,
                lambda: _https_ok(
                    f"{server_url}/readyz", ca_file=pki / "ca.crt", token=admin_token
                ),
                timeout=startup_timeout,
                what=f"{server_url}/readyz",
                interval=0.5,
                extra_logs=[logs / "etcd.log"],
            )

            kcm = spawn(
                "kube-controller-manager",
                [
                    bin_dir / "kube-controller-manager",
                    f"--kubeconfig={kcm_kubeconfig}",
                    "--controllers=*",
                    "--use-service-account-credentials=false",
                    f"--service-account-private-key-file={pki / 'sa.key'}",
                    f"--root-ca-file={pki / 'ca.crt'}",
                    "--leader-elect=false",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={kcm_port}",
                    f"--cert-dir={workdir / 'kcm-certs'}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    "--v=1",
                ],
                logs / "kube-controller-manager.log",
            )
            stack.enter_context(stopping(kcm))
            cluster = KubeCluster(
                kubeconfig=str(admin_kubeconfig),
                server=server_url,
                token=admin_token,
                ca_file=str(pki / "ca.crt"),
                kubectl=str(bin_dir / "kubectl"),
                bin_dir=bin_dir,
                log_dir=logs,
            )

            def controllers_running() -> bool:
                if not _https_ok(f"https://127.0.0.1:{kcm_port}/healthz", ca_file=None):
                    return False
                # The serviceaccount controller creating `default` proves controllers run.
                cluster.get_json("/api/v1/namespaces/default/serviceaccounts/default")
                return True

            wait_until(
                kcm,
                controllers_running,
                timeout=startup_timeout,
                what="kube-controller-manager /healthz and the default ServiceAccount",
                interval=0.5,
                extra_logs=[logs / "kube-apiserver.log"],
            )
            if real_node:
                from tests.servers.node import run_node

                node = stack.enter_context(run_node(cluster, workdir / "node", logs))
                cluster = replace(cluster, node=node)
            (logs / "startup-seconds.txt").write_text(f"{time.monotonic() - t_start:.2f}\n")
            yield cluster
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _crd_names(files: Sequence[Path]) -> list[str]:
    names = []
    for f in files:
        for doc in yaml.safe_load_all(f.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                names.append(doc["metadata"]["name"])
    return names


def install_crds(
    kube: KubeCluster, path: str | os.PathLike[str] = "crds/", *, timeout: float = 60.0
) -> list[str]:
    """Apply the CRD yaml file(s) at `path` (relative to the repo root) and wait until
    each is Established; return the CRD names. Re-applying is harmless."""
    p = Path(path)
    if not p.is_absolute():
        p = REPO_ROOT / p
    files = sorted([*p.glob("*.yaml"), *p.glob("*.yml")]) if p.is_dir() else [p]
    names = _crd_names(files)
    if not names:
        raise ValueError(f"no CustomResourceDefinition found in {p}")
    for f in files:
        kube.kubectl_run("apply", "--server-side", "--force-conflicts", "-f", str(f))
    for name in names:
        kube.kubectl_run(
            "wait", "--for=condition=Established", f"crd/{name}", f"--timeout={int(timeout)}s"
        )
    return names
