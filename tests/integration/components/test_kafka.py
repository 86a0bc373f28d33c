"""Kafka smoke tests: topics, produce + consumer group read-back, SCRAM principals and ACLs."""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from tests.servers.kafka import KafkaServer

pytestmark = pytest.mark.integration


def _create_topic(admin: AdminClient, name: str, partitions: int = 1) -> None:
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions)])
    futures[name].result(timeout=30)


def _produce(conf: dict[str, Any], topic: str, messages: list[tuple[str, str]]) -> list[Any]:
    """Produce and flush; return the per-message delivery errors (None = delivered)."""
    errors: list[Any] = []
    producer = Producer({**conf, "enable.idempotence": True, "message.timeout.ms": 15000})
    for key, value in messages:
        producer.produce(topic, key=key, value=value, on_delivery=lambda e, _m: errors.append(e))
    producer.flush(30)
    return errors


def test_topic_produce_and_consumer_group_read_back(kafka: KafkaServer) -> None:
    topic = f"smoke.{secrets.token_hex(4)}"
    admin = AdminClient(kafka.admin_config)
    _create_topic(admin, topic, partitions=3)
    md = admin.list_topics(topic, timeout=10)
    assert len(md.topics[topic].partitions) == 3

    sent = [(f"k{i}", f"v{i}-{secrets.token_hex(2)}") for i in range(10)]
    assert _produce(kafka.admin_config, topic, sent) == [None] * len(sent)

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
    received: dict[str, str] = {}
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(received) < len(sent) and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            received[msg.key().decode()] = msg.value().decode()
        consumer.commit(asynchronous=False)
        committed = consumer.committed(
            [tp for tp in consumer.assignment()],
            timeout=10,
        )
    finally:
        consumer.close()
    assert received == dict(sent)
    # The group's offsets were stored by the broker's group coordinator.
    assert sum(tp.offset for tp in committed) == len(sent)


def test_scram_user_needs_acls(kafka: KafkaServer) -> None:
    topic = f"tenant.{secrets.token_hex(4)}"
    user, password = f"u-{secrets.token_hex(4)}", secrets.token_hex(12)
    # The admin SCRAM credential (made at format time) can administer the cluster over SASL.
    admin = AdminClient(kafka.sasl_config(kafka.admin_username, kafka.admin_password))
    _create_topic(admin, topic)
    upsert = UserScramCredentialUpsertion(
        user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), password.encode()
    )
    admin.alter_user_scram_credentials([upsert])[user].result(timeout=30)
    tenant = kafka.sasl_config(user, password)

    # Authenticated but no ACLs: the write is denied.
    errors = _produce(tenant, topic, [("k", "denied")])
    assert len(errors) == 1
    assert errors[0] is not None
    assert errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    acl = AclBinding(
        ResourceType.TOPIC,
        topic,
        ResourcePatternType.LITERAL,
        f"User:{user}",
        "*",
        AclOperation.WRITE,
        AclPermissionType.ALLOW,
    )
    admin.create_acls([acl])[acl].result(timeout=30)
    # ACL propagation through the metadata log is asynchronous; retry briefly.
    deadline = time.monotonic() + 30
    while True:
        errors = _produce(tenant, topic, [("k", "allowed")])
        if errors == [None] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert errors == [None]


def test_wrong_scram_password_is_refused(kafka: KafkaServer) -> None:
    # librdkafka reports authentication failures through error_cb, not as exceptions.
    seen: list[KafkaError] = []
    conf = kafka.sasl_config(kafka.admin_username, "wrong-password")
    producer = Producer({**conf, "error_cb": seen.append})
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline:
        producer.poll(0.5)
    producer.flush(0)
    assert seen, "no error reported for a wrong SCRAM password"
    assert seen[0].code() == KafkaError._AUTHENTICATION, seen[0]
