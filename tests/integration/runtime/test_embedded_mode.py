"""`python -m memory_runtime serve --embedded`: local PostgreSQL, printed token, reuse."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from memory_runtime import embedded
from memory_runtime.settings import Settings
from tests.servers._process import free_port, stop_popen

pytestmark = pytest.mark.integration


def start(
    data_dir: Path, port: int, metrics_port: int, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    env = {
        **os.environ,
        "MEMORY_DATA_DIR": str(data_dir),
        "MEMORY_PORT": str(port),
        "MEMORY_METRICS_PORT": str(metrics_port),
        "MEMORY_DATABASE_URL": "",
        "MEMORY_API_TOKENS": "",
        "HF_HUB_OFFLINE": "1",
    }
    handle = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "memory_runtime", "serve", "--embedded"],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"runtime exited early:\n{log.read_text()}")
        text = log.read_text()
        match = re.search(r"admin token: (\S+)", text)
        if match and "Application startup complete" in text:
            return proc, match.group(1)
        time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"runtime did not start:\n{log.read_text()}")


def test_embedded_mode_serves_prints_token_and_reuses_data(tmp_path: Path, embedded_dir: Path):
    data_dir = embedded_dir / "data" / "pg"
    port, metrics_port = free_port(), free_port()
    log = tmp_path / "runtime.log"
    proc, token = start(data_dir, port, metrics_port, log)
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {token}"}
    try:
        out = log.read_text()
        assert f"curl -s -X POST {base}/memories" in out  # a working example is printed
        assert (data_dir / "memory-api-token").read_text().strip() == token
        assert oct((data_dir / "memory-api-token").stat().st_mode & 0o777) == "0o600"
        r = httpx.post(
            f"{base}/memories",
            headers=auth,
            json={"coordinate": [1, 2], "payload": {"text": "the sky is blue"}},
            timeout=30,
        )
        assert r.status_code == 201, r.text
        assert r.json()["has_vector"] is True  # the bundled local model embedded it
        hits = httpx.get(
            f"{base}/memories/search", params={"query": "sky"}, headers=auth, timeout=30
        )
        assert hits.json()["hits"][0]["memory"]["coordinate"] == [1.0, 2.0]
        assert httpx.get(f"{base}/memories/1,2", timeout=10).status_code == 401
        ready = httpx.get(f"{base}/readyz", timeout=10).json()
        assert ready["status"] == "ready"
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert (
            'memory_http_requests_total{method="POST",route="/memories",status="201"} 1.0'
            in metrics
        )
    finally:
        stop_popen(proc)
    assert proc.returncode == 0
    assert not (data_dir / "postmaster.pid").exists()  # the local server stopped with us

    proc, second_token = start(data_dir, port, metrics_port, tmp_path / "second.log")
    try:
        assert second_token == token  # persisted, not regenerated
        again = httpx.get(f"{base}/memories/1,2", headers=auth, timeout=10)
        assert again.status_code == 200
        assert again.json()["text"] == "the sky is blue"
    finally:
        stop_popen(proc)


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def shared_buffers(local: embedded.Embedded) -> str:
    with psycopg.connect(local.server.get_uri()) as conn:
        row = conn.execute("SHOW shared_buffers").fetchone()
    assert row is not None
    return str(row[0])


def test_embedded_server_runs_with_the_configured_shared_buffers(
    embedded_dir: Path, caplog: pytest.LogCaptureFixture
):
    data_dir = embedded_dir / "pg"
    settings = Settings(tenant="buffers", data_dir=str(data_dir), embedded_shared_buffers="144MB")
    local = embedded.start(settings)
    try:
        assert shared_buffers(local) == "144MB"  # not initdb's 128MB: restarted once
        pid = postmaster_pid(data_dir)
        local = embedded.start(settings)
        assert postmaster_pid(data_dir) == pid  # running with the right value: kept
    finally:
        local.server.cleanup()
    assert not (data_dir / "postmaster.pid").exists()

    # the environment wins at the next start, without ALTER SYSTEM or a restart
    local = embedded.start(settings.model_copy(update={"embedded_shared_buffers": "160MB"}))
    try:
        assert shared_buffers(local) == "160MB"
        conf = (data_dir / "postgresql.conf").read_text().splitlines()
        assert conf.count(embedded.INCLUDE_SERVER_CONF) == 1
        # the tenant's role and schema are still there
        with psycopg.connect(local.settings.database_url) as conn:
            row = conn.execute(
                "SELECT schema_owner FROM information_schema.schemata WHERE schema_name = %s",
                (local.settings.database_schema,),
            ).fetchone()
        assert row == (local.settings.database_schema,)
        with psycopg.connect(local.server.get_uri(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET shared_buffers = '176MB'")
    finally:
        local.server.cleanup()

    # ALTER SYSTEM outranks our file: started as it says, and the log tells why
    caplog.set_level(logging.WARNING, logger="memory_runtime.embedded")
    local = embedded.start(settings)
    try:
        assert shared_buffers(local) == "176MB"
        assert "does not run with shared_buffers=144MB" in caplog.text
    finally:
        local.server.cleanup()
