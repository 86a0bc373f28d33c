"""Interfaces of the backend adapters. Every `ensure_*` is idempotent and
returns Outcome.UNCHANGED when the backend already matches (no write at all);
every `delete_*` is idempotent too. Adapters raise BackendUnavailable when the
server can't be reached (a temporary error) and BackendRejected when the
request itself can never succeed (a permanent error)."""

from __future__ import annotations

from typing import Protocol

from memory_operator.domain import (
    CacheUserTarget,
    CollectionTarget,
    DatabaseTarget,
    Outcome,
    TopicsTarget,
)


class BackendError(RuntimeError):
    def __init__(self, backend: str, message: str) -> None:
        super().__init__(f"{backend}: {message}")
        self.backend = backend
        self.message = message


class BackendUnavailable(BackendError):
    """Temporary: retry with backoff."""


class BackendRejected(BackendError):
    """Permanent: the backend refuses this desired state (e.g. shrink partitions)."""


class BackendNotOwner(BackendRejected):
    """The data exists and belongs to another owner (ownership.py); nothing was written."""


class DatabaseAdmin(Protocol):
    def ensure_tenant(self, target: DatabaseTarget) -> Outcome: ...
    def delete_tenant(self, target: DatabaseTarget) -> Outcome: ...  # DROP SCHEMA CASCADE + role


class VectorAdmin(Protocol):
    def ensure_collection(self, target: CollectionTarget) -> Outcome: ...
    def delete_collection(self, name: str) -> Outcome: ...


class EventsAdmin(Protocol):
    def ensure_topics(self, target: TopicsTarget) -> Outcome: ...
    def delete_topics(self, target: TopicsTarget) -> Outcome: ...


class CacheAdmin(Protocol):
    def ensure_user(self, target: CacheUserTarget) -> Outcome: ...
    def delete_user(self, target: CacheUserTarget) -> Outcome: ...  # user and its keys
