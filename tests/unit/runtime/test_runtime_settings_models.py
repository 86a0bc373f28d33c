"""Settings (env contract) and request model validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from memory_runtime.models import LinkIn, MemoryIn, MemoryPatch, SearchIn
from memory_runtime.service import derive_text
from memory_runtime.settings import Settings, parse_tokens

TOKEN = "t" * 20


def test_env_contract_is_read(monkeypatch: pytest.MonkeyPatch):
    env = {
        "MEMORY_TENANT": "acme",
        "MEMORY_DATABASE_URL": "postgresql://mem_acme:pw@db:5432/memory",
        "MEMORY_DATABASE_SCHEMA": "mem_acme",
        "MEMORY_VECTOR_BACKEND": "qdrant",
        "MEMORY_QDRANT_URL": "http://qdrant:6333",
        "MEMORY_VECTOR_DIMENSIONS": "384",
        "MEMORY_VECTOR_DISTANCE": "Dot",
        "MEMORY_EVENTS_ENABLED": "true",
        "MEMORY_KAFKA_BOOTSTRAP": "kafka:9092",
        "MEMORY_KAFKA_TOPIC": "mem.acme.events",
        "MEMORY_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "MEMORY_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "MEMORY_KAFKA_USERNAME": "mem_acme",
        "MEMORY_KAFKA_PASSWORD": "secret",
        "MEMORY_MAX_MEMORIES": "1000",
        "MEMORY_API_TOKENS": f"read:{'r' * 20}\nadmin:{'a' * 20},{'b' * 20}",
        "MEMORY_MIGRATE_ON_START": "true",
        "MEMORY_EMBEDDED_SHARED_BUFFERS": "1GB",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = Settings()
    assert s.schema_name == "mem_acme"
    assert s.vector_distance == "Dot"
    assert s.max_memories == 1000
    assert s.embedded_shared_buffers == "1GB"
    assert [t.role for t in s.tokens] == ["read", "admin", "admin"]
    assert s.kafka_producer_config() == {
        "bootstrap.servers": "kafka:9092",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "mem_acme",
        "sasl.password": "secret",
    }
    assert "secret" not in repr(s)
    assert "postgresql://" not in repr(s)


def test_defaults_derive_names_from_tenant():
    s = Settings(tenant="team-a")
    assert s.schema_name == "mem_team_a"
    assert s.collection_name == "mem_team_a"
    assert s.redis_key_prefix == "mem:team-a"


@pytest.mark.parametrize(
    "values",
    [
        {"tenant": "Bad_Name"},
        {"database_schema": "x; drop"},
        {"vector_backend": "qdrant"},  # needs a URL
        {"events_enabled": True},  # needs bootstrap + topic
        {"embedding_provider": "http"},  # needs a URL
        {"api_tokens": "read:short"},
        {"vector_distance": "Manhattan"},
        {"embedding_threads": -1},
        {"embedded_shared_buffers": "512"},  # PostgreSQL would read 8kB pages
        {"embedded_shared_buffers": "512 MB"},
        {"embedded_shared_buffers": "1TB"},
        {"embedded_shared_buffers": "512MB'; DROP"},
    ],
)
def test_invalid_settings_are_refused(values: dict[str, object]):
    with pytest.raises(ValidationError):
        Settings(**values)


def test_embedding_threads_reach_the_local_embedder(monkeypatch: pytest.MonkeyPatch):
    from memory_runtime.api.app import build_embedder

    monkeypatch.setenv("MEMORY_EMBEDDING_THREADS", "1")
    assert build_embedder(Settings()).threads == 1  # type: ignore[attr-defined]
    assert build_embedder(Settings(embedding_threads=2)).threads == 2  # type: ignore[attr-defined]


def test_token_parsing():
    tokens = parse_tokens(f" write:{TOKEN} , {TOKEN}x\n\nread:{TOKEN}y ")
    assert [(t.role, t.token) for t in tokens] == [
        ("write", TOKEN),
        ("admin", TOKEN + "x"),
        ("read", TOKEN + "y"),
    ]
    assert TOKEN not in repr(tokens)


def test_memory_in_validation():
    m = MemoryIn(coordinate="1, 2", payload={"text": "x"})
    assert m.coordinate == [1.0, 2.0]
    for bad in (
        {"coordinate": "1,nan"},
        {"importance": 1.5},
        {"memory_type": "procedural"},
        {"vector": []},
        {"vector": [1.0, float("inf")]},
        {"unknown": 1},
        {"expires_at": "2030-01-01T00:00:00"},  # no timezone
    ):
        with pytest.raises(ValidationError):
            MemoryIn(**bad)  # type: ignore[arg-type]


def test_search_validation():
    assert SearchIn(query="x").mode == "hybrid"
    for bad in (
        {},
        {"query": "  "},
        {"vector": [1.0], "mode": "keyword"},
        {"query": "x", "top_k": 0},
        {"query": "x", "top_k": 101},
        {"query": "x", "coordinate_min": "0,0"},
        {"query": "x", "coordinate_min": "0,0", "coordinate_max": "1"},
        {"query": "x", "coordinate_min": "2", "coordinate_max": "1"},
        {"query": "x", "recency_weight": 0.7, "importance_weight": 0.7},
        {"query": "x", "metadata": {"a.b": 1}},
    ):
        with pytest.raises(ValidationError):
            SearchIn(**bad)  # type: ignore[arg-type]


def test_patch_needs_a_change_and_link_aliases():
    with pytest.raises(ValidationError, match="nothing to change"):
        MemoryPatch(if_version=3)
    assert MemoryPatch(expires_at=None).model_fields_set == {"expires_at"}
    link = LinkIn.model_validate({"from": "1,2", "to": [3], "type": "causes"})
    assert link.from_ == "1,2"
    with pytest.raises(ValidationError):
        LinkIn.model_validate({"from": "1", "to": "2", "strength": 2})
    with pytest.raises(ValidationError):
        LinkIn.model_validate({"from": "1", "to": "2", "type": "has space"})


def test_derive_text_prefers_text_content_summary():
    assert derive_text({"text": "a", "content": "b"}) == "a"
    assert derive_text({"content": "b", "summary": "c"}) == "b"
    assert derive_text({"summary": "c"}) == "c"
    assert derive_text({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    assert derive_text({"text": "  ", "x": "é"}) == '{"text":"  ","x":"é"}'
