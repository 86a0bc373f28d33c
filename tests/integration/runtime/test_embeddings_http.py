"""The http provider against a real OpenAI-compatible server (uvicorn, local model inside)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from memory_runtime.embeddings import LocalEmbedder, build_embedder
from memory_runtime.embeddings.http import HttpEmbedder
from memory_runtime.ports import EmbeddingError

pytestmark = pytest.mark.integration


class EmbeddingRequest(BaseModel):
    model: str
    input: list[str]


def make_app(local: LocalEmbedder) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/embeddings")
    def embeddings(req: EmbeddingRequest) -> dict[str, object]:
        if req.model == "broken":
            raise HTTPException(status_code=503, detail="model is loading")
        vectors = local.embed(req.input)
        # Reversed order with explicit indexes, as OpenAI allows.
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        return {"object": "list", "model": req.model, "data": data[::-1]}

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def local() -> LocalEmbedder:
    return LocalEmbedder()


@pytest.fixture(scope="module")
def server_url(local: LocalEmbedder) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(make_app(local), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test embedding server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_http_embeddings_equal_local_ones(server_url: str, local: LocalEmbedder) -> None:
    embedder = build_embedder("http", "all-MiniLM-L6-v2", server_url, 384)
    texts = ["the cat sat on the mat", "quarterly revenue grew by 8%", "a third one"]
    remote = np.array(embedder.embed(texts))
    assert remote.shape == (3, 384)
    # The server returned the items reversed: indexes must put them back in order.
    assert np.abs(remote - np.array(local.embed(texts))).max() < 1e-6


def test_http_recall_ranks_the_matching_text_first(server_url: str) -> None:
    embedder = build_embedder("http", "all-MiniLM-L6-v2", server_url + "/v1", 384)
    corpus = ["quarterly revenue grew by 8%", "the cat sat on the mat", "a recipe for tomato soup"]
    docs = np.array(embedder.embed(corpus))
    (query,) = embedder.embed(["a kitten resting on a rug"])
    assert corpus[int(np.argmax(docs @ np.array(query)))] == "the cat sat on the mat"


def test_wrong_dimension_is_a_clear_error(server_url: str) -> None:
    embedder = build_embedder("http", "all-MiniLM-L6-v2", server_url, 768)
    with pytest.raises(EmbeddingError, match="returned 384 dimensions, expected 768"):
        embedder.embed(["hello"])


def test_server_error_is_reported(server_url: str) -> None:
    embedder = build_embedder("http", "broken", server_url, 384)
    with pytest.raises(EmbeddingError, match="HTTP 503"):
        embedder.embed(["hello"])


def test_unreachable_provider_is_an_embedding_error() -> None:
    embedder = HttpEmbedder(f"http://127.0.0.1:{free_port()}", "m", 384, timeout=2.0)
    with pytest.raises(EmbeddingError, match="unreachable"):
        embedder.embed(["hello"])
