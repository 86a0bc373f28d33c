"""Apache Kafka 4.1 (KRaft, single node) for tests, from the jars scripts/fetch-kafka.sh caches.

One JVM is broker and controller. Two client listeners:
- PLAINTEXT: principal User:ANONYMOUS, a super user (the "admin endpoint" most tests use);
- SASL_PLAINTEXT with SCRAM-SHA-512, where StandardAuthorizer enforces ACLs
  (`allow.everyone.if.no.acl.found=false`): a tenant principal sees only what it is granted.
The `admin` SCRAM credential is written into the metadata log at format time.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from tests.servers._process import (
    REPO_ROOT,
    ServerStartError,
    cache_lock,
    free_port,
    log_dir,
    port_open,
    spawn,
    wait_until,
)

FETCH_SCRIPT = REPO_ROOT / "scripts" / "fetch-kafka.sh"
JVM_OPTS = ["-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true"]


@dataclass(frozen=True)
class KafkaServer:
    bootstrap: str
    sasl_bootstrap: str
    admin_username: str
    admin_password: str
    log_path: Path

    @property
    def admin_config(self) -> dict[str, Any]:
        """librdkafka settings for a super user on the PLAINTEXT listener."""
        return {"bootstrap.servers": self.bootstrap}

    def sasl_config(self, username: str, password: str) -> dict[str, Any]:
        """librdkafka settings for a SCRAM-SHA-512 principal on the SASL listener."""
        return {
            "bootstrap.servers": self.sasl_bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": username,
            "sasl.password": password,
        }


def kafka_lib_dir() -> Path:
    """Run scripts/fetch-kafka.sh (a no-op when cached) and return the broker classpath dir."""
    with cache_lock("fetch-kafka"):
        out = subprocess.run(
            [str(FETCH_SCRIPT)], capture_output=True, text=True, check=False, timeout=1800
        )
    if out.returncode != 0:
        raise ServerStartError(
            f"kafka: {FETCH_SCRIPT} failed ({out.returncode}):\n{out.stderr[-3000:]}"
        )
    lib = Path(out.stdout.strip().splitlines()[-1])
    if not any(lib.glob("kafka_2.13-*.jar")):
        raise ServerStartError(f"kafka: no kafka_2.13 jar in {lib}")
    return lib


def _cluster_id() -> str:
    # Kafka's Uuid text form: 22 chars of URL-safe base64; a leading '-' breaks CLI parsing.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _server_properties(data_dir: Path, port: int, sasl_port: int, controller_port: int) -> str:
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "listeners": (
            f"PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port},"
            f"CONTROLLER://127.0.0.1:{controller_port}"
        ),
        "advertised.listeners": (
            f"PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}"
        ),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": (
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"
        ),
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        # PLAINTEXT and CONTROLLER connections are User:ANONYMOUS; they must pass the authorizer.
        "super.users": "User:ANONYMOUS;User:admin",
        "allow.everyone.if.no.acl.found": "false",
        "log.dirs": str(data_dir),
        # Topics exist only when created explicitly, as in a managed cluster.
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


@contextmanager
def run_kafka(*, startup_timeout: float = 120.0) -> Iterator[KafkaServer]:
    java = shutil.which("java")
    if java is None:
        raise ServerStartError("kafka: `java` (JDK 17+) is not on PATH")
    lib = kafka_lib_dir()
    logs = log_dir("kafka")
    log_path = logs / "kafka.log"
    log_path.write_text("")
    workdir = Path(tempfile.mkdtemp(prefix="somafractal-kafka-"))
    admin_password = secrets.token_hex(16)
    port, sasl_port, controller_port = free_port(), free_port(), free_port()
    while len({port, sasl_port, controller_port}) < 3:
        sasl_port, controller_port = free_port(), free_port()
    props = workdir / "server.properties"
    props.write_text(_server_properties(workdir / "data", port, sasl_port, controller_port))
    classpath = f"{lib}/*"
    t_start = time.monotonic()
    try:
        fmt = subprocess.run(
            [
                java,
                *JVM_OPTS,
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                _cluster_id(),
                "-c",
                str(props),
                "--add-scram",
                f"SCRAM-SHA-512=[name=admin,password={admin_password}]",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        (logs / "format.log").write_text(fmt.stdout + fmt.stderr)
        if fmt.returncode != 0:
            raise ServerStartError(
                f"kafka: storage format failed ({fmt.returncode}); log: {logs / 'format.log'}\n"
                f"{fmt.stderr[-3000:]}"
            )
        proc = spawn(
            "kafka",
            [
                java,
                *JVM_OPTS,
                f"-Dkafka.logs.dir={logs}",
                "-cp",
                classpath,
                "kafka.Kafka",
                props,
            ],
            log_path,
            cwd=workdir,
        )
        server = KafkaServer(
            bootstrap=f"127.0.0.1:{port}",
            sasl_bootstrap=f"127.0.0.1:{sasl_port}",
            admin_username="admin",
            admin_password=admin_password,
            log_path=log_path,
        )

        def ready() -> bool:
            # Ports first: librdkafka logs every refused connection to stderr.
            if not (port_open("127.0.0.1", port) and port_open("127.0.0.1", sasl_port)):
                return False
            # A metadata answer naming our broker on both listeners, as the admin user on SASL.
            for conf in (server.admin_config, server.sasl_config("admin", admin_password)):
                md = AdminClient(conf).list_topics(timeout=5)
                if not md.brokers:
                    return False
            return True

        try:
            wait_until(
                proc,
                ready,
                timeout=startup_timeout,
                what=f"a metadata response on {server.bootstrap} and {server.sasl_bootstrap}",
                interval=0.5,
            )
            (logs / "startup-seconds.txt").write_text(f"{time.monotonic() - t_start:.2f}\n")
            yield server
        finally:
            proc.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
