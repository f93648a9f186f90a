#!/usr/bin/env python3
"""Convert a CTranslate2 Whisper model (model.bin + config.json + vocabulary.txt) into the ONNX graphs
the appliance runs with ONNX Runtime. No torch: the graphs are written node by node with onnx.helper
and the weights are numpy arrays read straight from model.bin.

  models/venv/bin/python scripts/whisper-to-onnx.py SRC_CT2_DIR OUT_DIR [--int8] [--source PKG==VER]

Writes into OUT_DIR (the interface src/ is written against; see ../shared/models/WHISPER-ONNX.md, which
describes version 1's fixed 3000-frame window: the shapes below supersede it):

  encoder.onnx   mel f32[batch, 80, frames] -> cross_kv f32[2*n_layers, batch, frames / 2, d_model]
                 frames: even, 2 .. 3000 (3000 = Whisper's 30 s window; fewer = whisper.cpp's `audio_ctx`,
                 a window fitted to the audio: the graph takes the first frames / 2 rows of the sinusoidal
                 positional table, so frames = 3000 is exactly the fixed-window encoder of version 1).
                 cross_kv[2l] / [2l+1]: decoder layer l's cross-attention key / value projections of the
                 encoder output, heads not split (computed once per clip instead of once per token).
  decoder.onnx   tokens i64[batch, n_new], self_kv f32[2*n_layers, batch, past_len, d_model] (past_len may
                 be 0), cross_kv f32[2*n_layers, batch, positions, d_model] (the encoder's, any positions)
                 -> logits f32[batch, n_new, vocab], self_kv_out f32[2*n_layers, batch, past_len + n_new, d_model]
  encoder.int8.onnx, decoder.int8.onnx   (--int8) the same graphs, per-channel dynamic int8 weights
                 (same interface; decoder.onnx reads the logits projection off the token embedding itself,
                 decoder.int8.onnx keeps a pre-transposed copy of it to quantise: see build_decoder)
  whisper.json   dimensions (n_audio_ctx: the encoder positions of the 30 s window, 1500), special token ids
                 and converter_version (2: the dynamic frame axis above; 1: fixed at 3000 frames / 1500
                 positions, which src/ loads only with the full window)
  vocabulary.txt line i = token i (copied)

The output is deterministic: the same input gives the same bytes (no timestamps, no random names).
Weights are stored as float32 (model.bin holds float16).
"""
import argparse
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CONVERTER_VERSION = 2  # 2: encoder frames and decoder cross_kv positions are dynamic (1: fixed 3000 / 1500)
OPSET = 17           # LayerNormalization (17); everything else is older. ONNX Runtime 1.32 runs it.
IR_VERSION = 8       # the IR version that goes with opset 17 (any ONNX Runtime since 1.13 loads it)
LN_EPS = 1e-5        # Whisper's nn.LayerNorm default; CTranslate2 does not store it
MASK = -1e9          # "minus infinity" for masked scores: -inf gives NaN where a row is fully masked
                     # and breaks some kernels' max-subtraction; -1e9 underflows to exactly 0 after softmax.

# ---------------------------------------------------------------------------------------------------
# model.bin (ctranslate2/specs/model_spec.py _serialize), little-endian, no padding:
#   u32 binary_version | str spec_name | u32 revision | u32 n_variables
#   per variable: str name | u8 rank | u32 dims[rank] | u8 dtype | u32 nbytes | data
#   u32 n_aliases, per alias: str name | str target;   str = u16 length (with NUL) + bytes + NUL
# ---------------------------------------------------------------------------------------------------
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}  # 5 = bf16: not handled


class Fail(Exception):
    pass


def read_ct2_model(path):
    """All variables of a CTranslate2 model.bin as {name: numpy array}, aliases resolved."""
    with open(path, "rb") as f:
        buf = f.read()
    pos = 0

    def take(fmt):
        nonlocal pos
        values = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def string():
        nonlocal pos
        n = take("H")
        s = buf[pos:pos + n - 1].decode("utf-8")
        pos += n
        return s

    version = take("I")
    spec = string()
    take("I")  # spec revision
    if version != 6 or spec != "WhisperSpec":
        raise Fail(f"{path}: expected a CTranslate2 binary version 6 WhisperSpec, got version {version} '{spec}'")
    weights = {}
    for _ in range(take("I")):
        name = string()
        rank = take("B")
        dims = [take("I") for _ in range(rank)]
        dtype = take("B")
        nbytes = take("I")
        if dtype not in CT2_DTYPES:
            raise Fail(f"{path}: {name} has dtype code {dtype} (bf16?), which this converter does not read")
        if name.endswith("_scale"):
            raise Fail(f"{path}: {name}: the model is quantised; convert a float16/float32 CTranslate2 model")
        a = np.frombuffer(buf, CT2_DTYPES[dtype], count=nbytes // np.dtype(CT2_DTYPES[dtype]).itemsize, offset=pos)
        weights[name] = a.reshape(dims)
        pos += nbytes
    for _ in range(take("I")):
        alias, target = string(), string()
        weights[alias] = weights[target]
    if pos != len(buf):
        raise Fail(f"{path}: {len(buf) - pos} trailing bytes after the aliases (truncated or badly joined file?)")
    return weights


class Weights:
    """model.bin variables, handed out as float32 (the file holds float16)."""

    def __init__(self, raw):
        self.raw = raw

    def __call__(self, name):
        if name not in self.raw:
            raise Fail(f"model.bin has no variable {name}")
        return self.raw[name].astype(np.float32)

    def scalar(self, name, default=None):
        if name not in self.raw:
            if default is None:
                raise Fail(f"model.bin has no variable {name}")
            return default
        return int(self.raw[name].reshape(()))

    def count_layers(self, stack):
        n = 0
        while f"{stack}/layer_{n}/ffn/linear_0/weight" in self.raw:
            n += 1
        return n


def model_dims(w):
    """Dimensions read from the weights (nothing about tiny/base is hard-coded)."""
    vocab, d_model = w.raw["decoder/embeddings/weight"].shape
    dims = {
        "n_mels": int(w.raw["encoder/conv1/weight"].shape[1]),
        "n_audio_ctx": int(w.raw["encoder/position_encodings/encodings"].shape[0]),  # 1500 frames after conv2
        "n_layers": w.count_layers("decoder"),
        "n_encoder_layers": w.count_layers("encoder"),
        "d_model": int(d_model),
        "n_heads": w.scalar("decoder/num_heads"),
        "n_encoder_heads": w.scalar("encoder/num_heads"),
        "vocab_size": int(vocab),
        "max_length": int(w.raw["decoder/position_encodings/encodings"].shape[0]),  # 448
    }
    # The graphs below implement exactly this variant of the Transformer; refuse anything else.
    expect = {"decoder/activation": 3,          # exact (erf) GELU
              "decoder/pre_norm": 1,            # layer norm before each block
              "decoder/scale_embeddings": 0,    # embeddings not multiplied by sqrt(d_model)
              "decoder/alibi": 0,
              "decoder/start_from_zero_embedding": 0}
    for name, want in expect.items():
        got = w.scalar(name, default=want)
        if got != want:
            raise Fail(f"model.bin: {name} = {got}, this converter handles {want} only")
    if dims["d_model"] % dims["n_heads"] or dims["d_model"] % dims["n_encoder_heads"]:
        raise Fail(f"d_model {dims['d_model']} is not a multiple of the head count")
    if dims["n_layers"] == 0 or dims["n_encoder_layers"] == 0:
        raise Fail("model.bin has no encoder or decoder layers")
    return dims


# ---------------------------------------------------------------------------------------------------
# A small graph builder: deterministic node and tensor names, weights as float32 initializers.
# ---------------------------------------------------------------------------------------------------
class Graph:
    def __init__(self):
        self.nodes, self.initializers, self.names = [], [], set()
        self.count = 0

    def weight(self, name, array):
        """Add an initializer (a model weight or a constant) and return its name."""
        name = name.replace("/", ".")
        if name not in self.names:
            self.names.add(name)
            self.initializers.append(numpy_helper.from_array(np.array(array, order="C", copy=True), name))
        return name

    def ints(self, values):
        values = list(values)
        return self.weight("const.i64." + "_".join(str(v).replace("-", "m") for v in values),
                           np.array(values, np.int64))

    def scalar_i64(self, value):
        return self.weight(f"const.i64.scalar.{value}", np.array(value, np.int64))

    def scalar_f32(self, value, label):
        return self.weight(f"const.f32.{label}", np.array(value, np.float32))

    def op(self, op_type, inputs, scope, outputs=1, **attrs):
        """Append a node; returns its output name (or a list of names when outputs > 1)."""
        self.count += 1
        base = f"{scope}/{op_type}_{self.count}"
        outs = [f"{base}:{i}" for i in range(outputs)] if outputs > 1 else [base]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=base, **attrs))
        return outs if outputs > 1 else outs[0]

    def model(self, inputs, outputs, name, doc):
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="switchboard scripts/whisper-to-onnx.py",
                              producer_version=str(CONVERTER_VERSION), ir_version=IR_VERSION, doc_string=doc)
        onnx.checker.check_model(m)
        return m


# ---- building blocks ----------------------------------------------------------------------------------
def layer_norm(g, w, x, prefix):
    gamma = g.weight(f"{prefix}/gamma", w(f"{prefix}/gamma"))
    beta = g.weight(f"{prefix}/beta", w(f"{prefix}/beta"))
    return g.op("LayerNormalization", [x, gamma, beta], prefix, axis=-1, epsilon=LN_EPS)


def linear(g, w, x, prefix):
    """y = x @ W^T + b. CTranslate2 stores W as [out, in]; we store W^T ([in, out]) so the graph is a plain
    MatMul with a constant right-hand side, which is what quantize_dynamic turns into an int8 MatMul
    (per channel = per output column)."""
    wt = g.weight(f"{prefix}/weight_t", w(f"{prefix}/weight").T)
    b = g.weight(f"{prefix}/bias", w(f"{prefix}/bias"))
    return g.op("Add", [g.op("MatMul", [x, wt], prefix), b], prefix)


def gelu(g, x, scope):
    """Exact GELU, x * 0.5 * (1 + erf(x / sqrt(2))) (CTranslate2 activation 3; not the tanh approximation).
    Written with Erf (opset 17 has no Gelu); ONNX Runtime fuses the pattern into its Gelu kernel."""
    half = g.scalar_f32(0.5, "half")
    one = g.scalar_f32(1.0, "one")
    inv_sqrt2 = g.scalar_f32(1.0 / np.sqrt(2.0), "inv_sqrt2")
    e = g.op("Erf", [g.op("Mul", [x, inv_sqrt2], scope)], scope)
    return g.op("Mul", [g.op("Mul", [x, half], scope), g.op("Add", [e, one], scope)], scope)


def attention(g, q, k, v, n_heads, d_model, scope, mask=None):
    """Multi-head scaled dot-product attention on unsplit projections q [B, Tq, D], k and v [B, Tk, D].
    Heads are the D axis cut into n_heads slices of d_head = D / n_heads (head h = columns h*d_head...),
    the same layout as Whisper's / CTranslate2's fused projections. Returns [B, Tq, D] (heads merged
    back in the same order), ready for the output projection."""
    d_head = d_model // n_heads
    heads = g.ints([0, -1, n_heads, d_head])  # [B, T, D] -> [B, T, H, dh]; 0 keeps the batch size
    qh = g.op("Transpose", [g.op("Reshape", [q, heads], scope)], scope, perm=[0, 2, 1, 3])  # [B, H, Tq, dh]
    kh = g.op("Transpose", [g.op("Reshape", [k, heads], scope)], scope, perm=[0, 2, 3, 1])  # [B, H, dh, Tk]
    vh = g.op("Transpose", [g.op("Reshape", [v, heads], scope)], scope, perm=[0, 2, 1, 3])  # [B, H, Tk, dh]
    # Scale the queries by 1/sqrt(d_head) before the product, as CTranslate2 does.
    qh = g.op("Mul", [qh, g.scalar_f32(1.0 / np.sqrt(d_head), f"attn_scale_{d_head}")], scope)
    scores = g.op("MatMul", [qh, kh], scope)  # [B, H, Tq, Tk]
    if mask is not None:
        scores = g.op("Add", [scores, mask], scope)  # mask [Tq, Tk] broadcasts over batch and heads
    probs = g.op("Softmax", [scores], scope, axis=-1)
    ctx = g.op("Transpose", [g.op("MatMul", [probs, vh], scope)], scope, perm=[0, 2, 1, 3])  # [B, Tq, H, dh]
    return g.op("Reshape", [ctx, g.ints([0, 0, d_model])], scope)


def split_last(g, x, sizes, scope):
    """Split the last axis into pieces of the given sizes (e.g. a fused q|k|v projection)."""
    return g.op("Split", [x, g.ints(sizes)], scope, outputs=len(sizes), axis=-1)


def feed_forward(g, w, x, prefix):
    h = layer_norm(g, w, x, f"{prefix}/layer_norm")
    h = gelu(g, linear(g, w, h, f"{prefix}/linear_0"), prefix)
    return linear(g, w, h, f"{prefix}/linear_1")


# ---- encoder --------------------------------------------------------------------------------------------
def build_encoder(w, dims):
    """mel [B, 80, F] -> cross_kv [2L, B, F/2, D], F even and at most 3000 (2 * n_audio_ctx).
    F = 3000 is Whisper's fixed 30 s window; a smaller F is whisper.cpp's audio_ctx (the encoder attends over
    the fitted window only, positions 0 .. F/2 - 1 of the sinusoidal table). F > 3000 fails in the Slice/Add
    below by shape (the table has 1500 rows)."""
    g = Graph()
    D, H = dims["d_model"], dims["n_encoder_heads"]
    # Two 1-D convolutions (kernel 3, padding 1; the second with stride 2: 3000 -> 1500 frames), GELU after each.
    x = "mel"
    for name, stride in (("encoder/conv1", 1), ("encoder/conv2", 2)):
        weight = g.weight(f"{name}/weight", w(f"{name}/weight"))  # [D, in, 3]
        bias = g.weight(f"{name}/bias", w(f"{name}/bias"))
        conv = g.op("Conv", [x, weight, bias], name, kernel_shape=[3], pads=[1, 1], strides=[stride])
        x = gelu(g, conv, name)
    x = g.op("Transpose", [x], "encoder", perm=[0, 2, 1])  # [B, D, F/2] -> [B, F/2, D]
    # Whisper's fixed sinusoidal positional embedding [1500, D], stored in model.bin like a weight; its first
    # F/2 rows (the positions after conv2), sliced in the graph so one encoder serves every window length.
    pos = g.weight("encoder/position_encodings/encodings", w("encoder/position_encodings/encodings"))
    positions = g.op("Shape", [x], "encoder", start=1, end=2)  # [1]: F/2
    pos = g.op("Slice", [pos, g.ints([0]), positions, g.ints([0])], "encoder")  # [F/2, D]
    x = g.op("Add", [x, pos], "encoder")

    for l in range(dims["n_encoder_layers"]):
        p = f"encoder/layer_{l}"
        # Pre-norm self-attention. linear_0 is the fused [query; key; value] projection [3D, D]; Whisper's key
        # projection has no bias, CTranslate2 stores zeros in that slot, so one Add serves all three.
        h = layer_norm(g, w, x, f"{p}/self_attention/layer_norm")
        q, k, v = split_last(g, linear(g, w, h, f"{p}/self_attention/linear_0"), [D, D, D], p)
        a = attention(g, q, k, v, H, D, f"{p}/self_attention")  # no mask: the encoder sees the whole window
        x = g.op("Add", [x, linear(g, w, a, f"{p}/self_attention/linear_1")], p)
        x = g.op("Add", [x, feed_forward(g, w, x, f"{p}/ffn")], p)
    x = layer_norm(g, w, x, "encoder/layer_norm")

    # Cross-attention keys and values of every decoder layer, in one MatMul: decoder/layer_l/attention/linear_1
    # is the fused [key; value] projection [2D, D] (key bias = zeros). Concatenating the layers' W^T along the
    # output axis gives columns [K0 | V0 | K1 | V1 | ...], so reshaping to [B, F/2, 2L, D] and moving the 2L
    # axis first yields cross_kv[2l] = K of layer l and cross_kv[2l+1] = V of layer l, heads not split.
    L = dims["n_layers"]
    wt = np.concatenate([w(f"decoder/layer_{l}/attention/linear_1/weight").T for l in range(L)], axis=1)
    b = np.concatenate([w(f"decoder/layer_{l}/attention/linear_1/bias") for l in range(L)])
    kv = g.op("MatMul", [x, g.weight("decoder/cross_kv/weight_t", wt)], "cross_kv")
    kv = g.op("Add", [kv, g.weight("decoder/cross_kv/bias", b)], "cross_kv")
    kv = g.op("Reshape", [kv, g.ints([0, 0, 2 * L, D])], "cross_kv")
    g.nodes.append(helper.make_node("Transpose", [kv], ["cross_kv"], name="cross_kv/Transpose_out", perm=[2, 0, 1, 3]))

    inputs = [helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["batch", dims["n_mels"], "frames"])]
    outputs = [helper.make_tensor_value_info("cross_kv", TensorProto.FLOAT, [2 * L, "batch", "positions", D])]
    return g.model(inputs, outputs, "whisper_encoder",
                   f"Whisper encoder: log-mel [batch, n_mels, frames] (frames even, at most {2 * dims['n_audio_ctx']}"
                   f"; {2 * dims['n_audio_ctx']} = the 30 s window) -> cross-attention K/V of every decoder layer "
                   "[2*n_layers, batch, frames/2, d_model] (2l = key, 2l+1 = value of decoder layer l).")


# ---- decoder --------------------------------------------------------------------------------------------
def causal_mask(g, past_len, total_len):
    """The [n_new, past_len + n_new] additive self-attention mask (past_len, total_len: int64 scalars): new
    token i, at absolute position past_len + i, may attend to every cached position and to the new positions
    j <= i; later positions get -1e9. With one new token (the usual step) the mask is all zeros."""
    row_pos = g.op("Range", [past_len, total_len, g.scalar_i64(1)], "mask")          # [n_new]: absolute positions
    row_pos = g.op("Unsqueeze", [row_pos, g.ints([1])], "mask")                       # [n_new, 1]
    col_pos = g.op("Range", [g.scalar_i64(0), total_len, g.scalar_i64(1)], "mask")   # [past_len + n_new]
    future = g.op("Greater", [col_pos, row_pos], "mask")                              # [n_new, past_len + n_new]
    return g.op("Where", [future, g.scalar_f32(MASK, "mask_value"), g.scalar_f32(0.0, "zero")], "mask")


def tied_projection(g, x, emb, vocab):
    """logits [B, n, V] = x [B, n, D] @ E^T on the embedding initializer E [V, D] the token lookup uses, so the
    float32 graph holds E once (it is the largest weight: 51864 x 384 floats = 80 MB for tiny.en). Gemm takes E
    as it is with transB=1, no transposed copy anywhere (a MatMul on Transpose(E) would be constant-folded into
    one at load time); Gemm is 2-D, hence the flatten to [B*n, D] and the reshape back to tokens' [B, n] + [V].
    The saving is on disk and while loading: a running session still holds E twice, as the Gather's tensor and
    as the copy ONNX Runtime prepacks for the Gemm (the old graph's packed E^T took the same room)."""
    logits = g.op("Gemm", [g.op("Flatten", [x], "projection", axis=2), emb], "projection", transB=1)  # [B*n, V]
    shape = g.op("Concat", [g.op("Shape", ["tokens"], "projection"), g.ints([vocab])], "projection", axis=0)
    g.nodes.append(helper.make_node("Reshape", [logits, shape], ["logits"], name="projection/Reshape_logits"))


def quantizable_projection(g, w, x):
    """logits = x @ E^T with E^T stored as its own pre-transposed [D, V] initializer: quantize_dynamic only
    quantises a MatMul whose right-hand side is an initializer (not a Transpose of one, not a Gemm with
    transB), and per channel = per output column = per token. The int8 decoder is built this way."""
    et = g.weight("decoder/projection/weight_t", w("decoder/embeddings/weight").T)
    g.nodes.append(helper.make_node("MatMul", [x, et], ["logits"], name="projection/MatMul_logits"))


def build_decoder(w, dims, for_int8=False):
    """tokens [B, n], self_kv [2L, B, P, D], cross_kv [2L, B, A, D] (A = the encoder's positions, 1500 for the
    30 s window) -> logits [B, n, V], self_kv_out.
    for_int8: the source graph for quantize_dynamic, whose output projection has its own copy of the embedding
    (quantizable_projection); otherwise the projection shares the embedding (tied_projection). Same interface,
    and the same nodes (names included) up to the projection."""
    g = Graph()
    D, H, L, V = dims["d_model"], dims["n_heads"], dims["n_layers"], dims["vocab_size"]

    # past_len comes from the cache's shape, so one graph serves the first step (P = 0) and the later ones.
    past_len_1 = g.op("Shape", ["self_kv"], "positions", start=2, end=3)   # [1]
    n_new_1 = g.op("Shape", ["tokens"], "positions", start=1, end=2)       # [1]
    total_len_1 = g.op("Add", [past_len_1, n_new_1], "positions")         # [1]

    # Token embedding + learned positional embedding of the absolute positions past_len .. past_len + n_new - 1
    # (the table has max_length = 448 rows: a longer sequence fails in the Add below, by shape).
    emb = g.weight("decoder/embeddings/weight", w("decoder/embeddings/weight"))
    x = g.op("Gather", [emb, "tokens"], "embed", axis=0)  # [B, n, D]
    pos_table = g.weight("decoder/position_encodings/encodings", w("decoder/position_encodings/encodings"))
    pos = g.op("Slice", [pos_table, past_len_1, total_len_1, g.ints([0])], "embed")  # [n, D]
    x = g.op("Add", [x, pos], "embed")
    mask = causal_mask(g, g.op("Squeeze", [past_len_1, g.ints([0])], "mask"),
                       g.op("Squeeze", [total_len_1, g.ints([0])], "mask"))

    present = []
    for l in range(L):
        p = f"decoder/layer_{l}"
        # Masked self-attention over [cached keys/values ; new ones]. Fused q|k|v as in the encoder.
        h = layer_norm(g, w, x, f"{p}/self_attention/layer_norm")
        q, k, v = split_last(g, linear(g, w, h, f"{p}/self_attention/linear_0"), [D, D, D], p)
        past_k = g.op("Gather", ["self_kv", g.scalar_i64(2 * l)], p, axis=0)      # [B, P, D]
        past_v = g.op("Gather", ["self_kv", g.scalar_i64(2 * l + 1)], p, axis=0)
        k = g.op("Concat", [past_k, k], p, axis=1)                                  # [B, P + n, D]
        v = g.op("Concat", [past_v, v], p, axis=1)
        present += [k, v]
        a = attention(g, q, k, v, H, D, f"{p}/self_attention", mask=mask)
        x = g.op("Add", [x, linear(g, w, a, f"{p}/self_attention/linear_1")], p)

        # Cross-attention: query from the decoder (attention/linear_0), keys/values precomputed by the encoder
        # graph from attention/linear_1; output projection attention/linear_2. No mask.
        h = layer_norm(g, w, x, f"{p}/attention/layer_norm")
        q = linear(g, w, h, f"{p}/attention/linear_0")
        ck = g.op("Gather", ["cross_kv", g.scalar_i64(2 * l)], p, axis=0)         # [B, A, D]
        cv = g.op("Gather", ["cross_kv", g.scalar_i64(2 * l + 1)], p, axis=0)
        a = attention(g, q, ck, cv, H, D, f"{p}/attention")
        x = g.op("Add", [x, linear(g, w, a, f"{p}/attention/linear_2")], p)

        x = g.op("Add", [x, feed_forward(g, w, x, f"{p}/ffn")], p)

    x = layer_norm(g, w, x, "decoder/layer_norm")
    # Output projection tied to the token embedding: logits = h @ E^T, no bias.
    if for_int8:
        quantizable_projection(g, w, x)
    else:
        tied_projection(g, x, emb, V)
    # New cache: [K0, V0, K1, V1, ...] each [B, P + n, D] stacked on a new first axis.
    stacked = [g.op("Unsqueeze", [t, g.ints([0])], "self_kv_out") for t in present]
    g.nodes.append(helper.make_node("Concat", stacked, ["self_kv_out"], name="self_kv_out/Concat_out", axis=0))

    inputs = [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "n_new"]),
              helper.make_tensor_value_info("self_kv", TensorProto.FLOAT, [2 * L, "batch", "past_len", D]),
              helper.make_tensor_value_info("cross_kv", TensorProto.FLOAT, [2 * L, "batch", "positions", D])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "n_new", V]),
               helper.make_tensor_value_info("self_kv_out", TensorProto.FLOAT, [2 * L, "batch", "total_len", D])]
    return g.model(inputs, outputs, "whisper_decoder",
                   "Whisper decoder step with a self-attention KV cache: tokens [batch, n_new], self_kv "
                   "[2*n_layers, batch, past_len, d_model] (past_len may be 0), cross_kv from the encoder "
                   "[2*n_layers, batch, positions, d_model] -> "
                   "logits [batch, n_new, vocab] and self_kv_out [2*n_layers, batch, past_len+n_new, d_model].")


# ---- tokens -----------------------------------------------------------------------------------------------
def read_vocabulary(path):
    """Line i = token i. Split on '\\n' only: the byte-level BPE alphabet has no control characters, and
    str.splitlines() would also split on U+0085/U+2028, which tokens may contain."""
    with open(path, "rb") as f:
        lines = f.read().decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def token_info(vocab, config, dims):
    """Special token ids, looked up by name in vocabulary.txt (.en models number them one lower)."""
    ids = {t: i for i, t in enumerate(vocab) if t.startswith("<|") and t.endswith("|>")}

    def tid(*names):
        for n in names:
            if n in ids:
                return ids[n]
        raise Fail(f"vocabulary.txt has none of {', '.join(names)}")

    if len(vocab) != dims["vocab_size"]:
        raise Fail(f"vocabulary.txt has {len(vocab)} tokens, the embedding {dims['vocab_size']}")
    multilingual = dims["vocab_size"] >= 51865  # Whisper's own rule (.en models have 51864 tokens)
    info = {
        "sot": tid("<|startoftranscript|>"),
        "eot": tid("<|endoftext|>"),
        "transcribe": tid("<|transcribe|>"),
        "translate": tid("<|translate|>"),
        "no_speech": tid("<|nospeech|>", "<|nocaptions|>"),
        "notimestamps": tid("<|notimestamps|>"),
        "timestamp_begin": tid("<|0.00|>"),
    }
    out = {"multilingual": multilingual, **info}
    if multilingual:
        # config.json lists the language token ids; their names come from the vocabulary (<|en|> -> "en").
        langs = {}
        for i in config.get("lang_ids", []):
            t = vocab[i]
            if not (t.startswith("<|") and t.endswith("|>")):
                raise Fail(f"config.json lang_ids: token {i} is {t!r}, not a language token")
            langs[t[2:-2]] = i
        if "en" not in langs:
            raise Fail("config.json lang_ids has no <|en|>")
        out["lang_ids"] = langs
    # (.en: config.json's lang_ids are the multilingual ids and mean nothing here; ignored.)
    out["suppress_ids"] = [int(i) for i in config.get("suppress_ids", [])]
    out["suppress_ids_begin"] = [int(i) for i in config.get("suppress_ids_begin", [])]
    for i in out["suppress_ids"] + out["suppress_ids_begin"]:
        if not 0 <= i < dims["vocab_size"]:
            raise Fail(f"config.json suppresses token {i}, outside the vocabulary")
    return out


# ---- files ------------------------------------------------------------------------------------------------
def save(model, path):
    data = model.SerializeToString()  # protobuf serialisation of the same message is byte-stable
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def quantize(src, dst, reduce_range=False):
    """Per-channel dynamic int8 (weights int8 per output channel, activations quantised at run time).
    Per-tensor scales changed transcripts in testing: keep per_channel=True. reduce_range (7-bit
    weights, --int8-reduce-range): on x86-64 without VNNI (AVX2 only, e.g. the AMD EPYC machines
    here) ONNX Runtime's u8 x s8 products saturate, and base int8 lost 6.5 WER points to
    CTranslate2 on the telephone corpus (17.5 % vs 11.1 %); with reduce_range it is 10.8 %
    (tests/models_asr.rs). tiny.en int8 is not saturated that way, and reduce_range changed words
    of its call tests (tests/asr_call.rs), so it is the set-up's choice per model."""
    import logging
    from onnxruntime.quantization import QuantType, quantize_dynamic
    logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic's "consider pre-processing" advice is noise here
    quantize_dynamic(src, dst, per_channel=True, reduce_range=reduce_range, weight_type=QuantType.QInt8)
    return os.path.getsize(dst)


def quantize_from(build_int8, w, dims, fp32_path, dst, reduce_range=False):
    """quantize() the float32 graph at fp32_path, or, where build_int8 is given, the graph it builds (written
    next to dst for quantize_dynamic to read, then deleted: it is not an output)."""
    if build_int8 is None:
        return quantize(fp32_path, dst, reduce_range)
    src = dst + ".source"
    save(build_int8(w, dims), src)
    try:
        return quantize(src, dst, reduce_range)
    finally:
        os.remove(src)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="CTranslate2 Whisper model folder (model.bin, config.json, vocabulary.txt)")
    ap.add_argument("out", help="output folder (created; files in it are replaced)")
    ap.add_argument("--int8", action="store_true", help="also write encoder.int8.onnx and decoder.int8.onnx")
    ap.add_argument("--int8-reduce-range", action="store_true",
                    help="quantise the int8 weights to 7 bits (no saturation on CPUs without VNNI; see quantize)")
    ap.add_argument("--source", default=None, help="what the model came from, for whisper.json (PKG==VERSION)")
    args = ap.parse_args()

    t0 = time.monotonic()
    for f in ("model.bin", "config.json", "vocabulary.txt"):
        if not os.path.isfile(os.path.join(args.src, f)):
            raise Fail(f"{args.src} has no {f}")
    w = Weights(read_ct2_model(os.path.join(args.src, "model.bin")))
    dims = model_dims(w)
    with open(os.path.join(args.src, "config.json")) as f:
        config = json.load(f)
    vocab = read_vocabulary(os.path.join(args.src, "vocabulary.txt"))
    tokens = token_info(vocab, config, dims)
    print(f"[whisper-to-onnx] {args.src}: {dims['n_layers']} layers, d_model {dims['d_model']}, "
          f"{dims['n_heads']} heads, vocab {dims['vocab_size']}, "
          f"{'multilingual' if tokens['multilingual'] else 'English-only'}", flush=True)

    os.makedirs(args.out, exist_ok=True)
    written = {}
    with tempfile.TemporaryDirectory(prefix=".whisper-to-onnx-", dir=args.out) as work:
        # (name, float32 graph, source graph of the int8 one: None = quantise the float32 graph itself)
        graphs = (("encoder", build_encoder, None),
                  ("decoder", build_decoder, lambda w, dims: build_decoder(w, dims, for_int8=True)))
        for name, build, build_int8 in graphs:
            t = time.monotonic()
            path = os.path.join(work, f"{name}.onnx")
            written[f"{name}.onnx"] = save(build(w, dims), path)
            print(f"[whisper-to-onnx] {name}.onnx: {written[f'{name}.onnx'] / 1e6:.1f} MB "
                  f"({time.monotonic() - t:.1f} s)", flush=True)
            if args.int8:
                t = time.monotonic()
                written[f"{name}.int8.onnx"] = quantize_from(build_int8, w, dims, path,
                                                             os.path.join(work, f"{name}.int8.onnx"),
                                                             args.int8_reduce_range)
                print(f"[whisper-to-onnx] {name}.int8.onnx: {written[f'{name}.int8.onnx'] / 1e6:.1f} MB "
                      f"({time.monotonic() - t:.1f} s)", flush=True)
        meta = {"n_mels": dims["n_mels"], "n_layers": dims["n_layers"], "d_model": dims["d_model"],
                "n_heads": dims["n_heads"], "vocab_size": dims["vocab_size"], "max_length": dims["max_length"],
                "n_audio_ctx": dims["n_audio_ctx"],
                **tokens,
                "source": args.source or os.path.basename(os.path.normpath(args.src)),
                "converter_version": CONVERTER_VERSION}
        with open(os.path.join(work, "whisper.json"), "w") as f:
            # One key per line, each value (lists included) on its line: readable and diff-friendly.
            f.write("{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in meta.items()) + "\n}\n")
        shutil.copyfile(os.path.join(args.src, "vocabulary.txt"), os.path.join(work, "vocabulary.txt"))
        # Move into place only once everything is written (an interrupted run leaves the old files).
        names = sorted(os.listdir(work))
        for n in names:
            os.replace(os.path.join(work, n), os.path.join(args.out, n))
    print(f"[whisper-to-onnx] wrote {', '.join(names)} to {args.out} in {time.monotonic() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Fail as e:
        print(f"[whisper-to-onnx] ERROR: {e}", file=sys.stderr)
        sys.exit(1)
