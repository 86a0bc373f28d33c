"""API writes -> outbox -> relay -> Kafka: every event the runtime produces is schema-valid."""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator

from memory_runtime.events.envelope import event_schema
from memory_runtime.events.relay import OutboxRelay
from tests.integration.runtime.conftest import Tenant
from tests.integration.runtime.helpers import admin_rows

pytestmark = pytest.mark.integration


def test_every_runtime_write_becomes_a_valid_event(client: TestClient, tenant: Tenant, kafka):  # type: ignore[no-untyped-def]
    topic = f"mem.acme.events.{uuid.uuid4().hex[:8]}"
    admin = AdminClient(kafka.admin_config)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)

    a = client.post("/memories", json={"coordinate": [1], "payload": {"text": "a"}}).json()
    client.post("/memories", json={"coordinate": [2], "payload": {"text": "b"}, "user_id": "u"})
    client.post(
        "/memories", json={"coordinate": [3], "payload": {}, "expires_at": "2001-01-01T00:00:00Z"}
    )
    client.patch("/memories/1", json={"importance": 0.8})
    client.post("/graph/link", json={"from": "1", "to": "2"})
    client.delete("/graph/link", params={"from": "1", "to": "2", "type": "related"})
    client.post("/graph/link", json={"from": "2", "to": "1"})
    client.delete("/memories", params={"user_id": "u"})
    client.app.state.runtime.service.prune()  # type: ignore[attr-defined]
    client.delete("/memories/1")
    expected = admin_rows(tenant, "SELECT count(*) AS n FROM outbox")[0]["n"]

    relay = OutboxRelay(
        client.app.state.runtime.service.db.pool,  # type: ignore[attr-defined]
        tenant.schema,
        tenant.name,
        kafka.admin_config,
        topic,
    )
    assert relay.publish_pending(500) == expected
    assert relay.lag() == 0
    assert client.get("/stats").json()["outbox_lag"] == 0

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
    try:
        for _ in range(60):
            if len(events) >= expected:
                break
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            events.append((msg.key().decode(), json.loads(msg.value())))
    finally:
        consumer.close()
    assert len(events) == expected
    validator = Draft202012Validator(
        event_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    for key, event in events:
        validator.validate(event)
        assert key == event["memory_id"]
        assert event["tenant"] == "acme"
    kinds = [e["type"] for _, e in events]
    assert kinds.count("memory.created") == 3
    assert kinds.count("link.created") == 2
    assert kinds.count("link.deleted") == 2  # unlink + removed with its end
    reasons = sorted(e["reason"] for _, e in events if e["type"] == "memory.deleted")
    assert reasons == ["deleted", "expired", "forget"]
    first = [e for _, e in events if e["memory_id"] == a["id"] and e["type"].startswith("memory")]
    assert [e["version"] for e in first] == [1, 2, 3]
