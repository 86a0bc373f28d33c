"""The backlog gauges on the runtime's metrics port (issue 16, point 5): what the
index catch-up and the outbox relay still have to do, read from PostgreSQL at
most every MEMORY_METRICS_BACKLOG_REFRESH_SECONDS, scraped over real HTTP.

A stopped relay / unreachable Kafka grows the outbox backlog and its age; a
relay publishing to the real Kafka drains it. A vector-index outage (a TCP
proxy cuts the Qdrant server) grows the index backlog; catch-up drains it."""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from memory_runtime.api import create_app
from memory_runtime.events.relay import OutboxRelay
from tests.integration.runtime.conftest import (
    ADMIN_TOKEN,
    HashingTestEmbedder,
    Tenant,
    bearer,
    tenant_settings,
)
from tests.integration.runtime.helpers import metrics_port, serving, wait_for
from tests.servers._process import free_port
from tests.servers.faultproxy import fault_proxy

pytestmark = pytest.mark.integration


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url, timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def gauge(url: str, name: str, **labels: str) -> float:
    samples = scrape(url)
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{name}{labels} not on {url}"
    return samples[key]


def test_outbox_backlog_grows_while_nothing_publishes_and_drains_through_kafka(
    tenant: Tenant, kafka: Any
) -> None:
    settings = tenant_settings(
        tenant,
        embedding_provider="local",
        events_enabled=True,
        kafka_bootstrap=f"127.0.0.1:{free_port()}",  # Kafka down; the relay job not started
        kafka_topic="mem.acme.events",
        metrics_backlog_refresh_seconds=0,
    )
    app = create_app(settings, embedder=HashingTestEmbedder())
    with (
        serving(app) as api,
        metrics_port(app) as metrics,
        httpx.Client(base_url=api, headers=bearer(ADMIN_TOKEN)) as http,
    ):
        assert gauge(metrics, "memory_outbox_backlog") == 0
        assert gauge(metrics, "memory_outbox_oldest_age_seconds") == 0
        for n in range(3):
            r = http.post("/memories", json={"coordinate": [n], "payload": {"text": f"e{n}"}})
            assert r.status_code == 201
        assert gauge(metrics, "memory_outbox_backlog") == 3
        first_age = gauge(metrics, "memory_outbox_oldest_age_seconds")
        time.sleep(1.1)
        assert gauge(metrics, "memory_outbox_oldest_age_seconds") >= first_age + 1
        assert http.get("/stats").json()["outbox_lag"] == 3  # the same number /stats shows

        topic = f"mem.acme.events.{uuid.uuid4().hex[:8]}"
        admin = AdminClient(kafka.admin_config)
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[
            topic
        ].result(30)
        relay = OutboxRelay(
            app.state.runtime.service.db.pool, tenant.schema, tenant.name, kafka.admin_config, topic
        )
        assert relay.publish_pending(500) == 3
        relay.close()
        assert gauge(metrics, "memory_outbox_backlog") == 0
        assert gauge(metrics, "memory_outbox_oldest_age_seconds") == 0


def test_index_backlog_grows_during_a_vector_index_outage_and_drains_after(
    tenant: Tenant, qdrant_url: str
) -> None:
    u = urlparse(qdrant_url)
    with fault_proxy(u.hostname or "127.0.0.1", u.port or 80) as proxy:
        settings = tenant_settings(
            tenant,
            vector_backend="qdrant",
            qdrant_url=f"http://127.0.0.1:{proxy.port}",
            qdrant_collection=f"c{tenant.role}",
            embedding_provider="local",
            metrics_backlog_refresh_seconds=0,
        )
        app = create_app(settings, embedder=HashingTestEmbedder())
        with (
            serving(app) as api,
            metrics_port(app) as metrics,
            httpx.Client(base_url=api, headers=bearer(ADMIN_TOKEN)) as http,
        ):
            kept = http.post("/memories", json={"coordinate": [0], "payload": {"text": "fox"}})
            assert kept.json()["index_pending"] is False
            assert gauge(metrics, "memory_index_backlog", op="upsert") == 0
            assert gauge(metrics, "memory_index_backlog", op="delete") == 0

            proxy.down()
            for n in range(1, 5):
                w = http.post("/memories", json={"coordinate": [n], "payload": {"text": f"f{n}"}})
                assert w.json()["index_pending"] is True
            assert http.delete(f"/memories/{kept.json()['id']}").status_code in (200, 204)
            assert gauge(metrics, "memory_index_backlog", op="upsert") == 4
            assert gauge(metrics, "memory_index_backlog", op="delete") == 1
            assert http.get("/stats").json()["index_pending"] == 4

            proxy.restore()

            def drained() -> bool:
                app.state.runtime.service.index_pending(100)  # the catch-up job's pass
                return gauge(metrics, "memory_index_backlog", op="upsert") == 0 and (
                    gauge(metrics, "memory_index_backlog", op="delete") == 0
                )

            wait_for(drained, timeout=30, what="the index backlog drained")


def test_a_scrape_reads_the_database_at_most_once_per_refresh_interval(tenant: Tenant) -> None:
    settings = tenant_settings(tenant, events_enabled=True, kafka_bootstrap="127.0.0.1:1",
                               kafka_topic="t", metrics_backlog_refresh_seconds=3600)  # fmt: skip
    app = create_app(settings)
    with (
        serving(app) as api,
        metrics_port(app) as metrics,
        httpx.Client(base_url=api, headers=bearer(ADMIN_TOKEN)) as http,
    ):
        assert gauge(metrics, "memory_outbox_backlog") == 0
        http.post("/memories", json={"coordinate": [1], "payload": {"text": "x"}})
        assert http.get("/stats").json()["outbox_lag"] == 1
        # Scrapes within the interval answer the last reading, not a new query.
        assert [gauge(metrics, "memory_outbox_backlog") for _ in range(3)] == [0, 0, 0]
