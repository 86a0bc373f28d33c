"""`python -m memory_runtime serve [--embedded] | migrate`."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING

from pydantic import ValidationError

if TYPE_CHECKING:
    from memory_runtime.settings import Settings


def _settings() -> Settings:
    from memory_runtime.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        # one line per problem, no values: they may be secrets
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "settings"
            print(f"invalid configuration: {where}: {err['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


def _migrate() -> int:
    from memory_runtime.storage.migrate import MigrationError, migrate

    settings = _settings()
    if not settings.database_url:
        print("MEMORY_DATABASE_URL is empty; nothing to migrate", file=sys.stderr)
        return 2
    try:
        applied = migrate(
            settings.database_url, settings.schema_name, settings.database_extensions_schema
        )
    except MigrationError as exc:
        print(f"migration failed: {exc}", file=sys.stderr)
        return 1
    print(f"applied {applied}" if applied else "schema is up to date")
    return 0


def _serve(embedded_flag: bool) -> int:
    import uvicorn
    from prometheus_client import start_http_server

    from memory_runtime.api import create_app
    from memory_runtime.api.state import state_of

    settings = _settings()
    if embedded_flag or not settings.database_url:
        from memory_runtime import embedded

        local = embedded.start(settings)
        settings = local.settings
        print(embedded.banner(local), flush=True)
    if not settings.tokens:
        print("MEMORY_API_TOKENS is empty: every request would be refused", file=sys.stderr)
        return 2
    app = create_app(settings, start_jobs=True)
    if settings.metrics_port:
        try:
            start_http_server(
                settings.metrics_port, addr=settings.host, registry=state_of(app).metrics.registry
            )
        except OSError as exc:
            print(f"metrics port {settings.metrics_port} unavailable: {exc}", file=sys.stderr)
            return 1
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the
    # previous handler: make that a normal exit so atexit hooks run (embedded
    # mode stops its PostgreSQL there) and the exit code is 0.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    # The process's long-lived objects (modules, the app, its schemas) out of
    # the collector's full passes, which would otherwise walk them all: a pause
    # in whichever request triggers one (bench/README.md, ingest, session 6)
    gc.freeze()
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
    return 0


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="memory-runtime", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the tenant memory API")
    serve.add_argument(
        "--embedded",
        action="store_true",
        help="run a local PostgreSQL (also the default when MEMORY_DATABASE_URL is empty)",
    )
    commands.add_parser("migrate", help="apply schema migrations and exit")
    args = parser.parse_args(argv)
    if args.command == "migrate":
        return _migrate()
    return _serve(args.embedded)


if __name__ == "__main__":
    sys.exit(main())
