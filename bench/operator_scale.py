"""Operator scale benchmark: apply -> provisioned -> Ready for 1, 100 and 1,000
MemoryNamespaces, a resync pass over all of them, and the operator's peak RSS.

Everything is real and local: PostgreSQL, Redis, Kafka (SASL/SCRAM + ACLs),
etcd + kube-apiserver + kube-controller-manager, and the test Qdrant REST
stand-in. The operator runs as its own process (`python -m memory_operator`),
from a venv holding only the operator image's locked dependencies
(requirements/operator.txt; built once, cached under ~/.cache/somafractal), so
its RSS is its own and its imports are the image's.

Baseline, same run, measured first with no operator running: the raw calls
the operator makes per tenant (PostgreSQL schema+role, Qdrant collection, Kafka
topic+SCRAM user+ACLs, Redis ACL user, five server-side applies), made by a
plain script back to back for the same number of tenants.

There are no kubelets: a helper binds each tenant Pod to a fake Node and
reports it Ready, so the real ReplicaSet/Deployment controllers mark the
Deployment available (that helper's delay is inside apply->Ready, not inside
apply->provisioned).

The operator's RSS is sampled every 0.25 s for the whole run (and VmHWM, the
kernel's own peak, is read at the end). The resync pass restarts the operator:
Kopf's resume handlers reconcile every CR at once (what a failover does too);
resourceVersions, Events and the operator's own "writes=" log lines count what
it changed (expected: nothing).

Usage: .venv/bin/python bench/operator_scale.py [--sizes 1,100,1000]
       [--baseline-sizes 1,100] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import httpx

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
from memory_operator.ownership import Owner  # noqa: E402
from memory_operator.spec import parse_spec  # noqa: E402
from tests.e2e.harness import PodFaker, kube_api, operator_config  # noqa: E402
from tests.servers._process import CACHE_ROOT, cache_lock, free_port  # noqa: E402
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


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb(pid: int) -> float:
    return _status_mb(pid, "VmRSS")


def vm_hwm_mb(pid: int) -> float:
    """The kernel's own peak RSS of the process."""
    return _status_mb(pid, "VmHWM")


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


class RssSampler(threading.Thread):
    """VmRSS of one process every `interval` seconds; `peak()` since `mark()`."""

    def __init__(self, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid: int | None = None
        self.interval = interval
        self.stop = threading.Event()
        self.samples: list[float] = []
        self._since = 0

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            if self.pid is not None:
                with suppress(OSError):  # between two operator processes
                    self.samples.append(rss_mb(self.pid))

    def mark(self) -> None:
        self._since = len(self.samples)

    def peak(self) -> float:
        return max(self.samples[self._since :], default=float("nan"))


def status_of(item: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (item.get("status") or {}).get("conditions", [])}


def run_phase(api: KubeApi, n: int, rss: RssSampler, timeout: float) -> dict[str, Any]:
    ns = f"bench-{n}-{uuid.uuid4().hex[:4]}"
    new_namespace(api, ns)
    created: dict[str, float] = {}
    provisioned: dict[str, float] = {}
    ready: dict[str, float] = {}
    failures: dict[str, str] = {}
    rss.mark()
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
            conds = status_of(item)
            if name not in provisioned and "ApiReady" in conds:
                provisioned[name] = now  # every backend step done, Deployment applied
            if name not in ready and conds.get("Ready", {}).get("status") == "True":
                ready[name] = now
            reason = conds.get("Ready", {}).get("reason", "")
            if reason.endswith(("Rejected", "NotAllowed", "NotIsolated", "Conflict")):
                failures[name] = reason
        if failures:
            raise RuntimeError(f"permanent failures: {dict(list(failures.items())[:5])}")
        time.sleep(0.5 if n > 100 else 0.1)
    if len(ready) < n:
        raise TimeoutError(f"only {len(ready)}/{n} Ready after {timeout}s; failures {failures}")
    return {
        "crs": n,
        "namespace": ns,
        "apply_to_provisioned": summary([provisioned[k] - created[k] for k in created]),
        "apply_to_ready": summary([ready[k] - created[k] for k in created]),
        "all_provisioned_s": round(max(provisioned.values()) - t0, 3),
        "all_ready_s": round(max(ready.values()) - t0, 3),
        "permanent_failures_seen": failures,
        "operator_peak_rss_mb": round(rss.peak(), 1),
    }


def baseline(
    n: int, config: Any, qdrant_url: str, api: KubeApi, kafka_conf: dict[str, Any]
) -> dict[str, Any]:
    """The raw calls the operator makes per tenant, directly and sequentially."""
    pg = PostgresAdmin(config.postgres.admin_dsn)
    qd = QdrantAdmin.connect(qdrant_url)
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
        owner = Owner(ns, tenant, cr["metadata"]["uid"])  # the operator records it too
        pg.ensure_tenant(DatabaseTarget(names.schema, names.role, pw, owner=owner))
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


def operator_python() -> Path:
    """The Python of a venv holding only the operator image's locked dependencies
    (requirements/operator.txt), so the measured process imports what the image's
    does: in the dev venv Kopf would also import the `kubernetes` package, which is
    installed there for memctl. Built once per lock, cached by the lock's hash."""
    lock = REPO / "requirements" / "operator.txt"
    venv = CACHE_ROOT / f"operator-venv-{hashlib.sha256(lock.read_bytes()).hexdigest()[:16]}"
    python = venv / "bin" / "python"
    with cache_lock("operator-venv"):
        if not python.exists():
            print(f"building {venv} from {lock.name}", file=sys.stderr)
            work = venv.with_name(venv.name + ".partial")
            shutil.rmtree(work, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", work], check=True)
            subprocess.run(
                [work / "bin" / "pip", "install", "-q", "--disable-pip-version-check",
                 "--require-hashes", "-r", lock],
                check=True,
            )  # fmt: skip
            work.rename(venv)
    return python


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release()}  # fmt: skip


def all_snapshots(api: KubeApi, namespaces: list[str]) -> tuple[dict[str, str], int]:
    versions: dict[str, str] = {}
    events = 0
    for ns in namespaces:
        versions.update({f"{ns}/{k}": v for k, v in snapshot(api, ns).items()})
        events += event_count(api, ns)
    return versions, events


LOG_WRITES = re.compile(r"reconciled \S+: ready=\S+ reason=\S+ writes=(\S+)")
LOG_PASS = re.compile(r"reconciled (\S+): ready=")


def resync_pass(
    api: KubeApi,
    start_operator: Callable[[], tuple[subprocess.Popen[bytes], Path]],
    metrics_url: str,
    namespaces: list[str],
    total: int,
    rss: RssSampler,
    timeout: float,
) -> tuple[dict[str, Any], subprocess.Popen[bytes]]:
    """Restart the operator: its resume handlers reconcile every CR at once."""
    before, events_before = all_snapshots(api, namespaces)
    rss.mark()
    t0 = time.monotonic()
    proc, log_path = start_operator()
    rss.pid = proc.pid

    first: list[float] = []
    seen: set[str] = set()
    read = [0]

    def done() -> bool:
        # Every CR's own pass logged (the metric also counts Deployment-event passes).
        with log_path.open("rb") as log:
            log.seek(read[0])
            chunk = log.read()
        end = chunk.rfind(b"\n") + 1
        read[0] += end
        seen.update(LOG_PASS.findall(chunk[:end].decode(errors="replace")))
        if seen and not first:
            first.append(time.monotonic())
        return len(seen) >= total

    wait(done, timeout, f"{total} resume reconciles")
    wall = time.monotonic() - t0
    passes_total = reconciles(metrics_url)
    passes = time.monotonic() - first[0]
    after, events_after = all_snapshots(api, namespaces)
    changed = sorted(k for k in after if before.get(k) != after[k])
    logged = [w for w in LOG_WRITES.findall(log_path.read_text(errors="replace")) if w != "none"]
    return (
        {
            "crs": total,
            "wall_s_from_process_start": round(wall, 2),
            "wall_s_first_to_last_reconcile": round(passes, 2),
            "reconciles_counted": passes_total,  # resume passes + Deployment-event passes
            "objects_written": len(changed),
            "events_posted": events_after - events_before,
            "passes_with_writes": len(logged),
            "changed": changed[:10],
            "writes_logged": logged[:10],
            "operator_peak_rss_mb": round(rss.peak(), 1),
        },
        proc,
    )


def table(results: dict[str, Any]) -> str:
    raw = {b["tenants"]: b for b in results["baseline"]}
    rows = [
        "| CRs | all provisioned (s) | raw calls, same tenants, back to back (s) | ratio "
        "| apply→provisioned p50 / p95 (s) | apply→Ready p50 / p95 (s) | all Ready (s) "
        "| operator peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ph in results["phases"]:
        p, r = ph["apply_to_provisioned"], ph["apply_to_ready"]
        b = raw.get(ph["crs"])
        ratio = f"{ph['all_provisioned_s'] / b['total_s']:.2f}" if b else "—"
        rows.append(
            f"| {ph['crs']} | {ph['all_provisioned_s']:.1f} | "
            f"{b['total_s'] if b else '—'} | {ratio} | {p['p50_s']:.2f} / {p['p95_s']:.2f} "
            f"| {r['p50_s']:.2f} / {r['p95_s']:.2f} | {ph['all_ready_s']:.1f} "
            f"| {ph['operator_peak_rss_mb']:.0f} |"
        )
    rs = results["resync"]
    rows += [
        "",
        "| resync (operator restart): CRs | wall from process start (s) "
        "| first to last reconcile (s) | objects written | Events | passes logging writes "
        "| peak RSS (MB) |",
        "|---|---|---|---|---|---|---|",
        f"| {rs['crs']} | {rs['wall_s_from_process_start']} "
        f"| {rs['wall_s_first_to_last_reconcile']} | {rs['objects_written']} "
        f"| {rs['events_posted']} | {rs['passes_with_writes']} | {rs['operator_peak_rss_mb']} |",
    ]
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,100,1000")
    parser.add_argument("--baseline-sizes", default="1,100")
    parser.add_argument("--json", type=Path, help="also write the JSON results here")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--resync", type=int, default=3600, help="operator timer interval (s)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    baseline_sizes = [int(s) for s in args.baseline_sizes.split(",") if s]

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
        api = kube_api(kube)
        config = operator_config(
            postgres_dsn=pg.admin_dsn, redis_url=rd.url, kafka_bootstrap=kafka.sasl_bootstrap,
            kafka_sasl=(kafka.admin_username, kafka.admin_password), qdrant_url=qdrant.url,
        )  # fmt: skip
        results: dict[str, Any] = {"machine": machine(), "phases": [], "baseline": []}

        # The baseline first: no operator process exists yet, nothing else runs.
        for n in baseline_sizes:
            print(f"raw baseline: {n} tenants", file=sys.stderr)
            results["baseline"].append(
                baseline(n, config, qdrant.url, api, config.kafka.admin_client_config())  # type: ignore[union-attr]
            )

        metrics_port, live_port = free_port(), free_port()
        python = operator_python()
        env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),
            # What the image copies: the operator package and memory_contract
            # (operator/Dockerfile; the repository root holds the latter).
            "PYTHONPATH": str(REPO / "operator") + os.pathsep + str(REPO),
            "MALLOC_ARENA_MAX": "2",  # as operator/Dockerfile sets it
            "KUBECONFIG": kube.kubeconfig,
            "SOMAFRACTAL_POSTGRES_ADMIN_DSN": pg.admin_dsn,
            "SOMAFRACTAL_REDIS_ADMIN_URL": rd.url,
            "SOMAFRACTAL_KAFKA_BOOTSTRAP": kafka.sasl_bootstrap,
            "SOMAFRACTAL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "SOMAFRACTAL_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "SOMAFRACTAL_KAFKA_ADMIN_USERNAME": kafka.admin_username,
            "SOMAFRACTAL_KAFKA_ADMIN_PASSWORD": kafka.admin_password,
            "SOMAFRACTAL_QDRANT_URL": qdrant.url,
            # The stand-in has no API key to scope tenants with (docs/THREAT-MODEL.md).
            "SOMAFRACTAL_QDRANT_TENANT_ISOLATION": "off",
            "SOMAFRACTAL_RESYNC_SECONDS": str(args.resync),
            "SOMAFRACTAL_METRICS_PORT": str(metrics_port),
            "SOMAFRACTAL_LIVENESS_PORT": str(live_port),
            "SOMAFRACTAL_LOG_FORMAT": "plain",
        }
        runs = 0

        def start_operator() -> tuple[subprocess.Popen[bytes], Path]:
            nonlocal runs
            runs += 1
            path = REPO / ".test-logs" / f"bench-operator-{runs}.log"
            path.parent.mkdir(exist_ok=True)
            with path.open("wb") as log:
                proc = subprocess.Popen(
                    [python, "-m", "memory_operator", "--kubeconfig", kube.kubeconfig],
                    env=env, stdout=log, stderr=subprocess.STDOUT,
                )  # fmt: skip
            stack.callback(lambda: proc.poll() is None and proc.kill())
            return proc, path

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{live_port}/healthz", timeout=2).is_success
            except httpx.HTTPError:
                return False

        rss = RssSampler()
        rss.start()
        stack.callback(rss.stop.set)
        proc, _ = start_operator()
        rss.pid = proc.pid
        wait(up, 60, "operator liveness")
        results["operator_idle_rss_mb"] = round(rss_mb(proc.pid), 1)
        faker = PodFaker(api)
        faker.start()
        stack.callback(faker.stop.set)

        for n in sizes:
            print(f"phase {n}: operator", file=sys.stderr)
            results["phases"].append(run_phase(api, n, rss, args.timeout))
            if args.json:  # what is measured so far survives a later failure
                args.json.write_text(json.dumps(results, indent=2))
        results["operator_vmhwm_mb"] = round(vm_hwm_mb(proc.pid), 1)

        print("resync pass: restarting the operator", file=sys.stderr)
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        total = sum(sizes)
        results["resync"], proc = resync_pass(
            api,
            start_operator,
            f"http://127.0.0.1:{metrics_port}/metrics",
            [ph["namespace"] for ph in results["phases"]],
            total,
            rss,
            args.timeout,
        )
        results["resync"]["operator_vmhwm_mb"] = round(vm_hwm_mb(proc.pid), 1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)

    print(json.dumps(results, indent=2))
    print()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
