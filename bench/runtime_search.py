"""Runtime search benchmark: HTTP recall latency next to its raw parts, in one run.

Not a test. Starts an embedded PostgreSQL 18 + pgvector, the tenant API
(`memory_runtime.api.create_app`, real uvicorn, a keep-alive HTTP/1.1 client), loads
memories at each size, and for the same queries, interleaved, measures:

  raw_embed      the local all-MiniLM-L6-v2 embedding one query (in-process)
  raw_pgvector   PgVectorIndex.search for the neighbours recall asks the index for
                 (RECALL_POOL + VECTOR_POOL_MARGIN = 150)
  raw_keyword    the keyword side: the query's stems and IDFs (Tx.keyword_query) and the
                 exact BM25 top RECALL_POOL = 100 (Tx.keyword_search)
  http_vector    POST /memories/search with a client vector, mode=vector
  http_text      POST /memories/search with query text, mode=vector (includes embedding)
  http_hybrid    POST /memories/search with query text, mode=hybrid (embedding + full text)
  http_text_repeat  http_text again with the same text right after (its vector comes
                 from the server's query-vector LRU; every other series runs with
                 that cache emptied, so they all pay for the embedding)

Host gauge, at the start and the end: one query embedded on one thread pinned
to a CPU, alone and with a busy loop on another CPU (`host_gauge`), so runs on a
shared guest can be compared by how fast the host was.

Ingest: client-vector memories through POST /memories/batch at every size, and
text-only memories (the server embeds them) on a smaller subset: embedding 100k
texts takes many minutes on 2 cores, so that rate is measured on --text-subset.

    .venv/bin/python bench/runtime_search.py                 # 10k and 100k
    .venv/bin/python bench/runtime_search.py --sizes 2000 --queries 50   # quick
    # 100k WordNet synsets loaded by one streamed POST /import (bench/README.md)
    .venv/bin/python bench/runtime_search.py --sizes 100000 --text-subset 0 \
        --base-sentences 1000 --wordnet /tmp/wordnet/usr/share/wordnet --load import
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # memory_contract
sys.path.insert(0, str(REPO / "runtime"))  # also works without `pip install -e .`
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
import psycopg  # noqa: E402
import uvicorn  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg_pool import ConnectionPool  # noqa: E402
from wordnet import read_wordnet  # noqa: E402

from memory_runtime import embedded  # noqa: E402
from memory_runtime.api import create_app  # noqa: E402
from memory_runtime.embeddings import build_embedder  # noqa: E402
from memory_runtime.embeddings.local import LocalEmbedder  # noqa: E402
from memory_runtime.ports import VectorFilter  # noqa: E402
from memory_runtime.service import RECALL_POOL, VECTOR_POOL_MARGIN  # noqa: E402
from memory_runtime.settings import Settings  # noqa: E402
from memory_runtime.storage.postgres import PostgresStore  # noqa: E402
from memory_runtime.vectors import build_vector_index  # noqa: E402

SUBJECTS = (
    "the cat", "a kitten", "my neighbour", "the engineer", "our team", "the customer",
    "a child", "the doctor", "the dog", "the pilot", "a student", "the chef",
    "the robot", "the farmer", "a musician", "the agent",
)  # fmt: skip
VERBS = (
    "repaired", "painted", "cooked", "forgot", "discussed", "ordered", "cleaned",
    "photographed", "sold", "planned", "described", "visited", "tested", "moved",
)  # fmt: skip
OBJECTS = (
    "the old bicycle", "a blue umbrella", "the quarterly report", "fresh tomato soup",
    "the kubernetes cluster", "a wooden chair", "the birthday cake", "the garden fence",
    "a broken laptop", "the train schedule", "the new database", "a leather sofa",
    "the invoice", "a paper kite", "the vegetable garden", "the concert tickets",
)  # fmt: skip
PLACES = (
    "in paris", "at the office", "on the beach", "near the station", "at home",
    "in the mountains", "during the storm", "after lunch", "on monday", "at midnight",
)  # fmt: skip


def sentences(n: int, rng: random.Random) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        s = " ".join(rng.choice(x) for x in (SUBJECTS, VERBS, OBJECTS, PLACES))
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    arr = np.array(samples_ms)
    return {
        "count": len(samples_ms),
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p95_ms": round(float(np.percentile(arr, 95)), 2),
        "p99_ms": round(float(np.percentile(arr, 99)), 2),
        "mean_ms": round(float(arr.mean()), 2),
    }


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": mem_gib,
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "load_average_start": list(os.getloadavg()),
    }


class ApiClient:
    """One keep-alive HTTP/1.1 connection (stdlib http.client) to the API.

    The timings are meant to be the API's: httpx added ~1.5 ms of its own Python
    per request here (URL merging, cookies, h11 events), on the same GIL as the
    in-process server. The client still encodes the request and reads the whole
    response inside the timing; it decodes JSON after it.
    """

    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        self.conn.request("POST", path, json.dumps(body).encode(), self.headers)
        response = self.conn.getresponse()
        return response.status, response.read()

    def post_stream(self, path: str, lines: Iterator[bytes]) -> tuple[int, bytes]:
        """An NDJSON body sent as it is generated (chunked), never held whole."""
        headers = {**self.headers, "Content-Type": "application/x-ndjson"}
        self.conn.request("POST", path, lines, headers, encode_chunked=True)
        response = self.conn.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self.conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.rng = random.Random(42)
        self.nrng = np.random.default_rng(42)
        token = secrets.token_urlsafe(24)
        base_settings = Settings(
            tenant="bench",
            data_dir=str(tmp / "pg"),
            api_tokens=f"admin:{token}",
            rate_limit_per_minute=0,
            max_body_bytes=64 * 1024 * 1024,
            embedding_provider="local",
            decay_enabled=False,
            # the shared 2-vCPU host answers a probe in over a second at times:
            # a benchmark must not trip the database circuit over that
            probe_timeout_seconds=15.0,
        )
        self.local = embedded.start(base_settings)
        self.settings = self.local.settings
        # the server's own embedder (MEMORY_EMBEDDING_THREADS applies), also timed raw
        self.embedder = build_embedder(
            "local", "all-MiniLM-L6-v2", "", 384, threads=self.settings.embedding_threads
        )
        self.embedder.embed(["warm up"])  # load the model before anything is timed
        self.app = create_app(self.settings, embedder=self.embedder)
        port = free_port()
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            # the one client connection idles through loads and VACUUM: uvicorn's
            # 5 s default closed it under the client (BrokenPipeError)
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
        self.http = ApiClient(port, token)
        # The baseline reads the same table the API writes, through its own pool.
        self.pool = ConnectionPool(self.settings.database_url, min_size=1, max_size=2, open=True)
        self.index = build_vector_index(
            "postgres",
            pool=self.pool,
            schema=self.settings.schema_name,
            extensions_schema=self.settings.database_extensions_schema,
            dimensions=384,
            distance="Cosine",
            qdrant_url=None,
            qdrant_api_key=None,
            collection="",
        )
        self.store = PostgresStore(
            self.settings.database_url,
            self.settings.schema_name,
            self.settings.database_extensions_schema,
            max_size=2,
        )
        self.store.open()
        # client-vector memories stored so far (a kept --data-dir may hold some:
        # a rerun on it measures again without loading again)
        with self.pool.connection() as conn:
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*) FROM {}.memories WHERE cardinality(coordinate) = 1"
                ).format(sql.Identifier(self.settings.schema_name))
            ).fetchone()
        self.loaded = int(row[0]) if row else 0

    def keyword(self, query: str) -> None:
        with self.store.reads() as tx:  # as recall runs it: no BEGIN/COMMIT
            keyword = tx.keyword_query(query)
            if keyword is None or not tx.keyword_search(keyword, VectorFilter(), RECALL_POOL):
                raise RuntimeError(f"no keyword candidates for {query!r}")

    def versions(self) -> dict[str, str]:
        with self.pool.connection() as conn:
            pg = conn.execute("SHOW server_version").fetchone()
            vec = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            row = vec.fetchone()
            buffers = conn.execute("SHOW shared_buffers").fetchone()
        return {
            "postgresql": str(pg[0]) if pg else "?",
            "pgvector": str(row[0]) if row else "?",
            "shared_buffers": str(buffers[0]) if buffers else "?",
            "embedding_threads": str(self.embedder.threads),  # type: ignore[attr-defined]
        }

    def close(self) -> None:
        self.http.close()
        self.pool.close()
        self.store.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.local.server.cleanup()  # stops the PostgreSQL server this run started

    def post_batch(self, memories: list[dict[str, Any]]) -> None:
        status, data = self.http.post("/memories/batch", {"memories": memories})
        if status != 200:
            raise RuntimeError(f"batch store failed: HTTP {status} {data[:300]!r}")

    # -- corpus ------------------------------------------------------------------
    def build_corpus(self) -> dict[str, Any]:
        """The memories' texts, the vectors they are stored with, and the queries.

        Generated (default): --base-sentences sentences of a 56-word vocabulary,
        memory i holds sentence i mod that number. WordNet (--wordnet): memory i
        holds a synset of its own ("its words: its definition", drawn by a fixed
        seed, up to the largest size), queries are usage examples of loaded
        synsets. Either way the first --base-sentences texts are embedded, and
        memory i is stored with a noisy copy (cosine ~0.9) of vector i mod that
        number: embedding 100k texts takes longer than the run on 2 shared cores.
        """
        total = max(int(s) for s in self.args.sizes.split(","))
        if self.args.wordnet:
            synsets = read_wordnet(self.args.wordnet)
            if total > len(synsets):
                raise SystemExit(f"WordNet has {len(synsets)} synsets, fewer than {total}")
            drawn = random.Random(13).sample(synsets, total)
            self.texts = [s.text for s in drawn]
            smallest = min(int(s) for s in self.args.sizes.split(","))
            examples = [e for s in drawn[:smallest] for e in s.examples]
            self.queries = random.Random(7).sample(examples, self.args.queries)
            self.base_texts = self.texts[: self.args.base_sentences]
        else:
            self.base_texts = sentences(self.args.base_sentences, self.rng)
            self.texts = self.base_texts
            queries = sentences(self.args.base_sentences + self.args.queries, random.Random(7))
            base = set(self.base_texts)
            self.queries = [q for q in queries if q not in base][: self.args.queries]
        start = time.perf_counter()
        self.base_vectors = np.array(self.embedder.embed(self.base_texts), dtype=np.float32)
        seconds = time.perf_counter() - start
        self.query_vectors = np.array(self.embedder.embed(self.queries), dtype=np.float32)
        words = [len(t.split()) for t in self.texts[:total]]
        return {
            "source": "wordnet" if self.args.wordnet else "generated",
            "distinct_texts": len(set(self.texts)),
            "words_per_memory_mean": round(float(np.mean(words)), 1),
            "vocabulary": len({w.lower() for t in self.texts[:total] for w in t.split()}),
            "embedded_texts": len(self.base_texts),
            "texts_per_second": round(len(self.base_texts) / seconds, 1),
            "batch_size": 32,
        }

    def text_ingest(self) -> dict[str, Any]:
        """Text-only memories: the server embeds them (the local-model ingest rate)."""
        n = self.args.text_subset
        texts = sentences(n, random.Random(11))
        batch = 100
        start = time.perf_counter()
        for i in range(0, n, batch):
            self.post_batch(
                [
                    {"coordinate": [-1.0, float(i + j)], "payload": {"text": t}}
                    for j, t in enumerate(texts[i : i + batch])
                ]
            )
        seconds = time.perf_counter() - start
        return {
            "memories": n,
            "batch": batch,
            "memories_per_second": round(n / seconds, 1) if n else None,
        }

    def memory(self, i: int, vec: np.ndarray) -> dict[str, Any]:
        return {
            "coordinate": [float(i)],
            "payload": {"text": self.texts[i % len(self.texts)]},
            "vector": [round(float(x), 6) for x in vec],
            "tags": [f"t{i % 10}"],
        }

    def vectors(self, start: int, n: int) -> tuple[list[int], np.ndarray]:
        ids = np.arange(start, start + n)
        base = self.base_vectors[ids % len(self.base_vectors)]
        noisy = base + self.nrng.normal(scale=0.023, size=base.shape).astype(np.float32)
        noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
        return ids.tolist(), noisy

    def load_to(self, target: int) -> dict[str, Any]:
        """Client-vector memories up to `target`: batches of --batch through
        POST /memories/batch, or (--load import) one streamed POST /import, the
        bulk path (into an empty index the HNSW graph is built once at the end)."""
        todo = target - self.loaded
        start = time.perf_counter()
        if self.args.load == "import":
            self.import_to(target)
        while self.loaded < target:
            n = min(self.args.batch, target - self.loaded)
            ids, noisy = self.vectors(self.loaded, n)
            self.post_batch([self.memory(i, v) for i, v in zip(ids, noisy, strict=True)])
            self.loaded += n
        seconds = time.perf_counter() - start
        self.settle()
        return {
            "memories": todo,
            "route": self.args.load,
            "batch": self.args.batch if self.args.load == "batch" else None,
            "memories_per_second": round(todo / seconds, 1) if todo else None,
        }

    def import_to(self, target: int) -> None:
        now = "2026-01-01T00:00:00Z"

        def lines() -> Iterator[bytes]:
            for first in range(self.loaded, target, 1000):
                ids, noisy = self.vectors(first, min(1000, target - first))
                yield b"".join(
                    json.dumps(
                        {
                            "kind": "memory",
                            "record": {
                                **self.memory(i, v),
                                "id": str(uuid.UUID(int=i + 1)),
                                "created_at": now,
                                "updated_at": now,
                                "last_accessed_at": now,
                            },
                        }
                    ).encode()
                    + b"\n"
                    for i, v in zip(ids, noisy, strict=True)
                )

        status, data = self.http.post_stream("/import", lines())
        answer = json.loads(data) if status == 200 else {}
        created = answer.get("memories", {}).get("created")
        if status != 200 or created != target - self.loaded:
            raise RuntimeError(f"import failed: HTTP {status} {data[:300]!r}")
        self.loaded = target

    def settle(self) -> None:
        """Bring the tables to the state autovacuum and the checkpointer leave them in
        within minutes of a bulk load, so the measurement is of steady state, not of
        the maintenance the load set off: fresh planner statistics (the keyword
        plan depends on how common the words are; stats taken at 10k mislead it at
        100k), the visibility map and hint bits set (VACUUM), and the load's dirty
        pages written out (CHECKPOINT), not flushed while queries are timed."""
        with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
            schema = sql.Identifier(self.settings.schema_name)
            conn.execute(
                sql.SQL("VACUUM (ANALYZE) {s}.memories, {s}.memory_vectors").format(s=schema)
            )
        with psycopg.connect(self.local.server.get_uri(), autocommit=True) as conn:
            conn.execute("CHECKPOINT")

    def measure(self) -> dict[str, Any]:
        series = (
            "raw_embed",
            "raw_pgvector",
            "raw_keyword",
            "http_vector",
            "http_text",
            "http_hybrid",
        )
        samples: dict[str, list[float]] = {k: [] for k in (*series, "http_text_repeat")}
        cache = self.app.state.runtime.service.query_vectors
        answers: list[tuple[int, bytes]] = []  # checked after each timing, not inside it

        def search(body: dict[str, Any]) -> None:
            answers.append(self.http.post("/memories/search", body))

        def check_answers() -> None:
            for status, data in answers:
                answer = json.loads(data) if status == 200 else {}
                if status != 200 or not answer["hits"] or answer["degraded"]:
                    raise RuntimeError(f"search failed: HTTP {status} {data[:300]!r}")
            answers.clear()

        warmup = min(20, len(self.queries))
        for i, (q, qv) in enumerate(zip(self.queries, self.query_vectors, strict=True)):
            vec = qv.tolist()
            # Interleaved, so machine noise hits every series alike.
            parts = {
                "raw_embed": lambda q=q: self.embedder.embed([q]),
                "raw_pgvector": lambda vec=vec: self.index.search(
                    vec, RECALL_POOL + VECTOR_POOL_MARGIN, VectorFilter()
                ),
                "raw_keyword": lambda q=q: self.keyword(q),
                "http_vector": lambda vec=vec: search({"vector": vec, "mode": "vector"}),
                "http_text": lambda q=q: search({"query": q, "mode": "vector"}),
                "http_hybrid": lambda q=q: search({"query": q}),
            }
            for name, fn in parts.items():
                cache.clear()  # every series pays for its own query embedding
                ms = timed(fn)
                check_answers()
                if i >= warmup:
                    samples[name].append(ms)
            # the same text again: the server's query-vector LRU has it now
            ms = timed(lambda q=q: search({"query": q, "mode": "vector"}))
            check_answers()
            if i >= warmup:
                samples["http_text_repeat"].append(ms)
        return {name: percentiles(v) for name, v in samples.items()}


def host_gauge(rounds: int = 300) -> dict[str, Any] | None:
    """How fast the host is right now: one query embedded on one thread pinned to
    one CPU, alone and then with a busy loop pinned to a second CPU.

    A fixed unit of CPU work, taken at the start and the end of a run, so runs
    on a shared guest can be compared: here the same work took 2.7-4.7 ms p50
    within hours (turbo, the host's other guests). The busy-loop half shows
    whether the two vCPUs slow each other (shared core or caches). None with
    fewer than 2 CPUs.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    mine = os.sched_getaffinity(0)
    if len(mine) < 2:
        return None
    first, second, *_ = sorted(mine)
    embedder = LocalEmbedder(threads=1)  # runs on the calling thread
    embedder.embed(["warm up"])
    query = ["how do I reset my password for the billing portal"]

    def sample() -> dict[str, float]:
        times = [timed(lambda: embedder.embed(query)) for _ in range(rounds)]
        return percentiles(times[rounds // 10 :])  # the first tenth warms caches up

    os.sched_setaffinity(0, {first})  # this thread only (Linux: 0 is the caller)
    try:
        alone = sample()
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            os.sched_setaffinity(busy.pid, {second})
            time.sleep(0.2)
            beside_busy = sample()
        finally:
            busy.kill()
            busy.wait()
    finally:
        os.sched_setaffinity(0, mine)
    return {
        "embed_one_thread_alone": alone,
        "embed_one_thread_other_cpu_busy": beside_busy,
        "slowdown_p50": round(beside_busy["p50_ms"] / alone["p50_ms"], 2),
    }


def hybrid_ratio(latency: dict[str, Any]) -> float:
    """http_hybrid p95 over the sum of its raw parts' p95 (embedding, vector
    query, keyword query), all from the same run."""
    parts = sum(latency[k]["p95_ms"] for k in ("raw_embed", "raw_pgvector", "raw_keyword"))
    return round(latency["http_hybrid"]["p95_ms"] / parts, 2)


def table(results: dict[str, Any]) -> str:
    lines = [
        f"{'size':>8} {'series':<17} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'n':>5}",
    ]
    for size, data in results["sizes"].items():
        for name, p in data["latency"].items():
            lines.append(
                f"{size:>8} {name:<17} {p['p50_ms']:>8.2f} {p['p95_ms']:>8.2f} "
                f"{p['p99_ms']:>8.2f} {p['count']:>5}"
            )
    lines.append("")
    for size, data in results["sizes"].items():
        lines.append(
            f"{size}: http_hybrid p95 / (raw_embed + raw_pgvector + raw_keyword p95) = "
            f"{data['hybrid_p95_over_raw_parts_p95']}"
        )
    for size, data in results["sizes"].items():
        before, after = data["load_average_at_measure"], data["load_average_after_measure"]
        lines.append(f"load average (1/5/15 min) at {size}: {before} before, {after} after")
    for size, data in results["sizes"].items():
        ingest = data["ingest"]
        lines.append(
            f"ingest to {size}: {ingest['memories_per_second']} memories/s "
            f"(client vectors, {ingest['route']})"
        )
    for when in ("start", "end"):
        gauge = results["machine"].get(f"host_gauge_{when}")
        if gauge:
            lines.append(
                f"host gauge at the {when}: one-thread embed p50 "
                f"{gauge['embed_one_thread_alone']['p50_ms']} ms alone, "
                f"{gauge['embed_one_thread_other_cpu_busy']['p50_ms']} ms with another CPU busy"
            )
    t = results["text_ingest"]
    lines.append(
        f"text ingest (server embeds, {t['memories']} memories): {t['memories_per_second']}/s; "
        f"raw embedder batch rate: {results['corpus']['texts_per_second']} texts/s"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated totals")
    parser.add_argument("--queries", type=int, default=220, help="queries per size (20 warm-up)")
    parser.add_argument("--text-subset", type=int, default=500, help="text-only memories")
    parser.add_argument("--base-sentences", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=500, help="memories per batch request")
    parser.add_argument(
        "--load",
        choices=("batch", "import"),
        default="batch",
        help="how memories are stored: POST /memories/batch, or one streamed POST /import",
    )
    parser.add_argument(
        "--wordnet",
        type=Path,
        help="WordNet dict dir (data.noun, ...): memories are synsets, queries their examples",
    )
    parser.add_argument("--json", type=Path, help="also write the JSON results here")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="keep the PostgreSQL data here (a rerun on it loads only what is missing)",
    )
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    results: dict[str, Any] = {"machine": machine_info(), "sizes": {}}
    results["machine"]["host_gauge_start"] = host_gauge()
    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as tmp:
        bench = Bench(args, args.data_dir or Path(tmp))
        try:
            results["machine"].update(bench.versions())
            results["corpus"] = bench.build_corpus()
            print(f"corpus embedded: {results['corpus']}", file=sys.stderr)
            # text memories first, unless they would keep the import off its bulk
            # path (into an empty index only): then they are stored at the end
            text_first = args.load == "batch"
            if text_first:
                results["text_ingest"] = bench.text_ingest()
                print(f"text ingest: {results['text_ingest']}", file=sys.stderr)
            for size in sizes:
                ingest = bench.load_to(size)
                print(f"loaded {size}: {ingest}", file=sys.stderr)
                load = [round(x, 2) for x in os.getloadavg()]
                latency = bench.measure()
                results["sizes"][str(size)] = {
                    "total_memories": size + (args.text_subset if text_first else 0),
                    "ingest": ingest,
                    "load_average_at_measure": load,
                    "load_average_after_measure": [round(x, 2) for x in os.getloadavg()],
                    "latency": latency,
                    "hybrid_p95_over_raw_parts_p95": hybrid_ratio(latency),
                }
                print(f"measured {size}: {results['sizes'][str(size)]}", file=sys.stderr)
            if not text_first:
                results["text_ingest"] = bench.text_ingest()
        finally:
            bench.close()
    results["machine"]["load_average_end"] = list(os.getloadavg())
    results["machine"]["host_gauge_end"] = host_gauge()
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    print("\n" + table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
