"""Operator scale benchmark: apply -> Ready for 1, 10 and 100 MemoryNamespaces.

Everything is real and local: PostgreSQL, Redis, Kafka (SASL/SCRAM + ACLs),
etcd + kube-apiserver + kube-controller-manager, and the test Qdrant REST
stand-in. The operator runs as its own process (`python -m memory_operator`),
exactly as in a pod, so its RSS is its own.

Side by side, in the same run, the baseline: the raw backend calls the
operator makes for one tenant (PostgreSQL schema+role, Qdrant collection,
Kafka topic+SCRAM user+ACLs, Redis ACL user, five server-side applies), made
directly and sequentially, without Kopf or the reconciler around them.

There are no kubelets: a helper binds each tenant Pod to a fake Node and
reports it Ready, so the real ReplicaSet/Deployment controllers mark the
Deployment available (that helper's delay is inside apply->Ready).

Then, with every tenant Ready, one full timer resync of all of them: every
resourceVersion and Event is compared before and after to count writes
(expected: zero).

Usage: .venv/bin/python bench/operator_scale.py [--sizes 1,10,100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from qdrant_client import QdrantClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from memory_operator import manifests as m  # noqa: E402
from memory_operator.adapters.kafka import KafkaAdmin  # noqa: E402
from memory_operator.adapters.kube import KubeApi  # noqa: E402
from memory_operator.adapters.postgres import PostgresAdmin  # noqa: E402
from memory_operator.adapters.qdrant import QdrantAdmin  # noqa: E402
from memory_operator.adapters.redis import RedisAdmin  # noqa: E402
from memory_operator.domain import (  # noqa: E402
    CacheUserTarget,
    CollectionTarget,
    DatabaseTarget,
    TopicsTarget,
)
from memory_operator.naming import derive_names  # noqa: E402
from memory_operator.spec import parse_spec  # noqa: E402
from tests.e2e.harness import operator_config  # noqa: E402
from tests.servers._process import free_port  # noqa: E402
from tests.servers.kafka import run_kafka  # noqa: E402
from tests.servers.kube import install_crds, run_kube  # noqa: E402
from tests.servers.postgres import run_postgres  # noqa: E402
from tests.servers.qdrant_rest import run_qdrant_rest  # noqa: E402
from tests.servers.redis import run_redis  # noqa: E402

GROUP_PATH = "/apis/memory.somafractal.io/v1alpha1"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_s": round(pct(values, 0.50), 4),
        "p95_s": round(pct(values, 0.95), 4),
        "p99_s": round(pct(values, 0.99), 4),
        "mean_s": round(statistics.fmean(values), 4) if values else float("nan"),
    }


class PodFaker(threading.Thread):
    """Bind every unbound tenant Pod to a fake Node and mark it Ready."""

    def __init__(self, api: KubeApi) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.stop = threading.Event()
        self.node = f"bench-{uuid.uuid4().hex[:6]}"

    def _heartbeat(self) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        cond = {"type": "Ready", "status": "True", "reason": "Bench",
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
            out = self.api._request(
                "GET", "/api/v1/pods",
                params={"labelSelector": f"app.kubernetes.io/managed-by={m.MANAGED_BY}"},
            ) or {}  # fmt: skip
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            for pod in out.get("items", []):
                md = pod["metadata"]
                ready = any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in (pod.get("status") or {}).get("conditions", [])
                )
                if ready or md.get("deletionTimestamp"):
                    continue
                base = f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}"
                try:
                    if not pod["spec"].get("nodeName"):
                        self.api._request(
                            "POST", f"{base}/binding",
                            body={"apiVersion": "v1", "kind": "Binding",
                                  "metadata": {"name": md["name"]},
                                  "target": {"apiVersion": "v1", "kind": "Node",
                                             "name": self.node}},
                        )  # fmt: skip
                    conds = [
                        {"type": t, "status": "True", "lastTransitionTime": now}
                        for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                    ]
                    self.api._request(
                        "PATCH", f"{base}/status",
                        body={"status": {"phase": "Running", "conditions": conds,
                                         "startTime": now}},
                        content_type="application/merge-patch+json",
                    )  # fmt: skip
                except Exception as err:
                    print(f"pod faker: {md['name']}: {err}", file=sys.stderr)
            self.stop.wait(0.2)


def new_namespace(api: KubeApi, ns: str) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    api._request("POST", "/api/v1/namespaces", body=body)


def scrape(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in httpx.get(url, timeout=5).text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def reconciles(metrics_url: str) -> float:
    return sum(
        v
        for k, v in scrape(metrics_url).items()
        if k.startswith("controller_runtime_reconcile_total")
    )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise TimeoutError(what)


def snapshot(api: KubeApi, ns: str) -> dict[str, str]:
    """resourceVersion of every object the operator writes in `ns`."""
    out: dict[str, str] = {}
    for path in (
        f"{GROUP_PATH}/namespaces/{ns}/memorynamespaces",
        f"/api/v1/namespaces/{ns}/configmaps",
        f"/api/v1/namespaces/{ns}/secrets",
        f"/api/v1/namespaces/{ns}/services",
        f"/apis/apps/v1/namespaces/{ns}/deployments",
    ):
        for item in (api._request("GET", path) or {}).get("items", []):
            md = item["metadata"]
            out[f"{item.get('kind', path)}/{md['name']}"] = md["resourceVersion"]
    return out


def event_count(api: KubeApi, ns: str) -> int:
    out = api._request("GET", f"/api/v1/namespaces/{ns}/events") or {}
    return sum(1 for e in out.get("items", []) if e.get("reportingComponent") == m.FIELD_MANAGER)


def run_phase(
    api: KubeApi, n: int, metrics_url: str, op_pid: int, timeout: float
) -> dict[str, Any]:
    ns = f"bench-{n}-{uuid.uuid4().hex[:4]}"
    new_namespace(api, ns)
    created: dict[str, float] = {}
    provisioned: dict[str, float] = {}
    ready: dict[str, float] = {}
    t0 = time.monotonic()
    for i in range(n):
        name = f"t{n}x{i}-{uuid.uuid4().hex[:4]}"
        api._request(
            "POST", f"{GROUP_PATH}/namespaces/{ns}/memorynamespaces",
            body={"apiVersion": "memory.somafractal.io/v1alpha1", "kind": "MemoryNamespace",
                  "metadata": {"name": name, "namespace": ns}, "spec": {}},
        )  # fmt: skip
        created[name] = time.monotonic()
    deadline = time.monotonic() + timeout
    while len(ready) < n and time.monotonic() < deadline:
        items = api._request("GET", f"{GROUP_PATH}/namespaces/{ns}/memorynamespaces") or {}
        now = time.monotonic()
        for item in items.get("items", []):
            name = item["metadata"]["name"]
            conds = {c["type"]: c for c in (item.get("status") or {}).get("conditions", [])}
            if name not in provisioned and "ApiReady" in conds:
                provisioned[name] = now  # every backend step done, Deployment applied
            if name not in ready and conds.get("Ready", {}).get("status") == "True":
                ready[name] = now
        time.sleep(0.1)
    total = time.monotonic() - t0
    if len(ready) < n:
        raise TimeoutError(f"only {len(ready)}/{n} Ready after {timeout}s")
    peak_rss = rss_mb(op_pid)

    # One full resync of every object (all namespaces, all phases so far).
    before, events_before = snapshot(api, ns), event_count(api, ns)
    all_crs = len((api._request("GET", f"{GROUP_PATH}/memorynamespaces") or {}).get("items", []))
    start = reconciles(metrics_url)
    resync_t0 = time.monotonic()
    wait(lambda: reconciles(metrics_url) >= start + all_crs, timeout, "a full resync")
    resync_s = time.monotonic() - resync_t0
    after, events_after = snapshot(api, ns), event_count(api, ns)
    changed = sorted(k for k in after if before.get(k) != after[k])
    return {
        "crs": n,
        "apply_to_ready": summary([ready[k] - created[k] for k in created]),
        "apply_to_provisioned": summary([provisioned[k] - created[k] for k in created]),
        "total_s": round(total, 3),
        "operator_rss_mb": round(peak_rss, 1),
        "resync": {
            "crs_in_cluster": all_crs,
            "wall_s": round(resync_s, 2),
            "objects_written": len(changed),
            "events_posted": events_after - events_before,
            "changed": changed[:10],
        },
    }


def baseline(
    n: int, config: Any, qdrant_url: str, api: KubeApi, kafka_conf: dict[str, Any]
) -> dict[str, Any]:
    """The raw calls the operator makes per tenant, directly and sequentially."""
    pg = PostgresAdmin(config.postgres.admin_dsn)
    qd = QdrantAdmin(QdrantClient(url=qdrant_url))
    kf = KafkaAdmin(kafka_conf)
    rd = RedisAdmin(config.redis.admin_url)
    ns = f"raw-{n}-{uuid.uuid4().hex[:4]}"
    new_namespace(api, ns)
    per: list[float] = []
    t0 = time.monotonic()
    for i in range(n):
        tenant = f"raw{n}x{i}{uuid.uuid4().hex[:4]}"
        names = derive_names("raw", tenant, tenant, ns)
        spec = parse_spec({}, tenant)
        cr = {"metadata": {"name": tenant, "namespace": ns, "uid": str(uuid.uuid4())}}
        pw = m.new_secret()
        start = time.monotonic()
        pg.ensure_tenant(DatabaseTarget(names.schema, names.role, pw))
        qd.ensure_collection(CollectionTarget(names.collection, 384, "Cosine", 16, 100, False))
        kf.ensure_topics(TopicsTarget(names.topics, 3, 1, 168 * 3_600_000, names.kafka_user, pw))
        rd.ensure_user(CacheUserTarget(names.cache_user, pw, names.key_prefix))
        data = m.runtime_config(spec, names, config)
        for obj in (
            m.render_secret(cr, names, names.credentials_secret, {"k": pw}),
            m.render_secret(cr, names, names.token_secret, {"token": pw}),
            m.render_configmap(cr, names, data),
            m.render_deployment(cr, spec, names, config, "h"),
            m.render_service(cr, names),
        ):
            obj["metadata"].pop("ownerReferences")  # no CR behind the baseline
            api.apply(obj)
        per.append(time.monotonic() - start)
    return {"tenants": n, "per_tenant": summary(per), "total_s": round(time.monotonic() - t0, 3)}


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release()}  # fmt: skip


def table(results: dict[str, Any]) -> str:
    rows = [
        "| CRs | apply→Ready p50 / p95 (s) | apply→provisioned p50 / p95 (s) | total (s) "
        "| raw calls per tenant p50 / p95 (s) | raw total (s) | operator RSS (MB) "
        "| resync: CRs / writes / Events |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ph, raw in zip(results["phases"], results["baseline"], strict=True):
        r, p, b = ph["apply_to_ready"], ph["apply_to_provisioned"], raw["per_tenant"]
        rs = ph["resync"]
        rows.append(
            f"| {ph['crs']} | {r['p50_s']:.2f} / {r['p95_s']:.2f} | {p['p50_s']:.2f} / "
            f"{p['p95_s']:.2f} | {ph['total_s']:.1f} | {b['p50_s']:.3f} / {b['p95_s']:.3f} "
            f"| {raw['total_s']:.1f} | {ph['operator_rss_mb']:.0f} | {rs['crs_in_cluster']} / "
            f"{rs['objects_written']} / {rs['events_posted']} |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,100")
    parser.add_argument("--json", type=Path, help="also write the JSON results here")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--resync", type=int, default=20, help="operator resync seconds")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    with ExitStack() as stack:
        print(
            "starting PostgreSQL, Redis, Kafka, Qdrant stand-in, kube-apiserver...", file=sys.stderr
        )
        pg = stack.enter_context(run_postgres())
        rd = stack.enter_context(run_redis())
        kafka = stack.enter_context(run_kafka())
        qdrant = stack.enter_context(run_qdrant_rest())
        kube = stack.enter_context(run_kube())
        install_crds(kube, REPO / "crds")
        api = KubeApi.from_kubeconfig(kube.kubeconfig)
        config = operator_config(
            postgres_dsn=pg.admin_dsn, redis_url=rd.url, kafka_bootstrap=kafka.sasl_bootstrap,
            kafka_sasl=(kafka.admin_username, kafka.admin_password), qdrant_url=qdrant.url,
        )  # fmt: skip
        metrics_port, live_port = free_port(), free_port()
        env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),
            "KUBECONFIG": kube.kubeconfig,
            "SOMAFRACTAL_POSTGRES_ADMIN_DSN": pg.admin_dsn,
            "SOMAFRACTAL_REDIS_ADMIN_URL": rd.url,
            "SOMAFRACTAL_KAFKA_BOOTSTRAP": kafka.sasl_bootstrap,
            "SOMAFRACTAL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "SOMAFRACTAL_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "SOMAFRACTAL_KAFKA_ADMIN_USERNAME": kafka.admin_username,
            "SOMAFRACTAL_KAFKA_ADMIN_PASSWORD": kafka.admin_password,
            "SOMAFRACTAL_QDRANT_URL": qdrant.url,
            "SOMAFRACTAL_RESYNC_SECONDS": str(args.resync),
            "SOMAFRACTAL_METRICS_PORT": str(metrics_port),
            "SOMAFRACTAL_LIVENESS_PORT": str(live_port),
            "SOMAFRACTAL_LOG_FORMAT": "plain",
        }
        log = open(REPO / ".test-logs" / "bench-operator.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "memory_operator", "--kubeconfig", kube.kubeconfig],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        stack.callback(proc.wait, 30)
        stack.callback(proc.terminate)
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{live_port}/healthz", timeout=2).is_success
            except httpx.HTTPError:
                return False

        wait(up, 60, "operator liveness")
        faker = PodFaker(api)
        faker.start()
        stack.callback(faker.stop.set)

        results: dict[str, Any] = {"machine": machine(), "phases": [], "baseline": []}
        for n in sizes:
            print(f"phase {n}: operator", file=sys.stderr)
            results["phases"].append(run_phase(api, n, metrics_url, proc.pid, args.timeout))
            print(f"phase {n}: raw baseline", file=sys.stderr)
            results["baseline"].append(
                baseline(n, config, qdrant.url, api, config.kafka.admin_client_config())  # type: ignore[union-attr]
            )
        results["operator_rss_mb_end"] = round(rss_mb(proc.pid), 1)

    print(json.dumps(results, indent=2))
    print()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
