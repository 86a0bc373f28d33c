"""RedisAdmin against a real Redis 7 (ACLs, functions): confinement, idempotence, deletion."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from memory_contract.redis_functions import LIBRARY, LIBRARY_CODE, TOKEN_BUCKET
from memory_operator.adapters.redis import RedisAdmin
from memory_operator.domain import CacheUserTarget, Outcome
from memory_operator.ports import BackendRejected, BackendUnavailable
from tests.servers._process import free_port
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.integration


def new_target(tag: str) -> CacheUserTarget:
    suffix = uuid.uuid4().hex[:8]
    return CacheUserTarget(
        username=f"mem-{tag}-{suffix}",
        password=f"pw-{uuid.uuid4().hex}",
        key_prefix=f"mem:{tag}-{suffix}",
    )


@pytest.fixture
def admin(redis_server: RedisServer) -> Iterator[RedisAdmin]:
    adapter = RedisAdmin(redis_server.url)
    yield adapter
    adapter.close()


@pytest.fixture
def root(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


def tenant_client(server: RedisServer, target: CacheUserTarget) -> redis.Redis:
    return redis.Redis.from_url(
        server.url_for(target.username, target.password), decode_responses=True
    )


class RecordingRedis(redis.Redis):
    """A real client that also keeps every command it sends (pipelines included)."""

    sent: list[tuple[str, ...]]

    def execute_command(self, *args, **options):
        self.__dict__.setdefault("sent", []).append(tuple(str(a).upper() for a in args[:2]))
        return super().execute_command(*args, **options)

    def pipeline(self, *args, **kwargs):
        pipe = super().pipeline(*args, **kwargs)
        sent, queue = self.__dict__.setdefault("sent", []), pipe.pipeline_execute_command

        def record(*command, **options):
            sent.append(tuple(str(a).upper() for a in command[:2]))
            return queue(*command, **options)

        pipe.pipeline_execute_command = record
        return pipe


def sent_by(adapter: RedisAdmin) -> list[tuple[str, ...]]:
    sent = adapter._client.__dict__.setdefault("sent", [])
    out = list(sent)
    sent.clear()
    return out


def test_user_is_confined_to_its_prefix(
    admin: RedisAdmin, redis_server: RedisServer, root: redis.Redis
) -> None:
    mine, other = new_target("a"), new_target("b")
    assert admin.ensure_user(mine) is Outcome.CREATED
    root.set(f"{other.key_prefix}:secret", "b-only")
    client = tenant_client(redis_server, mine)
    try:
        assert client.ping()
        client.set(f"{mine.key_prefix}:k", "v")
        assert client.get(f"{mine.key_prefix}:k") == "v"
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.get(f"{other.key_prefix}:secret")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set("unprefixed", "x")
        for forbidden in (("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*"), ("SCAN", "0")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*forbidden)
        # No scripts of its own; the operator-loaded functions, on its own keys only.
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.eval("return 1", 0)
        bucket = (TOKEN_BUCKET, 1, f"{mine.key_prefix}:bucket", 5, "0.001")
        assert client.fcall(*bucket)[0] == 1
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.fcall(TOKEN_BUCKET, 1, f"{other.key_prefix}:secret", 5, "0.001")
    finally:
        client.close()
    assert root.get(f"{other.key_prefix}:secret") == "b-only"


def test_second_ensure_writes_nothing(redis_server: RedisServer, root: redis.Redis) -> None:
    admin = RedisAdmin(redis_server.url, client_class=RecordingRedis)
    target = new_target("idem")
    assert admin.ensure_user(target) is Outcome.CREATED
    assert ("ACL", "SETUSER") in sent_by(admin)  # the recorder sees writes
    acl_list = root.execute_command("ACL", "LIST")

    assert admin.ensure_user(target) is Outcome.UNCHANGED
    assert sent_by(admin) == [("FUNCTION", "LIST"), ("ACL", "GETUSER")]
    assert root.execute_command("ACL", "LIST") == acl_list

    # A fresh adapter (categories not cached yet) reaches the same verdict, read-only.
    fresh = RedisAdmin(redis_server.url, client_class=RecordingRedis)
    assert fresh.ensure_user(target) is Outcome.UNCHANGED
    assert set(sent_by(fresh)) == {("FUNCTION", "LIST"), ("ACL", "GETUSER"), ("ACL", "CAT")}
    fresh.close()
    admin.close()


def test_drift_is_repaired(admin: RedisAdmin, redis_server: RedisServer, root: redis.Redis) -> None:
    target = new_target("drift")
    admin.ensure_user(target)
    # Someone widens the user by hand: all keys and FLUSHALL.
    root.execute_command("ACL", "SETUSER", target.username, "allkeys", "+flushall")
    assert admin.ensure_user(target) is Outcome.UPDATED
    assert admin.ensure_user(target) is Outcome.UNCHANGED
    client = tenant_client(redis_server, target)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.get("elsewhere")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.flushall()
    finally:
        client.close()


def test_function_library_is_loaded_and_repaired(
    admin: RedisAdmin, redis_server: RedisServer, root: redis.Redis
) -> None:
    target = new_target("fn")
    admin.ensure_user(target)
    # Gone (FUNCTION FLUSH, or a restart without persistence) or replaced by hand.
    for damage in (
        ("FUNCTION", "FLUSH"),
        ("FUNCTION", "LOAD", "REPLACE", LIBRARY_CODE.replace("tokens - 1", "tokens - 0")),
    ):
        root.execute_command(*damage)
        assert admin.ensure_user(target) is Outcome.UPDATED
        assert admin.ensure_user(target) is Outcome.UNCHANGED
        (loaded,) = root.function_list(library=LIBRARY, withcode=True)
        assert dict(zip(loaded[::2], loaded[1::2], strict=True))["library_code"] == LIBRARY_CODE
    client = tenant_client(redis_server, target)
    try:
        allowed, _ = client.fcall(TOKEN_BUCKET, 1, f"{target.key_prefix}:b", 1, "0.001")
        assert allowed == 1
    finally:
        client.close()


def test_password_rotation(admin: RedisAdmin, redis_server: RedisServer) -> None:
    old = new_target("rot")
    admin.ensure_user(old)
    new = CacheUserTarget(old.username, f"rotated-{uuid.uuid4().hex}", old.key_prefix)
    assert admin.ensure_user(new) is Outcome.UPDATED
    client = tenant_client(redis_server, new)
    assert client.ping()
    client.close()
    stale = tenant_client(redis_server, old)
    with pytest.raises(redis.AuthenticationError):
        stale.ping()
    stale.close()


def test_delete_user_removes_user_and_only_its_keys(admin: RedisAdmin, root: redis.Redis) -> None:
    target, neighbour = new_target("del"), new_target("keep")
    admin.ensure_user(target)
    # More keys than one SCAN batch, to cover the batching.
    root.mset({f"{target.key_prefix}:{i}": i for i in range(1200)})
    root.set(f"{neighbour.key_prefix}:x", "stays")
    root.set(f"{target.key_prefix}x", "not under the prefix")  # no ':' -> not the tenant's
    assert admin.delete_user(target) is Outcome.DELETED
    assert root.execute_command("ACL", "GETUSER", target.username) is None
    assert list(root.scan_iter(match=f"{target.key_prefix}:*")) == []
    assert root.get(f"{neighbour.key_prefix}:x") == "stays"
    assert root.get(f"{target.key_prefix}x") == "not under the prefix"
    assert admin.delete_user(target) is Outcome.UNCHANGED


@pytest.mark.parametrize(
    "target",
    [
        CacheUserTarget("mem-x", "pw", "mem:*"),
        CacheUserTarget("mem-x", "pw", ""),
        CacheUserTarget("default", "pw", "mem:x"),
        CacheUserTarget("mem x", "pw", "mem:x"),
        CacheUserTarget("mem-x", "p w", "mem:x"),
    ],
)
def test_bad_input_is_rejected_before_any_write(
    admin: RedisAdmin, root: redis.Redis, target: CacheUserTarget
) -> None:
    before = root.execute_command("ACL", "LIST")
    with pytest.raises(BackendRejected):
        admin.ensure_user(target)
    assert root.execute_command("ACL", "LIST") == before


def test_unreachable_server_is_temporary() -> None:
    adapter = RedisAdmin(f"redis://default:x@127.0.0.1:{free_port()}/0", timeout=2)
    with pytest.raises(BackendUnavailable):
        adapter.ensure_user(new_target("down"))


def test_wrong_admin_password_is_permanent(redis_server: RedisServer) -> None:
    adapter = RedisAdmin(redis_server.url_for("default", "wrong"))
    with pytest.raises(BackendRejected, match="authentication"):
        adapter.ensure_user(new_target("auth"))


def test_busy_server_is_temporary(admin: RedisAdmin, redis_server: RedisServer) -> None:
    """A script spinning past the busy threshold makes Redis answer BUSY to everyone:
    that passes with time (or SCRIPT KILL), so it must not become a permanent error."""
    spinner = redis.Redis.from_url(redis_server.url, decode_responses=True)
    control = redis.Redis.from_url(redis_server.url, decode_responses=True)
    old = control.config_get("lua-time-limit")["lua-time-limit"]
    control.config_set("lua-time-limit", 50)

    def spin() -> None:
        with contextlib.suppress(redis.RedisError):  # the killed script's own error
            spinner.eval("while true do end", 0)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                control.ping()
            except redis.exceptions.BusyLoadingError:
                break
            except redis.ResponseError as err:
                if str(err).startswith("BUSY"):
                    break
                raise
            time.sleep(0.02)
        else:
            raise AssertionError("the server never became busy")
        with pytest.raises(BackendUnavailable, match="BUSY"):
            admin.ensure_user(new_target("busy"))
    finally:
        control.script_kill()
        thread.join(10)
        control.config_set("lua-time-limit", old)
        spinner.close()
        control.close()
