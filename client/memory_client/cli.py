"""`memctl`: the tenant memory API from a shell.

    memctl store "the user prefers tea" --tag prefs --user-id u42
    memctl search "what does the user drink?" --top-k 5
    memctl export -o acme.ndjson
    memctl --from-secret acme-memory-token -n tenants import acme.ndjson

Where the API is and which token to use, first found wins: the flags `--url`
and `--token`; `--from-secret NAME -n NS` (the tenant's token Secret and its
Service, read with your kubeconfig); the environment `MEMORY_URL`,
`MEMORY_TOKEN`; the config file (`--config`, `$MEMCTL_CONFIG`, else
`$XDG_CONFIG_HOME/memctl/config.toml`), top-level `url`/`token` or a
`[profiles.NAME]` table chosen with `--profile`.

Why one module of ~550 lines: one argparse tree, one handler per subcommand
and the shared ways to find the API (flags, Secret, environment, profiles);
each handler is a few lines over `MemoryClient`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import sys
import time
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from memory_client._core import ImportResult, ImportStatus
from memory_client._routes import key_text
from memory_client.client import ENV_TOKEN, ENV_URL, MemoryClient
from memory_client.errors import MemoryApiError, NotFound, ProblemError, TransportError
from memory_runtime.models import SearchOut

PROGRESS_FORMAT = (
    "{desc}: {percentage:3.0f}%|{bar:24}| {n_fmt}/{total_fmt} records "
    "[{elapsed}, {rate_fmt}, ETA {remaining}]"
)
PROGRESS_FORMAT_OPEN = "{desc}: {n_fmt} records [{elapsed}, {rate_fmt}]"


class UsageError(Exception):
    """A mistake on the command line or in the configuration (exit code 2)."""


# --- where and who -------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    url: str
    token: str


def config_path(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    if os.environ.get("MEMCTL_CONFIG"):
        return Path(os.environ["MEMCTL_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "memctl" / "config.toml"


def read_config(path: Path, profile: str | None) -> dict[str, str]:
    if not path.is_file():
        if profile:
            raise UsageError(f"profile {profile!r} asked for, but there is no config file {path}")
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: {exc}") from None
    if profile:
        section = data.get("profiles", {}).get(profile)
        if not isinstance(section, dict):
            raise UsageError(f"{path} has no [profiles.{profile}]")
        data = section
    return {k: str(v) for k, v in data.items() if k in ("url", "token")}


def from_secret(name: str, namespace: str, context: str | None) -> dict[str, str]:
    """URL and token from the tenant's token Secret and its Service (kubeconfig access)."""
    from kubernetes import client as k8s
    from kubernetes import config as kubeconfig
    from kubernetes.client.exceptions import ApiException

    from memory_runtime.tokens import ROLE_RANK, parse_tokens

    try:
        # KUBECONFIG read now: the client library fixes its default when first imported
        kubeconfig.load_kube_config(config_file=os.environ.get("KUBECONFIG"), context=context)
    except Exception as exc:  # no kubeconfig, unknown context
        raise UsageError(f"cannot load the kubeconfig: {exc}") from None
    core = k8s.CoreV1Api()
    try:
        secret = core.read_namespaced_secret(name, namespace)
    except ApiException as exc:
        raise UsageError(f"Secret {namespace}/{name}: {exc.reason}") from None
    data = secret.data or {}
    raw = data.get("token") or (next(iter(data.values())) if len(data) == 1 else None)
    if raw is None:
        raise UsageError(f"Secret {namespace}/{name} has no key 'token'")
    tokens = parse_tokens(base64.b64decode(raw).decode())
    if not tokens:
        raise UsageError(f"Secret {namespace}/{name} holds no token")
    best = max(tokens, key=lambda t: ROLE_RANK[t.role])  # export/import need admin
    found = {"token": best.token}
    refs = (secret.metadata.owner_references if secret.metadata else None) or []
    owners = [o.name for o in refs if o.kind == "MemoryNamespace"]
    if owners:
        service = f"{owners[0]}-memory"
        try:
            svc = core.read_namespaced_service(service, namespace)
        except ApiException as exc:
            raise UsageError(f"Service {namespace}/{service}: {exc.reason}") from None
        found["url"] = service_url(svc, namespace)
    return found


def service_url(svc: Any, namespace: str) -> str:
    """A load balancer's address if it has one, else the in-cluster DNS name."""
    port = next((p.port for p in svc.spec.ports or [] if p.name == "http"), 9595)
    ingress = (svc.status.load_balancer.ingress or []) if svc.status.load_balancer else []
    for entry in ingress:
        host = entry.ip or entry.hostname
        if host:
            return f"http://{host}:{port}"
    return f"http://{svc.metadata.name}.{namespace}.svc:{port}"


def resolve_target(args: argparse.Namespace) -> Target:
    sources: list[dict[str, str]] = [{"url": args.url or "", "token": args.token or ""}]
    if args.from_secret:
        sources.append(from_secret(args.from_secret, args.namespace, args.context))
    sources.append({"url": os.environ.get(ENV_URL, ""), "token": os.environ.get(ENV_TOKEN, "")})
    sources.append(read_config(config_path(args.config), args.profile))
    url = next((s["url"] for s in sources if s.get("url")), "")
    token = next((s["token"] for s in sources if s.get("token")), "")
    if not url:
        raise UsageError(f"no API URL: use --url, --from-secret, ${ENV_URL} or a config file")
    if not token:
        raise UsageError(f"no token: use --token, --from-secret, ${ENV_TOKEN} or a config file")
    return Target(url, token)


# --- output --------------------------------------------------------------------


def print_json(data: Any, out: IO[str]) -> None:
    out.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def hits_table(found: SearchOut, width: int) -> str:
    rows = [
        (
            str(rank),
            f"{hit.score:.3f}",
            str(hit.memory.id)[:8],
            key_text(hit.memory.coordinate),
            hit.memory.text.replace("\n", " "),
        )
        for rank, hit in enumerate(found.hits, start=1)
    ]
    header = ("#", "score", "id", "coordinate", "text")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    room = max(20, width - sum(widths) - 8)
    lines = []
    for row in [header, *rows]:
        text = row[4] if len(row[4]) <= room else row[4][: room - 1] + "…"
        lines.append(
            "  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + text
        )
    if found.degraded:
        lines.append(f"(degraded: answered without {', '.join(found.degraded)})")
    if not rows:
        lines.append("(no memories match)")
    return "\n".join(lines)


def progress(args: argparse.Namespace, desc: str, total: int | None, initial: int = 0) -> tqdm:
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=" records",
        file=sys.stderr,
        disable=not show,
        mininterval=0.5,
        dynamic_ncols=True,
        bar_format=PROGRESS_FORMAT if total else PROGRESS_FORMAT_OPEN,
    )


# --- commands ------------------------------------------------------------------


def _json_arg(value: str | None, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise UsageError(f"{what} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{what} must be a JSON object")
    return data


def _scope(args: argparse.Namespace) -> dict[str, Any]:
    fields = ("user_id", "agent_id", "session_id")
    return {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}


def cmd_store(api: MemoryClient, args: argparse.Namespace) -> int:
    payload = _json_arg(args.payload, "--payload")
    if args.text is not None:
        payload.setdefault("text", args.text)
    fields: dict[str, Any] = {"payload": payload, "memory_type": args.type, **_scope(args)}
    for name in ("coordinate", "importance"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.tag:
        fields["tags"] = args.tag
    if args.metadata:
        fields["metadata"] = _json_arg(args.metadata, "--metadata")
    memory = api.store(**fields)
    if args.json:
        print_json(memory.model_dump(mode="json"), sys.stdout)
    else:
        print(f"{memory.id}  {key_text(memory.coordinate)}  version {memory.version}")
    return 0


def cmd_get(api: MemoryClient, args: argparse.Namespace) -> int:
    memory = api.get(args.key, include_vector=args.vector)
    print_json(memory.model_dump(mode="json", exclude_none=not args.vector), sys.stdout)
    return 0


def cmd_search(api: MemoryClient, args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"query": args.query, "top_k": args.top_k, "mode": args.mode}
    request.update(_scope(args))
    if args.tag:
        request["tags"] = args.tag
    if args.type:
        request["memory_type"] = args.type
    if args.metadata:
        request["metadata"] = _json_arg(args.metadata, "--metadata")
    found = api.search(request)
    if args.json:
        print_json(found.model_dump(mode="json"), sys.stdout)
    else:
        print(hits_table(found, shutil.get_terminal_size().columns))
    return 0


def cmd_forget(api: MemoryClient, args: argparse.Namespace) -> int:
    scope = _scope(args)
    if args.key is not None and (scope or args.type):
        raise UsageError(
            "give a key or scope filters (--user-id/--agent-id/--session-id), not both"
        )
    if args.key is not None:
        memory = api.delete(args.key)
        print(f"forgot {memory.id}  {key_text(memory.coordinate)}")
        return 0
    if not scope:
        raise UsageError("give a key, or --user-id/--agent-id/--session-id for a bulk forget")
    print(f"forgot {api.forget(**scope, memory_type=args.type)} memories")
    return 0


def cmd_link(api: MemoryClient, args: argparse.Namespace) -> int:
    link = api.link(args.source, args.target, type=args.type, strength=args.strength)
    print(f"{link.from_} -[{link.type} {link.strength:g}]-> {link.to}")
    return 0


def cmd_stats(api: MemoryClient, args: argparse.Namespace) -> int:
    stats = api.stats()
    if args.json:
        print_json(stats.model_dump(mode="json"), sys.stdout)
        return 0
    by_type = ", ".join(f"{k} {v}" for k, v in sorted(stats.memories_by_type.items()))
    print(f"tenant        {stats.tenant} (schema {stats.schema_name})")
    print(f"memories      {stats.memories} ({by_type or 'none'})")
    print(f"links         {stats.links}")
    print(f"index pending {stats.index_pending} ({stats.vector_backend})")
    print(f"outbox lag    {stats.outbox_lag}")
    print(f"size          {stats.total_bytes / 1e6:.1f} MB")
    print(f"quota         {stats.max_memories or 'none'}")
    return 0


def cmd_export(api: MemoryClient, args: argparse.Namespace) -> int:
    stats = api.stats()
    total = stats.memories + stats.links  # the snapshot may differ a little: a guide
    with ExitStack() as stack:
        if args.output in (None, "-"):
            out: IO[bytes] = sys.stdout.buffer
        else:
            part = Path(args.output + ".part")  # a cut export never looks complete
            out = stack.enter_context(part.open("wb"))
        bar = stack.enter_context(progress(args, "export", total or None))
        count = 0
        for line in api.export():
            out.write(line + b"\n")
            count += 1
            bar.update(1)
        out.flush()
    if args.output not in (None, "-"):
        os.replace(args.output + ".part", args.output)
    print(f"exported {count} records", file=sys.stderr)
    return 0


def default_import_id(path: Path) -> str:
    """Same file, same id: running the command again resumes instead of starting over."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"memctl-{digest.hexdigest()[:24]}"


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def nonblank(lines: Iterable[bytes]) -> Iterator[bytes]:
    return (line.rstrip(b"\r\n") for line in lines if line.strip())


def resume_hint(exc: BaseException, import_id: str | None, from_stdin: bool) -> str:
    """What to do after a failed import: fix a refused line, or just run it again."""
    again = (
        f"pipe the same stream with --import-id {import_id}"
        if from_stdin
        else "run the same command"
    )
    if isinstance(exc, ProblemError) and exc.status < 500 and exc.status != 429:
        line = exc.problem.get("line")
        committed = exc.problem.get("committed_lines")
        if line is None:
            return "import refused"
        kept = f"; lines up to {committed} are committed" if committed else ""
        fix = f", then {again} to resume" if import_id else ""
        return f"import refused at line {line}{kept}: fix that line{fix}"
    if import_id:
        return f"import interrupted; {again} again to resume"
    return "import interrupted; running it again is harmless (import is idempotent)"


RESUMABLE_STATUSES = (429, 502, 503, 504)  # busy (e.g. the cut request still draining) or away
RESUME_ATTEMPTS = 5


def import_status(api: MemoryClient, import_id: str | None) -> ImportStatus | None:
    if not import_id:
        return None
    try:
        return api.import_status(import_id)
    except NotFound:
        return None  # a new import (or a server without resumable imports)


def done_by(before: ImportStatus | None, after: ImportStatus | None, last: ImportResult) -> str:
    """What this command imported: the server's totals for the import id after it minus
    before it (a resumed attempt's cut request answered nothing), else the last answer."""
    parts = []
    for kind in ("memories", "links"):
        counts = getattr(last, kind)
        if after is not None:
            old = getattr(before, kind) if before is not None else None
            counts = {
                f: getattr(getattr(after, kind), f) - (getattr(old, f) if old else 0)
                for f in ("created", "updated", "unchanged")
            }
        else:
            counts = counts.model_dump()
        parts.append(
            f"{kind} {counts['created']} created, {counts['updated']} updated, "
            f"{counts['unchanged']} unchanged"
        )
    return "; ".join(parts)


def cmd_import(api: MemoryClient, args: argparse.Namespace) -> int:
    from_stdin = args.input in (None, "-")
    path = None if from_stdin else Path(args.input)
    if path is not None and not path.is_file():
        raise UsageError(f"no such file: {path}")
    import_id = args.import_id or (default_import_id(path) if path else None)
    total = count_lines(path) if path else None
    result: ImportResult | None = None
    before: ImportStatus | None = None
    with progress(args, "import", total) as bar:
        for attempt in range(RESUME_ATTEMPTS + 1):
            status = import_status(api, import_id)
            if attempt == 0:
                before = status
            committed = status.lines if status is not None else 0
            if committed:
                print(f"resuming import {import_id} after line {committed}", file=sys.stderr)
            bar.n = committed
            bar.refresh()
            with ExitStack() as stack:
                source = sys.stdin.buffer if path is None else stack.enter_context(path.open("rb"))
                lines = nonblank(source)
                for _ in range(committed):  # what the server already holds is not sent again
                    next(lines, None)

                def counted(lines: Iterator[bytes] = lines) -> Iterator[bytes]:
                    for line in lines:
                        yield line
                        bar.update(1)

                try:
                    result = api.import_lines(
                        counted(), import_id=import_id, start_line=committed + 1
                    )
                    break
                except (MemoryApiError, KeyboardInterrupt) as exc:
                    # a file can be read again from where the server stands; a pipe cannot
                    cut = isinstance(exc, TransportError) or (
                        isinstance(exc, ProblemError) and exc.status in RESUMABLE_STATUSES
                    )
                    if path is None or not import_id or not cut or attempt == RESUME_ATTEMPTS:
                        print(resume_hint(exc, import_id, from_stdin), file=sys.stderr)
                        raise
                    wait = getattr(exc, "retry_after", None) or min(30.0, 2.0**attempt)
                    print(f"import cut ({exc}); resuming in {wait:g} s", file=sys.stderr)
                    time.sleep(wait)
    assert result is not None  # every attempt either answered or raised
    summary = done_by(before, import_status(api, import_id), result)
    print(f"imported: {summary}" + (f" (import id {import_id})" if import_id else ""))
    return 0


# --- the parser ----------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="memctl",
        description="Store, search and move the memories of one SomaFractalMemory tenant.",
        epilog="Endpoint and token: flags, then --from-secret, then $MEMORY_URL/$MEMORY_TOKEN, "
        "then the config file.",
    )
    p.add_argument("--url", help="the tenant API, e.g. http://127.0.0.1:9595")
    p.add_argument("--token", help="bearer token (prefer $MEMORY_TOKEN: flags show in ps)")
    p.add_argument(
        "--from-secret", metavar="NAME", help="read token and URL from this token Secret"
    )
    p.add_argument("-n", "--namespace", default="default", help="namespace of --from-secret")
    p.add_argument("--context", help="kubeconfig context for --from-secret")
    p.add_argument("--config", help="config file (default $XDG_CONFIG_HOME/memctl/config.toml)")
    p.add_argument("--profile", help="a [profiles.NAME] table of the config file")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", action="store_true", default=None, help="always show progress")
    bar.add_argument("--no-progress", dest="progress", action="store_false")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def scope(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--user-id")
        cmd.add_argument("--agent-id")
        cmd.add_argument("--session-id")

    s = sub.add_parser("store", help="store a memory")
    s.add_argument("text", nargs="?", help="the text to remember (payload.text)")
    s.add_argument("--payload", help="payload as a JSON object")
    s.add_argument("--coordinate", help='e.g. "1,2" (replaces a memory there)')
    s.add_argument("--type", choices=["episodic", "semantic"], default="episodic")
    s.add_argument("--tag", action="append", help="repeatable")
    s.add_argument("--importance", type=float)
    s.add_argument("--metadata", help="JSON object")
    s.add_argument("--json", action="store_true", help="print the stored memory as JSON")
    scope(s)
    s.set_defaults(run=cmd_store)

    g = sub.add_parser("get", help="print one memory as JSON")
    g.add_argument("key", help="id or coordinate")
    g.add_argument("--vector", action="store_true", help="include the vector")
    g.set_defaults(run=cmd_get)

    q = sub.add_parser("search", help="recall memories (table, or --json)")
    q.add_argument("query")
    q.add_argument("-k", "--top-k", type=int, default=10)
    q.add_argument("--mode", choices=["hybrid", "vector", "keyword"], default="hybrid")
    q.add_argument("--type", choices=["episodic", "semantic"])
    q.add_argument("--tag", action="append", help="repeatable; all must match")
    q.add_argument("--metadata", help="JSON object, equality per key")
    q.add_argument("--json", action="store_true")
    scope(q)
    q.set_defaults(run=cmd_search)

    f = sub.add_parser("forget", help="delete one memory, or in bulk by scope (admin)")
    f.add_argument("key", nargs="?", help="id or coordinate")
    f.add_argument("--type", choices=["episodic", "semantic"], help="narrows a bulk forget")
    scope(f)
    f.set_defaults(run=cmd_forget)

    ln = sub.add_parser("link", help="link two memories")
    ln.add_argument("source", help="id or coordinate")
    ln.add_argument("target", help="id or coordinate")
    ln.add_argument("--type", default="related")
    ln.add_argument("--strength", type=float, default=1.0)
    ln.set_defaults(run=cmd_link)

    e = sub.add_parser("export", help="export every memory and link as NDJSON (admin)")
    e.add_argument("-o", "--output", help="file (default: stdout)")
    e.set_defaults(run=cmd_export)

    i = sub.add_parser("import", help="import an export (admin); resumable, idempotent")
    i.add_argument("input", nargs="?", help="file (default: stdin)")
    i.add_argument("--import-id", help="resume key (default for a file: derived from its content)")
    i.set_defaults(run=cmd_import)

    st = sub.add_parser("stats", help="counts and sizes of the namespace")
    st.add_argument("--json", action="store_true")
    st.set_defaults(run=cmd_stats)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        target = resolve_target(args)
        with MemoryClient(target.url, target.token, timeout=args.timeout) as api:
            return int(args.run(api, args))
    except UsageError as exc:
        print(f"memctl: {exc}", file=sys.stderr)
        return 2
    except ProblemError as exc:
        print(f"memctl: {exc}", file=sys.stderr)
        for err in exc.errors[:5]:
            print(
                f"  {'.'.join(map(str, err.get('loc', [])))}: {err.get('message')}", file=sys.stderr
            )
        return 1
    except MemoryApiError as exc:
        print(f"memctl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
