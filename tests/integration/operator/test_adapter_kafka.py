"""KafkaAdmin against a real Kafka 4.1 (KRaft; PLAINTEXT super user + SASL/SCRAM with ACLs)."""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicCollection
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from memory_operator.adapters.kafka import KafkaAdmin
from memory_operator.domain import Outcome, TopicsTarget
from memory_operator.ports import BackendRejected, BackendUnavailable
from tests.servers._process import free_port
from tests.servers.kafka import KafkaServer

pytestmark = pytest.mark.integration

WRITES = (
    "create_topics",
    "create_partitions",
    "incremental_alter_configs",
    "alter_configs",
    "alter_user_scram_credentials",
    "create_acls",
    "delete_acls",
    "delete_topics",
)


class RecordingAdmin(AdminClient):
    """A real AdminClient that also records which write calls were made."""

    def __init__(self, conf: dict[str, Any]) -> None:
        super().__init__(conf)
        self.writes: list[str] = []

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name in WRITES:
            super().__getattribute__("writes").append(name)
        return attr


def writes_of(adapter: KafkaAdmin) -> list[str]:
    recorder = adapter._admin
    assert isinstance(recorder, RecordingAdmin)
    out = list(recorder.writes)
    recorder.writes.clear()
    return out


def new_target(**kw: Any) -> TopicsTarget:
    tag = uuid.uuid4().hex[:8]
    base: dict[str, Any] = {
        "names": (f"mem.t{tag}.events",),
        "partitions": 3,
        "replication_factor": 1,
        "retention_ms": 7 * 24 * 3_600_000,
    }
    base.update(kw)
    return TopicsTarget(**base)


def with_principal(target: TopicsTarget) -> TopicsTarget:
    tag = target.names[0].split(".")[1]
    return dataclasses.replace(target, principal=f"mem-{tag}", password=f"pw-{uuid.uuid4().hex}")


@pytest.fixture
def admin(kafka: KafkaServer) -> KafkaAdmin:
    return KafkaAdmin(kafka.admin_config, client_class=RecordingAdmin)


@pytest.fixture
def raw(kafka: KafkaServer) -> AdminClient:
    return AdminClient(kafka.admin_config)


def describe(raw: AdminClient, topic: str) -> tuple[int, int, str]:
    desc = raw.describe_topics(TopicCollection([topic]))[topic].result()
    (config,) = raw.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
    return (
        len(desc.partitions),
        len(desc.partitions[0].replicas),
        config.result()["retention.ms"].value,
    )


def eventually_described(raw: AdminClient, topic: str, want: tuple) -> tuple:
    """Brokers apply controller metadata asynchronously: read until it shows `want`
    (or give up after a generous bound and return what is there)."""
    deadline = time.monotonic() + 30
    seen = describe(raw, topic)
    while seen != want and time.monotonic() < deadline:
        time.sleep(0.2)
        seen = describe(raw, topic)
    return seen


def test_create_then_second_ensure_makes_no_call_that_writes(
    admin: KafkaAdmin, raw: AdminClient
) -> None:
    target = new_target()
    assert admin.ensure_topics(target) is Outcome.CREATED
    assert writes_of(admin) == ["create_topics"]
    want = (3, 1, str(target.retention_ms))
    assert eventually_described(raw, target.names[0], want) == want

    assert admin.ensure_topics(target) is Outcome.UNCHANGED
    assert writes_of(admin) == []


def test_partitions_grow_and_never_shrink(admin: KafkaAdmin, raw: AdminClient) -> None:
    target = new_target()
    admin.ensure_topics(target)
    grown = dataclasses.replace(target, partitions=5)
    writes_of(admin)
    assert admin.ensure_topics(grown) is Outcome.UPDATED
    assert writes_of(admin) == ["create_partitions"]
    want = (5, 1, str(target.retention_ms))
    assert eventually_described(raw, target.names[0], want) == want

    with pytest.raises(BackendRejected, match="can't shrink"):
        admin.ensure_topics(dataclasses.replace(target, partitions=2))
    with pytest.raises(BackendRejected, match="replication factor"):
        admin.ensure_topics(dataclasses.replace(grown, replication_factor=2))
    assert writes_of(admin) == []
    assert describe(raw, target.names[0])[:2] == (5, 1)


def test_retention_drift_is_corrected(admin: KafkaAdmin, raw: AdminClient) -> None:
    target = new_target()
    admin.ensure_topics(target)
    resource = ConfigResource(
        ResourceType.TOPIC,
        target.names[0],
        incremental_configs=[
            ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    for future in raw.incremental_alter_configs([resource]).values():
        future.result()
    drifted = (3, 1, "60000")
    assert eventually_described(raw, target.names[0], drifted) == drifted
    writes_of(admin)

    assert admin.ensure_topics(target) is Outcome.UPDATED
    assert writes_of(admin) == ["incremental_alter_configs"]
    want = (3, 1, str(target.retention_ms))
    assert eventually_described(raw, target.names[0], want) == want
    # A spec change of retention goes the same way.
    shorter = dataclasses.replace(target, retention_ms=3_600_000)
    assert admin.ensure_topics(shorter) is Outcome.UPDATED
    assert eventually_described(raw, target.names[0], (3, 1, "3600000")) == (3, 1, "3600000")


def test_deleted_topic_comes_back(admin: KafkaAdmin, raw: AdminClient) -> None:
    target = new_target(partitions=2)
    admin.ensure_topics(target)
    raw.delete_topics(list(target.names))[target.names[0]].result()
    # Deletion completes asynchronously in the controller; reconcile until it is back.
    deadline = time.monotonic() + 60
    outcome = None
    while time.monotonic() < deadline:
        try:
            outcome = admin.ensure_topics(target)
        except BackendUnavailable:
            time.sleep(0.5)
            continue
        if outcome is Outcome.CREATED:
            break
        time.sleep(0.5)
    assert outcome is Outcome.CREATED
    want = (2, 1, str(target.retention_ms))
    assert eventually_described(raw, target.names[0], want) == want


def tenant_producer(kafka: KafkaServer, target: TopicsTarget) -> tuple[Producer, list]:
    assert target.principal
    assert target.password
    reports: list = []
    producer = Producer(
        {
            **kafka.sasl_config(target.principal, target.password),
            "enable.idempotence": True,
            "message.timeout.ms": 15000,
        }
    )
    return producer, reports


def produce(producer: Producer, topic: str, value: bytes) -> KafkaError | None:
    results: list[KafkaError | None] = []
    producer.produce(topic, value, key=b"k", on_delivery=lambda err, msg: results.append(err))
    producer.flush(30)
    assert len(results) == 1, "delivery report not received"
    return results[0]


def test_tenant_principal_produces_consumes_and_is_confined(
    kafka: KafkaServer, admin: KafkaAdmin
) -> None:
    mine = with_principal(new_target(partitions=1))
    other = with_principal(new_target(partitions=1))
    assert admin.ensure_topics(mine) is Outcome.CREATED
    assert admin.ensure_topics(other) is Outcome.CREATED
    writes_of(admin)
    assert admin.ensure_topics(mine) is Outcome.UNCHANGED
    assert writes_of(admin) == []

    producer, _ = tenant_producer(kafka, mine)
    assert produce(producer, mine.names[0], b"hello") is None
    denied = produce(producer, other.names[0], b"sneaky")
    assert denied is not None
    assert denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    consumer = Consumer(
        {
            **kafka.sasl_config(mine.principal or "", mine.password or ""),
            "group.id": f"{mine.principal}.reader",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
    )
    try:
        consumer.subscribe([mine.names[0]])
        received = None
        deadline = time.monotonic() + 60
        while received is None and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                received = msg.value()
            elif msg is not None and msg.error().fatal():
                pytest.fail(str(msg.error()))
        assert received == b"hello"
    finally:
        consumer.close()

    # Another tenant's consumer group is not its to use.
    intruder = Consumer(
        {
            **kafka.sasl_config(mine.principal or "", mine.password or ""),
            "group.id": f"{other.principal}.reader",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    try:
        intruder.subscribe([mine.names[0]])
        error = None
        deadline = time.monotonic() + 60
        while error is None and time.monotonic() < deadline:
            msg = intruder.poll(1.0)
            if msg is not None and msg.error() is not None:
                error = msg.error()
        assert error is not None
        assert error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    finally:
        intruder.close()


def test_unrequested_acls_of_the_principal_are_removed(
    kafka: KafkaServer, admin: KafkaAdmin, raw: AdminClient
) -> None:
    mine = with_principal(new_target(partitions=1))
    other = new_target(partitions=1)
    admin.ensure_topics(mine)
    admin.ensure_topics(other)
    stray = AclBinding(
        ResourceType.TOPIC,
        other.names[0],
        ResourcePatternType.LITERAL,
        f"User:{mine.principal}",
        "*",
        AclOperation.READ,
        AclPermissionType.ALLOW,
    )
    raw.create_acls([stray])[stray].result()
    writes_of(admin)
    assert admin.ensure_topics(mine) is Outcome.UPDATED
    assert writes_of(admin) == ["delete_acls"]
    assert admin.ensure_topics(mine) is Outcome.UNCHANGED


def test_password_rotation_with_a_sasl_admin(kafka: KafkaServer) -> None:
    """A SCRAM admin client lets the adapter check the tenant's password by logging in."""
    admin = KafkaAdmin(
        kafka.sasl_config(kafka.admin_username, kafka.admin_password), client_class=RecordingAdmin
    )
    old = with_principal(new_target(partitions=1))
    assert admin.ensure_topics(old) is Outcome.CREATED
    writes_of(admin)
    assert admin.ensure_topics(old) is Outcome.UNCHANGED  # the login check passed
    assert writes_of(admin) == []

    new = dataclasses.replace(old, password=f"rotated-{uuid.uuid4().hex}")
    assert admin.ensure_topics(new) is Outcome.UPDATED
    assert writes_of(admin) == ["alter_user_scram_credentials"]
    producer, _ = tenant_producer(kafka, new)
    assert produce(producer, new.names[0], b"after rotation") is None


def test_credential_changed_behind_the_operator_is_repaired(kafka: KafkaServer) -> None:
    """A password the adapter set is not re-checked by logging in on every pass
    (login_check_seconds); once that interval is over, a credential changed by
    someone else is found by the login check and set back."""
    admin = KafkaAdmin(
        kafka.sasl_config(kafka.admin_username, kafka.admin_password),
        client_class=RecordingAdmin,
        login_check_seconds=0.5,
    )
    target = with_principal(new_target(partitions=1))
    assert admin.ensure_topics(target) is Outcome.CREATED
    other = UserScramCredentialUpsertion(
        target.principal, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), b"changed"
    )
    raw = AdminClient(kafka.admin_config)  # kept alive until its futures resolve
    for future in raw.alter_user_scram_credentials([other]).values():
        future.result()
    writes_of(admin)
    assert admin.ensure_topics(target) is Outcome.UNCHANGED  # inside the interval: no login
    time.sleep(0.6)
    assert admin.ensure_topics(target) is Outcome.UPDATED
    assert writes_of(admin) == ["alter_user_scram_credentials"]
    producer, _ = tenant_producer(kafka, target)
    assert produce(producer, target.names[0], b"after repair") is None


def test_a_restarted_operator_spreads_its_login_checks(kafka: KafkaServer) -> None:
    """A new process (a restart, a failover) does not log in as every tenant at once:
    a credential it has not seen yet is first checked at a random point of
    login_check_seconds; a target whose password was just generated is checked now."""
    config = kafka.sasl_config(kafka.admin_username, kafka.admin_password)
    target = with_principal(new_target(partitions=1))
    assert KafkaAdmin(config).ensure_topics(target) is Outcome.CREATED
    other = UserScramCredentialUpsertion(
        target.principal, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), b"changed"
    )
    raw = AdminClient(kafka.admin_config)
    for future in raw.alter_user_scram_credentials([other]).values():
        future.result()

    restarted = KafkaAdmin(config, client_class=RecordingAdmin, login_check_seconds=0.5)
    assert restarted.ensure_topics(target) is Outcome.UNCHANGED  # no login yet
    time.sleep(0.6)  # the check came due (at most the interval after first sight)
    assert restarted.ensure_topics(target) is Outcome.UPDATED
    assert writes_of(restarted) == ["alter_user_scram_credentials"]

    for future in raw.alter_user_scram_credentials([other]).values():
        future.result()
    fresh = KafkaAdmin(config, client_class=RecordingAdmin)  # default 1 h interval
    verify = dataclasses.replace(target, verify_password=True)
    assert fresh.ensure_topics(verify) is Outcome.UPDATED
    assert writes_of(fresh) == ["alter_user_scram_credentials"]
    producer, _ = tenant_producer(kafka, target)
    assert produce(producer, target.names[0], b"after repair") is None


def test_plaintext_admin_creates_the_credential_only_when_absent(
    kafka: KafkaServer, admin: KafkaAdmin
) -> None:
    """Documented choice: without a SCRAM admin connection the stored password can't be
    checked, so an existing credential is left as it is."""
    target = with_principal(new_target(partitions=1))
    admin.ensure_topics(target)
    writes_of(admin)
    changed = dataclasses.replace(target, password="not-applied")
    assert admin.ensure_topics(changed) is Outcome.UNCHANGED
    assert writes_of(admin) == []
    producer, _ = tenant_producer(kafka, target)
    assert produce(producer, target.names[0], b"old password still valid") is None


def test_delete_topics_removes_topics_acls_and_user(
    kafka: KafkaServer, admin: KafkaAdmin, raw: AdminClient
) -> None:
    target = with_principal(new_target(partitions=1))
    keep = new_target(partitions=1)
    admin.ensure_topics(target)
    admin.ensure_topics(keep)
    assert admin.delete_topics(target) is Outcome.DELETED
    principal = target.principal or ""
    scram = raw.describe_user_scram_credentials([principal])[principal]
    with pytest.raises(Exception, match=r"RESOURCE_NOT_FOUND|not found|No such user"):
        scram.result()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and target.names[0] in raw.list_topics(timeout=10).topics:
        time.sleep(0.5)
    topics = raw.list_topics(timeout=10).topics
    assert target.names[0] not in topics
    assert keep.names[0] in topics
    writes_of(admin)
    assert admin.delete_topics(target) is Outcome.UNCHANGED
    assert writes_of(admin) == []


def test_unreachable_broker_is_temporary() -> None:
    admin = KafkaAdmin({"bootstrap.servers": f"127.0.0.1:{free_port()}"}, timeout=2)
    with pytest.raises(BackendUnavailable):
        admin.ensure_topics(new_target())


@pytest.mark.parametrize(
    "change",
    [
        {"partitions": 0},
        {"names": ()},
        {"names": ("bad topic",)},
        {"retention_ms": -5},
        {"principal": "x", "password": None},
    ],
)
def test_bad_input_is_rejected_before_any_call(admin: KafkaAdmin, change: dict) -> None:
    with pytest.raises(BackendRejected):
        admin.ensure_topics(dataclasses.replace(new_target(), **change))
    assert writes_of(admin) == []
