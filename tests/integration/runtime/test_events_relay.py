"""Outbox relay against real PostgreSQL and Kafka: published in order, valid, marked sent;
a Kafka outage leaves rows unsent until the broker is reachable again."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import psycopg
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from memory_runtime.events import event_schema
from memory_runtime.events.relay import OutboxRelay
from tests.servers._process import free_port
from tests.servers.kafka import KafkaServer

pytestmark = pytest.mark.integration

SCHEMA = "mem_acme"
# The columns the core migration creates (storage/migrations); recreated here.
OUTBOX_DDL = f"""
CREATE SCHEMA {SCHEMA};
CREATE TABLE {SCHEMA}.outbox (
    id uuid PRIMARY KEY,
    event_type text NOT NULL,
    memory_id uuid NOT NULL,
    version bigint,
    record jsonb,
    reason text,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    seq bigint GENERATED ALWAYS AS IDENTITY
);
"""


@pytest.fixture
def pool(pg_database: str) -> Iterator[ConnectionPool]:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(OUTBOX_DDL)
    p = ConnectionPool(pg_database, min_size=1, max_size=2, open=True)
    yield p
    p.close()


@pytest.fixture
def topic(kafka: KafkaServer) -> str:
    name = f"mem.acme.events.{secrets.token_hex(4)}"
    admin = AdminClient(kafka.admin_config)
    admin.create_topics([NewTopic(name, num_partitions=3)])[name].result(timeout=30)
    return name


def insert_rows(pool: ConnectionPool, count: int, start: datetime) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        memory_id = uuid.uuid4()
        kind = ["memory.created", "memory.updated", "memory.deleted"][i % 3]
        record = None
        if kind != "memory.deleted":
            record = {"id": str(memory_id), "coordinate": [float(i)], "memory_type": "semantic"}
        rows.append(
            {
                "id": uuid.uuid4(),
                "event_type": kind,
                "memory_id": memory_id,
                "version": i + 1,
                "record": record,
                "reason": "api" if kind == "memory.deleted" else None,
                # occurred_at (a transaction's start) out of order on purpose:
                # the relay publishes in write order (seq), never by this.
                "occurred_at": start + timedelta(seconds=(count - i) % count),
            }
        )
    with pool.connection() as conn, conn.transaction():
        for r in rows:
            conn.execute(
                f"INSERT INTO {SCHEMA}.outbox (id, event_type, memory_id, version, record, "
                "reason, occurred_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    r["id"],
                    r["event_type"],
                    r["memory_id"],
                    r["version"],
                    Jsonb(r["record"]) if r["record"] is not None else None,
                    r["reason"],
                    r["occurred_at"],
                ),
            )
    return rows


def consume_all(kafka: KafkaServer, topic: str, expected: int) -> list[Any]:
    consumer = Consumer(
        {
            **kafka.admin_config,
            "group.id": f"g-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
    )
    consumer.subscribe([topic])
    messages: list[Any] = []
    try:
        for _ in range(120):  # up to ~60 s, ends as soon as everything arrived
            msg = consumer.poll(0.5)
            if msg is None:
                if len(messages) >= expected:
                    break
                continue
            assert msg.error() is None, msg.error()
            messages.append(msg)
    finally:
        consumer.close()
    return messages


def unsent_ids(pool: ConnectionPool) -> set[uuid.UUID]:
    with pool.connection() as conn:
        return {r[0] for r in conn.execute(f"SELECT id FROM {SCHEMA}.outbox WHERE sent_at IS NULL")}


def test_rows_are_published_valid_keyed_and_marked_sent(
    pool: ConnectionPool, kafka: KafkaServer, topic: str
) -> None:
    rows = insert_rows(pool, 9, datetime(2026, 5, 1, tzinfo=UTC))
    relay = OutboxRelay(pool, SCHEMA, "acme", dict(kafka.admin_config), topic)
    assert relay.lag() == 9
    assert relay.publish_pending(limit=4) == 4  # oldest four first
    assert relay.lag() == 5
    assert relay.publish_pending() == 5
    assert relay.lag() == 0
    assert relay.publish_pending() == 0  # nothing left: nothing re-sent
    relay.close()

    messages = consume_all(kafka, topic, 9)
    assert len(messages) == 9
    validator = jsonschema.Draft202012Validator(
        event_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    by_id = {str(r["id"]): r for r in rows}
    for msg in messages:
        event = json.loads(msg.value())
        validator.validate(event)
        source = by_id[event["event_id"]]
        assert msg.key().decode() == str(source["memory_id"])
        assert event["type"] == source["event_type"]
        assert event["version"] == source["version"]
        assert event["tenant"] == "acme"
        assert dict(msg.headers())["event_type"].decode() == source["event_type"]
    assert {json.loads(m.value())["event_id"] for m in messages} == set(by_id)
    # Within a partition, events come in the order they were written.
    written = [str(r["id"]) for r in rows]
    for partition in {m.partition() for m in messages}:
        ids = [json.loads(m.value())["event_id"] for m in messages if m.partition() == partition]
        assert ids == [i for i in written if i in ids]


def test_kafka_outage_delays_and_never_loses(
    pool: ConnectionPool, kafka: KafkaServer, topic: str
) -> None:
    rows = insert_rows(pool, 5, datetime(2026, 5, 2, tzinfo=UTC))
    dead = OutboxRelay(
        pool,
        SCHEMA,
        "acme",
        {"bootstrap.servers": f"127.0.0.1:{free_port()}"},
        topic,
        delivery_timeout_seconds=2.0,
    )
    assert dead.publish_pending() == 0
    assert unsent_ids(pool) == {r["id"] for r in rows}
    assert dead.lag() == 5

    alive = OutboxRelay(pool, SCHEMA, "acme", dict(kafka.admin_config), topic)
    assert alive.publish_pending() == 5
    assert unsent_ids(pool) == set()
    alive.close()
    messages = consume_all(kafka, topic, 5)
    assert sorted(json.loads(m.value())["event_id"] for m in messages) == sorted(
        str(r["id"]) for r in rows
    )


def test_unpublishable_row_is_kept_and_does_not_block_others(
    pool: ConnectionPool, kafka: KafkaServer, topic: str
) -> None:
    rows = insert_rows(pool, 3, datetime(2026, 5, 3, tzinfo=UTC))
    poison = uuid.uuid4()
    with pool.connection() as conn:
        conn.execute(
            f"INSERT INTO {SCHEMA}.outbox (id, event_type, memory_id, version, occurred_at) "
            "VALUES (%s, 'memory.updated', %s, 1, %s)",
            (poison, uuid.uuid4(), datetime(2026, 5, 1, tzinfo=UTC)),
        )  # no record: not a valid memory.updated event
    relay = OutboxRelay(pool, SCHEMA, "acme", dict(kafka.admin_config), topic)
    assert relay.publish_pending() == 3
    assert unsent_ids(pool) == {poison}
    relay.close()
    assert len(consume_all(kafka, topic, 3)) == len(rows)


def test_relay_publishes_as_the_tenant_principal_with_the_operator_acls(
    pool: ConnectionPool, kafka: KafkaServer, topic: str
) -> None:
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    from memory_operator.acl import kafka_acls

    user, password = f"mem-acme-{secrets.token_hex(3)}", secrets.token_hex(12)
    admin = AdminClient(kafka.sasl_config(kafka.admin_username, kafka.admin_password))
    upsert = UserScramCredentialUpsertion(
        user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), password.encode()
    )
    admin.alter_user_scram_credentials([upsert])[user].result(timeout=30)
    # Exactly the bindings the operator grants a tenant (SASL clusters).
    bindings = [
        AclBinding(
            ResourceType[a.resource_type],
            a.resource_name,
            ResourcePatternType[a.pattern_type],
            a.principal,
            a.host,
            AclOperation[a.operation],
            AclPermissionType[a.permission],
        )
        for a in kafka_acls(user, [topic], "mem.acme.")
    ]
    for future in admin.create_acls(bindings).values():
        future.result(timeout=30)

    rows = insert_rows(pool, 4, datetime(2026, 5, 4, tzinfo=UTC))
    relay = OutboxRelay(
        pool, SCHEMA, "acme", kafka.sasl_config(user, password), topic,
        delivery_timeout_seconds=5.0,
    )  # fmt: skip
    sent = 0
    for _ in range(10):  # ACLs propagate asynchronously; unsent rows are simply retried
        sent += relay.publish_pending()
        if sent == len(rows):
            break
    relay.close()
    assert sent == len(rows)
    assert unsent_ids(pool) == set()
