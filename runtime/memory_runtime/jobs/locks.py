"""Job leases in PostgreSQL: one holder at a time across replicas.

A lease is a row of `job_leases` in the tenant's own schema (migration 0005):
the source of truth every replica already has, with or without Redis, and an
object no other tenant can lock, take or see. A lease runs out `ttl_seconds`
after it was last renewed; its holder renews it every third of that while it
works (PeriodicJob), so a crashed or SIGKILLed holder stalls the job for at
most `ttl_seconds`. Every statement runs on the store's pool, with its
statement and lock timeouts.
"""

from __future__ import annotations

import secrets
from typing import Any, Protocol

DEFAULT_TTL_SECONDS = 5.0


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


class PostgresLease:
    """The lease `name` in `job_leases`; `store` is a PostgresStore (its `tx()`)."""

    def __init__(self, store: Any, name: str, ttl_seconds: float = DEFAULT_TTL_SECONDS) -> None:
        if not name:
            raise ValueError("a lease needs a name")
        if ttl_seconds <= 0:
            raise ValueError(f"lease ttl must be positive, got {ttl_seconds}")
        self._store = store
        self.name = name
        self._ttl = ttl_seconds

    @property
    def ttl_seconds(self) -> float:
        return self._ttl

    def acquire(self) -> str | None:
        token = secrets.token_hex(16)
        with self._store.tx() as tx:
            row = tx.conn.execute(
                "INSERT INTO job_leases (name, holder, expires_at)"
                " VALUES (%s, %s, clock_timestamp() + make_interval(secs => %s))"
                " ON CONFLICT (name) DO UPDATE"
                " SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at"
                " WHERE job_leases.expires_at <= clock_timestamp()"
                " RETURNING holder",
                (self.name, token, self._ttl),
            ).fetchone()
        return token if row is not None else None

    def extend(self, token: str) -> bool:
        with self._store.tx() as tx:
            row = tx.conn.execute(
                "UPDATE job_leases SET expires_at = clock_timestamp() + make_interval(secs => %s)"
                " WHERE name = %s AND holder = %s AND expires_at > clock_timestamp()"
                " RETURNING holder",
                (self._ttl, self.name, token),
            ).fetchone()
        return row is not None

    def release(self, token: str) -> None:
        with self._store.tx() as tx:
            tx.conn.execute(
                "DELETE FROM job_leases WHERE name = %s AND holder = %s", (self.name, token)
            )
