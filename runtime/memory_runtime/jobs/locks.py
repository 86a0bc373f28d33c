"""Job locks: one holder at a time across replicas (Redis) or threads (in-process).

Redis: SET key token NX PX ttl; release and extend are compare-and-act Redis
functions (redis_functions, loaded by the operator), so a replica whose lock
expired can never delete or extend the lock another replica now holds.
"""

from __future__ import annotations

import secrets
import threading
from typing import Protocol

import redis

from memory_runtime.redis_functions import LOCK_EXTEND, LOCK_RELEASE


class JobLock(Protocol):
    @property
    def ttl_seconds(self) -> float: ...

    def acquire(self) -> str | None:
        """Try once; the holder's token, or None if someone else holds the lock."""
        ...

    def extend(self, token: str) -> bool:
        """Push the expiry out again; False if `token` no longer holds the lock."""
        ...

    def release(self, token: str) -> None:
        """Release if `token` still holds the lock (no-op otherwise)."""
        ...


class RedisLock:
    def __init__(self, client: redis.Redis, key: str, ttl_seconds: float) -> None:
        if ttl_seconds <= 0:
            raise ValueError(f"lock ttl must be positive, got {ttl_seconds}")
        self._client = client
        self.key = key
        self._ttl_ms = max(1, int(ttl_seconds * 1000))

    @property
    def ttl_seconds(self) -> float:
        return self._ttl_ms / 1000

    def acquire(self) -> str | None:
        token = secrets.token_hex(16)
        if self._client.set(self.key, token, nx=True, px=self._ttl_ms):
            return token
        return None

    def extend(self, token: str) -> bool:
        return bool(self._client.fcall(LOCK_EXTEND, 1, self.key, token, self._ttl_ms))

    def release(self, token: str) -> None:
        self._client.fcall(LOCK_RELEASE, 1, self.key, token)


# key -> (lock, [holder token]); shared by every LocalLock of the process.
_LOCAL: dict[str, tuple[threading.Lock, list[str | None]]] = {}
_LOCAL_GUARD = threading.Lock()


class LocalLock:
    """In-process lock by name (embedded mode: one process, no Redis)."""

    def __init__(self, key: str, ttl_seconds: float) -> None:
        if ttl_seconds <= 0:
            raise ValueError(f"lock ttl must be positive, got {ttl_seconds}")
        self.key = key
        self._ttl = ttl_seconds
        # Same key -> same underlying lock, like two replicas sharing a Redis key.
        with _LOCAL_GUARD:
            entry = _LOCAL.setdefault(key, (threading.Lock(), [None]))
        self._lock, self._holder = entry

    @property
    def ttl_seconds(self) -> float:
        return self._ttl

    def acquire(self) -> str | None:
        if not self._lock.acquire(blocking=False):
            return None
        token = secrets.token_hex(16)
        self._holder[0] = token
        return token

    def extend(self, token: str) -> bool:
        return self._holder[0] == token  # in-process locks don't expire

    def release(self, token: str) -> None:
        if self._holder[0] == token:
            self._holder[0] = None
            self._lock.release()


def build_lock(redis_client: redis.Redis | None, key: str, ttl_seconds: float = 300.0) -> JobLock:
    """A Redis lock at `key` when a client is given, else an in-process one."""
    if not key:
        raise ValueError("lock key must not be empty")
    if redis_client is None:
        return LocalLock(key, ttl_seconds)
    return RedisLock(redis_client, key, ttl_seconds)
