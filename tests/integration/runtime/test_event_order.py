"""Events through two runtime replicas (separate processes, no Redis) to a real
Kafka consumer: every event delivered exactly once, each memory's events in
version order, also under concurrent updates of one memory (issue 15 items 3-4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.integration.runtime.conftest import ADMIN_TOKEN, DIMENSIONS, Tenant, bearer
from tests.integration.runtime.helpers import admin_rows, wait_for
from tests.servers._process import free_port, log_dir, stop_popen

pytestmark = pytest.mark.integration


def runtime_env(tenant: Tenant, port: int, kafka_bootstrap: str, topic: str) -> dict[str, str]:
    return {
        **os.environ,
        "MEMORY_TENANT": tenant.name,
        "MEMORY_DATABASE_URL": tenant.dsn,
        "MEMORY_DATABASE_SCHEMA": tenant.schema,
        "MEMORY_VECTOR_BACKEND": "postgres",
        "MEMORY_VECTOR_DIMENSIONS": str(DIMENSIONS),
        "MEMORY_EMBEDDING_PROVIDER": "none",
        "MEMORY_API_TOKENS": f"admin:{ADMIN_TOKEN}",
        "MEMORY_MIGRATE_ON_START": "true",
        "MEMORY_EVENTS_ENABLED": "true",
        "MEMORY_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "MEMORY_KAFKA_TOPIC": topic,
        "MEMORY_RATE_LIMIT_PER_MINUTE": "0",
        "MEMORY_METRICS_PORT": "0",
        "MEMORY_HOST": "127.0.0.1",
        "MEMORY_PORT": str(port),
        "MEMORY_RELAY_INTERVAL_SECONDS": "0.2",
        "MEMORY_REDIS_URL": "",
    }


@pytest.fixture
def replicas(tenant: Tenant, kafka) -> Iterator[tuple[list[str], str]]:  # type: ignore[no-untyped-def]
    topic = f"mem.acme.events.{uuid.uuid4().hex[:8]}"
    admin = AdminClient(kafka.admin_config)
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
    procs, urls = [], []
    logs: Path = log_dir("runtime")
    try:
        for n in range(2):
            port = free_port()
            log = open(logs / f"replica-{n}-{port}.log", "wb")  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "memory_runtime", "serve"],
                    env=runtime_env(tenant, port, kafka.bootstrap, topic),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            wait_for(lambda u=url: _ready(u), timeout=180, what=f"{url}/readyz")
        yield urls, topic
    finally:
        for proc in procs:
            stop_popen(proc)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def consume(kafka, topic: str, expected: int) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    consumer = Consumer(
        {
            **kafka.admin_config,
            "group.id": f"t-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
    )
    consumer.subscribe([topic])
    events = []
    idle = 0
    try:
        while idle < 5:  # until 5 s pass without a message, after `expected` arrived
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                idle += 1 if len(events) >= expected else 0
                continue
            idle = 0
            events.append(json.loads(msg.value()))
    finally:
        consumer.close()
    return events


def test_two_replicas_publish_each_event_once_in_version_order(
    replicas, tenant: Tenant, kafka
) -> None:  # type: ignore[no-untyped-def]
    urls, topic = replicas
    clients = [httpx.Client(base_url=u, headers=bearer(ADMIN_TOKEN), timeout=30) for u in urls]
    hot = clients[0].post("/memories", json={"coordinate": [0], "payload": {"n": 0}})
    assert hot.status_code == 201

    def work(n: int) -> None:
        c = clients[n % 2]
        for i in range(15):
            assert c.patch("/memories/0", json={"payload": {"n": n, "i": i}}).status_code == 200
            if i % 5 == 0:
                created = c.post("/memories", json={"coordinate": [n + 1, i], "payload": {}})
                assert created.status_code == 201
                c.patch(f"/memories/{n + 1},{i}", json={"importance": 0.9})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    expected = admin_rows(tenant, "SELECT count(*) AS n FROM outbox")[0]["n"]
    wait_for(
        lambda: (
            admin_rows(tenant, "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL")[0]["n"]
            == 0
        ),
        timeout=60,
        what="outbox drained",
    )
    events = consume(kafka, topic, expected)
    for c in clients:
        c.close()

    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids)), "an event was published twice"
    assert len(events) == expected
    versions: dict[str, list[int]] = defaultdict(list)
    for e in events:
        if e["type"].startswith("memory."):
            versions[e["memory_id"]].append(e["version"])
    hot_versions = versions[hot.json()["id"]]
    assert hot_versions == list(range(1, 8 * 15 + 2))  # created + 120 updates, in order
    for memory_id, seen in versions.items():
        assert seen == sorted(seen), f"{memory_id}: {seen}"
