"""Where a store's time goes: phase timers around the runtime's own calls.

Not a test. One fresh tenant on the bench's embedded PostgreSQL (bench/ingest.py's
Tenant), then either
  batch  POST /memories/batch with client vectors (--batch per request), each
         request right after a raw binary COPY of the same rows (bench/ingest.py's
         RawInsert) into its own HNSW table, or
  text   POST /memories/batch with texts only (100 per request), each request
         right after the local embedder embeds the same texts alone,
and prints the seconds summed over the run per wrapped call (the store, its
transactions, the HNSW writes on the staging thread, the embedding calls).

    .venv/bin/python bench/ingest_phases.py batch --n 3000
    .venv/bin/python bench/ingest_phases.py text --n 1000 --embed-threads 1
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from ingest import RawInsert, Tenant, memories, sentences  # bench/ on sys.path

from memory_runtime.embeddings import build_embedder
from memory_runtime.service.base import UseCase
from memory_runtime.service.writes import Writes
from memory_runtime.storage import postgres
from memory_runtime.vectors import pgvector

SECONDS: dict[str, float] = collections.defaultdict(float)


def timed(owner: Any, name: str, label: str | None = None) -> None:
    call: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            SECONDS[label or name] += time.perf_counter() - start

    setattr(owner, name, wrapper)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("series", choices=["batch", "text"])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--embed-threads", type=int, default=0, help="0: the runtime's default")
    args = parser.parse_args()

    for name in ("store", "_write_ahead", "_write_stored"):
        timed(Writes, name)
    for name in ("_embed", "_index_after_commit"):  # shared by the use cases
        timed(UseCase, name)
    for name in ("insert_many", "coordinate_holders", "set_index_done"):
        timed(postgres.Tx, name)
    timed(pgvector.PgVectorIndex, "_write_rows", "HNSW _write_rows (staging thread)")

    embedder = build_embedder("local", "all-MiniLM-L6-v2", "", 384, threads=args.embed_threads)
    embedder.embed(["warm up"])
    texts = sentences(max(args.n, 1000), random.Random(42))
    base = np.array(embedder.embed(texts[:1000]), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="bench-phases-") as tmp:
        tenant = Tenant("phases", Path(tmp) / "pg", embedder)
        raw = RawInsert(tenant.local.server.get_uri(), "rawphases")
        raw_seconds = http_seconds = 0.0
        try:
            if args.series == "batch":
                vectors = base[np.arange(args.n) % len(base)]
                docs = memories(vectors, texts, 0.0)
                for i in range(0, args.n, args.batch):
                    raw_seconds += raw.batch(vectors[i : i + args.batch])
                    body = json.dumps({"memories": docs[i : i + args.batch]}).encode()
                    start = time.perf_counter()
                    tenant.request("POST", "/memories/batch", body)
                    http_seconds += time.perf_counter() - start
            else:
                for i in range(0, args.n, 100):
                    part = texts[i : i + 100]
                    start = time.perf_counter()
                    embedder.embed(part)
                    raw_seconds += time.perf_counter() - start
                    items = [
                        {"coordinate": [1.0, float(i + j)], "payload": {"text": t}}
                        for j, t in enumerate(part)
                    ]
                    body = json.dumps({"memories": items}).encode()
                    start = time.perf_counter()
                    tenant.request("POST", "/memories/batch", body)
                    http_seconds += time.perf_counter() - start
        finally:
            raw.close()
            tenant.close()
            tenant.local.server.cleanup()
    raw_name = "raw insert" if args.series == "batch" else "raw embed"
    print(f"{raw_name} {raw_seconds:.3f} s, requests {http_seconds:.3f} s", end="")
    print(f", ratio {raw_seconds / http_seconds:.2f}")
    for name, seconds in sorted(SECONDS.items(), key=lambda kv: -kv[1]):
        print(f"  {name:34} {seconds:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
