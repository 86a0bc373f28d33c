"""Auth (401 vs 403, rotation), 413, 422, 429, 409 quota, 503: all problem+json."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from memory_runtime.api import create_app
from memory_runtime.api.auth import token_key
from tests.integration.runtime.conftest import (
    ADMIN_TOKEN,
    ADMIN_TOKEN_2,
    READ_TOKEN,
    WRITE_TOKEN,
    Tenant,
    bearer,
    tenant_settings,
)
from tests.servers.redis import RedisServer, load_runtime_functions

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


def assert_problem(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert body["type"].startswith("https://")
    assert body["title"]
    return body


@pytest.fixture
def anon(tenant: Tenant) -> Iterator[TestClient]:
    app = create_app(tenant_settings(tenant, max_body_bytes=2048, max_memories=3))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_missing_and_invalid_tokens_are_401(anon: TestClient):
    body = assert_problem(anon.get("/stats"), 401)
    assert "Bearer" in body["detail"]
    r = anon.get("/stats", headers=bearer("x" * 30))
    assert_problem(r, 401)
    assert "invalid_token" in r.headers["www-authenticate"]
    assert_problem(anon.get("/stats", headers={"Authorization": f"Basic {READ_TOKEN}"}), 401)
    # health and the OpenAPI document need no token
    assert anon.get("/healthz").json() == {"status": "ok"}
    assert anon.get("/openapi.json").status_code == 200


def test_a_strangers_bad_search_query_is_401_before_422(anon: TestClient):
    # the query is read after the token: a stranger learns nothing from its checks
    bad = {"query": "tea", "metadata": "{not json", "top_k": "many"}
    assert_problem(anon.get("/memories/search", params=bad), 401)
    read = bearer(READ_TOKEN)
    listed = anon.get("/memories/search", params={"metadata": "[1]"}, headers=read)
    assert assert_problem(listed, 422)["detail"] == "metadata must be a JSON object"


def test_roles_give_403_when_too_low(anon: TestClient):
    read, write, admin = bearer(READ_TOKEN), bearer(WRITE_TOKEN), bearer(ADMIN_TOKEN)
    memory = {"coordinate": [1], "payload": {"text": "x"}}
    assert_problem(anon.post("/memories", json=memory, headers=read), 403)
    assert anon.post("/memories", json=memory, headers=write).status_code == 201
    assert anon.get("/memories/1", headers=read).status_code == 200
    assert_problem(anon.get("/export", headers=write), 403)
    assert_problem(anon.delete("/memories", params={"user_id": "u"}, headers=write), 403)
    assert_problem(anon.post("/import", content=b"", headers=write), 403)
    assert anon.get("/export", headers=admin).status_code == 200
    # rotation: a second admin token is valid at the same time
    assert anon.get("/export", headers=bearer(ADMIN_TOKEN_2)).status_code == 200


def test_body_cap_by_content_length_and_by_stream(anon: TestClient):
    headers = bearer(WRITE_TOKEN)
    big = {"payload": {"text": "x" * 5000}}
    body = assert_problem(anon.post("/memories", json=big, headers=headers), 413)
    assert "2048" in body["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
        yield b'{"payload": {"text": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}}'

    streamed = anon.post(
        "/memories", content=chunks(), headers={**headers, "Content-Type": "application/json"}
    )
    assert_problem(streamed, 413)
    assert anon.get("/stats", headers=headers).json()["memories"] == 0  # nothing applied


def test_validation_errors_are_422_without_echoing_input(anon: TestClient):
    r = anon.post(
        "/memories",
        json={"coordinate": "1,2", "importance": 7, "payload": {"secret": "s3cr3t"}},
        headers=bearer(WRITE_TOKEN),
    )
    body = assert_problem(r, 422)
    assert body["errors"][0]["loc"] == ["body", "importance"]
    assert "s3cr3t" not in r.text
    r = anon.post(
        "/memories",
        content=b"{not json",
        headers={**bearer(WRITE_TOKEN), "Content-Type": "application/json"},
    )
    assert_problem(r, 422)
    assert_problem(anon.get("/nowhere", headers=bearer(READ_TOKEN)), 404)
    assert_problem(anon.put("/memories/1", headers=bearer(WRITE_TOKEN)), 405)


def test_quota_refuses_new_records_but_allows_updates(anon: TestClient):
    headers = bearer(WRITE_TOKEN)
    for n in range(3):
        assert (
            anon.post(
                "/memories", json={"coordinate": [n], "payload": {}}, headers=headers
            ).status_code
            == 201
        )
    body = assert_problem(
        anon.post("/memories", json={"coordinate": [9], "payload": {}}, headers=headers), 409
    )
    assert body["type"].endswith("/quota-exceeded")
    assert "3" in body["detail"]
    # an update at an existing coordinate is not a new record
    assert (
        anon.post(
            "/memories", json={"coordinate": [0], "payload": {"a": 1}}, headers=headers
        ).status_code
        == 200
    )
    anon.delete("/memories/1", headers=headers)
    batch = {"memories": [{"coordinate": [10], "payload": {}}, {"coordinate": [11], "payload": {}}]}
    assert_problem(anon.post("/memories/batch", json=batch, headers=headers), 409)
    assert anon.get("/stats", headers=headers).json()["memories"] == 2  # batch: all or nothing


def test_rate_limit_429_with_headers(tenant: Tenant):
    settings = tenant_settings(tenant, rate_limit_per_minute=60, rate_limit_burst=2)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        first = c.get("/stats", headers=bearer(READ_TOKEN))
        assert first.status_code == 200
        assert first.headers["ratelimit-limit"] == "2"
        assert first.headers["ratelimit-remaining"] == "1"
        assert c.get("/stats", headers=bearer(READ_TOKEN)).status_code == 200
        limited = c.get("/stats", headers=bearer(READ_TOKEN))
        assert_problem(limited, 429)
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.headers["ratelimit-remaining"] == "0"
        # buckets are per token
        assert c.get("/stats", headers=bearer(WRITE_TOKEN)).status_code == 200
        # health is not limited
        assert c.get("/healthz").status_code == 200


def test_database_outage_is_503_without_internals(tenant: Tenant):
    app = create_app(tenant_settings(tenant))
    with TestClient(app, raise_server_exceptions=False) as c:
        app.state.runtime.service.db.pool.close()
        r = c.get("/memories/1", headers=bearer(READ_TOKEN))
        body = assert_problem(r, 503)
        assert "pool" not in r.text.lower()
        assert body["detail"] == "the database is unavailable; retry later"
        assert r.headers["retry-after"] == "5"


def test_rate_limit_buckets_live_at_prefix_ratelimit_key(
    tenant: Tenant, redis_server: RedisServer
) -> None:
    # The app's Redis buckets must be `<prefix>:ratelimit:<token id>` (docs/API.md,
    # limits.RedisRateLimiter), not with the `ratelimit` segment doubled.
    load_runtime_functions(redis_server.url)
    r = redis.Redis.from_url(redis_server.url)
    r.flushdb()
    settings = tenant_settings(
        tenant, rate_limit_per_minute=60, rate_limit_burst=5, redis_prefix="mem:acme"
    )
    try:
        with TestClient(create_app(settings, redis_client=r), raise_server_exceptions=False) as c:
            assert c.get("/stats", headers=bearer(READ_TOKEN)).status_code == 200
        keys = {k.decode() for k in r.keys("*")}
        assert keys == {f"mem:acme:ratelimit:{token_key(READ_TOKEN)}"}
    finally:
        r.flushdb()
        r.close()
