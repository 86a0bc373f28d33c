"""Reconciler + real Kafka (SASL/SCRAM listener, ACLs enforced): topics, the
tenant's SCRAM user and ACLs, partition growth, zero writes, Delete policy."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from memory_operator import conditions as c
from memory_operator.adapters.kafka import KafkaAdmin
from memory_operator.adapters.kube import KubeApi
from memory_operator.adapters.postgres import PostgresAdmin
from memory_operator.reconcile import Backends, Reconciler
from tests.e2e.harness import (
    CountingAdapter,
    CountingKube,
    WriteLog,
    delete,
    fetch,
    kube_api,
    memory_namespace,
    operator_config,
    patch_spec,
    wait_for,
)
from tests.servers.kafka import KafkaServer
from tests.servers.kube import KubeCluster, install_crds

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(
    kube: KubeCluster, kafka: KafkaServer, pg_database: str, kube_namespace: str
) -> Iterator[tuple[KubeApi, Reconciler, WriteLog, str]]:
    install_crds(kube, "crds/")
    api = kube_api(kube)
    prefix = f"k{uuid.uuid4().hex[:6]}"  # topics live in one shared broker
    config = operator_config(
        postgres_dsn=pg_database,
        kafka_bootstrap=kafka.sasl_bootstrap,
        kafka_sasl=(kafka.admin_username, kafka.admin_password),
        prefix=prefix,
    )
    log = WriteLog()
    backends = Backends(
        database=CountingAdapter("postgres", PostgresAdmin(pg_database), log),
        events=CountingAdapter("kafka", KafkaAdmin(config.kafka.admin_client_config()), log),  # type: ignore[union-attr]
    )
    yield api, Reconciler(config, CountingKube(api, log), backends), log, prefix
    delete(
        api, f"/apis/memory.somafractal.io/v1alpha1/namespaces/{kube_namespace}/memorynamespaces"
    )
    api.close()


def _partitions(kafka: KafkaServer, topic: str) -> int:
    md = AdminClient(kafka.admin_config).list_topics(timeout=10)
    return len(md.topics[topic].partitions) if topic in md.topics else 0


def _produce(kafka: KafkaServer, user: str, password: str, topic: str) -> None:
    producer = Producer({**kafka.sasl_config(user, password), "message.timeout.ms": 5000})
    errors: list[str] = []
    producer.produce(
        topic, b"x", on_delivery=lambda err, _: errors.append(str(err)) if err else None
    )
    producer.flush(10)
    if errors:
        raise KafkaException(errors[0])


def test_topics_scram_user_and_acls(
    setup: tuple[KubeApi, Reconciler, WriteLog, str], kafka: KafkaServer, kube_namespace: str
) -> None:
    api, reconciler, log, prefix = setup
    ns = kube_namespace
    memory_namespace(
        api, ns, "acme", {"vectors": {"backend": "postgres"}, "deletionPolicy": "Delete"}
    )
    result = reconciler.reconcile(fetch(api, ns, "acme"))
    assert result.error is None, result
    obj = fetch(api, ns, "acme")
    topics = c.get_condition(obj["status"]["conditions"], c.TOPICS_READY)
    assert topics is not None
    assert (topics["status"], topics["reason"]) == ("True", "TopicsReady")
    topic = f"{prefix}.acme.events"
    assert obj["status"]["topics"] == [topic]
    assert _partitions(kafka, topic) == 3

    secret = api.get("Secret", ns, "acme-memory-credentials")
    assert secret is not None
    creds = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert creds["MEMORY_KAFKA_USERNAME"] == f"{prefix}-acme"
    _produce(kafka, creds["MEMORY_KAFKA_USERNAME"], creds["MEMORY_KAFKA_PASSWORD"], topic)
    with pytest.raises(KafkaException):  # ACLs confine the tenant to its topic
        _produce(kafka, creds["MEMORY_KAFKA_USERNAME"], creds["MEMORY_KAFKA_PASSWORD"],
                 f"{prefix}.other.events")  # fmt: skip
    cm = api.get("ConfigMap", ns, "acme-memory")
    assert cm is not None
    assert cm["data"]["MEMORY_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert cm["data"]["MEMORY_KAFKA_TOPIC"] == topic

    # Unchanged: no backend writes; the only Kubernetes write is status while the
    # Deployment's progress message moves ("not observed yet" -> "0/1 available").
    log.clear()
    reconciler.reconcile(fetch(api, ns, "acme"))
    assert [t for t, _ in log.calls if t != "kubernetes"] == []
    assert all(what.startswith("status") for _, what in log.calls)

    # Partitions may grow.
    patch_spec(api, ns, "acme", {"events": {"partitions": 5}})
    reconciler.reconcile(fetch(api, ns, "acme"))
    assert ("kafka", "ensure_topics Updated") in log.calls
    # The broker applies partition growth and topic deletion asynchronously.
    wait_for(lambda: _partitions(kafka, topic) == 5, timeout=30, what="5 partitions")

    # Delete policy removes the topic.
    assert reconciler.finalize(fetch(api, ns, "acme")).error is None
    wait_for(lambda: _partitions(kafka, topic) == 0, timeout=30, what="topic deleted")


def test_kafka_down_is_temporary(kube: KubeCluster, pg_database: str, kube_namespace: str) -> None:
    from tests.servers._process import free_port

    install_crds(kube, "crds/")
    api = kube_api(kube)
    config = operator_config(
        postgres_dsn=pg_database, kafka_bootstrap=f"127.0.0.1:{free_port()}", prefix="kd"
    )
    backends = Backends(
        database=PostgresAdmin(pg_database),
        events=KafkaAdmin({**config.kafka.admin_client_config()}, timeout=3),  # type: ignore[union-attr]
    )
    memory_namespace(api, kube_namespace, "down", {"vectors": {"backend": "postgres"}})
    result = Reconciler(config, api, backends).reconcile(fetch(api, kube_namespace, "down"))
    assert (result.error, result.reason) == ("temporary", "KafkaUnavailable")
    cond = c.get_condition(
        fetch(api, kube_namespace, "down")["status"]["conditions"], c.TOPICS_READY
    )
    assert cond is not None
    assert (cond["status"], cond["reason"]) == ("False", "KafkaUnavailable")
    assert api.get("Deployment", kube_namespace, "down-memory") is None
    delete(
        api, f"/apis/memory.somafractal.io/v1alpha1/namespaces/{kube_namespace}/memorynamespaces"
    )
    api.close()
