"""The local all-MiniLM-L6-v2 (onnxruntime) matches sentence-transformers and ranks sensibly."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from memory_runtime.embeddings import LocalEmbedder, NoEmbedder, build_embedder
from memory_runtime.embeddings.http import _parse_data
from memory_runtime.embeddings.local import auto_threads, detect_threads
from memory_runtime.ports import EmbeddingError

# Published SentenceTransformer("all-MiniLM-L6-v2") outputs (first 6 dims), used as
# reference values by an independent implementation's test suite (sbert R package).
REFERENCE = {
    "This is an example sentence": [
        0.06765693, 0.06349593, 0.04871314, 0.07930495, 0.03744806, 0.00265273,
    ],
    "Each sentence is converted.": [
        0.07853645, 0.08856265, -0.00209270, -0.00717247, -0.01252624, 0.01881747,
    ],
    "": [-0.11883835, 0.04829856, -0.00254805, -0.01101118, 0.05195070, 0.01029179],
    "Café déjà vu — 東京": [
        0.05083271, 0.00967685, 0.09635572, -0.00997369, -0.01987603, 0.01692343,
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return build_embedder("local", "all-MiniLM-L6-v2", "", 384)  # type: ignore[return-value]


def cos(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_matches_reference_vectors(embedder: LocalEmbedder) -> None:
    texts = list(REFERENCE)
    vectors = np.array(embedder.embed(texts))
    assert vectors.shape == (4, 384)
    expected = np.array(list(REFERENCE.values()))
    assert np.abs(vectors[:, :6] - expected).max() < 1e-4
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_batching_and_padding_do_not_change_vectors(embedder: LocalEmbedder) -> None:
    texts = ["short", "a much longer sentence that forces padding of the short one", "mid text"]
    batched = np.array(embedder.embed(texts))
    single = np.array([embedder.embed([t])[0] for t in texts])
    assert np.abs(batched - single).max() < 1e-5


def test_long_text_is_truncated_not_rejected(embedder: LocalEmbedder) -> None:
    long_text = "word " * 2000
    (vector,) = embedder.embed([long_text])
    assert len(vector) == 384
    assert np.isfinite(vector).all()


def test_related_sentences_are_close_unrelated_far(embedder: LocalEmbedder) -> None:
    cat, kitten, finance = embedder.embed(
        ["the cat sat on the mat", "a kitten resting on a rug", "quarterly revenue grew by 8%"]
    )
    assert cos(cat, kitten) > 0.5
    assert cos(cat, finance) < 0.2
    assert cos(cat, kitten) > cos(kitten, finance) + 0.3


def test_recall_ranks_the_matching_text_first(embedder: LocalEmbedder) -> None:
    corpus = [
        "quarterly revenue grew by 8%",
        "the cat sat on the mat",
        "how to configure a kubernetes ingress",
        "the stock market closed lower today",
        "a recipe for tomato soup",
    ]
    docs = np.array(embedder.embed(corpus))
    (query,) = embedder.embed(["a kitten resting on a rug"])
    ranking = np.argsort(-(docs @ np.array(query)))
    assert corpus[ranking[0]] == "the cat sat on the mat"


def test_empty_batch_and_bad_input(embedder: LocalEmbedder) -> None:
    assert embedder.embed([]) == []
    with pytest.raises(EmbeddingError):
        embedder.embed("not a list")  # type: ignore[arg-type]
    with pytest.raises(EmbeddingError):
        embedder.embed(["ok", 3])  # type: ignore[list-item]


def test_concurrent_first_use_loads_once_and_agrees() -> None:
    fresh = LocalEmbedder()
    results: list[list[list[float]]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(fresh.embed(["the same sentence"]))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 4
    first = np.array(results[0])
    for other in results[1:]:
        assert np.abs(np.array(other) - first).max() < 1e-6


def test_build_embedder_validates_config() -> None:
    with pytest.raises(EmbeddingError, match="only ships"):
        build_embedder("local", "bge-large", "", 384)
    with pytest.raises(EmbeddingError, match="384"):
        build_embedder("local", "all-MiniLM-L6-v2", "", 768)
    with pytest.raises(EmbeddingError, match="unknown embedding provider"):
        build_embedder("openai", "x", "", 384)
    with pytest.raises(EmbeddingError, match="http"):
        build_embedder("http", "m", "ftp://nope", 384)


@pytest.mark.parametrize(
    ("cpu_max", "usable", "threads"),
    [
        (None, 8, 2),  # no cgroup limit: affinity, capped at 2
        ("max 100000", 8, 2),
        ("max 100000", 1, 1),  # pinned to one CPU
        ("100000 100000", 8, 1),  # limits.cpu: 1
        ("150000 100000", 8, 1),  # 1.5 CPUs: a second thread would be throttled
        ("400000 100000", 8, 2),
        ("50000 100000", 8, 1),  # under one CPU still gets one thread
        ("200000 100000", 1, 1),  # the quota allows 2 but affinity gives 1
        ("garbage", 4, 2),
        ("0 100000", 4, 2),
        ("", 0, 1),
    ],
)
def test_auto_threads_follow_the_cpu_limit(cpu_max: str | None, usable: int, threads: int) -> None:
    assert auto_threads(cpu_max, usable) == threads


def test_threads_reach_the_onnxruntime_session() -> None:
    one = LocalEmbedder(threads=1)
    two = LocalEmbedder(threads=2)
    for embedder, n in ((one, 1), (two, 2)):
        embedder.load()
        options = embedder._session.get_session_options()
        assert options.intra_op_num_threads == n
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    # the thread count changes how the work is split, not the vectors
    text = ["the cat sat on the mat"]
    assert np.abs(np.array(one.embed(text)) - np.array(two.embed(text))).max() < 1e-5
    assert LocalEmbedder().threads == detect_threads()  # 0 / unset: from the CPU limit
    assert 1 <= detect_threads() <= 2
    with pytest.raises(EmbeddingError, match="threads"):
        LocalEmbedder(threads=-1)


def test_none_provider_refuses_to_embed() -> None:
    embedder = build_embedder("none", "", "", 16)
    assert isinstance(embedder, NoEmbedder)
    assert embedder.dimensions == 16
    with pytest.raises(EmbeddingError, match="no embedding provider; send vectors"):
        embedder.embed(["text"])


def test_openai_response_parsing() -> None:
    data = [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}]
    assert _parse_data(data, 2, 2) == [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(EmbeddingError, match="dimensions"):
        _parse_data([{"index": 0, "embedding": [1.0]}], 1, 2)
    with pytest.raises(EmbeddingError, match="1 vectors for 2"):
        _parse_data([{"index": 0, "embedding": [1.0]}], 2, 1)
    with pytest.raises(EmbeddingError, match="index"):
        _parse_data([{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [2.0]}], 2, 1)
    with pytest.raises(EmbeddingError, match="non-finite"):
        _parse_data([{"index": 0, "embedding": [float("nan")]}], 1, 1)


def test_single_text_path_matches_the_padded_batch_path(embedder: LocalEmbedder) -> None:
    # A text's vector must not depend on the padding its batch neighbours force
    # on it (padded keys are masked out of attention and pooling).
    texts = ["tea", "the engineer repaired the kubernetes cluster at midnight", "Café 東京"]
    padded = embedder.embed_array([*texts, "a " * 60])
    for i, text in enumerate(texts):
        single = embedder.embed_array([text])[0]
        assert np.abs(single - padded[i]).max() <= 2e-7, text


def test_graph_is_the_documented_encoder_on_tiny_weights() -> None:
    # A 1-layer, 2-head BERT with random weights: the graph must compute exactly
    # BertModel + mean pooling + L2 norm, written out in numpy here.
    import onnx
    import onnxruntime

    from memory_runtime.embeddings.bert_graph import INPUTS, OUTPUT, build_sentence_encoder

    rng = np.random.default_rng(7)
    hidden, ff, vocab = 8, 16, 20
    config = {"hidden_size": hidden, "num_attention_heads": 2, "layer_norm_eps": 1e-12,
              "num_hidden_layers": 1}  # fmt: skip
    shapes = {
        "embeddings.word_embeddings.weight": (vocab, hidden),
        "embeddings.position_embeddings.weight": (16, hidden),
        "embeddings.token_type_embeddings.weight": (2, hidden),
        "embeddings.LayerNorm.weight": (hidden,),
        "embeddings.LayerNorm.bias": (hidden,),
    }
    p = "encoder.layer.0."
    for name, out_dim, in_dim in (
        ("attention.self.query", hidden, hidden),
        ("attention.self.key", hidden, hidden),
        ("attention.self.value", hidden, hidden),
        ("attention.output.dense", hidden, hidden),
        ("intermediate.dense", ff, hidden),
        ("output.dense", hidden, ff),
    ):
        shapes[p + name + ".weight"] = (out_dim, in_dim)
        shapes[p + name + ".bias"] = (out_dim,)
    for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
        shapes[p + norm + ".weight"] = (hidden,)
        shapes[p + norm + ".bias"] = (hidden,)
    w = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}

    ids = np.array([[1, 5, 7, 2], [1, 9, 2, 0]], dtype=np.int64)
    types = np.array([[0, 0, 1, 1], [0, 1, 1, 0]], dtype=np.int64)
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=np.int64)
    model = build_sentence_encoder(config, {"bert." + k: v for k, v in w.items()})
    onnx.checker.check_model(model, full_check=True)  # valid graph, shapes infer
    session = onnxruntime.InferenceSession(model.SerializeToString())
    got = session.run([OUTPUT], dict(zip(INPUTS, (ids, types, mask), strict=True)))[0]

    from math import erf

    def ln(x: np.ndarray, prefix: str) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * w[prefix + ".weight"] + w[prefix + ".bias"]

    def lin(x: np.ndarray, prefix: str) -> np.ndarray:
        return x @ w[prefix + ".weight"].T + w[prefix + ".bias"]

    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:4]
        + w["embeddings.token_type_embeddings.weight"][types]
    )
    x = ln(x, "embeddings.LayerNorm")

    def heads(t: np.ndarray) -> np.ndarray:
        return t.reshape(2, 4, 2, 4).transpose(0, 2, 1, 3)

    q, k, v = (heads(lin(x, p + "attention.self." + n)) for n in ("query", "key", "value"))
    scores = q @ k.transpose(0, 1, 3, 2) / 2.0 + np.where(mask[:, None, None, :], 0.0, -1e9)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = (probs @ v).transpose(0, 2, 1, 3).reshape(2, 4, hidden)
    x = ln(lin(context, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
    inner = lin(x, p + "intermediate.dense")
    gelu = 0.5 * inner * (1 + np.vectorize(erf)(inner / np.sqrt(2)))
    x = ln(lin(gelu, p + "output.dense") + x, p + "output.LayerNorm")
    pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
    expected = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    assert got.shape == (2, hidden)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # The padded position really is ignored: dropping it changes nothing.
    alone = session.run(
        [OUTPUT], dict(zip(INPUTS, (ids[1:, :3], types[1:, :3], mask[1:, :3]), strict=True))
    )[0]
    np.testing.assert_allclose(alone[0], got[1], atol=1e-6)
