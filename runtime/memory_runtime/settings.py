"""Runtime configuration from the environment (prefix MEMORY_, see docs/ARCHITECTURE.md)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from memory_contract import limits as lim
from memory_contract.env import ENV_PREFIX
from memory_contract.naming import (
    DEFAULT_PREFIX,
    METRICS_PORT,
    RUNTIME_PORT,
    TENANT_PATTERN,
    key_prefix,
    sql_name,
)
from memory_runtime.tokens import ROLE_RANK, ApiToken, Role, parse_tokens

__all__ = ["ROLE_RANK", "ApiToken", "Role", "Settings", "parse_tokens"]

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_PG_MEMORY = re.compile(r"^[1-9][0-9]{0,8}(kB|MB|GB)$")  # a PostgreSQL memory size, unit required


class Settings(BaseSettings):
    """Everything the runtime reads at start; invalid values stop the process."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    tenant: str = "default"
    database_url: str = Field(default="", repr=False)
    database_schema: str = ""  # default: mem_<tenant with - as _> (the operator's naming)
    database_extensions_schema: str = "extensions"
    database_pool_size: int = Field(default=8, ge=1, le=64)
    # set on every runtime connection: nothing waits unbounded on a lock or a query
    database_statement_timeout_ms: int = Field(default=30_000, ge=100)
    database_lock_timeout_ms: int = Field(default=5_000, ge=10)
    database_wait_seconds: float = Field(default=5.0, gt=0)  # for a pooled connection

    # dependency health: background probes and circuit breakers (docs/ARCHITECTURE.md)
    probe_interval_seconds: float = Field(default=1.0, gt=0)
    probe_timeout_seconds: float = Field(default=1.0, gt=0)
    probe_cut_after_seconds: float = Field(default=5.0, gt=0)
    breaker_threshold: int = Field(default=2, ge=1)  # failures in a row that open a circuit
    breaker_open_seconds: float = Field(default=5.0, gt=0)  # before one trial call

    vector_backend: lim.Backend = "postgres"
    # at most lim.MAX_DIMENSIONS_BY_BACKEND[vector_backend] (checked below)
    vector_dimensions: int = Field(default=lim.DEFAULT_DIMENSIONS, ge=1, le=lim.MAX_DIMENSIONS)
    vector_distance: lim.Distance = lim.DEFAULT_DISTANCE
    # the HNSW graph's parameters (spec.vectors.hnsw): pgvector's index is rebuilt
    # when they change; a Qdrant collection takes them when the runtime creates it
    vector_hnsw_m: int = Field(default=lim.HNSW_M_DEFAULT, ge=lim.HNSW_M_MIN, le=lim.HNSW_M_MAX)
    vector_hnsw_ef_construct: int = Field(
        default=lim.HNSW_EF_CONSTRUCT_DEFAULT,
        ge=lim.HNSW_EF_CONSTRUCT_MIN,
        le=lim.HNSW_EF_CONSTRUCT_MAX,
    )
    qdrant_url: str = ""
    qdrant_collection: str = ""
    qdrant_api_key: str = Field(default="", repr=False)
    # per Qdrant request; bounds what a request already in flight waits when
    # Qdrant hangs (later ones skip it once its circuit opens)
    qdrant_timeout_seconds: int = Field(default=5, ge=1, le=300)

    redis_url: str = Field(default="", repr=False)
    redis_prefix: str = ""

    events_enabled: bool = False
    kafka_bootstrap: str = ""
    kafka_topic: str = ""
    kafka_security_protocol: str = ""
    kafka_sasl_mechanism: str = ""
    kafka_username: str = ""
    kafka_password: str = Field(default="", repr=False)

    embedding_provider: lim.EmbeddingProvider = "local"
    embedding_model: str = lim.DEFAULT_EMBEDDING_MODEL
    embedding_url: str = ""
    # local model: intra-op threads per embedding call; 0 = the CPU limit, at most 2
    embedding_threads: int = Field(default=0, ge=0, le=64)

    decay_enabled: bool = True
    decay_half_life_hours: float = Field(default=lim.DEFAULT_DECAY_HALF_LIFE_HOURS, gt=0)
    decay_prune_below: float = Field(default=lim.DEFAULT_DECAY_PRUNE_BELOW, ge=0, le=1)

    max_memories: int = Field(default=0, ge=0)
    rate_limit_per_minute: int = Field(default=lim.DEFAULT_RATE_LIMIT_PER_MINUTE, ge=0)
    rate_limit_burst: int = Field(default=lim.DEFAULT_RATE_LIMIT_BURST, ge=0)
    max_body_bytes: int = Field(
        default=lim.DEFAULT_MAX_BODY_BYTES, ge=lim.MIN_MAX_BODY_BYTES, le=lim.MAX_MAX_BODY_BYTES
    )
    mcp_enabled: bool = True  # the Model Context Protocol endpoint at /mcp

    api_tokens: str = Field(default="", repr=False)
    migrate_on_start: bool = False

    host: str = "0.0.0.0"
    port: int = Field(default=RUNTIME_PORT, ge=1, le=65535)
    metrics_port: int = Field(default=METRICS_PORT, ge=0, le=65535)  # 0 = no metrics server
    # the backlog gauges read PostgreSQL at most this often, however often scraped
    metrics_backlog_refresh_seconds: float = Field(default=5.0, ge=0)

    # background jobs (seconds)
    prune_interval_seconds: float = Field(default=300.0, gt=0)
    index_interval_seconds: float = Field(default=10.0, gt=0)
    relay_interval_seconds: float = Field(default=1.0, gt=0)

    # embedded mode only
    data_dir: str = "./.data/pg"
    # pgvector's HNSW index answers fastest from shared buffers; PostgreSQL's
    # 128MB default holds neither the index nor the table of 100k memories
    # (bench/README.md: recall at 100k with 128MB and with 512MB)
    embedded_shared_buffers: str = "512MB"

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str) -> str:
        if not TENANT_PATTERN.match(value):
            raise ValueError(f"tenant must match {TENANT_PATTERN.pattern}")
        return value

    @field_validator("database_schema", "database_extensions_schema")
    @classmethod
    def _schema(cls, value: str) -> str:
        if value and not _IDENT.match(value):
            raise ValueError("schema names must match ^[a-z_][a-z0-9_]{0,62}$")
        return value

    @field_validator("embedded_shared_buffers")
    @classmethod
    def _memory_size(cls, value: str) -> str:
        if not _PG_MEMORY.match(value):
            raise ValueError("a PostgreSQL memory size with its unit, such as 512MB or 1GB")
        return value

    @field_validator("api_tokens")
    @classmethod
    def _tokens(cls, value: str) -> str:
        parse_tokens(value)  # raise early on malformed tokens
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        problem = lim.dimensions_problem(self.vector_backend, self.vector_dimensions)
        if problem:
            raise ValueError(problem)
        if self.vector_backend == "qdrant" and not self.qdrant_url:
            raise ValueError("MEMORY_QDRANT_URL is required with MEMORY_VECTOR_BACKEND=qdrant")
        if self.events_enabled and not (self.kafka_bootstrap and self.kafka_topic):
            raise ValueError(
                "MEMORY_KAFKA_BOOTSTRAP and MEMORY_KAFKA_TOPIC are required when events are enabled"
            )
        if self.embedding_provider == "http" and not self.embedding_url:
            raise ValueError("MEMORY_EMBEDDING_URL is required with MEMORY_EMBEDDING_PROVIDER=http")
        return self

    @property
    def schema_name(self) -> str:
        return self.database_schema or sql_name(DEFAULT_PREFIX, self.tenant)

    @property
    def collection_name(self) -> str:
        return self.qdrant_collection or self.schema_name

    @property
    def redis_key_prefix(self) -> str:
        return self.redis_prefix or key_prefix(DEFAULT_PREFIX, self.tenant)

    @property
    def tokens(self) -> tuple[ApiToken, ...]:
        return parse_tokens(self.api_tokens)

    def kafka_producer_config(self) -> dict[str, str]:
        """librdkafka settings for the outbox relay (idempotence is the relay's job)."""
        config = {"bootstrap.servers": self.kafka_bootstrap}
        if self.kafka_security_protocol:
            config["security.protocol"] = self.kafka_security_protocol
        if self.kafka_sasl_mechanism:
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_username:
            config["sasl.username"] = self.kafka_username
            config["sasl.password"] = self.kafka_password
        return config
