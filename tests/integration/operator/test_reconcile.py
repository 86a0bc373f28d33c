"""Reconciler against a real kube-apiserver, PostgreSQL and Redis, and Qdrant's
local engine: every step, zero writes when nothing changed, drift repair,
spec changes, TenantConflict, paused, backend outages, deletion policies."""

from __future__ import annotations

import base64
import copy
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import redis
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from memory_operator import conditions as c
from memory_operator import manifests as m
from memory_operator.adapters.kube import KubeApi
from memory_operator.adapters.postgres import PostgresAdmin
from memory_operator.adapters.qdrant import QdrantAdmin
from memory_operator.adapters.redis import RedisAdmin
from memory_operator.config import OperatorConfig
from memory_operator.reconcile import Backends, Reconciler, Result
from tests.e2e.harness import (
    CountingAdapter,
    CountingKube,
    WriteLog,
    delete,
    fetch,
    kube_api,
    make_deployment_available,
    memory_namespace,
    new_namespace,
    operator_config,
    patch_spec,
)
from tests.servers.kube import KubeCluster, install_crds
from tests.servers.qdrant_rest import InProcessQdrant, in_process_qdrant
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(kube: KubeCluster) -> Iterator[KubeApi]:
    install_crds(kube, "crds/")
    client = kube_api(kube)
    yield client
    client.close()


@dataclass
class Env:
    api: KubeApi
    ns: str
    config: OperatorConfig
    log: WriteLog
    reconciler: Reconciler
    qdrant: InProcessQdrant
    pg_dsn: str
    redis: redis.Redis
    adapters: dict[str, CountingAdapter]

    def create(self, name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
        return memory_namespace(self.api, self.ns, name, spec)

    def reconcile(self, name: str) -> Result:
        return self.reconciler.reconcile(fetch(self.api, self.ns, name))

    def finalize(self, name: str) -> Result:
        return self.reconciler.finalize(fetch(self.api, self.ns, name))

    def to_ready(self, name: str) -> Result:
        first = self.reconcile(name)
        assert first.error is None, first
        make_deployment_available(self.api, self.ns, f"{name}-memory")
        result = self.reconcile(name)
        assert result.ready, result
        return result

    def events(self, name: str) -> list[str]:
        out = self.api._request(
            "GET", f"/api/v1/namespaces/{self.ns}/events",
            params={"fieldSelector": f"involvedObject.name={name}"},
        )  # fmt: skip
        return [e["reason"] for e in (out or {}).get("items", [])]

    def secret(self, name: str) -> dict[str, str]:
        return self.secret_in(self.ns, name)

    def secret_in(self, ns: str, name: str) -> dict[str, str]:
        s = self.api.get("Secret", ns, name)
        assert s is not None, name
        return {k: base64.b64decode(v).decode() for k, v in s["data"].items()}


def _env(
    api: KubeApi, ns: str, pg_dsn: str, redis_server: RedisServer, pg_admin_dsn: str | None = None
) -> Iterator[Env]:
    log = WriteLog()
    config = operator_config(
        postgres_dsn=pg_admin_dsn or pg_dsn,
        redis_url=redis_server.url,
        qdrant_url="http://qdrant.test:6333",
    )
    qdrant = in_process_qdrant()
    adapters = {
        "postgres": CountingAdapter("postgres", PostgresAdmin(config.postgres.admin_dsn), log),
        "qdrant": CountingAdapter("qdrant", QdrantAdmin(qdrant.http), log),
        "redis": CountingAdapter("redis", RedisAdmin(redis_server.url), log),
    }
    backends = Backends(
        database=adapters["postgres"], vectors=adapters["qdrant"], cache=adapters["redis"]
    )
    reconciler = Reconciler(config, CountingKube(api, log), backends)
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield Env(api, ns, config, log, reconciler, qdrant, pg_dsn, r, adapters)
    r.close()
    qdrant.http.close()
    # Tenants are cluster-wide claims: leave none behind for the next test.
    delete(api, f"/apis/memory.somafractal.io/v1alpha1/namespaces/{ns}/memorynamespaces")
    drop_tenant_roles(pg_dsn)


def drop_tenant_roles(dsn: str) -> None:
    """Roles are server-wide and outlive the test database; each one records the
    CR that owns it, so the next test's CR of the same tenant would be refused."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        roles = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT pg_get_userbyid(nspowner) FROM pg_namespace n"
                " JOIN pg_roles r ON r.oid = n.nspowner"
                " WHERE NOT r.rolsuper AND r.rolname LIKE 'mem\\_%'"
            )
        ]
        for role in roles:
            conn.execute(f'DROP OWNED BY "{role}" CASCADE')
            conn.execute(f'DROP ROLE "{role}"')


@pytest.fixture
def env(
    api: KubeApi, kube_namespace: str, pg_database: str, redis_server: RedisServer
) -> Iterator[Env]:
    yield from _env(api, kube_namespace, pg_database, redis_server)


def _cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    cond = c.get_condition(obj.get("status", {}).get("conditions", []), type_)
    assert cond is not None, f"no {type_} condition in {obj.get('status')}"
    return cond


def _schema_exists(dsn: str, schema: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    return row is not None


def _role_exists(dsn: str, role: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return (
            conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            is not None
        )


def test_reconcile_creates_everything_and_becomes_ready(env: Env) -> None:
    env.create("acme")
    first = env.reconcile("acme")
    assert first.error is None
    assert first.waiting  # waiting for the Deployment
    obj = fetch(env.api, env.ns, "acme")
    for type_ in (c.SCHEMA_READY, c.COLLECTION_READY, c.TOPICS_READY, c.CACHE_READY):
        assert _cond(obj, type_)["status"] == "True", type_
    assert _cond(obj, c.API_READY)["reason"] == "DeploymentNotAvailable"
    assert _cond(obj, c.READY)["status"] == "False"
    status = obj["status"]
    assert status["schema"] == "mem_acme"
    assert status["collection"] == "mem_acme"
    assert status["endpoint"] == f"http://acme-memory.{env.ns}.svc:9595"
    assert status["tokenSecret"] == "acme-memory-token"
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert _cond(obj, c.TOPICS_READY)["reason"] == "KafkaNotConfigured"

    # PostgreSQL: the tenant role logs in with the persisted password and owns its schema.
    creds = env.secret("acme-memory-credentials")
    with psycopg.connect(creds["MEMORY_DATABASE_URL"]) as conn:
        conn.execute("CREATE TABLE mem_acme.probe (id int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE public.escape (id int)")
    # Redis: the ACL user is confined to its prefix.
    tenant = redis.Redis.from_url(creds["MEMORY_REDIS_URL"], decode_responses=True)
    tenant.set("mem:acme:k", "v")
    with pytest.raises(redis.exceptions.NoPermissionError):
        tenant.set("mem:other:k", "v")
    tenant.close()
    # Qdrant collection with the spec's geometry.
    info = env.qdrant.engine.get_collection("mem_acme")
    assert info.config.params.vectors.size == 384
    # Kubernetes objects owned by the CR.
    for kind in ("ConfigMap", "Deployment", "Service"):
        live = env.api.get(kind, env.ns, "acme-memory")
        assert live is not None
        assert live["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    assert env.secret("acme-memory-token")["token"]
    assert {"CredentialsCreated", "SchemaCreated", "CollectionCreated", "CacheUserCreated"} <= set(
        env.events("acme")
    )

    make_deployment_available(env.api, env.ns, "acme-memory")
    final = env.reconcile("acme")
    assert final.ready
    obj = fetch(env.api, env.ns, "acme")
    assert _cond(obj, c.READY)["status"] == "True"
    assert _cond(obj, c.API_READY)["reason"] == "DeploymentAvailable"


def test_unchanged_ready_object_makes_zero_writes(env: Env) -> None:
    env.create("acme")
    env.to_ready("acme")
    before = {
        kind: env.api.get(kind, env.ns, name)["metadata"]["resourceVersion"]  # type: ignore[index]
        for kind, name in [
            ("MemoryNamespace", "acme"),
            ("ConfigMap", "acme-memory"),
            ("Deployment", "acme-memory"),
            ("Service", "acme-memory"),
            ("Secret", "acme-memory-token"),
            ("Secret", "acme-memory-credentials"),
        ]
    }
    env.log.clear()
    for _ in range(2):
        result = env.reconcile("acme")
        assert result.ready
        assert result.writes == []
    assert env.log.calls == []  # no Kubernetes write and no backend wrote
    # Yet every backend was checked, each pass: exactly, or on the shared reads of a
    # Ready tenant (loaded again for each pass: each comes after the last one ended).
    pg, cache = env.adapters["postgres"].calls, env.adapters["redis"].calls
    assert pg["ensure_tenant"] + pg["tenant_unchanged"] >= 2
    assert cache["ensure_user"] + cache["user_unchanged"] >= 2
    after = {
        kind: env.api.get(kind, env.ns, name)["metadata"]["resourceVersion"]  # type: ignore[index]
        for kind, name in [
            ("MemoryNamespace", "acme"),
            ("ConfigMap", "acme-memory"),
            ("Deployment", "acme-memory"),
            ("Service", "acme-memory"),
            ("Secret", "acme-memory-token"),
            ("Secret", "acme-memory-credentials"),
        ]
    }
    assert after == before


def test_passwords_are_generated_once_and_reused(env: Env) -> None:
    env.create("acme")
    env.reconcile("acme")
    first = env.secret("acme-memory-credentials")
    token = env.secret("acme-memory-token")["token"]
    env.reconcile("acme")
    assert env.secret("acme-memory-credentials") == first
    assert env.secret("acme-memory-token")["token"] == token


def test_drift_is_repaired(env: Env) -> None:
    env.create("acme")
    env.to_ready("acme")
    with psycopg.connect(env.pg_dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA mem_acme CASCADE")
    env.qdrant.http.delete("/collections/mem_acme")
    env.redis.execute_command("ACL", "DELUSER", "mem-acme")
    delete(env.api, f"/apis/apps/v1/namespaces/{env.ns}/deployments/acme-memory")
    env.log.clear()
    result = env.reconcile("acme")
    assert result.error is None
    wrote = {what for _, what in env.log.calls}
    assert "ensure_tenant Created" in wrote or "ensure_tenant Updated" in wrote
    assert "ensure_collection Created" in wrote
    assert "ensure_user Created" in wrote or "ensure_user Updated" in wrote
    assert "apply Deployment/acme-memory" in wrote
    assert _schema_exists(env.pg_dsn, "mem_acme")
    assert env.qdrant.engine.collection_exists("mem_acme")
    assert env.api.get("Deployment", env.ns, "acme-memory") is not None


def test_deployment_pass_checks_kubernetes_only_once_backends_are_ready(env: Env) -> None:
    """A change of the tenant's Deployment (backends=False) reconciles the Kubernetes
    objects; the backends are checked by the other passes, so a dropped schema waits
    for them, and a Deployment deleted meanwhile is back at once."""
    env.create("acme")
    env.to_ready("acme")
    with psycopg.connect(env.pg_dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA mem_acme CASCADE")
    delete(env.api, f"/apis/apps/v1/namespaces/{env.ns}/deployments/acme-memory")
    calls_before = sum(sum(a.calls.values()) for a in env.adapters.values())
    env.log.clear()
    cr = fetch(env.api, env.ns, "acme")
    result = env.reconciler.reconcile(cr, backends=False)
    assert result.error is None
    assert sum(sum(a.calls.values()) for a in env.adapters.values()) == calls_before
    assert ("kubernetes", "apply Deployment/acme-memory") in env.log.calls
    assert not _schema_exists(env.pg_dsn, "mem_acme")
    result = env.reconcile("acme")  # the timer's pass (create/update/resume alike)
    wrote = {what for _, what in env.log.calls}
    assert "ensure_tenant Created" in wrote or "ensure_tenant Updated" in wrote
    assert _schema_exists(env.pg_dsn, "mem_acme")


def test_deployment_pass_runs_every_step_until_backends_are_ready(env: Env) -> None:
    env.create("acme")
    cr = fetch(env.api, env.ns, "acme")  # no condition yet: nothing to skip
    result = env.reconciler.reconcile(cr, backends=False)
    assert result.error is None
    assert env.adapters["postgres"].calls["ensure_tenant"] == 1
    assert _schema_exists(env.pg_dsn, "mem_acme")
    patch_spec(env.api, env.ns, "acme", {"api": {"replicas": 2}})  # a new generation
    env.reconciler.reconcile(fetch(env.api, env.ns, "acme"), backends=False)
    assert env.adapters["postgres"].calls["ensure_tenant"] == 2


def test_edited_owned_field_is_restored(env: Env) -> None:
    env.create("acme")
    env.reconcile("acme")
    env.api._request(
        "PATCH", f"/api/v1/namespaces/{env.ns}/configmaps/acme-memory",
        body={"data": {"MEMORY_TENANT": "hijacked"}},
        content_type="application/merge-patch+json",
    )  # fmt: skip
    env.log.clear()
    env.reconcile("acme")
    assert ("kubernetes", "apply ConfigMap/acme-memory") in env.log.calls
    cm = env.api.get("ConfigMap", env.ns, "acme-memory")
    assert cm is not None
    assert cm["data"]["MEMORY_TENANT"] == "acme"


def test_spec_changes_are_applied(env: Env) -> None:
    env.create("acme")
    env.to_ready("acme")
    hash_key = "memory.somafractal.io/config-hash"
    old_dep = env.api.get("Deployment", env.ns, "acme-memory")
    assert old_dep is not None
    old_hash = old_dep["spec"]["template"]["metadata"]["annotations"][hash_key]
    patch_spec(
        env.api,
        env.ns,
        "acme",
        {"vectors": {"hnsw": {"m": 32}}, "api": {"replicas": 2}, "decay": {"halfLifeHours": 24}},
    )
    env.log.clear()
    env.reconcile("acme")
    assert ("qdrant", "ensure_collection Updated") in env.log.calls
    hnsw = env.qdrant.http.get("/collections/mem_acme").json()["result"]["config"]["hnsw_config"]
    assert hnsw["m"] == 32
    assert ("kubernetes", "apply Deployment/acme-memory") in env.log.calls
    dep = env.api.get("Deployment", env.ns, "acme-memory")
    assert dep is not None
    assert dep["spec"]["replicas"] == 2
    cm = env.api.get("ConfigMap", env.ns, "acme-memory")
    assert cm is not None
    assert cm["data"]["MEMORY_DECAY_HALF_LIFE_HOURS"] == "24"
    obj = fetch(env.api, env.ns, "acme")
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 2
    # A changed ConfigMap rolls the pods.
    assert dep["spec"]["template"]["metadata"]["annotations"][hash_key] != old_hash


def test_tenant_conflict_newer_claim_touches_nothing(env: Env) -> None:
    env.create("acme")
    env.reconcile("acme")
    env.create("second", {"tenant": "acme", "deletionPolicy": "Delete"})
    env.log.clear()
    calls_before = {k: sum(a.calls.values()) for k, a in env.adapters.items()}
    result = env.reconcile("second")
    assert result.reason == "TenantConflict"
    obj = fetch(env.api, env.ns, "second")
    ready = _cond(obj, c.READY)
    assert (ready["status"], ready["reason"]) == ("False", "TenantConflict")
    assert f"{env.ns}/acme" in ready["message"]
    assert env.log.calls == [("kubernetes", "status second")]
    assert {k: sum(a.calls.values()) for k, a in env.adapters.items()} == calls_before
    assert env.api.get("ConfigMap", env.ns, "second-memory") is None
    # Deleting the loser with deletionPolicy Delete must not delete the winner's data.
    env.finalize("second")
    assert _schema_exists(env.pg_dsn, "mem_acme")
    # The older claim is unaffected.
    assert env.reconcile("acme").error is None


def test_paused_touches_no_backend(env: Env) -> None:
    env.create("acme", {"paused": True})
    result = env.reconcile("acme")
    assert result.reason == "Paused"
    assert all(sum(a.calls.values()) == 0 for a in env.adapters.values())
    assert env.api.get("Secret", env.ns, "acme-memory-credentials") is None
    obj = fetch(env.api, env.ns, "acme")
    assert _cond(obj, c.PAUSED)["status"] == "True"
    patch_spec(env.api, env.ns, "acme", {"paused": False})
    env.reconcile("acme")
    obj = fetch(env.api, env.ns, "acme")
    assert c.get_condition(obj["status"]["conditions"], c.PAUSED) is None
    assert _cond(obj, c.SCHEMA_READY)["status"] == "True"


def test_invalid_spec_is_permanent_and_touches_nothing(env: Env) -> None:
    # The CRD refuses this spec now (test_crd.py); a CR stored before that rule
    # existed still reaches the operator, which must refuse it too.
    env.create("acme")
    cr = fetch(env.api, env.ns, "acme")
    cr["spec"]["embedding"]["model"] = "bge-large"
    result = env.reconciler.reconcile(cr)
    assert result.error == "permanent"
    ready = _cond(fetch(env.api, env.ns, "acme"), c.READY)
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "not a bundled local model" in ready["message"]
    assert all(sum(a.calls.values()) == 0 for a in env.adapters.values())


def test_backend_down_is_temporary_with_its_message(
    api: KubeApi, kube_namespace: str, pg_database: str, redis_server: RedisServer
) -> None:
    from tests.servers._process import free_port

    dead = f"postgresql://x:y@127.0.0.1:{free_port()}/postgres"
    for env in _env(api, kube_namespace, pg_database, redis_server, pg_admin_dsn=dead):
        env.create("acme")
        result = env.reconcile("acme")
        assert result.error == "temporary"
        assert result.reason == "PostgresUnavailable"
        obj = fetch(env.api, env.ns, "acme")
        schema = _cond(obj, c.SCHEMA_READY)
        assert (schema["status"], schema["reason"]) == ("False", "PostgresUnavailable")
        assert schema["message"]
        assert _cond(obj, c.READY)["reason"] == "PostgresUnavailable"
        # Ordered: nothing after the failing step was touched.
        assert sum(env.adapters["qdrant"].calls.values()) == 0
        assert env.api.get("Deployment", env.ns, "acme-memory") is None
        # The same pass again changes nothing in status (lastTransitionTime stays).
        env.log.clear()
        env.reconcile("acme")
        assert env.log.calls == []


def test_pgvector_backend(env: Env) -> None:
    env.create("acme", {"vectors": {"backend": "postgres"}})
    env.reconcile("acme")
    obj = fetch(env.api, env.ns, "acme")
    assert _cond(obj, c.COLLECTION_READY)["reason"] == "PgvectorInSchema"
    assert obj["status"]["collection"] == ""
    assert sum(env.adapters["qdrant"].calls.values()) == 0
    creds = env.secret("acme-memory-credentials")
    with psycopg.connect(creds["MEMORY_DATABASE_URL"]) as conn:
        conn.execute("SET search_path = mem_acme, extensions")
        conn.execute("CREATE TABLE v (e vector(3))")
    cm = env.api.get("ConfigMap", env.ns, "acme-memory")
    assert cm is not None
    assert cm["data"]["MEMORY_VECTOR_BACKEND"] == "postgres"


def test_delete_with_retain_keeps_data(env: Env) -> None:
    env.create("acme")
    env.reconcile("acme")
    result = env.finalize("acme")
    assert result.error is None
    assert _schema_exists(env.pg_dsn, "mem_acme")
    assert _role_exists(env.pg_dsn, "mem_acme")
    assert env.qdrant.engine.collection_exists("mem_acme")
    assert env.redis.execute_command("ACL", "GETUSER", "mem-acme") is not None
    assert "DataRetained" in env.events("acme")


def test_delete_with_delete_removes_external_data(env: Env) -> None:
    env.create("acme", {"deletionPolicy": "Delete"})
    env.reconcile("acme")
    env.redis.set("mem:acme:x", "1")
    result = env.finalize("acme")
    assert result.error is None, result
    assert not _schema_exists(env.pg_dsn, "mem_acme")
    assert not _role_exists(env.pg_dsn, "mem_acme")
    assert not env.qdrant.engine.collection_exists("mem_acme")
    assert env.redis.execute_command("ACL", "GETUSER", "mem-acme") is None
    assert env.redis.get("mem:acme:x") is None
    assert {"SchemaDeleted", "CollectionDeleted", "CacheUserDeleted"} <= set(env.events("acme"))
    # Idempotent: a second finalize (e.g. after a crash) writes nothing.
    env.log.clear()
    assert env.finalize("acme").error is None
    assert [t for t, _ in env.log.calls if t != "kubernetes"] == []


def test_blocked_deletion_shows_what_blocks_it(
    env: Env, api: KubeApi, redis_server: RedisServer
) -> None:
    """A CR being deleted while PostgreSQL is down: Ready turns False and names
    the blocker instead of still saying "all resources are ready"."""
    from tests.servers._process import free_port

    env.create("acme", {"deletionPolicy": "Delete"})
    env.to_ready("acme")
    assert _cond(fetch(env.api, env.ns, "acme"), c.READY)["status"] == "True"
    path = f"/apis/memory.somafractal.io/v1alpha1/namespaces/{env.ns}/memorynamespaces/acme"
    finalizer = {"metadata": {"finalizers": ["memory.somafractal.io/finalizer"]}}
    api._request("PATCH", path, body=finalizer, content_type="application/merge-patch+json")
    api._request("DELETE", path)
    dead = f"postgresql://x:y@127.0.0.1:{free_port()}/postgres"
    config = operator_config(
        postgres_dsn=dead, redis_url=redis_server.url, qdrant_url="http://qdrant.test:6333"
    )
    broken = Reconciler(
        config,
        CountingKube(api, env.log),
        Backends(
            database=PostgresAdmin(config.postgres.admin_dsn),
            vectors=env.adapters["qdrant"],
            cache=env.adapters["redis"],
        ),
    )
    try:
        obj = fetch(env.api, env.ns, "acme")
        assert obj["metadata"].get("deletionTimestamp")
        result = broken.finalize(obj)
        assert result.error == "temporary"
        assert result.reason == "PostgresUnavailable"
        ready = _cond(fetch(env.api, env.ns, "acme"), c.READY)
        assert ready["status"] == "False"
        assert ready["reason"] == "DeletionBlocked"
        assert "PostgresUnavailable" in ready["message"]
        assert "all resources are ready" not in ready["message"]
        # the next (still failing) attempt rewrites no status (a Warning Event, as before)
        env.log.clear()
        broken.finalize(fetch(env.api, env.ns, "acme"))
        assert [w for _, w in env.log.calls if not w.startswith("event ")] == []
        # PostgreSQL is back: the working reconciler finishes the deletion
        assert env.finalize("acme").error is None
        assert not _schema_exists(env.pg_dsn, "mem_acme")
    finally:
        api._request(
            "PATCH",
            path,
            body={"metadata": {"finalizers": None}},
            content_type="application/merge-patch+json",
        )


def test_retained_data_does_not_change_hands_across_namespaces(env: Env, api: KubeApi) -> None:
    """ns1's CR (Retain) is deleted; a CR in ns2 claiming the same tenant must not
    reset the retained role's or Redis user's password, nor delete the data. A
    CR of ns1 adopts it again; an administrator can hand it to ns2 explicitly."""
    env.create("acme")
    assert env.reconcile("acme").error is None
    creds = env.secret("acme-memory-credentials")
    assert env.finalize("acme").error is None  # Retain
    delete(api, f"/apis/memory.somafractal.io/v1alpha1/namespaces/{env.ns}/memorynamespaces/acme")

    ns2 = new_namespace(api, "thief")
    try:
        memory_namespace(api, ns2, "thief", {"tenant": "acme", "deletionPolicy": "Delete"})
        thief = fetch(api, ns2, "thief")
        calls_before = sum(env.adapters["redis"].calls.values())
        result = env.reconciler.reconcile(thief)
        assert (result.error, result.reason) == ("permanent", "TenantOwnedElsewhere")
        assert f"{env.ns}/acme" in result.message
        schema = _cond(fetch(api, ns2, "thief"), c.SCHEMA_READY)
        assert (schema["status"], schema["reason"]) == ("False", "TenantOwnedElsewhere")
        # Nothing after PostgreSQL was touched; ns1's credentials still work.
        assert sum(env.adapters["redis"].calls.values()) == calls_before
        with psycopg.connect(creds["MEMORY_DATABASE_URL"]):
            pass
        assert redis.Redis.from_url(creds["MEMORY_REDIS_URL"]).ping()
        # Deleting the refused CR (deletionPolicy: Delete) deletes nothing of ns1's.
        final = env.reconciler.finalize(fetch(api, ns2, "thief"))
        assert (final.error, final.reason) == (None, "TenantOwnedElsewhere")
        assert _schema_exists(env.pg_dsn, "mem_acme")
        assert env.qdrant.engine.collection_exists("mem_acme")
        assert env.redis.execute_command("ACL", "GETUSER", "mem-acme") is not None

        # The same namespace adopts its retained data (a CR recreated under a new name),
        # although ns2's refused claim is older (creation times count whole seconds).
        time.sleep(1.1)
        env.create("acme-again", {"tenant": "acme"})
        assert env.reconcile("acme-again").error is None
        again = env.secret("acme-again-memory-credentials")
        with psycopg.connect(again["MEMORY_DATABASE_URL"]):
            pass

        # The administrator's explicit hand-over (operator configuration) to ns2.
        delete(
            api,
            f"/apis/memory.somafractal.io/v1alpha1/namespaces/{env.ns}/memorynamespaces/acme-again",
        )
        handed = Reconciler(
            dataclasses.replace(env.config, adoptions=frozenset({("acme", ns2)})),
            env.reconciler.kube,
            env.reconciler.backends,
        )
        assert handed.reconcile(fetch(api, ns2, "thief")).error is None
        with psycopg.connect(env.secret_in(ns2, "thief-memory-credentials")["MEMORY_DATABASE_URL"]):
            pass
    finally:
        delete(api, f"/apis/memory.somafractal.io/v1alpha1/namespaces/{ns2}/memorynamespaces")
        delete(api, f"/api/v1/namespaces/{ns2}")


def test_existing_unrecorded_data_is_not_taken(env: Env, api: KubeApi) -> None:
    """A role and schema made outside the operator (or before owner records) are
    neither re-passworded nor adopted by a new CR."""
    with psycopg.connect(env.pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE ROLE mem_acme LOGIN PASSWORD 'dba-set'")
        conn.execute("CREATE SCHEMA mem_acme AUTHORIZATION mem_acme")
    env.create("acme")
    result = env.reconcile("acme")
    assert (result.error, result.reason) == ("permanent", "TenantOwnedElsewhere")
    assert "without an owner record" in result.message
    params = conninfo_to_dict(env.pg_dsn)
    params.update(user="mem_acme", password="dba-set")
    with psycopg.connect(make_conninfo(**params)):  # the DBA's password still works
        pass
    with psycopg.connect(env.pg_dsn) as conn:
        assert conn.execute(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = 'mem_acme'"
        ).fetchone() == (None,)


class _RivalCreatesFirst(CountingKube):
    """A concurrent pass wins every Secret create: just before this pass's own
    create, the Secret appears through the real API server with other secrets in
    it, so this pass's create answers 409 (KubeApi.create -> None)."""

    RIVAL_KEYS = (*m.PASSWORD_KEYS, m.TOKEN_KEY)

    def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        if obj["kind"] == "Secret":
            rival = copy.deepcopy(obj)
            for key in set(self.RIVAL_KEYS) & set(rival.get("data") or {}):
                rival["data"][key] = base64.b64encode(f"rival-{key}".encode()).decode()
            assert self.api.create(rival) is not None
        return super().create(obj)


def test_secrets_a_concurrent_pass_created_first_are_used(env: Env) -> None:
    """Losing the create race for the credentials and token Secrets: the pass reads
    the winner's Secret again and uses its passwords and token (the tenant's role
    logs in with the winner's password), and posts no Created Event of its own."""
    env.create("acme", {"vectors": {"backend": "postgres"}})
    rival = _RivalCreatesFirst(env.api, WriteLog())
    result = Reconciler(env.config, rival, env.reconciler.backends).reconcile(
        fetch(env.api, env.ns, "acme")
    )
    assert result.error is None, result
    creds = env.secret("acme-memory-credentials")
    assert creds[m.PG_PASSWORD_KEY] == f"rival-{m.PG_PASSWORD_KEY}"
    assert creds[m.REDIS_PASSWORD_KEY] == f"rival-{m.REDIS_PASSWORD_KEY}"
    # The backends got the winner's passwords, not the ones this pass generated.
    rival_pg = make_conninfo(creds["MEMORY_DATABASE_URL"], password=f"rival-{m.PG_PASSWORD_KEY}")
    with psycopg.connect(rival_pg) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("mem_acme",)
    tenant = redis.Redis.from_url(
        creds["MEMORY_REDIS_URL"], password=f"rival-{m.REDIS_PASSWORD_KEY}"
    )
    assert tenant.set("mem:acme:k", "v")
    tenant.close()
    assert env.secret("acme-memory-token")[m.TOKEN_KEY] == f"rival-{m.TOKEN_KEY}"
    events = env.events("acme")
    assert "SchemaCreated" in events
    assert "CredentialsCreated" not in events
    assert "TokenCreated" not in events
