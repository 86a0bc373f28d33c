"""Helpers shared by the operator integration tests, the e2e tests and the
benchmark: counting wrappers around the real adapters, an operator
configuration pointing at the test servers, and a way to make a Deployment
"available" on a control plane without kubelets.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import kopf

from memory_operator.adapters.kube import KubeApi
from memory_operator.config import OperatorConfig, load_config
from memory_operator.domain import Outcome
from memory_operator.ports import KubeError
from tests.servers.kube import KubeCluster

GROUP_PATH = "/apis/memory.somafractal.io/v1alpha1"


@dataclass
class WriteLog:
    """Every write the operator made, by target ("kubernetes" or a backend)."""

    calls: list[tuple[str, str]] = field(default_factory=list)

    def add(self, target: str, what: str) -> None:
        self.calls.append((target, what))

    def count(self) -> int:
        return len(self.calls)

    def by_target(self) -> Counter[str]:
        return Counter(t for t, _ in self.calls)

    def clear(self) -> None:
        self.calls.clear()


class CountingKube:
    """KubeApi with every write recorded (reads pass through)."""

    def __init__(self, api: KubeApi, log: WriteLog) -> None:
        self.api = api
        self.log = log
        self.lists = 0  # list_memory_namespaces calls (one per watched namespace at start)
        self.gets = 0
        self.object_lists = 0  # labelled lists of the shared reads (reconcile.py)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets += 1
        return self.api.get(kind, namespace, name)

    def list_memory_namespaces(self, namespace: str | None = None) -> Iterable[dict[str, Any]]:
        self.lists += 1
        return self.api.list_memory_namespaces(namespace)

    def list_objects(
        self, kind: str, namespace: str, label_selector: str
    ) -> Iterable[dict[str, Any]]:
        self.object_lists += 1
        return self.api.list_objects(kind, namespace, label_selector)

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.log.add("kubernetes", f"apply {obj['kind']}/{obj['metadata']['name']}")
        return self.api.apply(obj)

    def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        self.log.add("kubernetes", f"create {obj['kind']}/{obj['metadata']['name']}")
        return self.api.create(obj)

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.log.add("kubernetes", f"status {name}")
        return self.api.patch_status(namespace, name, status)

    def emit_event(self, cr: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.log.add("kubernetes", f"event {reason}")
        self.api.emit_event(cr, type_, reason, message)


class CountingAdapter:
    """Wraps a real backend adapter; records each call whose Outcome wrote."""

    def __init__(self, name: str, inner: Any, log: WriteLog) -> None:
        self._name = name
        self._inner = inner
        self._log = log
        self.calls: Counter[str] = Counter()

    def __getattr__(self, attr: str) -> Any:
        fn = getattr(self._inner, attr)
        if not callable(fn):
            return fn

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.calls[attr] += 1
            out = fn(*args, **kwargs)
            if isinstance(out, Outcome) and out.wrote:
                self._log.add(self._name, f"{attr} {out.value}")
            return out

        return wrapper


def operator_config(
    *,
    postgres_dsn: str,
    redis_url: str | None = None,
    kafka_bootstrap: str | None = None,
    kafka_sasl: tuple[str, str] | None = None,
    qdrant_url: str | None = None,
    # Isolated like production should be: tenants get collection-scoped JWTs. (The
    # local engine and the REST stand-in accept any key; None: no key at all.)
    qdrant_api_key: str | None = "test-qdrant-admin-key",
    prefix: str = "mem",
    image: str = "registry.test/memory-runtime:test",
    resync_seconds: int = 5,
    namespaces: tuple[str, ...] = (),
    extra: dict[str, str] | None = None,
) -> OperatorConfig:
    """An OperatorConfig built the way the Deployment builds it: from environment
    (`extra`: more SOMAFRACTAL_* variables)."""
    env = {
        "SOMAFRACTAL_POSTGRES_ADMIN_DSN": postgres_dsn,
        "SOMAFRACTAL_NAME_PREFIX": prefix,
        "SOMAFRACTAL_RUNTIME_IMAGE": image,
        "SOMAFRACTAL_RESYNC_SECONDS": str(resync_seconds),
        # Test operators watch only their own namespaces: other tests' leftovers
        # (in namespaces still terminating) must not get this operator's finalizer.
        "SOMAFRACTAL_WATCH_NAMESPACES": ",".join(namespaces),
    }
    if redis_url:
        env["SOMAFRACTAL_REDIS_ADMIN_URL"] = redis_url
    if kafka_bootstrap:
        env["SOMAFRACTAL_KAFKA_BOOTSTRAP"] = kafka_bootstrap
        if kafka_sasl:
            env["SOMAFRACTAL_KAFKA_SECURITY_PROTOCOL"] = "SASL_PLAINTEXT"
            env["SOMAFRACTAL_KAFKA_SASL_MECHANISM"] = "SCRAM-SHA-512"
            env["SOMAFRACTAL_KAFKA_ADMIN_USERNAME"] = kafka_sasl[0]
            env["SOMAFRACTAL_KAFKA_ADMIN_PASSWORD"] = kafka_sasl[1]
    if qdrant_url:
        env["SOMAFRACTAL_QDRANT_URL"] = qdrant_url
        if qdrant_api_key:
            env["SOMAFRACTAL_QDRANT_API_KEY"] = qdrant_api_key
    env.update(extra or {})
    return load_config(env)


@contextmanager
def running_operator(
    kube: KubeCluster, config: OperatorConfig, kube_port: Any, backends: Any
) -> Iterator[None]:
    """The real operator (Kopf + handlers + reconciler) in a thread, until the block ends."""
    from memory_operator.__main__ import run_operator

    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=run_operator,
        args=(config, kube_port, backends),
        kwargs={
            "stop_flag": stop,
            "ready_flag": ready,
            "liveness": False,
            "login": kube_login(kube),
        },
        daemon=True,
    )
    thread.start()
    if not ready.wait(60):
        raise AssertionError("operator did not start within 60 s")
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


def new_namespace(api: KubeApi, prefix: str = "t") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    api._request("POST", "/api/v1/namespaces", body=body)
    return name


def kube_login(kube: KubeCluster) -> Callable[..., kopf.ConnectionInfo]:
    """A Kopf login handler (and KubeApi's login) for the test cluster's admin."""

    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=kube.server, token=kube.token, ca_path=kube.ca_file)

    return login


def kube_api(kube: KubeCluster) -> KubeApi:
    return KubeApi(kube_login(kube))


def memory_namespace(
    api: KubeApi, namespace: str, name: str, spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Create a MemoryNamespace through the API (defaults applied by the server)."""
    body = {
        "apiVersion": "memory.somafractal.io/v1alpha1",
        "kind": "MemoryNamespace",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec or {},
    }
    out = api._request("POST", f"{GROUP_PATH}/namespaces/{namespace}/memorynamespaces", body=body)
    assert out is not None
    return out


def fetch(api: KubeApi, namespace: str, name: str) -> dict[str, Any]:
    obj = api.get("MemoryNamespace", namespace, name)
    assert obj is not None, f"MemoryNamespace {namespace}/{name} not found"
    return obj


def patch_spec(api: KubeApi, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    out = api._request(
        "PATCH",
        f"{GROUP_PATH}/namespaces/{namespace}/memorynamespaces/{name}",
        body={"spec": spec},
        content_type="application/merge-patch+json",
    )
    assert out is not None
    return out


def delete(api: KubeApi, kind_path: str) -> None:
    try:
        api._request("DELETE", kind_path)
    except KubeError as err:
        if err.status != 404:
            raise


def wait_for(predicate: Any, timeout: float = 60.0, interval: float = 0.2, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


class PodFaker(threading.Thread):
    """No kubelet here: bind every unbound tenant Pod to a fake Node and mark it
    Running/Ready, so the real ReplicaSet/Deployment controllers make the tenants'
    Deployments available (what a kubelet would report)."""

    def __init__(
        self, api: KubeApi, selector: str = "app.kubernetes.io/managed-by=somafractal-operator"
    ) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.selector = selector
        self.stop = threading.Event()
        self.node = f"fake-{uuid.uuid4().hex[:8]}"

    def _heartbeat(self) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        cond = {"type": "Ready", "status": "True", "reason": "Fake",
                "lastHeartbeatTime": now, "lastTransitionTime": now}  # fmt: skip
        self.api._request(
            "PATCH", f"/api/v1/nodes/{self.node}/status",
            body={"status": {"conditions": [cond]}},
            content_type="application/merge-patch+json",
        )  # fmt: skip

    def run(self) -> None:
        self.api._request(
            "POST", "/api/v1/nodes",
            body={"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node}},
        )  # fmt: skip
        beat = 0.0
        while not self.stop.is_set():
            if time.monotonic() - beat > 10:  # keep the node-lifecycle controller happy
                self._heartbeat()
                beat = time.monotonic()
            # Only Pods no "kubelet" has taken yet: the list stays small at any fleet size.
            out = self.api._request(
                "GET", "/api/v1/pods",
                params={"labelSelector": self.selector, "fieldSelector": "spec.nodeName="},
            ) or {}  # fmt: skip
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            for pod in out.get("items", []):
                md = pod["metadata"]
                if md.get("deletionTimestamp"):
                    continue
                base = f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}"
                conds = [
                    {"type": t, "status": "True", "lastTransitionTime": now}
                    for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                ]
                try:
                    # Status first, binding last: a Pod is only left out of the
                    # next round (bound) once both are done.
                    self.api._request(
                        "PATCH", f"{base}/status",
                        body={"status": {"phase": "Running", "conditions": conds,
                                         "startTime": now}},
                        content_type="application/merge-patch+json",
                    )  # fmt: skip
                    self.api._request(
                        "POST", f"{base}/binding",
                        body={"apiVersion": "v1", "kind": "Binding",
                              "metadata": {"name": md["name"]},
                              "target": {"apiVersion": "v1", "kind": "Node", "name": self.node}},
                    )  # fmt: skip
                except KubeError:
                    pass  # the pod changed or went away; the next round sees it again
            self.stop.wait(0.2)


def make_deployment_available(
    api: KubeApi, namespace: str, deployment: str, timeout: float = 60.0
) -> None:
    """There is no scheduler or kubelet: bind the ReplicaSet's Pods to a fake Node
    and report them Running/Ready, so the real ReplicaSet and Deployment
    controllers compute an available Deployment. (Patching the Deployment's
    status directly would be reverted by the Deployment controller.)"""
    node = f"fake-{uuid.uuid4().hex[:8]}"
    api._request(
        "POST",
        "/api/v1/nodes",
        body={"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}},
    )
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    api._request(
        "PATCH", f"/api/v1/nodes/{node}/status",
        body={"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Fake",
                                          "lastHeartbeatTime": now, "lastTransitionTime": now}]}},
        content_type="application/merge-patch+json",
    )  # fmt: skip
    dep = api.get("Deployment", namespace, deployment)
    assert dep is not None, f"Deployment {namespace}/{deployment} missing"
    want = dep["spec"].get("replicas", 1)
    selector = ",".join(f"{k}={v}" for k, v in dep["spec"]["selector"]["matchLabels"].items())

    def pods() -> list[dict[str, Any]]:
        out = api._request(
            "GET", f"/api/v1/namespaces/{namespace}/pods", params={"labelSelector": selector}
        )
        items = [
            p for p in (out or {}).get("items", []) if not p["metadata"].get("deletionTimestamp")
        ]
        return items if len(items) >= want else []

    for pod in wait_for(pods, timeout, what=f"{want} pods of {deployment}"):
        name = pod["metadata"]["name"]
        if not pod["spec"].get("nodeName"):
            api._request(
                "POST", f"/api/v1/namespaces/{namespace}/pods/{name}/binding",
                body={"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                      "target": {"apiVersion": "v1", "kind": "Node", "name": node}},
            )  # fmt: skip
        conditions = [
            {"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        api._request(
            "PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}/status",
            body={"status": {"phase": "Running", "conditions": conditions, "startTime": now}},
            content_type="application/merge-patch+json",
        )  # fmt: skip

    def available() -> bool:
        d = api.get("Deployment", namespace, deployment) or {}
        st = d.get("status") or {}
        return st.get("availableReplicas", 0) >= want and any(
            c["type"] == "Available" and c["status"] == "True" for c in st.get("conditions", [])
        )

    wait_for(available, timeout, what=f"Deployment {deployment} available")
