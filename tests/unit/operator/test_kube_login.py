"""adapters/kube.py's in-cluster login: Kopf's service-account reader, at the address
client-go's InClusterConfig uses. (The service account itself is read in the real-pods
e2e test, where the operator runs in a pod; its path is root-owned here.)"""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from memory_operator.adapters import kube


@pytest.fixture
def service_account(monkeypatch: pytest.MonkeyPatch) -> None:
    def read(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server="https://kubernetes.default.svc", token="sa-token")

    monkeypatch.setattr(kopf, "login_with_service_account", read)


@pytest.mark.usefixtures("service_account")
@pytest.mark.parametrize(
    ("host", "server"),
    [("10.96.0.1", "https://10.96.0.1:443"), ("fd00::1", "https://[fd00::1]:443")],
)
def test_service_host_and_port_win(monkeypatch: pytest.MonkeyPatch, host: str, server: str) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    info = kube.login()
    assert (info.server, info.token) == (server, "sa-token")


@pytest.mark.usefixtures("service_account")
def test_without_service_env_kopfs_address_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert kube.login().server == "https://kubernetes.default.svc"


def test_outside_a_pod_without_kubeconfig_is_a_login_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setattr(kopf, "login_with_service_account", lambda **_: None)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(kopf.LoginError, match="no kubeconfig"):
        kube.login()
