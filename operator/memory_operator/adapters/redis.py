"""Redis adapter: one ACL user per tenant, confined to `<prefix>:*` keys and channels.

Observe with ACL GETUSER (+ ACL CAT to compare permissions by meaning), then a
single atomic ACL SETUSER only when something differs.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import redis

from memory_contract.redis_functions import LIBRARY, LIBRARY_CODE
from memory_operator.acl import (
    parse_getuser,
    redis_setuser_args,
    redis_user_matches,
    validate_cache_target,
)
from memory_operator.adapters.calls import backend_call
from memory_operator.domain import CacheUserTarget, Outcome, PlanError
from memory_operator.ports import BackendError, BackendRejected, BackendUnavailable
from memory_operator.snapshot import WINDOW_SECONDS, Shared

BACKEND = "redis"
_NO_ACL_FILE = "not configured to use an ACL file"
# Error replies that pass with time: a script running, a replica loading or
# failing over, a cluster resharding.
_TRANSIENT_REPLIES = ("BUSY", "LOADING", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN", "READONLY")


def _translate(exc: Exception) -> BackendError | None:
    if isinstance(exc, redis.AuthenticationError):  # a subclass of ConnectionError
        return BackendRejected(BACKEND, f"admin authentication failed: {exc}")
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return BackendUnavailable(BACKEND, str(exc))
    if isinstance(exc, redis.RedisError):
        if str(exc).startswith(_TRANSIENT_REPLIES):
            return BackendUnavailable(BACKEND, str(exc))
        return BackendRejected(BACKEND, str(exc))
    return None


class RedisAdmin:
    """CacheAdmin over an admin URL (a user allowed ACL, SCAN and UNLINK)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        scan_count: int = 500,
        client_class: type[redis.Redis] = redis.Redis,
        read_window: float = WINDOW_SECONDS,
    ) -> None:
        # client_class lets tests see every command sent (a recording subclass).
        self._client = client_class.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
        )
        self._scan_count = scan_count
        self._categories: dict[str, frozenset[str]] | None = None
        # A resync's shared read: (library code, username -> ACL GETUSER reply).
        self._users: Shared[tuple[str | None, dict[str, Any]]] = Shared(self._read_all, read_window)

    def close(self) -> None:
        self._client.close()

    def _call(self, operation: str) -> AbstractContextManager[None]:
        return backend_call(BACKEND, operation, _translate)

    def _command_categories(self) -> dict[str, frozenset[str]]:
        # Category membership is fixed for a server binary: read it once per adapter.
        if self._categories is None:
            names = [str(n) for n in self._client.execute_command("ACL", "CAT")]
            pipe = self._client.pipeline(transaction=False)
            for name in names:
                pipe.execute_command("ACL", "CAT", name)
            members = pipe.execute()
            self._categories = {
                name.lower(): frozenset(str(c).lower() for c in cmds)
                for name, cmds in zip(names, members, strict=True)
            }
        return self._categories

    def _getuser(self, username: str) -> Any:
        return self._client.execute_command("ACL", "GETUSER", username)

    def _persist(self) -> None:
        # Servers started with an aclfile lose SETUSER changes on restart unless saved;
        # without one there is nothing to save (the next reconcile repairs a restart).
        try:
            self._client.execute_command("ACL", "SAVE")
        except redis.ResponseError as exc:
            if _NO_ACL_FILE not in str(exc):
                raise

    def _read_state(self, username: str) -> tuple[str | None, Any]:
        """(the loaded library's code, ACL GETUSER's reply) in one round trip."""
        pipe = self._client.pipeline(transaction=False)
        pipe.execute_command("FUNCTION", "LIST", "LIBRARYNAME", LIBRARY, "WITHCODE")
        pipe.execute_command("ACL", "GETUSER", username)
        functions, user = pipe.execute(raise_on_error=False)
        if isinstance(functions, redis.ResponseError):
            if "unknown command" in str(functions).lower():
                raise BackendRejected(
                    BACKEND, f"Redis 7.0 or later is required (Redis functions): {functions}"
                ) from functions
            raise functions
        if isinstance(user, Exception):
            raise user
        return self._library_code(functions), user

    def _read_all(self) -> tuple[str | None, dict[str, Any]]:
        """Every ACL user and the library, in two round trips (ACL USERS, then one
        pipeline of FUNCTION LIST and a GETUSER per user)."""
        with self._call("read_all"):
            self._command_categories()  # once per adapter, before the passes need it
            names = [str(n) for n in self._client.execute_command("ACL", "USERS")]
            pipe = self._client.pipeline(transaction=False)
            pipe.execute_command("FUNCTION", "LIST", "LIBRARYNAME", LIBRARY, "WITHCODE")
            for name in names:
                pipe.execute_command("ACL", "GETUSER", name)
            replies = pipe.execute(raise_on_error=False)
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return self._library_code(replies[0]), dict(zip(names, replies[1:], strict=True))

    def user_unchanged(self, target: CacheUserTarget, not_before: float) -> bool:
        """True when the shared read (every user at once, loaded no earlier than
        `not_before`) shows nothing to do for `target`; False is no verdict."""
        try:
            validate_cache_target(target)
        except PlanError:
            return False  # ensure_user reports it
        code, users = self._users.get(not_before)
        if code != LIBRARY_CODE or target.username not in users:
            return False
        state = parse_getuser(users[target.username])
        return redis_user_matches(state, target, self._command_categories())

    @staticmethod
    def _library_code(reply: Any) -> str | None:
        for entry in reply or []:
            # A flat [name, value, ...] list (RESP2); a dict with RESP3.
            pairs = zip(entry[::2], entry[1::2], strict=True) if isinstance(entry, list) else ()
            fields = entry if isinstance(entry, dict) else dict(pairs)
            if fields.get("library_name") == LIBRARY:
                return str(fields.get("library_code"))
        return None

    def ensure_user(self, target: CacheUserTarget) -> Outcome:
        """The tenant's ACL user and the function library it calls with FCALL (shared
        by every tenant on the server; loaded only when missing or different)."""
        with self._call("observe"):
            args = redis_setuser_args(target)  # validates before any I/O
            code, user = self._read_state(target.username)
            library_ok = code == LIBRARY_CODE
            state = parse_getuser(user)
            if library_ok and redis_user_matches(state, target, self._command_categories()):
                return Outcome.UNCHANGED
        with self._call("apply"):
            if not library_ok:
                # Functions persist with the dataset (RDB/AOF); without persistence a
                # restarted server lacks them until the next reconcile loads them again.
                self._client.execute_command("FUNCTION", "LOAD", "REPLACE", LIBRARY_CODE)
            self._client.execute_command("ACL", "SETUSER", *args)
            self._persist()
        return Outcome.CREATED if state is None else Outcome.UPDATED

    def delete_user(self, target: CacheUserTarget) -> Outcome:
        with self._call("observe"):
            validate_cache_target(target)
            exists = self._getuser(target.username) is not None
        deleted_keys = 0
        with self._call("delete"):
            if exists:
                # First the user, so the tenant can't write keys while we sweep them.
                self._client.execute_command("ACL", "DELUSER", target.username)
                self._persist()
            # SCAN, not KEYS: never block the server on a large keyspace.
            batch: list[str] = []
            for key in self._client.scan_iter(
                match=f"{target.key_prefix}:*", count=self._scan_count
            ):
                batch.append(key)
                if len(batch) >= self._scan_count:
                    deleted_keys += int(self._client.unlink(*batch))
                    batch.clear()
            if batch:
                deleted_keys += int(self._client.unlink(*batch))
        return Outcome.DELETED if exists or deleted_keys else Outcome.UNCHANGED
