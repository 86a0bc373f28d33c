"""`python -m memory_operator` validates its configuration at start: OK exits 0
with --check-config, a bad variable exits 2 naming it (what a CrashLoopBackOff
log would show)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers.postgres import PostgresServer

pytestmark = pytest.mark.integration


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [sys.executable, "-m", "memory_operator", "--check-config"],
        env={**base, **env}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_valid_config_from_mounted_secret_files(postgres: PostgresServer, tmp_path: Path) -> None:
    dsn = tmp_path / "postgres-admin-dsn"
    dsn.write_text(postgres.admin_dsn + "\n")
    out = _run({"SOMAFRACTAL_POSTGRES_ADMIN_DSN_FILE": str(dsn), "SOMAFRACTAL_NAME_PREFIX": "mem"})
    assert out.returncode == 0, out.stderr
    assert "configuration OK" in out.stdout


PG = {"SOMAFRACTAL_POSTGRES_ADMIN_DSN": "postgresql://a@h/d"}
SASL = {"SOMAFRACTAL_KAFKA_BOOTSTRAP": "k:9092", "SOMAFRACTAL_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({}, "SOMAFRACTAL_POSTGRES_ADMIN_DSN"),
        ({**PG, "SOMAFRACTAL_RESYNC_SECONDS": "x"}, "SOMAFRACTAL_RESYNC_SECONDS"),
        ({**PG, **SASL}, "SOMAFRACTAL_KAFKA_SASL_MECHANISM"),
    ],
)
def test_invalid_config_exits_2_naming_the_variable(env: dict[str, str], fragment: str) -> None:
    out = _run(env)
    assert out.returncode == 2
    assert fragment in out.stderr
