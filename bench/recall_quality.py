"""Recall quality on a public data set: Recall@1/5/10 per recall mode, next to
Okapi BM25 and exact dense cosine baselines computed in the same run.

Not a test. Data: WordNet 3.0 (Princeton University), from Debian's
`wordnet-base` package, under the WordNet 3.0 licence (use, copy, modify and
distribute for any purpose, with its copyright notice; nothing of it is kept
in this repository, the run reads the package's files):

    apt-get download wordnet-base && dpkg-deb -x wordnet-base_*.deb /tmp/wordnet
    .venv/bin/pip install -e '.[bench]'          # bm25s + PyStemmer (the BM25 baseline)
    .venv/bin/python bench/recall_quality.py --wordnet /tmp/wordnet/usr/share/wordnet

The task (a retrieval set derived from the database, fixed by --seed): every
synset is a memory, "its words: its definition" ("breathe, take a breath,
respire: draw air into, and expel out of, the lungs"); --memories synsets are
drawn. A question is one of a drawn synset's usage examples, removed from the
memory ("The patient is respiring"), and the answer is that synset's memory:
the example uses one of its words, often inflected, among dozens of synsets
sharing that word (WordNet's polysemy), and says nothing of the definition.

The memories are embedded here with the bundled all-MiniLM-L6-v2 and stored
through the HTTP API (`POST /memories/batch`, text + vector) of an in-process
tenant API on an embedded PostgreSQL; the questions go to `POST /memories/search`
(top_k 10) as text, so the server embeds them. Baselines on the same texts in
the same run: Okapi BM25 (bm25s, Lucene variant, k1 1.2, b 0.75, english
Snowball stems and stop words) and exact cosine over the same vectors.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # memory_contract
sys.path.insert(0, str(REPO / "runtime"))
sys.path.insert(0, str(REPO / "bench"))

import bm25s  # noqa: E402
import numpy as np  # noqa: E402
import Stemmer  # noqa: E402
import uvicorn  # noqa: E402
from runtime_search import ApiClient, free_port, machine_info  # noqa: E402
from wordnet import read_wordnet  # noqa: E402

from memory_runtime import embedded  # noqa: E402
from memory_runtime.api import create_app  # noqa: E402
from memory_runtime.embeddings import build_embedder  # noqa: E402
from memory_runtime.settings import Settings  # noqa: E402

MODES: dict[str, dict[str, Any]] = {
    "hybrid (rrf)": {"mode": "hybrid", "fusion": "rrf"},
    "hybrid (relative)": {"mode": "hybrid", "fusion": "relative"},
    "vector": {"mode": "vector"},
    "keyword": {"mode": "keyword"},
}
CUTOFFS = (1, 5, 10)


def recall_at(ranked: list[list[int]], answers: list[int]) -> dict[str, float]:
    return {
        f"R@{k}": round(
            100.0 * np.mean([a in r[:k] for r, a in zip(ranked, answers, strict=True)]), 1
        )
        for k in CUTOFFS
    }


def bm25_baseline(texts: list[str], questions: list[str], k1: float) -> list[list[int]]:
    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25(method="lucene", k1=k1, b=0.75)
    retriever.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False))
    tokens = bm25s.tokenize(questions, stopwords="en", stemmer=stemmer, show_progress=False)
    found, _ = retriever.retrieve(tokens, k=10, show_progress=False, n_threads=1)
    return [list(map(int, row)) for row in found]


def dense_baseline(vectors: np.ndarray, queries: np.ndarray) -> list[list[int]]:
    similarity = queries @ vectors.T  # both L2-normalised by the model: cosine
    return [list(map(int, np.argsort(-row, kind="stable")[:10])) for row in similarity]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet", type=Path, required=True, help="dir with data.noun etc.")
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--questions", type=int, default=500)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    synsets = read_wordnet(args.wordnet)
    rng = random.Random(args.seed)
    drawn = rng.sample(synsets, args.memories)
    with_examples = [i for i, s in enumerate(drawn) if s.examples]
    asked = sorted(rng.sample(with_examples, min(args.questions, len(with_examples))))
    answers = asked
    questions = [rng.choice(drawn[i].examples) for i in asked]
    texts = [s.text for s in drawn]

    embedder = build_embedder("local", "all-MiniLM-L6-v2", "", 384)
    start = time.perf_counter()
    vectors = np.array(embedder.embed(texts), dtype=np.float32)
    embed_seconds = time.perf_counter() - start
    query_vectors = np.array(embedder.embed(questions), dtype=np.float32)

    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="recall-quality-") as tmp:
        settings = Settings(
            tenant="bench",
            data_dir=str(Path(tmp) / "pg"),
            api_tokens=f"admin:{token}",
            rate_limit_per_minute=0,
            max_body_bytes=64 * 1024 * 1024,
            embedding_provider="local",
            decay_enabled=False,
            # the shared 2-vCPU host answers a probe in over a second at times:
            # a benchmark must not trip the database circuit over that
            probe_timeout_seconds=15.0,
        )
        local = embedded.start(settings)
        app = create_app(local.settings, embedder=embedder)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.05)
        http = ApiClient(port, token)
        try:
            start = time.perf_counter()
            for i in range(0, len(texts), 100):
                batch = [
                    {"coordinate": [float(n)], "text": texts[n], "vector": vectors[n].tolist()}
                    for n in range(i, min(i + 100, len(texts)))
                ]
                for attempt in range(5):  # a busy shared host may trip the DB watchdog
                    status, body = http.post("/memories/batch", {"memories": batch})
                    if status != 503:
                        break
                    time.sleep(2**attempt)
                if status != 200:
                    raise RuntimeError(f"store failed: HTTP {status} {body[:300]!r}")
            ingest_seconds = time.perf_counter() - start
            ranked: dict[str, list[list[int]]] = {}
            for name, mode in MODES.items():
                ranked[name] = []
                for q in questions:
                    status, body = http.post("/memories/search", {"query": q, "top_k": 10, **mode})
                    if status != 200:
                        raise RuntimeError(f"search failed: HTTP {status} {body[:300]!r}")
                    hits = json.loads(body)["hits"]
                    ranked[name].append([int(h["memory"]["coordinate"][0]) for h in hits])
        finally:
            http.close()
            server.should_exit = True
            thread.join(timeout=30)
            local.server.cleanup()

    results: dict[str, dict[str, float]] = {
        name: recall_at(r, answers) for name, r in ranked.items()
    }
    for k1 in (1.2, 1.5):
        results[f"baseline BM25 (k1 {k1})"] = recall_at(
            bm25_baseline(texts, questions, k1), answers
        )
    results["baseline dense (exact cosine)"] = recall_at(
        dense_baseline(vectors, query_vectors), answers
    )
    report = {
        "data": "WordNet 3.0 (Debian wordnet-base)",
        "memories": len(texts),
        "questions": len(questions),
        "seed": args.seed,
        "embed_texts_per_second": round(len(texts) / embed_seconds, 1),
        "ingest_memories_per_second": round(len(texts) / ingest_seconds, 1),
        "recall": results,
        "machine": machine_info(),
    }
    print("| | R@1 | R@5 | R@10 |\n|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['R@1']} | {r['R@5']} | {r['R@10']} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
