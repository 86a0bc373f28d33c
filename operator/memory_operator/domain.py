"""Desired state handed from reconcile to the backend adapters. Pure data."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from memory_operator.ownership import Adoption, Owner


class PlanError(ValueError):
    """A plan (sql.py, acl.py, topics.py, collection.py) can never reach the desired
    state from the observed one, or the desired state is invalid: permanent, and
    found before any write. The adapters report it as BackendRejected."""


class Outcome(enum.Enum):
    """What an adapter call did. UNCHANGED means it wrote nothing at all."""

    UNCHANGED = "Unchanged"
    CREATED = "Created"
    UPDATED = "Updated"
    DELETED = "Deleted"

    @property
    def wrote(self) -> bool:
        return self is not Outcome.UNCHANGED


@dataclass(frozen=True)
class DatabaseTarget:
    schema: str
    role: str
    password: str
    extensions_schema: str = "extensions"
    pgvector: bool = False  # vectors.backend == postgres: make `vector` usable by the role
    # CONNECTION LIMIT of the role (-1: none, PostgreSQL's default), so one tenant can't
    # take every connection of the shared server (naming.connection_limit derives it).
    connection_limit: int = -1
    owner: Owner | None = None  # recorded on the role and schema; None: no records (tools)
    adoption: Adoption = Adoption.NONE  # what else this owner may take (ownership.py)


@dataclass(frozen=True)
class CollectionTarget:
    name: str
    dimensions: int
    distance: str  # Cosine | Dot | Euclid
    hnsw_m: int
    hnsw_ef_construct: int
    on_disk: bool


@dataclass(frozen=True)
class TopicsTarget:
    names: tuple[str, ...]
    partitions: int
    replication_factor: int
    retention_ms: int
    principal: str | None = None  # SASL user for the tenant (SCRAM), None without SASL
    password: str | None = None
    # The password was just generated: check an existing credential against it now,
    # not when a periodic login check comes due (adapters/kafka.py).
    verify_password: bool = False


@dataclass(frozen=True)
class CacheUserTarget:
    username: str
    password: str
    key_prefix: str  # keys allowed: "<key_prefix>:*"
