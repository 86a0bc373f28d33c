"""Ingest benchmark: the runtime's write paths next to their raw parts and a peer, in one run.

Not a test. Starts an embedded PostgreSQL 18 + pgvector and, for every series,
a fresh tenant (its own schema, an empty HNSW index m=16 ef_construction=100),
then stores the same N 384-d vectors (noisy copies of all-MiniLM-L6-v2
sentence embeddings) and reports memories/s:

  raw_insert   binary COPY of (id, vector, ...) rows into a pgvector table with
               the runtime's HNSW index, batches of --batch in one transaction
               each: the index's own write rate
  http_batch   POST /memories/batch with client vectors, --batch per request
  http_batch_baseline
               the same requests to the runtime of --baseline COMMIT (an older
               commit's runtime/ served in a subprocess on the same PostgreSQL)
  http_import  POST /import of the same memories as one NDJSON stream (into an
               empty index: the bulk path, each chunk's vectors in the chunk's
               own transaction, HNSW graph built once at the end),
               timed until the answer, when every memory is searchable by
               vector and keyword (checked)
  chroma       the same vectors into a Chroma collection (HNSW, cosine), --batch
               per add, in-process (a peer; pip install -e '.[bench]', skipped if absent)

Text ingest, on --texts sentences (the server embeds them):
  raw_embed    the local embedder on the same texts, batches of 100
  http_text    POST /memories/batch with texts only, 100 per request (the server
               embeds them in slices, the index writes one while the next embeds)
  Both also report the CPU seconds they used (this process, which holds the
  client, the server and the embedder, plus the PostgreSQL server's processes)
  and the ceiling they give http_text / raw_embed: with every core busy,
  http_text can't take less wall time than its CPU seconds over the cores.
  --embed-threads sets the embedder's intra-op threads (0: the runtime's default).
  --db-cpus 1 runs PostgreSQL on CPU 1 and this process on the others, as in a
  deployment, where the database does not share the runtime's CPUs.

    .venv/bin/python bench/ingest.py                  # 10k vectors, 1000 texts
    .venv/bin/python bench/ingest.py --n 2000 --texts 300   # quick
"""

from __future__ import annotations

import argparse
import gc
import http.client
import io
import json
import os
import random
import secrets
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # memory_contract
sys.path.insert(0, str(REPO / "runtime"))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import psycopg  # noqa: E402
import uvicorn  # noqa: E402
from pgvector import Vector  # noqa: E402
from pgvector.psycopg import register_vector  # noqa: E402
from psycopg import sql  # noqa: E402
from runtime_search import free_port, machine_info, sentences  # noqa: E402

from memory_runtime import embedded  # noqa: E402
from memory_runtime.api import create_app  # noqa: E402
from memory_runtime.embeddings import build_embedder  # noqa: E402
from memory_runtime.settings import Settings  # noqa: E402
from memory_runtime.vectors.pgvector import PgVectorIndex  # noqa: E402


def tenant_settings(name: str, data_dir: Path, token: str) -> dict[str, Any]:
    return {
        "tenant": name,
        "data_dir": str(data_dir),
        "api_tokens": f"admin:{token}",
        "rate_limit_per_minute": 0,
        "max_body_bytes": 64 * 1024 * 1024,
        "embedding_provider": "local",
        "decay_enabled": False,
        "probe_timeout_seconds": 10,
    }


class Client:
    """The bench's one keep-alive HTTP connection to a tenant's API."""

    token: str
    conn: http.client.HTTPConnection

    def request(self, method: str, path: str, body: bytes | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        if body is not None:
            headers["Content-Type"] = (
                "application/x-ndjson" if path.startswith("/import") else "application/json"
            )
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: HTTP {response.status} {data[:300]!r}")
        return json.loads(data)


class Tenant(Client):
    """A fresh tenant schema with the API served over HTTP (real uvicorn)."""

    def __init__(self, name: str, data_dir: Path, embedder: Any) -> None:
        self.token = secrets.token_urlsafe(24)
        self.local = embedded.start(Settings(**tenant_settings(name, data_dir, self.token)))
        self.settings = self.local.settings
        self.app = create_app(self.settings, embedder=embedder)
        self.port = free_port()
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            # the client's one connection stays open while a raw batch runs (>5 s
            # under load: uvicorn's default would close it, a broken pipe)
            timeout_keep_alive=3600,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.05)
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=3600)

    def close(self) -> None:
        self.conn.close()
        self.server.should_exit = True
        self.thread.join(timeout=60)


class BaselineTenant(Client):
    """A fresh tenant served by the runtime of an older commit (`git archive` of
    its runtime/ into `where`), in a subprocess on the same embedded PostgreSQL."""

    def __init__(self, name: str, data_dir: Path, commit: str, where: Path) -> None:
        # the runtime and, since it exists, the contract it imports
        shared = subprocess.run(
            ["git", "-C", str(REPO), "cat-file", "-e", f"{commit}:memory_contract"],
            check=False,
        )
        paths = ["runtime", "memory_contract"] if shared.returncode == 0 else ["runtime"]
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", commit, *paths],
            check=True,
            capture_output=True,
        ).stdout
        where.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(where, filter="data")
        self.token = secrets.token_urlsafe(24)
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": f"{where / 'runtime'}{os.pathsep}{where}"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "bench" / "runtime_server.py"),
                str(self.port),
                json.dumps(tenant_settings(name, data_dir, self.token)),
            ],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        ready = self.process.stdout.readline()  # blocks until it serves or exits
        if not ready.startswith(f"ready {where}"):
            self.process.kill()
            raise RuntimeError(f"the runtime of {commit} did not start: {ready!r}")
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=3600)

    def close(self) -> None:
        self.conn.close()
        self.process.terminate()
        self.process.wait(timeout=60)


def memories(vectors: np.ndarray, texts: list[str], prefix: float) -> list[dict[str, Any]]:
    return [
        {
            "coordinate": [prefix, float(i)],
            "payload": {"text": texts[i % len(texts)]},
            "vector": [round(float(x), 6) for x in vec],
            "tags": [f"t{i % 10}"],
        }
        for i, vec in enumerate(vectors)
    ]


def cpu_seconds(postmaster_pid: int) -> float:
    """CPU time used so far by this process and the PostgreSQL server's processes
    (the postmaster, its live children and the ones it reaped)."""
    total = sum(os.times()[:2])
    postmaster = psutil.Process(postmaster_pid)
    for proc in [postmaster, *postmaster.children()]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1)


class RawInsert:
    """Rows into the runtime's pgvector table definition (ensure()), nothing else:
    binary COPY, one transaction per batch (the fastest way a client puts rows in;
    INSERTs via executemany measured ~25% slower, bench/README.md)."""

    def __init__(self, dsn: str, schema: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))

        class OneConn:  # PgVectorIndex wants a pool; one connection will do for ensure()
            def connection(self) -> Any:
                return psycopg.connect(dsn)

        PgVectorIndex(
            OneConn(),
            schema=schema,
            extensions_schema="extensions",
            dimensions=384,
            distance="Cosine",
        ).ensure()
        self.statement = sql.SQL(
            "COPY {}.memory_vectors (memory_id, embedding, memory_type, tags, created_at,"
            " coordinate) FROM STDIN (FORMAT BINARY)"
        ).format(sql.Identifier(schema))
        self.conn = psycopg.connect(dsn)
        self.conn.execute("SET search_path = extensions")
        register_vector(self.conn)
        self.conn.commit()
        self.done = 0

    def batch(self, vectors: np.ndarray) -> float:
        """Seconds to store these rows (one transaction)."""
        types = ["uuid", "vector", "text", "text[]", "timestamptz", "float8[]"]
        start = time.perf_counter()
        now = datetime.now(UTC)
        with self.conn.transaction(), self.conn.cursor() as cur, cur.copy(self.statement) as copy:
            copy.set_types(types)
            for v in vectors:
                n = self.done
                self.done += 1
                copy.write_row(
                    (uuid.uuid4(), Vector(v), "episodic", [f"t{n % 10}"], now, [0.0, float(n)])
                )
        return time.perf_counter() - start

    def close(self) -> None:
        self.conn.close()


def chroma(vectors: np.ndarray, texts: list[str], batch: int, path: Path) -> dict[str, Any]:
    try:
        import chromadb
    except ImportError:
        return {"skipped": "chromadb is not installed (pip install -e '.[bench]')"}
    client = chromadb.PersistentClient(path=str(path))
    collection = client.create_collection(
        "bench", metadata={"hnsw:space": "cosine", "hnsw:M": 16, "hnsw:construction_ef": 100}
    )
    start = time.perf_counter()
    for i in range(0, len(vectors), batch):
        part = vectors[i : i + batch]
        collection.add(
            ids=[str(i + j) for j in range(len(part))],
            embeddings=part.tolist(),
            documents=[texts[(i + j) % len(texts)] for j in range(len(part))],
            metadatas=[{"tag": f"t{(i + j) % 10}"} for j in range(len(part))],
        )
    seconds = time.perf_counter() - start
    return {
        "memories_per_second": rate(len(vectors), seconds),
        "version": chromadb.__version__,
    }


def pin_database(data_dir: Path, cpus: set[int]) -> None:
    """The embedded server and its processes on `cpus` (backends it forks later
    inherit the postmaster's)."""
    postmaster = psutil.Process(int((data_dir / "postmaster.pid").read_text().split()[0]))
    for proc in [postmaster, *postmaster.children()]:
        proc.cpu_affinity(sorted(cpus))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="memories per vector series")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--texts", type=int, default=1000, help="memories for text ingest")
    parser.add_argument("--base-sentences", type=int, default=1000)
    parser.add_argument("--embed-threads", type=int, default=0, help="0: the runtime's default")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ingest.json")
    parser.add_argument(
        "--baseline",
        metavar="COMMIT",
        help="also run http_batch against the runtime of this commit, interleaved with the"
        " others (e.g. cd026d6: main when issue 15 was filed, bench/README.md)",
    )
    parser.add_argument(
        "--db-cpus",
        type=lambda v: {int(c) for c in v.split(",")},
        default=None,
        metavar="N[,N...]",
        help="run PostgreSQL on these CPUs and this process (client, runtime, embedder)"
        " on the others, as a deployment gives the database its own CPUs",
    )
    args = parser.parse_args()
    if args.db_cpus:
        os.sched_setaffinity(0, os.sched_getaffinity(0) - args.db_cpus)  # threads inherit it

    embedder = build_embedder("local", "all-MiniLM-L6-v2", "", 384, threads=args.embed_threads)
    embedder.embed(["warm up"])
    rng = np.random.default_rng(42)
    base_texts = sentences(args.base_sentences, random.Random(42))
    base = np.array(embedder.embed(base_texts), dtype=np.float32)
    picks = base[np.arange(args.n) % len(base)]
    vectors = picks + rng.normal(scale=0.023, size=picks.shape).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    results: dict[str, Any] = {
        "machine": machine_info(),
        "n": args.n,
        "batch": args.batch,
        "embed_threads": embedder.threads,  # type: ignore[attr-defined]
        "db_cpus": sorted(args.db_cpus) if args.db_cpus else None,
    }

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        data_dir = Path(tmp) / "pg"
        tenants: list[Tenant] = []
        try:
            batch_tenant = Tenant("batch", data_dir, embedder)
            tenants.append(batch_tenant)
            if args.db_cpus:
                pin_database(data_dir, args.db_cpus)
            raw = RawInsert(batch_tenant.local.server.get_uri(), "rawbench")
            docs = memories(vectors, base_texts, 0.0)
            # encoded before the clock: a client encodes on its own CPU, not on
            # the server's GIL (here they share one process)
            bodies = [
                json.dumps({"memories": docs[i : i + args.batch]}).encode()
                for i in range(0, args.n, args.batch)
            ]
            baseline = None
            if args.baseline:
                baseline = BaselineTenant("old", data_dir, args.baseline, Path(tmp) / "old")
                tenants.append(baseline)
            # The client's data (every request body and memory) lives in the
            # server's process here: out of the collector's full passes, as the
            # runtime's own startup objects are in `serve` (which freezes them),
            # or each full collection would walk it, a pause of ~100 ms inside
            # some request (bench/README.md, session 6)
            gc.freeze()
            # interleaved batch by batch, so machine noise hits every series alike
            raw_seconds = batch_seconds = baseline_seconds = 0.0
            for i, body in zip(range(0, args.n, args.batch), bodies, strict=True):
                raw_seconds += raw.batch(vectors[i : i + args.batch])
                start = time.perf_counter()
                batch_tenant.request("POST", "/memories/batch", body)
                batch_seconds += time.perf_counter() - start
                if baseline is not None:
                    start = time.perf_counter()
                    baseline.request("POST", "/memories/batch", body)
                    baseline_seconds += time.perf_counter() - start
            raw.close()
            results["raw_insert"] = {"memories_per_second": rate(args.n, raw_seconds)}
            results["http_batch"] = {"memories_per_second": rate(args.n, batch_seconds)}
            print(f"raw_insert: {results['raw_insert']}", file=sys.stderr)
            print(f"http_batch: {results['http_batch']}", file=sys.stderr)
            if baseline is not None:
                results["http_batch_baseline"] = {
                    "memories_per_second": rate(args.n, baseline_seconds),
                    "commit": args.baseline,
                }
                print(f"http_batch_baseline: {results['http_batch_baseline']}", file=sys.stderr)

            import_tenant = Tenant("imp", data_dir, embedder)
            tenants.append(import_tenant)
            now = "2026-01-01T00:00:00Z"
            stream = b"".join(
                json.dumps(
                    {
                        "kind": "memory",
                        "record": {
                            **doc,
                            "id": str(uuid.uuid4()),
                            "created_at": now,
                            "updated_at": now,
                            "last_accessed_at": now,
                        },
                    }
                ).encode()
                + b"\n"
                for doc in docs
            )
            start = time.perf_counter()
            answer = import_tenant.request("POST", "/import", stream)
            seconds = time.perf_counter() - start
            stats = import_tenant.request("GET", "/stats")
            probe = import_tenant.request(
                "POST",
                "/memories/search",
                json.dumps({"vector": docs[7]["vector"], "mode": "vector", "top_k": 1}).encode(),
            )
            keyword = import_tenant.request(
                "POST",
                "/memories/search",
                json.dumps({"query": base_texts[3], "mode": "keyword", "top_k": 1}).encode(),
            )
            searchable = (
                answer["memories"]["created"] == args.n
                and stats["index_pending"] == 0
                and stats["vector_count"] == args.n
                and probe["hits"][0]["memory"]["coordinate"] == docs[7]["coordinate"]
                and bool(keyword["hits"])
            )
            results["http_import"] = {
                "memories_per_second": rate(args.n, seconds),
                "all_searchable": searchable,
            }
            print(f"http_import: {results['http_import']}", file=sys.stderr)

            texts = sentences(args.texts, random.Random(11))
            text_tenant = Tenant("txt", data_dir, embedder)
            tenants.append(text_tenant)
            text_bodies = [
                json.dumps(
                    {
                        "memories": [
                            {"coordinate": [1.0, float(i + j)], "payload": {"text": t}}
                            for j, t in enumerate(texts[i : i + 100])
                        ]
                    }
                ).encode()
                for i in range(0, len(texts), 100)
            ]
            postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
            embed_seconds = text_seconds = embed_cpu = text_cpu = 0.0
            for i, body in zip(range(0, len(texts), 100), text_bodies, strict=True):
                cpu, start = cpu_seconds(postmaster), time.perf_counter()
                embedder.embed(texts[i : i + 100])
                embed_seconds += time.perf_counter() - start
                embed_cpu += cpu_seconds(postmaster) - cpu
                cpu, start = cpu_seconds(postmaster), time.perf_counter()
                text_tenant.request("POST", "/memories/batch", body)
                text_seconds += time.perf_counter() - start
                text_cpu += cpu_seconds(postmaster) - cpu
            cores = len(os.sched_getaffinity(0) | (args.db_cpus or set()))
            results["raw_embed"] = {
                "texts_per_second": rate(len(texts), embed_seconds),
                "cpu_seconds": round(embed_cpu, 2),
            }
            results["http_text"] = {
                "memories_per_second": rate(len(texts), text_seconds),
                "cpu_seconds": round(text_cpu, 2),
                "ceiling_vs_raw_embed": round(min(1.0, cores * embed_seconds / text_cpu), 2),
            }
            print(f"text: {results['raw_embed']} {results['http_text']}", file=sys.stderr)

            results["chroma"] = chroma(vectors, base_texts, args.batch, Path(tmp) / "chroma")
            print(f"chroma: {results['chroma']}", file=sys.stderr)
        finally:
            for tenant in tenants:
                tenant.close()
            if tenants:
                tenants[0].local.server.cleanup()

    raw = results["raw_insert"]["memories_per_second"]
    batch = results["http_batch"]["memories_per_second"]
    slower = min(raw, results["raw_embed"]["texts_per_second"])
    results["ratios"] = {
        "http_batch / raw_insert": round(batch / raw, 2),
        "http_import / http_batch": round(results["http_import"]["memories_per_second"] / batch, 2),
        "http_text / min(raw_embed, raw_insert)": round(
            results["http_text"]["memories_per_second"] / slower, 2
        ),
        "http_text / raw_embed, CPU ceiling": results["http_text"]["ceiling_vs_raw_embed"],
    }
    if "http_batch_baseline" in results:
        old = results["http_batch_baseline"]["memories_per_second"]
        results["ratios"]["http_import / http_batch_baseline"] = round(
            results["http_import"]["memories_per_second"] / old, 2
        )
    # the host is shared: the load around the run says how much the rates mean
    results["machine"]["load_average_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["ratios"], indent=2))
    for name in (
        "raw_insert",
        "http_batch",
        "http_batch_baseline",
        "http_import",
        "raw_embed",
        "http_text",
        "chroma",
    ):
        if name in results:
            print(f"{name:12} {results[name]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
