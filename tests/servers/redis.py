"""Redis for tests: Debian's redis-server 7.x (scripts/install-redis.sh) as a subprocess.

Redis 7.0 is the oldest supported server (docs/OPERATOR.md): the runtime's rate
limiter and job locks are Redis functions, which 6.x lacks. `make provision`
installs the package; its own service is never used, every test server runs
here on a free loopback port with its own config.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from memory_contract.redis_functions import LIBRARY_CODE
from tests.servers._process import ServerStartError, free_port, log_dir, spawn, wait_until


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int
    password: str
    log_path: Path

    @property
    def url(self) -> str:
        """Admin URL (the `default` user, which has every permission)."""
        return self.url_for("default", self.password)

    def url_for(self, user: str, password: str, db: int = 0) -> str:
        return f"redis://{user}:{password}@{self.host}:{self.port}/{db}"


MIN_VERSION = (7, 0)


def _redis_server_binary() -> Path:
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    binary = Path(found)
    if not binary.is_file():
        raise ServerStartError("redis: no redis-server; run scripts/install-redis.sh")
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"v=(\d+)\.(\d+)", out.stdout)
    if match is None or (int(match[1]), int(match[2])) < MIN_VERSION:
        raise ServerStartError(
            f"redis: {binary} is not Redis >= 7.0 ({out.stdout.strip()!r});"
            " run scripts/install-redis.sh"
        )
    return binary


@contextmanager
def run_redis(*, startup_timeout: float = 30.0) -> Iterator[RedisServer]:
    binary = _redis_server_binary()
    logs = log_dir("redis")
    log_path = logs / "redis.log"
    log_path.write_text("")
    password = secrets.token_hex(16)
    workdir = Path(tempfile.mkdtemp(prefix="somafractal-redis-"))
    port = free_port()
    # The password goes through a config file, not argv, so it is not in `ps` output.
    conf = workdir / "redis.conf"
    conf.write_text(
        "\n".join(
            [
                "bind 127.0.0.1",
                f"port {port}",
                "protected-mode yes",
                "daemonize no",
                f"dir {workdir}",
                'save ""',  # no RDB snapshots
                "appendonly no",
                f"requirepass {password}",
                "loglevel notice",
                "",
            ]
        )
    )
    conf.chmod(0o600)
    t_start = time.monotonic()
    proc = spawn("redis", [binary, conf], log_path, cwd=workdir)
    server = RedisServer(host="127.0.0.1", port=port, password=password, log_path=log_path)

    def ready() -> bool:
        client = redis.Redis.from_url(server.url, socket_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()

    try:
        wait_until(proc, ready, timeout=startup_timeout, what=f"PING on 127.0.0.1:{port}")
        (logs / "startup-seconds.txt").write_text(f"{time.monotonic() - t_start:.2f}\n")
        yield server
    finally:
        proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def load_runtime_functions(url: str) -> None:
    """Load the runtime's Redis function library, as the operator does on every server
    it manages (adapters.redis.RedisAdmin.ensure_user); for runtime tests without it."""
    client = redis.Redis.from_url(url)
    try:
        client.function_load(LIBRARY_CODE, replace=True)
    finally:
        client.close()
