"""A resync of Ready tenants on shared bulk reads (reconcile.py, snapshot.py), with
real kube-apiserver, PostgreSQL, Kafka (SASL/SCRAM, ACLs) and Redis: the round
trips of a pass over N tenants don't grow with N, and drift made between two
passes (a deleted topic, schema, Redis user, Kafka ACL, Secret; a changed
password) is still found and repaired by the next pass."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import redis
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from memory_operator import metrics
from memory_operator.adapters.kafka import KafkaAdmin
from memory_operator.adapters.kube import KubeApi
from memory_operator.adapters.postgres import PostgresAdmin
from memory_operator.adapters.redis import RedisAdmin
from memory_operator.reconcile import Backends, Reconciler, Result
from memory_operator.shared_kube import SHARED_KINDS
from tests.e2e.harness import (
    CountingKube,
    WriteLog,
    delete,
    fetch,
    kube_api,
    make_deployment_available,
    memory_namespace,
    operator_config,
)
from tests.integration.operator.test_reconcile import drop_tenant_roles
from tests.servers.kafka import KafkaServer
from tests.servers.kube import KubeCluster, install_crds
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.integration

WINDOW = 120.0  # longer than any pass here: every pass's reads are shared


class Ops:
    """Backend operations the adapters recorded (metrics.operation_counts) since
    this was made: which ran, how often."""

    def __init__(self) -> None:
        self._start = metrics.operation_counts()

    @property
    def ops(self) -> dict[tuple[str, str], float]:
        now = metrics.operation_counts()
        return {key: n - self._start.get(key, 0) for key, n in now.items()}


@dataclass
class Fleet:
    api: KubeApi
    ns: str
    prefix: str
    config: Any
    kafka: KafkaServer
    pg_dsn: str
    redis_url: str

    def reconciler(self) -> tuple[Reconciler, CountingKube, Ops]:
        """A fresh operator process's reconciler (nothing remembered)."""
        ops = Ops()
        kafka_admin = KafkaAdmin(self.config.kafka.admin_client_config(), read_window=WINDOW)
        backends = Backends(
            database=PostgresAdmin(self.pg_dsn, read_window=WINDOW),
            events=kafka_admin,
            cache=RedisAdmin(self.redis_url, read_window=WINDOW),
        )
        kube = CountingKube(self.api, WriteLog())
        return Reconciler(self.config, kube, backends, read_window=WINDOW), kube, ops

    def names(self, n: int) -> list[str]:
        return [f"t{i}" for i in range(n)]

    def resync(self, reconciler: Reconciler, n: int) -> dict[str, Result]:
        return {
            name: reconciler.reconcile(fetch(self.api, self.ns, name)) for name in self.names(n)
        }


@pytest.fixture
def fleet(
    kube: KubeCluster,
    kafka: KafkaServer,
    pg_database: str,
    redis_server: RedisServer,
    kube_namespace: str,
) -> Iterator[Fleet]:
    install_crds(kube, "crds/")
    api = kube_api(kube)
    prefix = f"s{uuid.uuid4().hex[:6]}"  # topics, SCRAM users and Redis users are server-wide
    config = operator_config(
        postgres_dsn=pg_database,
        redis_url=redis_server.url,
        kafka_bootstrap=kafka.sasl_bootstrap,
        kafka_sasl=(kafka.admin_username, kafka.admin_password),
        prefix=prefix,
    )
    yield Fleet(api, kube_namespace, prefix, config, kafka, pg_database, redis_server.url)
    delete(
        api, f"/apis/memory.somafractal.io/v1alpha1/namespaces/{kube_namespace}/memorynamespaces"
    )
    drop_tenant_roles(pg_database)
    api.close()


def _make_ready(fleet: Fleet, n: int) -> None:
    reconciler, _, _ = fleet.reconciler()
    for name in fleet.names(n):
        memory_namespace(fleet.api, fleet.ns, name, {"vectors": {"backend": "postgres"}})
        assert reconciler.reconcile(fetch(fleet.api, fleet.ns, name)).error is None
    for name in fleet.names(n):
        make_deployment_available(fleet.api, fleet.ns, f"{name}-memory")
        result = reconciler.reconcile(fetch(fleet.api, fleet.ns, name))
        assert result.ready, result


def _round_trips(kube: CountingKube, ops: Ops) -> dict[str, int]:
    """Requests a pass sent: Kubernetes GETs and lists, per-tenant backend observes
    and the shared bulk reads."""
    return {
        "kube_get": kube.gets,
        "kube_list": kube.object_lists,
        "tenant_observe": int(sum(n for (_, op), n in ops.ops.items() if op == "observe")),
        "bulk_read": int(sum(n for (_, op), n in ops.ops.items() if op in ("catalog", "read_all"))),
    }


def test_resync_round_trips_do_not_grow_with_the_fleet(fleet: Fleet) -> None:
    _make_ready(fleet, 6)
    trips = {}
    for n in (2, 6):
        reconciler, kube, ops = fleet.reconciler()  # as after a restart
        results = fleet.resync(reconciler, n)
        assert all(r.ready and r.writes == [] for r in results.values()), results
        trips[n] = _round_trips(kube, ops)
    # Every object and backend state came from one read per kind / backend:
    # 5 labelled lists, 1 catalog read, 2 Kafka reads (topics; ACLs + SCRAM users),
    # 1 Redis read; no GET and no per-tenant observe.
    assert trips[2] == trips[6]
    assert trips[6] == {
        "kube_get": 0,
        "kube_list": len(SHARED_KINDS),
        "tenant_observe": 0,
        "bulk_read": 4,
    }


def _delete_acl(fleet: Fleet, principal: str) -> None:
    admin = AdminClient(fleet.kafka.admin_config)
    found = admin.describe_acls(
        AclBindingFilter(ResourceType.TOPIC, None, ResourcePatternType.ANY,
                         f"User:{principal}", None, AclOperation.ANY, AclPermissionType.ANY),
        request_timeout=10,
    ).result()  # fmt: skip
    assert found
    one = found[0]
    futures = admin.delete_acls(
        [AclBindingFilter(one.restype, one.name, one.resource_pattern_type, one.principal,
                          one.host, one.operation, one.permission_type)],
        request_timeout=10,
    )  # fmt: skip
    for future in futures.values():
        assert future.result()


def test_drift_between_passes_is_repaired_by_the_next(fleet: Fleet) -> None:
    _make_ready(fleet, 6)
    reconciler, kube, ops = fleet.reconciler()
    first = fleet.resync(reconciler, 6)
    assert all(r.ready and r.writes == [] for r in first.values())
    p = fleet.prefix
    # Drift made by someone else, after the first pass and its shared reads.
    admin = AdminClient(fleet.kafka.admin_config)
    admin.delete_topics([f"{p}.t0.events"])[f"{p}.t0.events"].result()
    with psycopg.connect(fleet.pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {p}_t1 CASCADE")
        # A password the first pass found matching, changed by a DBA.
        conn.execute(f"ALTER ROLE {p}_t0 PASSWORD 'changed-behind-our-back'")
    r = redis.Redis.from_url(fleet.redis_url)
    r.execute_command("ACL", "DELUSER", f"{p}-t2")
    r.close()
    _delete_acl(fleet, f"{p}-t3")
    delete(fleet.api, f"/api/v1/namespaces/{fleet.ns}/configmaps/t4-memory")
    delete(fleet.api, f"/api/v1/namespaces/{fleet.ns}/secrets/t5-memory-token")

    second = fleet.resync(reconciler, 6)
    assert "Topics:Created" in second["t0"].writes or "Topics:Updated" in second["t0"].writes
    assert "Schema:Updated" in second["t0"].writes
    assert "Schema:Updated" in second["t1"].writes
    assert any(w.startswith("CacheUser:") for w in second["t2"].writes)
    assert "Topics:Updated" in second["t3"].writes
    assert "ConfigMap/t4-memory" in second["t4"].writes
    assert "Secret/t5-memory-token" in second["t5"].writes
    for result in second.values():
        assert result.error is None, result

    # Repaired: the next pass (after the Deployments of t5's new token rolled out)
    # is writes-free again, on shared reads.
    make_deployment_available(fleet.api, fleet.ns, "t5-memory")
    reconciler.reconcile(fetch(fleet.api, fleet.ns, "t5"))
    before = _round_trips(kube, ops)
    third = fleet.resync(reconciler, 6)
    assert all(r.ready and r.writes == [] for r in third.values()), third
    after = _round_trips(kube, ops)
    assert after["kube_get"] == before["kube_get"]
    assert after["tenant_observe"] == before["tenant_observe"]
