"""Cluster-mode backends behind the API: Redis ACL user (rate limits, job locks), Qdrant."""

from __future__ import annotations

import secrets
import uuid

import pytest
import redis
from fastapi.testclient import TestClient
from qdrant_client import QdrantClient

from memory_operator.acl import redis_setuser_args
from memory_operator.domain import CacheUserTarget
from memory_runtime.api import create_app
from tests.integration.runtime.conftest import (
    ADMIN_TOKEN,
    READ_TOKEN,
    HashingTestEmbedder,
    Tenant,
    bearer,
    tenant_settings,
)
from tests.servers.redis import load_runtime_functions

pytestmark = pytest.mark.integration


@pytest.fixture
def tenant_redis(redis_server):  # type: ignore[no-untyped-def]
    """A Redis ACL user made exactly as the operator makes it: keys `<prefix>:*` only."""
    suffix = uuid.uuid4().hex[:8]
    prefix = f"mem:acme{suffix}"
    user, password = f"mem_acme_{suffix}", secrets.token_hex(16)
    load_runtime_functions(redis_server.url)
    admin = redis.Redis.from_url(redis_server.url)
    admin.execute_command(
        "ACL", "SETUSER", *redis_setuser_args(CacheUserTarget(user, password, prefix))
    )
    yield redis_server.url_for(user, password), prefix, admin
    admin.execute_command("ACL", "DELUSER", user)
    admin.close()


def test_redis_rate_limits_and_locks_stay_in_the_tenant_prefix(tenant: Tenant, tenant_redis):  # type: ignore[no-untyped-def]
    url, prefix, admin = tenant_redis
    settings = tenant_settings(
        tenant, redis_url=url, redis_prefix=prefix, rate_limit_per_minute=60, rate_limit_burst=3
    )
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as c:
        statuses = [c.get("/stats", headers=bearer(READ_TOKEN)).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        assert c.get("/readyz").json()["checks"]["redis"]["status"] == "ok"
        # a second replica (another app on the same Redis) shares the bucket
        with TestClient(create_app(settings), raise_server_exceptions=False) as other:
            assert other.get("/stats", headers=bearer(READ_TOKEN)).status_code == 429
    keys = [k.decode() for k in admin.keys("*")]
    tenant_keys = [k for k in keys if k.startswith(prefix + ":")]
    assert tenant_keys, keys
    assert READ_TOKEN not in " ".join(keys)  # buckets are keyed by a hash, not the token


def test_redis_outage_fails_open(tenant: Tenant):
    settings = tenant_settings(
        tenant,
        redis_url="redis://u:p@127.0.0.1:1/0",
        redis_prefix="mem:acme",
        rate_limit_per_minute=60,
        rate_limit_burst=1,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        for _ in range(3):  # burst 1, yet no 429: limiting is skipped while Redis is down
            assert c.get("/stats", headers=bearer(READ_TOKEN)).status_code == 200
        ready = c.get("/readyz")  # reported, but the pod stays in its Service
        assert ready.status_code == 200
        assert ready.json()["checks"]["redis"]["status"] == "error"
        assert ready.json()["degraded"] == ["redis"]


def test_qdrant_backend_filters_in_engine(tenant: Tenant):
    settings = tenant_settings(
        tenant, vector_backend="qdrant", qdrant_url="http://unused", embedding_provider="local"
    )
    app = create_app(
        settings, embedder=HashingTestEmbedder(), qdrant_client=QdrantClient(":memory:")
    )
    with TestClient(app) as c:
        c.headers.update(bearer(ADMIN_TOKEN))
        for n, (text, user) in enumerate(
            [("red fox", "u1"), ("red fox den", "u1"), ("blue whale", "u2")]
        ):
            c.post(
                "/memories", json={"coordinate": [n], "payload": {"text": text}, "user_id": user}
            )
        r = c.post(
            "/memories/search",
            json={"query": "red fox", "mode": "vector", "top_k": 1, "user_id": "u2"},
        )
        assert [h["memory"]["coordinate"] for h in r.json()["hits"]] == [[2.0]]
        assert c.get("/stats").json()["vector_count"] == 3
        c.delete("/memories/0")
        assert c.get("/stats").json()["vector_count"] == 2
        assert c.get("/readyz").json()["checks"]["vectors"]["status"] == "ok"
