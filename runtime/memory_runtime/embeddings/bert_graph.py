"""The sentence-transformers BERT encoder as an ONNX graph, built from its weights.

No torch on the runtime image means no `torch.onnx.export`; the published
all-MiniLM-L6-v2 has no ONNX file in any package we can install. So the graph
is written here, op for op what `BertModel` + mean pooling + L2 normalisation
compute, and onnxruntime runs it (pre-packed weights, fused kernels: about 3x
faster than the same maths in numpy for a single query).

Pure: weights in, `onnx.ModelProto` out; no files, no sessions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUTS = ("input_ids", "token_type_ids", "attention_mask")  # int64, (batch, tokens)
OUTPUT = "embedding"  # float32, (batch, hidden), unit length
OPSET = 20  # first opset with the exact (erf) Gelu BERT uses
IR_VERSION = 10  # what onnxruntime >= 1.20 reads


class _GraphBuilder:
    """Appends nodes and initializers; each op returns the name of its output."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, value: Any) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        self._count += 1
        out = f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out


def build_sentence_encoder(
    config: Mapping[str, Any], weights: Mapping[str, np.ndarray]
) -> onnx.ModelProto:
    """Encoder + mean pooling + L2 normalisation for a HuggingFace BERT config and weights.

    `weights` are the safetensors tensors (torch layout, optional "bert." prefix).
    """
    w = {k.removeprefix("bert."): np.asarray(v, dtype=np.float32) for k, v in weights.items()}
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    eps = float(config["layer_norm_eps"])
    g = _GraphBuilder()

    def layer_norm(x: str, prefix: str) -> str:
        scale = g.const(prefix + ".weight", w[prefix + ".weight"])
        bias = g.const(prefix + ".bias", w[prefix + ".bias"])
        return g.op("LayerNormalization", x, scale, bias, axis=-1, epsilon=eps)

    def linear(x: str, prefix: str) -> str:
        # torch Linear stores (out, in); MatMul wants (in, out).
        weight = g.const(prefix + ".weight", np.ascontiguousarray(w[prefix + ".weight"].T))
        return g.op(
            "Add", g.op("MatMul", x, weight), g.const(prefix + ".bias", w[prefix + ".bias"])
        )

    # Embeddings: word + position (0..tokens-1) + token type, then LayerNorm.
    tokens = g.op("Gather", g.op("Shape", "input_ids"), g.const("axis_1", np.int64(1)), axis=0)
    positions = g.op("Range", g.const("zero", np.int64(0)), tokens, g.const("step", np.int64(1)))
    x = g.op(
        "Add",
        g.op(
            "Add",
            g.op(
                "Gather",
                g.const("word_embeddings", w["embeddings.word_embeddings.weight"]),
                "input_ids",
            ),
            g.op(
                "Gather",
                g.const("position_embeddings", w["embeddings.position_embeddings.weight"]),
                positions,
            ),
        ),
        g.op(
            "Gather",
            g.const("token_type_embeddings", w["embeddings.token_type_embeddings.weight"]),
            "token_type_ids",
        ),
    )
    x = layer_norm(x, "embeddings.LayerNorm")

    # Padding keys get a huge negative score, so softmax gives them weight 0
    # (real keys get + -0.0, which changes nothing).
    mask = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    not_mask = g.op("Sub", g.const("one", np.float32(1.0)), mask)
    key_bias = g.op("Mul", not_mask, g.const("masked_score", np.float32(-1e9)))
    key_bias = g.op(
        "Unsqueeze", key_bias, g.const("axes_heads_queries", np.array([1, 2], np.int64))
    )

    split_heads = g.const("split_heads", np.array([0, 0, heads, hidden // heads], np.int64))
    merge_heads = g.const("merge_heads", np.array([0, 0, hidden], np.int64))
    scale = g.const("score_scale", np.float32(1.0 / np.sqrt(hidden // heads)))

    def heads_of(x: str, prefix: str, perm: list[int]) -> str:
        return g.op("Transpose", g.op("Reshape", linear(x, prefix), split_heads), perm=perm)

    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}."
        q = heads_of(x, p + "attention.self.query", [0, 2, 1, 3])  # (batch, heads, tokens, dim)
        k_t = heads_of(x, p + "attention.self.key", [0, 2, 3, 1])  # (batch, heads, dim, tokens)
        v = heads_of(x, p + "attention.self.value", [0, 2, 1, 3])
        scores = g.op("Add", g.op("Mul", g.op("MatMul", q, k_t), scale), key_bias)
        context = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
        context = g.op("Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), merge_heads)
        x = layer_norm(
            g.op("Add", linear(context, p + "attention.output.dense"), x),
            p + "attention.output.LayerNorm",
        )
        ff = linear(g.op("Gelu", linear(x, p + "intermediate.dense")), p + "output.dense")
        x = layer_norm(g.op("Add", ff, x), p + "output.LayerNorm")

    # Mean over real tokens, then unit length (sentence-transformers' Pooling + Normalize).
    masked = g.op(
        "Mul", x, g.op("Unsqueeze", mask, g.const("axis_hidden", np.array([2], np.int64)))
    )
    token_axis = g.const("token_axis", np.array([1], np.int64))
    summed = g.op("ReduceSum", masked, token_axis, keepdims=0)
    count = g.op(
        "Max",
        g.op("ReduceSum", mask, token_axis, keepdims=1),
        g.const("min_count", np.float32(1e-9)),
    )
    pooled = g.op("Div", summed, count)
    norm = g.op(
        "Max",
        g.op("ReduceL2", pooled, token_axis, keepdims=1),
        g.const("min_norm", np.float32(1e-12)),
    )
    g.nodes.append(helper.make_node("Div", [pooled, norm], [OUTPUT]))

    graph = helper.make_graph(
        g.nodes,
        "sentence_encoder",
        [
            helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "tokens"])
            for name in INPUTS
        ],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", hidden])],
        g.initializers,
    )
    # No onnx.checker here: it serialises and re-parses the whole 90 MB model
    # (doubling peak memory at start); onnxruntime validates it on load, and the
    # unit tests run the full checker on a small model.
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )
