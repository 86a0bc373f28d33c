"""Redis smoke tests: password auth and per-prefix ACL users (what tenants rely on)."""

from __future__ import annotations

import secrets

import pytest
import redis

from tests.servers.redis import RedisServer

pytestmark = pytest.mark.integration


def test_acl_user_is_confined_to_its_key_prefix(redis_server: RedisServer) -> None:
    user = f"tenant-{secrets.token_hex(4)}"
    password = secrets.token_hex(12)
    prefix = f"mem:{user}:"
    admin = redis.Redis.from_url(redis_server.url)
    tenant = redis.Redis.from_url(redis_server.url_for(user, password))
    try:
        admin.acl_setuser(
            user,
            enabled=True,
            passwords=[f"+{password}"],
            keys=[f"{prefix}*"],
            commands=["+@all", "-@dangerous"],
            reset=True,
        )
        admin.set("other:secret", "x")

        tenant.set(f"{prefix}k", "v")
        assert tenant.get(f"{prefix}k") == b"v"
        with pytest.raises(redis.exceptions.NoPermissionError, match="no permissions"):
            tenant.get("other:secret")
        with pytest.raises(redis.exceptions.NoPermissionError, match="no permissions"):
            tenant.set("mem:someone-else:k", "v")
        # Dangerous commands (FLUSHALL, CONFIG, ACL ...) are refused too.
        with pytest.raises(redis.exceptions.NoPermissionError):
            tenant.flushall()
        assert admin.get("other:secret") == b"x"
    finally:
        admin.acl_deluser(user)
        admin.delete("other:secret", f"{prefix}k")
        tenant.close()
        admin.close()


def test_wrong_password_is_refused(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url_for("default", "wrong"))
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            client.ping()
    finally:
        client.close()


def test_no_persistence_configured(redis_server: RedisServer) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    try:
        assert admin.config_get("save")["save"] == ""
        assert admin.config_get("appendonly")["appendonly"] == "no"
    finally:
        admin.close()
