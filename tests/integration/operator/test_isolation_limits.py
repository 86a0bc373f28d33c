"""Issue 14, items 5 and 6: one tenant can't starve or stall the others on the
shared PostgreSQL and Redis. Two tenants in two namespaces reconciled by the real
reconciler; the attacker uses only its own rendered credentials.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import redis

from memory_contract.redis_functions import TOKEN_BUCKET
from memory_operator.adapters.kube import KubeApi
from memory_operator.adapters.postgres import PostgresAdmin
from memory_operator.adapters.redis import RedisAdmin
from memory_operator.manifests import connection_limit
from memory_operator.reconcile import Backends, Reconciler
from memory_runtime.limits import RedisRateLimiter
from memory_runtime.settings import Settings
from tests.e2e.harness import delete, fetch, kube_api, memory_namespace, operator_config, patch_spec
from tests.servers.kube import KubeCluster, install_crds
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.integration

MEMNS = "/apis/memory.somafractal.io/v1alpha1/namespaces/{}/memorynamespaces"
POOL = 2


@pytest.fixture(scope="module")
def api(kube: KubeCluster) -> Iterator[KubeApi]:
    install_crds(kube, "crds/")
    client = kube_api(kube)
    yield client
    client.close()


Env = dict[str, str]


@pytest.fixture
def tenants(
    api: KubeApi,
    kube: KubeCluster,
    kube_namespace: str,
    pg_database: str,
    redis_server: RedisServer,
) -> Iterator[tuple[Reconciler, Callable[[str, str], Env], tuple[str, str], tuple[str, str]]]:
    """Tenants a (in one namespace) and b (in another), reconciled; `env(ns, name)` is
    the runtime environment the operator rendered for a CR (ConfigMap + Secrets)."""
    other = f"t-{uuid.uuid4().hex[:12]}"
    kube.kubectl_run("create", "namespace", other)
    config = operator_config(
        postgres_dsn=pg_database,
        redis_url=redis_server.url,
        extra={"SOMAFRACTAL_RUNTIME_DB_POOL_SIZE": str(POOL)},
    )
    admin = RedisAdmin(redis_server.url)
    reconciler = Reconciler(
        config, api, Backends(database=PostgresAdmin(config.postgres.admin_dsn), cache=admin)
    )
    a = (kube_namespace, f"a{uuid.uuid4().hex[:8]}")
    b = (other, f"b{uuid.uuid4().hex[:8]}")
    for ns, name in (a, b):
        memory_namespace(api, ns, name, {"vectors": {"backend": "postgres"}})
        assert reconciler.reconcile(fetch(api, ns, name)).error is None

    def env(ns: str, name: str) -> Env:
        out = dict(api.get("ConfigMap", ns, f"{name}-memory")["data"])
        secret = api.get("Secret", ns, f"{name}-memory-credentials")
        out.update({k: base64.b64decode(v).decode() for k, v in secret["data"].items()})
        return out

    try:
        yield reconciler, env, a, b
    finally:
        admin.close()
        for ns in (kube_namespace, other):
            delete(api, MEMNS.format(ns))
        kube.kubectl_run("delete", "namespace", other, "--wait=false", check=False)


# -- item 5: connections -------------------------------------------------------------------


def test_a_tenant_cannot_take_every_connection(tenants: Any) -> None:
    _, env, a, b = tenants
    a_env, b_env = env(*a), env(*b)
    limit = connection_limit(1, POOL)
    held: list[psycopg.Connection[Any]] = []
    try:
        held.extend(psycopg.connect(a_env["MEMORY_DATABASE_URL"]) for _ in range(limit))
        with pytest.raises(psycopg.OperationalError, match="too many connections for role"):
            psycopg.connect(a_env["MEMORY_DATABASE_URL"])
        # The other tenant is not starved.
        with psycopg.connect(b_env["MEMORY_DATABASE_URL"]) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        for conn in held:
            conn.close()

    # The runtime's pool is what was rendered, and the limit leaves room for a rollout.
    assert a_env["MEMORY_DATABASE_POOL_SIZE"] == str(POOL)
    rendered = {k[7:].lower(): v for k, v in a_env.items() if k.startswith("MEMORY_")}
    assert Settings(**rendered).database_pool_size == POOL
    assert limit >= 2 * (POOL + 1)


def test_connection_limit_follows_replicas(tenants: Any, api: KubeApi) -> None:
    reconciler, env, a, _ = tenants
    ns, name = a
    role = env(ns, name)["MEMORY_DATABASE_URL"].split("//")[1].split(":")[0]
    dsn = reconciler.config.postgres.admin_dsn

    def rolconnlimit() -> int:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = %s", (role,))
            return int(row.fetchone()[0])

    assert rolconnlimit() == connection_limit(1, POOL)
    patch_spec(api, ns, name, {"api": {"replicas": 4}})
    assert reconciler.reconcile(fetch(api, ns, name)).error is None
    assert rolconnlimit() == connection_limit(4, POOL) == 5 * (POOL + 1)
    # In sync: the next pass changes nothing.
    assert "Schema:Updated" not in reconciler.reconcile(fetch(api, ns, name)).writes
    patch_spec(api, ns, name, {"api": {"replicas": 0}})
    assert reconciler.reconcile(fetch(api, ns, name)).error is None
    assert rolconnlimit() == connection_limit(0, POOL) == POOL + 1


# -- item 6: Redis commands ---------------------------------------------------------------

SPIN = "while true do end"
DENIED: list[tuple[str, ...]] = [
    ("EVAL", SPIN, "0"),
    ("EVAL", "return redis.call('GET', KEYS[1])", "1", "x"),
    ("EVALSHA", "0" * 40, "0"),
    ("SCRIPT", "LOAD", "return 1"),
    ("SCRIPT", "KILL"),
    ("SCRIPT", "FLUSH"),
    ("FUNCTION", "LOAD", f"#!lua name=x\nredis.register_function('x', function() {SPIN} end)"),
    ("FUNCTION", "FLUSH"),
    ("FUNCTION", "DELETE", "somafractal"),
    ("FUNCTION", "KILL"),
    ("DBSIZE",),
    ("MEMORY", "STATS"),
    ("INFO",),
    ("KEYS", "*"),
    ("SCAN", "0"),
    ("RANDOMKEY",),
    ("CLIENT", "LIST"),
    ("MONITOR",),
    ("FLUSHALL",),
    ("CONFIG", "GET", "*"),
]


@pytest.mark.parametrize("command", DENIED, ids=lambda c: " ".join(c[:2])[:20])
def test_tenant_redis_user_cannot_script_or_inspect_the_server(
    tenants: Any, command: tuple[str, ...]
) -> None:
    _, env, a, _ = tenants
    attacker = redis.Redis.from_url(env(*a)["MEMORY_REDIS_URL"], socket_timeout=5)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            attacker.execute_command(*command)
    finally:
        attacker.close()


def test_runtime_redis_features_work_with_only_the_granted_commands(tenants: Any) -> None:
    """What the runtime needs (rate limiter, readiness) works with the tenant's
    credentials; the function reaches only the caller's own keys."""
    _, env, a, b = tenants
    a_env, b_env = env(*a), env(*b)
    client = redis.Redis.from_url(a_env["MEMORY_REDIS_URL"], socket_timeout=5)
    try:
        assert client.ping()
        limiter = RedisRateLimiter(client, a_env["MEMORY_REDIS_PREFIX"], per_minute=60, burst=2)
        assert [limiter.acquire("tok").allowed for _ in range(3)] == [True, True, False]
        # FCALL is checked against the key patterns like any other command.
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.fcall(TOKEN_BUCKET, 1, f"{b_env['MEMORY_REDIS_PREFIX']}:ratelimit:x", 1, "1")
    finally:
        client.close()
