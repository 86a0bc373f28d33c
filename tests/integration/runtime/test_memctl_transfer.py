"""memctl export -> import of a whole tenant into another, and a resumed import.

Two tenants (two schemas, two login roles) each behind its own runtime served
over HTTP; memctl runs as a real process, as a person would run it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from memory_client import MemoryClient
from memory_runtime.api import create_app
from tests.integration.runtime.conftest import (
    ADMIN_TOKEN,
    HashingTestEmbedder,
    Tenant,
    drop_tenant,
    make_tenant,
    serve,
    tenant_settings,
)
from tests.servers.postgres import PostgresServer, fresh_database

pytestmark = pytest.mark.integration

MEMORIES = 10_000
LINKS = 1_500


def served(tenant: Tenant) -> Any:
    settings = tenant_settings(tenant, embedding_provider="local")
    return serve(create_app(settings, embedder=HashingTestEmbedder()))


@pytest.fixture(scope="module")
def database(postgres: PostgresServer) -> Iterator[str]:
    """A database of this module's own: the source tenant is filled once for both tests."""
    with fresh_database(postgres) as dsn:
        yield dsn


@pytest.fixture(scope="module")
def source(database: str) -> Iterator[str]:
    """Tenant `acme` holding 10,000 memories of every shape and 1,500 links."""
    acme = make_tenant(database, "acme")
    with served(acme) as url, MemoryClient(url, ADMIN_TOKEN) as api:
        later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
        for start in range(0, MEMORIES, 1000):
            api.store_many(
                {
                    "coordinate": [i // 100, i % 100, 0.5],
                    "memory_type": "semantic" if i % 3 == 0 else "episodic",
                    "payload": {"text": f"memory {i} about topic {i % 37}", "n": i},
                    "importance": (i % 10) / 10,
                    "metadata": {"source": f"s{i % 5}", "rank": i},
                    "tags": [f"t{i % 7}", "bulk"] if i % 2 else [],
                    "user_id": f"u{i % 11}",
                    "agent_id": "agent-1" if i % 4 == 0 else None,
                    "session_id": f"sess-{i % 13}" if i % 5 == 0 else None,
                    "expires_at": later if i % 97 == 0 else None,
                }
                for i in range(start, start + 1000)
            )
        for i in range(0, 300):  # a second version, and accesses, on some of them
            api.update([i // 100, i % 100, 0.5], importance=0.99, tags=["changed"])
            api.get([i // 100, i % 100, 0.5])
        for n in range(LINKS):
            a, b = n, (n * 7 + 1) % MEMORIES
            api.link(
                [a // 100, a % 100, 0.5],
                [b // 100, b % 100, 0.5],
                type=("next", "related", "cites")[n % 3],
                strength=round(0.1 + (n % 9) / 10, 2),
                metadata={"n": n} if n % 2 else {},
            )
        yield url
    drop_tenant(acme)


@pytest.fixture
def target(database: str) -> Iterator[tuple[Tenant, str]]:
    """A new empty tenant `beta` (dropped after each test)."""
    beta = make_tenant(database, "beta")
    try:
        with served(beta) as url:
            yield beta, url
    finally:
        drop_tenant(beta)


def memctl(url: str, *argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEMORY_URL": url, "MEMORY_TOKEN": ADMIN_TOKEN}
    return subprocess.run(
        [sys.executable, "-m", "memory_client.cli", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        **kwargs,
    )


def snapshot(url: str) -> list[str]:
    """Every memory and link of a tenant, every field, in a canonical order."""
    with MemoryClient(url, ADMIN_TOKEN) as api:
        return sorted(json.dumps(json.loads(line), sort_keys=True) for line in api.export())


def test_export_import_between_tenants_ends_identical(
    source: str, target: tuple[Tenant, str], tmp_path: Path
) -> None:
    dump = tmp_path / "acme.ndjson"
    exported = memctl(source, "--progress", "export", "-o", str(dump))
    assert exported.returncode == 0, exported.stderr
    assert f"exported {MEMORIES + LINKS} records" in exported.stderr
    assert not Path(f"{dump}.part").exists()
    assert "records/s" in exported.stderr

    _, url = target
    imported = memctl(url, "--progress", "import", str(dump))
    assert imported.returncode == 0, imported.stderr
    assert f"memories {MEMORIES} created" in imported.stdout
    assert f"links {LINKS} created" in imported.stdout
    # the progress bar: records done of the total, a rate, an ETA
    assert f"{MEMORIES + LINKS}/{MEMORIES + LINKS} records" in imported.stderr
    assert "records/s" in imported.stderr
    assert "ETA " in imported.stderr

    before, after = snapshot(source), snapshot(url)
    assert len(before) == MEMORIES + LINKS
    assert after == before  # every field of every memory and link, vectors included

    again = memctl(url, "import", str(dump))  # the same file again: nothing new
    assert again.returncode == 0, again.stderr
    assert "memories 0 created" in again.stdout
    assert snapshot(url) == before


def test_interrupted_import_resumes_to_the_same_end_state(
    source: str, target: tuple[Tenant, str], tmp_path: Path
) -> None:
    dump = tmp_path / "acme.ndjson"
    assert memctl(source, "export", "-o", str(dump)).returncode == 0
    lines = dump.read_bytes().splitlines(keepends=True)
    _, url = target

    # the first attempt reads from a pipe that stops after 6,000 lines: once the
    # server has committed some of them, the process is killed mid-stream
    env = {**os.environ, "MEMORY_URL": url, "MEMORY_TOKEN": ADMIN_TOKEN}
    first = subprocess.Popen(
        [sys.executable, "-m", "memory_client.cli", "import", "-", "--import-id", "move-1"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert first.stdin is not None
    first.stdin.write(b"".join(lines[:6000]))
    first.stdin.flush()
    with MemoryClient(url, ADMIN_TOKEN) as api:
        deadline = time.monotonic() + 120
        committed = 0
        while committed < 2000:
            assert time.monotonic() < deadline, "the server committed nothing of the stream"
            time.sleep(0.2)
            try:
                committed = api.import_status("move-1").lines
            except Exception:
                committed = 0
        first.kill()
        first.wait()
        first.stdin.close()
        assert not api.import_status("move-1").finished

    resumed = memctl(url, "--progress", "import", str(dump), "--import-id", "move-1")
    assert resumed.returncode == 0, resumed.stderr
    # the server may still have committed what reached it before the kill: the
    # resume starts after whatever it holds, somewhere in the 6,000 lines sent
    started = re.search(r"resuming import move-1 after line (\d+)", resumed.stderr)
    assert started is not None, resumed.stderr
    assert 2000 <= int(started.group(1)) <= 6000
    assert f"{len(lines)}/{len(lines)} records" in resumed.stderr
    assert "records/s" in resumed.stderr
    assert snapshot(url) == snapshot(source)  # nothing lost, nothing twice
