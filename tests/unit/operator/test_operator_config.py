"""config.py: environment + mounted files, validated with messages naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from memory_operator.config import ConfigError, load_config

PG = {"SOMAFRACTAL_POSTGRES_ADMIN_DSN": "postgresql://admin:pw@db.example:6543/memory"}


def test_minimal_config_defaults() -> None:
    cfg = load_config(PG)
    assert (cfg.postgres.host, cfg.postgres.port, cfg.postgres.database) == (
        "db.example",
        6543,
        "memory",
    )
    assert cfg.name_prefix == "mem"
    assert cfg.redis is None
    assert cfg.kafka is None
    assert cfg.qdrant is None
    assert cfg.resync_seconds == 300
    assert cfg.watch_namespaces == ()


def test_postgres_is_required() -> None:
    with pytest.raises(ConfigError, match="SOMAFRACTAL_POSTGRES_ADMIN_DSN"):
        load_config({})


def test_secret_from_mounted_file(tmp_path: Path) -> None:
    f = tmp_path / "dsn"
    f.write_text("postgresql://a:b@h/d\n")
    cfg = load_config({"SOMAFRACTAL_POSTGRES_ADMIN_DSN_FILE": str(f)})
    assert cfg.postgres.admin_dsn == "postgresql://a:b@h/d"


def test_unreadable_file_names_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SOMAFRACTAL_POSTGRES_ADMIN_DSN_FILE"):
        load_config({"SOMAFRACTAL_POSTGRES_ADMIN_DSN_FILE": str(tmp_path / "missing")})


def test_runtime_endpoints_can_differ_from_admin_ones() -> None:
    cfg = load_config(
        {
            **PG,
            "SOMAFRACTAL_POSTGRES_RUNTIME_HOST": "pg.db.svc",
            "SOMAFRACTAL_REDIS_ADMIN_URL": "redis://default:x@127.0.0.1:7000/0",
            "SOMAFRACTAL_REDIS_RUNTIME_HOST": "redis.db.svc",
            "SOMAFRACTAL_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
            "SOMAFRACTAL_KAFKA_RUNTIME_BOOTSTRAP": "kafka.db.svc:9092",
            "SOMAFRACTAL_QDRANT_URL": "http://127.0.0.1:6333",
            "SOMAFRACTAL_WATCH_NAMESPACES": "a, b,,",
        }
    )
    assert cfg.postgres.host == "pg.db.svc"
    assert cfg.redis is not None
    assert (cfg.redis.host, cfg.redis.port) == ("redis.db.svc", 7000)
    assert cfg.kafka is not None
    assert cfg.kafka.runtime_bootstrap == "kafka.db.svc:9092"
    assert cfg.kafka.admin_client_config() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "PLAINTEXT",
    }
    assert cfg.watch_namespaces == ("a", "b")


def test_sasl_needs_scram_and_admin_credentials() -> None:
    env = {
        **PG,
        "SOMAFRACTAL_KAFKA_BOOTSTRAP": "k:9093",
        "SOMAFRACTAL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    }
    with pytest.raises(ConfigError, match="SCRAM"):
        load_config(env)
    env["SOMAFRACTAL_KAFKA_SASL_MECHANISM"] = "SCRAM-SHA-512"
    with pytest.raises(ConfigError, match="KAFKA_ADMIN_USERNAME"):
        load_config(env)
    env["SOMAFRACTAL_KAFKA_ADMIN_USERNAME"] = "admin"
    env["SOMAFRACTAL_KAFKA_ADMIN_PASSWORD"] = "pw"
    kafka = load_config(env).kafka
    assert kafka is not None
    assert kafka.sasl
    assert kafka.admin_client_config()["sasl.mechanism"] == "SCRAM-SHA-512"


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"SOMAFRACTAL_NAME_PREFIX": "Mem"}, "NAME_PREFIX"),
        ({"SOMAFRACTAL_RESYNC_SECONDS": "soon"}, "RESYNC_SECONDS"),
        ({"SOMAFRACTAL_RESYNC_SECONDS": "1"}, "between"),
        ({"SOMAFRACTAL_IMAGE_PULL_POLICY": "Sometimes"}, "IMAGE_PULL_POLICY"),
        ({"SOMAFRACTAL_REDIS_ADMIN_URL": "http://x"}, "REDIS_ADMIN_URL"),
        ({"SOMAFRACTAL_QDRANT_URL": "qdrant:6333"}, "QDRANT_URL"),
        ({"SOMAFRACTAL_POSTGRES_ADMIN_DSN": "mysql://x"}, "POSTGRES_ADMIN_DSN"),
    ],
)
def test_bad_values_name_the_variable(extra: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_config({**PG, **extra})
