"""`python -m memory_operator`: validate the configuration, then run Kopf.

Exit code 2 with a one-line message when the configuration is invalid, so a
misconfigured Deployment fails at start (CrashLoopBackOff with the reason in
the log) instead of inside every reconcile.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import socket
import sys
import threading
import uuid
from collections.abc import Sequence

import kopf

from memory_operator import handlers, metrics
from memory_operator.adapters import kube as kube_login
from memory_operator.adapters.kube import KubeApi
from memory_operator.config import ConfigError, OperatorConfig, load_config
from memory_operator.manifests import render_peerings
from memory_operator.ports import KubePort
from memory_operator.reconcile import Backends, Reconciler


def build_backends(config: OperatorConfig) -> Backends:
    """Admin adapters for every configured backend (imported only when configured)."""
    from memory_operator.adapters.postgres import PostgresAdmin

    backends = Backends(
        database=PostgresAdmin(
            config.postgres.admin_dsn, max_connections=config.backend_concurrency
        )
    )
    if config.redis is not None:
        from memory_operator.adapters.redis import RedisAdmin

        backends.cache = RedisAdmin(config.redis.admin_url)
    if config.kafka is not None:
        from memory_operator.adapters.kafka import KafkaAdmin

        backends.events = KafkaAdmin(config.kafka.admin_client_config())
    if config.qdrant is not None:
        from memory_operator.adapters.qdrant import QdrantAdmin

        backends.vectors = QdrantAdmin.connect(config.qdrant.url, config.qdrant.api_key or None)
    return backends


def build_registry(
    config: OperatorConfig,
    kube: KubePort,
    backends: Backends,
    login: kube_login.Login = kube_login.login,
    peer: tuple[str, int] | None = None,
) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    handlers.setup(registry, Reconciler(config, kube, backends), config, login=login, peer=peer)
    return registry


def run_operator(
    config: OperatorConfig,
    kube: KubePort,
    backends: Backends,
    *,
    stop_flag: threading.Event | None = None,
    ready_flag: threading.Event | None = None,
    liveness: bool = True,
    login: kube_login.Login = kube_login.login,
) -> None:
    """Run Kopf until stopped; also used by tests and the benchmark in a thread."""
    peer: tuple[str, int] | None = None
    if config.peering_name:
        # Several replicas: the live one with the highest priority reconciles, the
        # others pause until its peering record expires (config.peering_lifetime).
        # The identity is chosen here, not by Kopf: the resync loop reads this
        # process's record in the peering object by it (resync.PeeringGate).
        for obj in render_peerings(config.peering_name, config.watch_namespaces):
            kube.create(obj)  # None when it exists already
        priority = config.peering_priority or random.randint(1, 2**31 - 1)
        identity = f"{os.environ.get('POD_ID') or socket.gethostname()}/{uuid.uuid4().hex[:8]}"
        logging.getLogger("memory_operator").info(
            "peering as %s with priority %d", identity, priority
        )
        peer = (identity, priority)
    registry = build_registry(config, kube, backends, login, peer)
    scope: dict[str, object] = (
        {"namespaces": config.watch_namespaces}
        if config.watch_namespaces
        else {"clusterwide": True}
    )
    peering: dict[str, object] = {"standalone": True}  # one replica: no peering objects
    if peer is not None:
        peering = {"peering_name": config.peering_name, "identity": peer[0], "priority": peer[1]}
    asyncio.run(
        kopf.operator(
            registry=registry,
            liveness_endpoint=(
                f"http://0.0.0.0:{config.liveness_port}/healthz" if liveness else None
            ),
            stop_flag=stop_flag,
            ready_flag=ready_flag,
            **scope,  # type: ignore[arg-type]
            **peering,  # type: ignore[arg-type]
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="memory_operator", description=__doc__)
    parser.add_argument(
        "--kubeconfig",
        help="kubeconfig path (default: the service account, then $KUBECONFIG or ~/.kube/config)",
    )
    parser.add_argument("--check-config", action="store_true", help="validate and exit")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    try:
        config = load_config()
    except ConfigError as err:
        print(f"memory_operator: invalid configuration: {err}", file=sys.stderr)
        return 2
    if args.check_config:
        print("configuration OK")
        return 0
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    logging.getLogger("memory_operator").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    login: kube_login.Login = kube_login.login  # the service account, else a kubeconfig
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # what Kopf's kubeconfig login reads
        login = kube_login.kubeconfig_login
    kube = KubeApi(login)
    metrics.serve(config.metrics_port)
    run_operator(config, kube, build_backends(config), login=login)
    return 0


if __name__ == "__main__":
    sys.exit(main())
