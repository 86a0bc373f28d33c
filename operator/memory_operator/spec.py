"""The MemoryNamespace spec as a pydantic model. Pure: no I/O.

Defaults mirror the CRD's so an object created before the API server applied
defaults (or a unit test) gives the same desired state. What the CRD's schema
can't express is checked here and reported as InvalidSpecError, a permanent error.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from memory_contract import limits as lim
from memory_contract.naming import TENANT_PATTERN
from memory_operator.kube_types import MemoryNamespace

# A Service name is a DNS-1035 label (63 chars) and we name it "<name>-memory".
MAX_RESOURCE_NAME = 63 - len("-memory")


class InvalidSpecError(ValueError):
    """Permanent: the spec can never be reconciled as written."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class _Model(BaseModel):
    # camelCase on the wire (CRD), snake_case in Python; unknown fields are a
    # mistake (the API server prunes them, so seeing one means a bug upstream).
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Storage(_Model):
    max_memories: int = Field(0, ge=0)


class Hnsw(_Model):
    m: int = Field(lim.HNSW_M_DEFAULT, ge=lim.HNSW_M_MIN, le=lim.HNSW_M_MAX)
    ef_construct: int = Field(
        lim.HNSW_EF_CONSTRUCT_DEFAULT, ge=lim.HNSW_EF_CONSTRUCT_MIN, le=lim.HNSW_EF_CONSTRUCT_MAX
    )


class Vectors(_Model):
    backend: lim.Backend = "qdrant"
    dimensions: int = Field(lim.DEFAULT_DIMENSIONS, ge=1, le=lim.MAX_DIMENSIONS)
    distance: lim.Distance = lim.DEFAULT_DISTANCE
    hnsw: Hnsw = Hnsw()
    on_disk: bool = False


class Events(_Model):
    enabled: bool = True
    partitions: int = Field(3, ge=1, le=1000)
    replication_factor: int = Field(1, ge=1, le=7)
    retention_hours: int = Field(168, ge=1, le=87600)


class Embedding(_Model):
    provider: lim.EmbeddingProvider = "local"
    model: str = Field(lim.DEFAULT_EMBEDDING_MODEL, max_length=200)
    url: str = Field("", max_length=2048)


class Decay(_Model):
    enabled: bool = True
    half_life_hours: float = Field(lim.DEFAULT_DECAY_HALF_LIFE_HOURS, gt=0, le=876000)
    prune_below: float = Field(lim.DEFAULT_DECAY_PRUNE_BELOW, ge=0, le=1)


class RateLimit(_Model):
    requests_per_minute: int = Field(lim.DEFAULT_RATE_LIMIT_PER_MINUTE, ge=1, le=1_000_000)
    burst: int = Field(lim.DEFAULT_RATE_LIMIT_BURST, ge=1, le=1_000_000)


class SecretKeyRef(_Model):
    name: str = Field(min_length=1, max_length=253)
    key: str = Field("token", min_length=1, max_length=253)


class Resources(_Model):
    limits: dict[str, int | str] = Field(default_factory=dict)
    requests: dict[str, int | str] = Field(default_factory=dict)


class Mcp(_Model):
    enabled: bool = True


class Api(_Model):
    replicas: int = Field(1, ge=0, le=100)
    image: str = Field("", max_length=512)
    resources: Resources = Resources()
    rate_limit: RateLimit = RateLimit()
    max_body_bytes: int = Field(
        lim.DEFAULT_MAX_BODY_BYTES, ge=lim.MIN_MAX_BODY_BYTES, le=lim.MAX_MAX_BODY_BYTES
    )
    mcp: Mcp = Mcp()
    token_secret_ref: SecretKeyRef | None = None


class MemoryNamespaceSpec(_Model):
    tenant: str
    deletion_policy: Literal["Retain", "Delete"] = "Retain"
    paused: bool = False
    storage: Storage = Storage()
    vectors: Vectors = Vectors()
    events: Events = Events()
    embedding: Embedding = Embedding()
    decay: Decay = Decay()
    api: Api = Api()

    @model_validator(mode="after")
    def _cross_field(self) -> MemoryNamespaceSpec:
        if not TENANT_PATTERN.match(self.tenant):
            raise ValueError(f"tenant {self.tenant!r} must match {TENANT_PATTERN.pattern}")
        problem = lim.dimensions_problem(self.vectors.backend, self.vectors.dimensions)
        if problem:
            raise ValueError(problem)
        if self.embedding.provider == "http" and not self.embedding.url:
            raise ValueError("embedding.url is required when embedding.provider is http")
        if self.embedding.provider == "local":
            want = lim.LOCAL_MODEL_DIMENSIONS.get(self.embedding.model)
            if want is None:
                known = ", ".join(sorted(lim.LOCAL_MODEL_DIMENSIONS))
                raise ValueError(
                    f"embedding.model {self.embedding.model!r} is not a bundled local model"
                    f" (available: {known})"
                )
            if want != self.vectors.dimensions:
                raise ValueError(
                    f"vectors.dimensions is {self.vectors.dimensions} but local model"
                    f" {self.embedding.model} produces {want}-dimensional vectors"
                )
        return self


def _error_text(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"spec.{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def parse_spec(raw: dict[str, Any] | None, name: str) -> MemoryNamespaceSpec:
    """Validate a CR's spec; the tenant defaults to metadata.name.

    Raises InvalidSpecError (permanent) with a reason a user can act on."""
    if len(name) > MAX_RESOURCE_NAME:
        raise InvalidSpecError(
            "NameTooLong",
            f"metadata.name {name!r} is longer than {MAX_RESOURCE_NAME} characters;"
            f" '<name>-memory' must be a valid Service name",
        )
    data = dict(raw or {})
    if not data.get("tenant"):
        if not TENANT_PATTERN.match(name):
            raise InvalidSpecError(
                "InvalidTenant",
                f"spec.tenant is unset and metadata.name {name!r} is not a valid tenant"
                f" (must match {TENANT_PATTERN.pattern}); set spec.tenant",
            )
        data["tenant"] = name
    try:
        return MemoryNamespaceSpec.model_validate(data)
    except ValidationError as err:
        raise InvalidSpecError("InvalidSpec", _error_text(err)) from err


def effective_tenant(obj: MemoryNamespace) -> str:
    """The tenant a CR claims, even if the rest of its spec is invalid."""
    spec = obj.get("spec") or {}
    return str(spec.get("tenant") or obj["metadata"]["name"])
