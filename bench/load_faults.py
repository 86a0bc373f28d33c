"""Bounded load test with dependency cuts: correctness under load, not speed.

Not a test. Starts real servers (PostgreSQL 18 + pgvector, Redis 7, Kafka 4.x,
the TEST-ONLY Qdrant REST stand-in), two runtime replicas as separate
processes (`python -m memory_runtime serve`, background jobs on, events on,
Qdrant vectors, Redis rate limiting), and runs N client threads for S seconds
mixing writes, upserts, patches, recalls, deletes and links. In the middle it
cuts dependencies through a TCP proxy and restores them: Qdrant hung, then
Redis stopped (see --help). At the end it checks:

  - zero 5xx answers (and nothing but the statuses each operation may give);
  - exact final counts: /stats memories and links equal what the clients
    know they left behind;
  - the outbox drained and the index caught up (index_pending 0);
  - every event delivered to a real Kafka consumer exactly once (event ids),
    and each memory's memory.* events in version order.

    .venv/bin/python bench/load_faults.py                      # 16 clients x 60 s
    .venv/bin/python bench/load_faults.py --clients 4 --seconds 20   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "runtime"))

import httpx  # noqa: E402
import psycopg  # noqa: E402
import redis  # noqa: E402
from confluent_kafka import Consumer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from memory_contract.redis_functions import LIBRARY_CODE  # noqa: E402
from tests.integration.runtime.conftest import make_tenant  # noqa: E402
from tests.servers._process import free_port, log_dir, stop_popen  # noqa: E402
from tests.servers.faultproxy import FaultProxy  # noqa: E402
from tests.servers.kafka import run_kafka  # noqa: E402
from tests.servers.postgres import create_database, run_postgres  # noqa: E402
from tests.servers.qdrant_rest import run_qdrant_rest  # noqa: E402
from tests.servers.redis import run_redis  # noqa: E402

DIMS = 64
TOKEN = "load-test-admin-token-" + "x" * 16
WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "ember",
    "maple",
    "orbit",
    "quartz",
    "tundra",
    "violet",
    "willow",
    "zephyr",
]
# what each operation may answer; anything else (and any 5xx) is a failure
ALLOWED = {
    "create": {201},
    "upsert": {200},
    "patch": {200},
    "recall": {200},
    "delete": {200},
    "link": {200, 201},
}


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


class Client(threading.Thread):
    """One agent: its own coordinates (client, k), so it knows its final state."""

    def __init__(self, n: int, urls: list[str], stop: threading.Event, seed: int) -> None:
        super().__init__(daemon=True)
        self.n = n
        self.rng = random.Random(seed)
        self.http = [
            httpx.Client(base_url=u, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
            for u in urls
        ]
        self.stop = stop
        self.live: dict[int, str] = {}  # k -> memory id
        self.links: set[tuple[int, int]] = set()
        self.next_k = 0
        self.samples: list[tuple[float, str, int, float]] = []  # (t, op, status, seconds)
        self.bad: list[tuple[str, int, str]] = []

    def vector(self) -> list[float]:
        return [self.rng.uniform(-1, 1) for _ in range(DIMS)]

    def call(self, op: str, method: str, path: str, **kw: Any) -> httpx.Response | None:
        http = self.http[self.rng.randrange(len(self.http))]
        started = time.monotonic()
        try:
            r = http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            self.bad.append((op, 0, repr(exc)))
            return None
        self.samples.append((time.time(), op, r.status_code, time.monotonic() - started))
        if r.status_code not in ALLOWED[op]:
            self.bad.append((op, r.status_code, r.text[:200]))
            return None
        return r

    def body(self, k: int) -> dict[str, Any]:
        text = " ".join(self.rng.choice(WORDS) for _ in range(6))
        return {"coordinate": [self.n, k], "payload": {"text": text}, "vector": self.vector()}

    def step(self) -> None:
        op = self.rng.choices(
            ["create", "upsert", "patch", "recall", "delete", "link"], [30, 10, 10, 30, 8, 12]
        )[0]
        if op != "create" and op != "recall" and len(self.live) < 2:
            op = "create"
        if op == "create":
            k = self.next_k
            self.next_k += 1
            r = self.call(op, "POST", "/memories", json=self.body(k))
            if r is not None:
                self.live[k] = r.json()["id"]
        elif op == "upsert":
            k = self.rng.choice(list(self.live))
            self.call(op, "POST", "/memories", json=self.body(k))
        elif op == "patch":
            k = self.rng.choice(list(self.live))
            self.call(
                op, "PATCH", f"/memories/{self.n},{k}", json={"importance": self.rng.random()}
            )
        elif op == "recall":
            query = " ".join(self.rng.sample(WORDS, 2))
            self.call(
                op,
                "POST",
                "/memories/search",
                json={"query": query, "vector": self.vector(), "top_k": 5},
            )
        elif op == "delete":
            k = self.rng.choice(list(self.live))
            if self.call(op, "DELETE", f"/memories/{self.n},{k}") is not None:
                del self.live[k]
                self.links = {(a, b) for a, b in self.links if k not in (a, b)}
        else:
            a, b = self.rng.sample(list(self.live), 2)
            body = {"from": f"{self.n},{a}", "to": f"{self.n},{b}", "strength": 0.5}
            if self.call(op, "POST", "/graph/link", json=body) is not None:
                self.links.add((a, b))

    def run(self) -> None:
        while not self.stop.is_set():
            self.step()
        for h in self.http:
            h.close()


def runtime_env(dsn: str, schema: str, port: int, urls: dict[str, str], topic: str) -> dict:  # type: ignore[type-arg]
    vectors = (
        {
            "MEMORY_VECTOR_BACKEND": "qdrant",
            "MEMORY_QDRANT_URL": urls["qdrant"],
            "MEMORY_QDRANT_COLLECTION": schema,
        }
        if "qdrant" in urls
        else {"MEMORY_VECTOR_BACKEND": "postgres"}
    )
    return {
        **os.environ,
        "MEMORY_TENANT": "load",
        "MEMORY_DATABASE_URL": dsn,
        "MEMORY_DATABASE_SCHEMA": schema,
        **vectors,
        "MEMORY_VECTOR_DIMENSIONS": str(DIMS),
        "MEMORY_EMBEDDING_PROVIDER": "none",
        "MEMORY_API_TOKENS": f"admin:{TOKEN}",
        "MEMORY_MIGRATE_ON_START": "true",
        "MEMORY_EVENTS_ENABLED": "true",
        "MEMORY_KAFKA_BOOTSTRAP": urls["kafka"],
        "MEMORY_KAFKA_TOPIC": topic,
        "MEMORY_REDIS_URL": urls["redis"],
        "MEMORY_REDIS_PREFIX": "mem:load",
        "MEMORY_RATE_LIMIT_PER_MINUTE": "600000",
        "MEMORY_RATE_LIMIT_BURST": "10000",
        "MEMORY_METRICS_PORT": "0",
        "MEMORY_HOST": "127.0.0.1",
        "MEMORY_PORT": str(port),
        "MEMORY_RELAY_INTERVAL_SECONDS": "0.5",
        "MEMORY_INDEX_INTERVAL_SECONDS": "2",
    }


def consume(bootstrap: str, topic: str, expected: int) -> list[dict]:  # type: ignore[type-arg]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"load-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    events: list[dict] = []  # type: ignore[type-arg]
    idle = 0
    deadline = time.monotonic() + 300
    try:
        while idle < 10 and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                idle += 1 if len(events) >= expected else 0
                continue
            idle = 0
            events.append(json.loads(msg.value()))
    finally:
        consumer.close()
    return events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "load_faults.json"))
    parser.add_argument(
        "--vector-backend",
        choices=["qdrant", "postgres"],
        default="qdrant",
        help="postgres: pgvector in the tenant's database (no Qdrant to cut: Redis only)",
    )
    args = parser.parse_args()
    third = args.seconds / 3
    # (start, end, dependency, fault): Qdrant hung, then Redis stopped
    cuts = [
        (third, third + third / 2, "qdrant", "hang"),
        (2 * third - third / 4, 2 * third + third / 4, "redis", "down"),
    ]
    if args.vector_backend == "postgres":
        cuts = [cut for cut in cuts if cut[2] != "qdrant"]

    with ExitStack() as stack:
        pg = stack.enter_context(run_postgres())
        rd = stack.enter_context(run_redis())
        kafka = stack.enter_context(run_kafka())
        qd = stack.enter_context(run_qdrant_rest())
        redis.Redis.from_url(rd.url).execute_command("FUNCTION", "LOAD", "REPLACE", LIBRARY_CODE)
        tenant = make_tenant(create_database(pg, "load"), "load")
        q = urlparse(qd.url)
        proxies = {
            "qdrant": FaultProxy(q.hostname or "127.0.0.1", q.port or 80).start(),
            "redis": FaultProxy(rd.host, rd.port).start(),
        }
        for proxy in proxies.values():
            stack.callback(proxy.close)
        topic = "mem.load.events"
        admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[
            topic
        ].result(30)
        urls = {
            "qdrant": f"http://127.0.0.1:{proxies['qdrant'].port}",
            "redis": f"redis://:{rd.password}@127.0.0.1:{proxies['redis'].port}/0",
            "kafka": kafka.bootstrap,
        }
        if args.vector_backend == "postgres":
            del urls["qdrant"]
        logs = log_dir("runtime")
        replicas = []
        for n in range(2):
            port = free_port()
            log = open(logs / f"load-replica-{n}.log", "wb")  # noqa: SIM115
            proc = subprocess.Popen(
                [sys.executable, "-m", "memory_runtime", "serve"],
                env=runtime_env(tenant.dsn, tenant.schema, port, urls, topic),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            stack.callback(stop_popen, proc)
            replicas.append(f"http://127.0.0.1:{port}")
            time.sleep(3)  # one migrates, then the other starts
        for url in replicas:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"{url} did not become ready; see {logs}")
                time.sleep(0.5)

        stop = threading.Event()
        clients = [Client(n, replicas, stop, args.seed + n) for n in range(args.clients)]
        started = time.time()
        for c in clients:
            c.start()
        windows = []
        for begin, end, dep, fault in cuts:
            time.sleep(max(0.0, started + begin - time.time()))
            getattr(proxies[dep], "hang" if fault == "hang" else "down")()
            t0 = time.time()
            time.sleep(max(0.0, started + end - time.time()))
            proxies[dep].restore()
            windows.append({"dependency": dep, "fault": fault, "from": t0, "to": time.time()})
        time.sleep(max(0.0, started + args.seconds - time.time()))
        stop.set()
        for c in clients:
            c.join(120)
        ran = time.time() - started

        http = httpx.Client(base_url=replicas[0], headers={"Authorization": f"Bearer {TOKEN}"})
        deadline = time.monotonic() + 180
        while True:
            stats = http.get("/stats").json()
            if stats["outbox_lag"] == 0 and stats["index_pending"] == 0:
                break
            if time.monotonic() > deadline:
                break
            time.sleep(1)
        with psycopg.connect(tenant.admin_dsn) as conn:
            outbox_rows = conn.execute(f"SELECT count(*) FROM {tenant.schema}.outbox").fetchone()[0]  # type: ignore[index]
        events = consume(kafka.bootstrap, topic, outbox_rows)

    samples = [s for c in clients for s in c.samples]
    bad = [b for c in clients for b in c.bad]
    statuses = Counter(s[2] for s in samples)
    expected_memories = sum(len(c.live) for c in clients)
    expected_links = sum(len(c.links) for c in clients)
    ids = [e["event_id"] for e in events]
    versions: dict[str, list[int]] = defaultdict(list)
    for e in events:
        if e["type"].startswith("memory."):
            versions[e["memory_id"]].append(e["version"])
    out_of_order = [m for m, v in versions.items() if v != sorted(v) or len(set(v)) != len(v)]

    def in_cut(t: float) -> bool:
        return any(w["from"] <= t <= w["to"] for w in windows)

    latency: dict[str, dict[str, float]] = {}
    for op in ALLOWED:
        for label, pick in (("all", lambda t: True), ("during_cuts", in_cut)):
            vals = [s[3] * 1000 for s in samples if s[1] == op and pick(s[0])]
            latency[f"{op}/{label}"] = {
                "n": len(vals),
                "p50_ms": round(pct(vals, 50), 1),
                "p95_ms": round(pct(vals, 95), 1),
                "p99_ms": round(pct(vals, 99), 1),
                "max_ms": round(max(vals, default=0.0), 1),
            }
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "clients": args.clients,
        "vector_backend": args.vector_backend,
        "seconds": round(ran, 1),
        "requests": len(samples),
        "statuses": dict(sorted(statuses.items())),
        "http_5xx": sum(n for s, n in statuses.items() if s >= 500),
        "unexpected": bad[:20],
        "unexpected_count": len(bad),
        "cuts": [
            {k: v for k, v in w.items() if k in ("dependency", "fault")}
            | {"seconds": round(w["to"] - w["from"], 1)}
            for w in windows
        ],
        "final": {
            "memories": stats["memories"],
            "memories_expected": expected_memories,
            "links": stats["links"],
            "links_expected": expected_links,
            "outbox_lag": stats["outbox_lag"],
            "index_pending": stats["index_pending"],
            "vector_count": stats["vector_count"],
        },
        "events": {
            "outbox_rows": outbox_rows,
            "delivered": len(events),
            "distinct": len(set(ids)),
            "memories_with_events": len(versions),
            "memories_out_of_order": len(out_of_order),
        },
        "latency": latency,
    }
    result["ok"] = bool(
        result["http_5xx"] == 0
        and not bad
        and stats["memories"] == expected_memories
        and stats["links"] == expected_links
        and stats["vector_count"] == expected_memories
        and stats["outbox_lag"] == 0
        and stats["index_pending"] == 0
        and len(events) == len(set(ids)) == outbox_rows
        and not out_of_order
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "latency"}, indent=2))
    print(f"{'operation':<22}{'n':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, row in latency.items():
        print(
            f"{name:<22}{row['n']:>7}{row['p50_ms']:>9}{row['p95_ms']:>9}"
            f"{row['p99_ms']:>9}{row['max_ms']:>9}"
        )
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
