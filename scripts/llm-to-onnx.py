#!/usr/bin/env python3
"""Convert a Qwen2 GGUF (llama.cpp format, e.g. Qwen2.5-Coder-1.5B-Instruct Q4_K_M) into an ONNX decoder
with a KV cache, for ONNX Runtime. No torch, no transformers: the GGUF is read with the `gguf` package
(which dequantises K-quants in numpy) and the graph is written node by node with onnx.helper.

  python scripts/llm-to-onnx.py MODEL.gguf OUT_DIR [--quant int4|int8|none] [--symmetric] [--accuracy-level N]
                                [--max-pos N] [--source TEXT]

Writes into OUT_DIR:

  model.onnx + model.onnx.data   the decoder (weights in the external data file, 64 KiB aligned)
      inputs   input_ids                 int64  [batch, seq]             (seq >= 1 new tokens)
               position_ids              int64  [batch, seq]             (each row's positions, for RoPE)
               attention_mask            int64  [batch, past_seq + seq]  (0 hides a cache slot)
               past_key_values.{i}.key   float32 [batch, 2, past_seq, 128] i = 0..27 (past_seq may be 0)
               past_key_values.{i}.value float32 [batch, 2, past_seq, 128]
      outputs  logits                    float32 [batch, 1, vocab]        (LAST position only)
               present.{i}.key           float32 [batch, 2, past_seq + seq, 128]
               present.{i}.value         float32 [batch, 2, past_seq + seq, 128]
      The new tokens take the cache slots past_seq + [0, seq) (past_seq is read off past_key_values.0.key's
      shape); query i attends slots j <= past_seq + i that attention_mask keeps. A batch holds conversations
      of different lengths: a shorter row's unused slots are masked, and its tokens' positions (position_ids)
      are its own, not the slot numbers. Alone, position_ids = past_seq + [0, seq) and the mask is all ones.
  llm.json              dimensions, special ids, chat template, tokenizer description (see write_sidecar)
  tokenizer.json        HF `tokenizers` format (byte-level BPE + qwen2 pre-tokenizer regex + added tokens)
  vocab.json            token string (GPT-2 byte-to-unicode form) -> id, all 151936 entries
  merges.txt            BPE merges in rank order, one "left right" per line (no "#version" header)

--quant (weights of the 197 projection matrices incl. lm_head):
  none  float32 MatMul (the GGUF dequantised exactly; ~7 GB; for checking only)
  int4  com.microsoft MatMulNBits bits=4 block_size=32, asymmetric (uint4 + zero point per block; --symmetric
        for none), accuracy_level 4; packed by onnxruntime.quantization's own DefaultWeightOnlyQuantizer (the
        same packing MatMul4BitsQuantizer writes), streamed tensor by tensor: peak RSS ~4.3 GiB
  int8  the same with bits=8
  For int4/int8 the token embedding is int8 per-row symmetric (Gather + Cast + Mul by a per-row scale).

The output is deterministic: the same GGUF and options give the same bytes.
"""
import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CONVERTER_VERSION = 2
OPSET = 17
IR_VERSION = 8
ALIGN = 65536
INLINE_MAX = 4096  # bytes; smaller tensors are stored inside model.onnx

# Qwen2 pre-tokenizer (llama.cpp LLAMA_VOCAB_PRE_TYPE_QWEN2 == HF Qwen2TokenizerFast's Split pattern).
QWEN2_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def peak_rss_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Weights:
    """Initializers streamed into one external data file so that the ModelProto stays small."""

    def __init__(self, out_dir, data_name):
        self.data_name = data_name
        self.f = open(os.path.join(out_dir, data_name), "wb")
        self.off = 0
        self.inits = []

    def add(self, name, arr):
        arr = np.ascontiguousarray(arr)
        if arr.nbytes <= INLINE_MAX:
            self.inits.append(numpy_helper.from_array(arr, name))
            return name
        pad = (-self.off) % ALIGN
        if pad:
            self.f.write(b"\0" * pad)
            self.off += pad
        t = TensorProto()
        t.name = name
        t.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
        t.dims.extend(arr.shape)
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", self.data_name), ("offset", str(self.off)), ("length", str(arr.nbytes))):
            e = t.external_data.add()
            e.key, e.value = k, v
        self.f.write(arr.tobytes())
        self.off += arr.nbytes
        self.inits.append(t)
        return name

    def close(self):
        self.f.close()


class GGUFModel:
    def __init__(self, path):
        import gguf

        self.gguf = gguf
        self.r = gguf.GGUFReader(path)
        self.fields = self.r.fields
        self.tensors = {t.name: t for t in self.r.tensors}

    def meta(self, key, default=None):
        f = self.fields.get(key)
        if f is None:
            return default
        return f.contents()

    def tensor(self, name):
        """float32 numpy array in the PyTorch layout (GGUF ne reversed): Linear weights are [out, in]."""
        t = self.tensors[name]
        gq = self.gguf.GGMLQuantizationType
        if t.tensor_type == gq.F32:
            a = np.array(t.data, dtype=np.float32)
        elif t.tensor_type in (gq.F16, gq.BF16):
            a = self.gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        else:
            a = self.gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        shape = tuple(int(x) for x in reversed(t.shape))
        return a.reshape(shape)


class Builder:
    def __init__(self, w):
        self.w = w
        self.nodes = []
        self.n = 0
        self.consts = {}

    def node(self, op, inputs, n_out=1, name=None, domain=None, **attrs):
        self.n += 1
        base = name or f"{op.lower()}_{self.n}"
        outs = [base if n_out == 1 else f"{base}_{k}" for k in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=base, domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, arr, name=None):
        arr = np.asarray(arr)
        key = (arr.dtype.str, arr.shape, arr.tobytes()) if arr.nbytes <= 64 else None
        if key is not None and key in self.consts:
            return self.consts[key]
        nm = name or f"const_{len(self.consts)}_{self.n}"
        self.w.add(nm, arr)
        if key is not None:
            self.consts[key] = nm
        return nm


def build(g, out_dir, quant, accuracy_level, max_pos, source, symmetric=True):
    arch = g.meta("general.architecture")
    if arch != "qwen2":
        raise SystemExit(f"architecture {arch!r}: only qwen2 is supported")
    L = int(g.meta("qwen2.block_count"))
    D = int(g.meta("qwen2.embedding_length"))
    F = int(g.meta("qwen2.feed_forward_length"))
    H = int(g.meta("qwen2.attention.head_count"))
    KVH = int(g.meta("qwen2.attention.head_count_kv"))
    ctx = int(g.meta("qwen2.context_length"))
    theta = float(g.meta("qwen2.rope.freq_base"))
    eps = float(g.meta("qwen2.attention.layer_norm_rms_epsilon"))
    HD = D // H
    V = int(g.tensors["token_embd.weight"].shape[1])
    tied = "output.weight" not in g.tensors
    max_pos = min(max_pos or ctx, ctx)
    dims = dict(n_layers=L, hidden=D, intermediate=F, n_heads=H, n_kv_heads=KVH, head_dim=HD, vocab_size=V,
                context_length=ctx, max_positions=max_pos, rope_theta=theta, rms_norm_eps=eps,
                lm_head_tied=tied)
    log("dims", dims)

    data_name = "model.onnx.data"
    w = Weights(out_dir, data_name)
    b = Builder(w)

    if quant in ("int4", "int8"):
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            DefaultWeightOnlyQuantizer,
        )

        nbits = 4 if quant == "int4" else 8
        qcfg = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=symmetric, accuracy_level=accuracy_level,
                                            bits=nbits)
        quantizer = DefaultWeightOnlyQuantizer(qcfg)

    def linear(x, wname, out_name, bias_name=None):
        """x @ W^T (+ b) with W the GGUF weight [out, in]."""
        W = g.tensor(wname)  # [N, K]
        N, K = W.shape
        base = wname.replace(".weight", "")
        if quant == "none":
            wt = b.const(np.ascontiguousarray(W.T), base + ".w")
            del W
            y = b.node("MatMul", [x, wt], name=out_name if bias_name is None else out_name + "_mm")
        else:
            packed, scales, zp = quantizer.qbits_block_quant(np.ascontiguousarray(W.T))  # expects [K, N]
            del W
            bq = b.const(packed, base + f".w_q{nbits}")
            sc = b.const(scales, base + ".w_scales")
            mm_in = [x, bq, sc] if symmetric else [x, bq, sc, b.const(zp, base + ".w_zp")]
            attrs = dict(K=K, N=N, bits=nbits, block_size=32)
            if accuracy_level:
                attrs["accuracy_level"] = accuracy_level
            y = b.node("MatMulNBits", mm_in, name=out_name if bias_name is None else out_name + "_mm",
                       domain="com.microsoft", **attrs)
        if bias_name is not None:
            bias = b.const(g.tensor(bias_name), bias_name.replace(".bias", ".b"))
            y = b.node("Add", [y, bias], name=out_name)
        return y

    def rmsnorm(x, wname, out_name):
        wt = b.const(g.tensor(wname), wname.replace(".weight", ".w"))
        sq = b.node("Pow", [x, b.const(np.array(2.0, np.float32))])
        ms = b.node("ReduceMean", [sq], axes=[-1], keepdims=1)
        rms = b.node("Sqrt", [b.node("Add", [ms, b.const(np.array(eps, np.float32))])])
        return b.node("Mul", [b.node("Div", [x, rms]), wt], name=out_name)

    i64 = lambda v: np.array(v, np.int64)

    # ---- shapes, positions, RoPE tables, mask (shared by all layers)
    ids = "input_ids"
    ids_shape = b.node("Shape", [ids])
    seq = b.node("Slice", [ids_shape, b.const(i64([1])), b.const(i64([2]))], name="seq_len")  # [1]
    past_shape = b.node("Shape", ["past_key_values.0.key"])
    past = b.node("Slice", [past_shape, b.const(i64([2])), b.const(i64([3]))], name="past_len")  # [1]
    total = b.node("Add", [past, seq], name="total_len")
    sq0 = b.node("Squeeze", [past, b.const(i64([0]))])
    st0 = b.node("Squeeze", [total, b.const(i64([0]))])
    slots = b.node("Range", [sq0, st0, b.const(i64(1))], name="new_slots")  # [seq]: the new tokens' cache slots
    # Each row's own positions (RoPE): rows of a batch hold conversations of different lengths, and a row's
    # cache may have masked slots, so a token's position is not its slot.
    pos = "position_ids"  # [B, seq]

    # neox-style RoPE (rotate_half on the two halves of each head), angles computed in float64 here
    inv = 1.0 / (theta ** (np.arange(0, HD, 2, dtype=np.float64) / HD))
    ang = np.arange(max_pos, dtype=np.float64)[:, None] * inv[None, :]
    ang = np.concatenate([ang, ang], axis=1)
    cos_t = b.const(np.cos(ang).astype(np.float32), "rope.cos")  # [max_pos, HD]
    sin_t = b.const(np.sin(ang).astype(np.float32), "rope.sin")
    del ang
    cos = b.node("Unsqueeze", [b.node("Gather", [cos_t, pos], axis=0), b.const(i64([1]))], name="cos")  # [B,1,seq,HD]
    sin = b.node("Unsqueeze", [b.node("Gather", [sin_t, pos], axis=0), b.const(i64([1]))], name="sin")

    # mask [B,1,1,seq,total]: key slot j visible to query i iff j <= past + i (causal over slots) and the
    # row's attention_mask keeps slot j (a batch pads shorter rows with masked slots)
    qslot = b.node("Unsqueeze", [slots, b.const(i64([1]))])  # [seq,1]
    kslot = b.node("Unsqueeze", [b.node("Range", [b.const(i64(0)), st0, b.const(i64(1))]), b.const(i64([0]))])
    future = b.node("Unsqueeze", [b.node("Greater", [kslot, qslot]), b.const(i64([0, 1, 2]))])  # [1,1,1,seq,total]
    padded = b.node("Unsqueeze", [b.node("Equal", ["attention_mask", b.const(i64(0))]), b.const(i64([1, 2, 3]))])
    hide = b.node("Or", [future, padded])  # [B,1,1,seq,total]
    mask = b.node("Where", [hide, b.const(np.array(np.finfo(np.float32).min, np.float32)),
                            b.const(np.array(0.0, np.float32))], name="attention_bias")

    def rope(x, name):
        x1, x2 = b.node("Split", [x, b.const(i64([HD // 2, HD // 2]))], n_out=2, axis=-1)
        rot = b.node("Concat", [b.node("Neg", [x2]), x1], axis=-1)
        return b.node("Add", [b.node("Mul", [x, cos]), b.node("Mul", [rot, sin])], name=name)

    # ---- embedding
    if quant == "none":
        E = g.tensor("token_embd.weight")
        emb = b.const(E, "embed.w")
        del E
        h = b.node("Gather", [emb, ids], axis=0, name="embed")
    else:
        E = g.tensor("token_embd.weight")
        amax = np.abs(E).max(axis=1, keepdims=True)
        sc = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        q = np.clip(np.rint(E / sc), -127, 127).astype(np.int8)
        del E
        eq = b.const(q, "embed.w_q8")
        es = b.const(sc, "embed.w_scale")  # [V, 1]
        del q
        gq = b.node("Gather", [eq, ids], axis=0)
        gs = b.node("Gather", [es, ids], axis=0)
        h = b.node("Mul", [b.node("Cast", [gq], to=TensorProto.FLOAT), gs], name="embed")

    scale = np.array(1.0 / np.sqrt(HD), np.float32)
    G = H // KVH
    inputs, outputs = [], []
    inputs.append(helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]))
    inputs.append(helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]))
    inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total_seq"]))
    for i in range(L):
        t0 = time.time()
        p = f"blk.{i}."
        x = rmsnorm(h, p + "attn_norm.weight", f"l{i}.attn_in")
        q = linear(x, p + "attn_q.weight", f"l{i}.q", p + "attn_q.bias")
        k = linear(x, p + "attn_k.weight", f"l{i}.k", p + "attn_k.bias")
        v = linear(x, p + "attn_v.weight", f"l{i}.v", p + "attn_v.bias")
        q = b.node("Transpose", [b.node("Reshape", [q, b.const(i64([0, 0, H, HD]))])], perm=[0, 2, 1, 3])
        k = b.node("Transpose", [b.node("Reshape", [k, b.const(i64([0, 0, KVH, HD]))])], perm=[0, 2, 1, 3])
        v = b.node("Transpose", [b.node("Reshape", [v, b.const(i64([0, 0, KVH, HD]))])], perm=[0, 2, 1, 3])
        q = rope(b.node("Mul", [q, b.const(scale)]), f"l{i}.q_rope")  # [B,H,seq,HD]
        k = rope(k, f"l{i}.k_rope")  # [B,KVH,seq,HD]
        pk, pv = f"past_key_values.{i}.key", f"past_key_values.{i}.value"
        ok, ov = f"present.{i}.key", f"present.{i}.value"
        for nm in (pk, pv):
            inputs.append(helper.make_tensor_value_info(nm, TensorProto.FLOAT, ["batch", KVH, "past_seq", HD]))
        for nm in (ok, ov):
            outputs.append(helper.make_tensor_value_info(nm, TensorProto.FLOAT, ["batch", KVH, "total_seq", HD]))
        b.nodes.append(helper.make_node("Concat", [pk, k], [ok], name=ok, axis=2))
        b.nodes.append(helper.make_node("Concat", [pv, v], [ov], name=ov, axis=2))
        # GQA without repeating K/V: q [B,KVH,G,seq,HD] x k [B,KVH,1,HD,total]
        qg = b.node("Reshape", [q, b.const(i64([0, KVH, G, -1, HD]))])
        kt = b.node("Transpose", [b.node("Unsqueeze", [ok, b.const(i64([2]))])], perm=[0, 1, 2, 4, 3])
        vg = b.node("Unsqueeze", [ov, b.const(i64([2]))])
        s = b.node("Add", [b.node("MatMul", [qg, kt]), mask])
        pr = b.node("Softmax", [s], axis=-1)
        a = b.node("MatMul", [pr, vg])  # [B,KVH,G,seq,HD]
        a = b.node("Reshape", [a, b.const(i64([0, H, -1, HD]))])
        a = b.node("Reshape", [b.node("Transpose", [a], perm=[0, 2, 1, 3]), b.const(i64([0, 0, D]))])
        o = linear(a, p + "attn_output.weight", f"l{i}.attn_out")
        h = b.node("Add", [h, o], name=f"l{i}.resid1")
        x = rmsnorm(h, p + "ffn_norm.weight", f"l{i}.ffn_in")
        gt = linear(x, p + "ffn_gate.weight", f"l{i}.gate")
        up = linear(x, p + "ffn_up.weight", f"l{i}.up")
        act = b.node("Mul", [b.node("Mul", [gt, b.node("Sigmoid", [gt])]), up])
        dn = linear(act, p + "ffn_down.weight", f"l{i}.down")
        h = b.node("Add", [h, dn], name=f"l{i}.out")
        log(f"layer {i}: {time.time() - t0:.1f}s, peak RSS {peak_rss_mib():.0f} MiB")

    # ---- last position only, final norm, lm_head
    last = b.node("Sub", [seq, b.const(i64([1]))])
    hl = b.node("Gather", [h, last], axis=1, name="last_hidden")  # [B,1,D]
    x = rmsnorm(hl, "output_norm.weight", "final_norm")
    linear(x, "token_embd.weight" if tied else "output.weight", "logits")
    outputs.insert(0, helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1, V]))
    w.close()

    graph = helper.make_graph(b.nodes, "qwen2_decoder", inputs, outputs, initializer=w.inits)
    opsets = [helper.make_opsetid("", OPSET)]
    if quant != "none":
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="switchboard-llm-to-onnx",
                              producer_version=str(CONVERTER_VERSION))
    model.ir_version = IR_VERSION
    md = model.metadata_props.add()
    md.key, md.value = "source", source or ""
    with open(os.path.join(out_dir, "model.onnx"), "wb") as f:
        f.write(model.SerializeToString(deterministic=True))
    onnx.checker.check_model(os.path.join(out_dir, "model.onnx"))
    return dims


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for c in range(256):
        if c not in bs:
            bs.append(c)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_tokenizer(g, out_dir):
    tokens = list(g.meta("tokenizer.ggml.tokens"))
    ttypes = list(g.meta("tokenizer.ggml.token_type"))
    merges = list(g.meta("tokenizer.ggml.merges"))
    if g.meta("tokenizer.ggml.model") != "gpt2" or g.meta("tokenizer.ggml.pre") != "qwen2":
        raise SystemExit("tokenizer: expected model gpt2 / pre qwen2")
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == len(tokens), "duplicate token strings"
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        for m in merges:
            assert m.count(" ") == 1, m
            f.write(m + "\n")
    # llama.cpp token types: 1 normal, 3 control, 4 user-defined, 5 unused ([PADnnnnn] filler rows)
    added = [dict(id=i, content=t, special=(ttypes[i] == 3), type=int(ttypes[i]))
             for i, t in enumerate(tokens) if ttypes[i] in (3, 4)]
    hf = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [dict(id=a["id"], content=a["content"], single_word=False, lstrip=False, rstrip=False,
                              normalized=False, special=a["special"]) for a in added],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_PRETOKENIZE_REGEX}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                           "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  # every token, added ones included: an added token missing from the model vocab would be
                  # given a fresh id past the end by `tokenizers` instead of its own
                  "vocab": vocab,
                  "merges": merges},
    }
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(hf, f, ensure_ascii=False, separators=(",", ":"))
    return added, len(tokens), len(merges)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for blk in iter(lambda: f.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf")
    ap.add_argument("out_dir")
    ap.add_argument("--quant", choices=["int4", "int8", "none"], default="int4")
    ap.add_argument("--accuracy-level", type=int, default=4,
                    help="MatMulNBits accuracy_level (0 = unset, 4 = int8 activations; default 4)")
    ap.add_argument("--symmetric", action="store_true",
                    help="int4/int8 without zero points. Default: asymmetric (uint4/uint8 + zero point per block): "
                         "the GGUF's Q4_K blocks are themselves affine (scale and min), and symmetric int4 on top of "
                         "them lost facts on the receptionist prompt set")
    ap.add_argument("--max-pos", type=int, default=0, help="RoPE table length (default: context_length)")
    ap.add_argument("--source", default="", help="provenance text stored in the model metadata")
    ap.add_argument("--no-gguf-sha", action="store_true", help="skip hashing the GGUF")
    ap.add_argument("--tokenizer-only", action="store_true", help="only (re)write tokenizer.json/vocab.json/merges.txt")
    a = ap.parse_args()
    t0 = time.time()
    os.makedirs(a.out_dir, exist_ok=True)
    g = GGUFModel(a.gguf)
    if a.tokenizer_only:
        write_tokenizer(g, a.out_dir)
        return
    dims = build(g, a.out_dir, a.quant, a.accuracy_level if a.quant != "none" else 0, a.max_pos, a.source,
                 symmetric=a.symmetric)
    added, nvocab, nmerges = write_tokenizer(g, a.out_dir)
    special = {t["content"]: t["id"] for t in added}
    side = {
        "format": "switchboard-llm-onnx",
        "converter_version": CONVERTER_VERSION,
        "architecture": "qwen2",
        "name": g.meta("general.name"),
        "source": a.source,
        "gguf_sha256": None if a.no_gguf_sha else sha256(a.gguf),
        "quant": a.quant,
        "matmul": ("float32 MatMul" if a.quant == "none" else
                   f"com.microsoft MatMulNBits bits={4 if a.quant == 'int4' else 8} block_size=32 "
                   f"{'symmetric' if a.symmetric else 'asymmetric (uint zero points)'} "
                   f"accuracy_level={a.accuracy_level}"),
        **dims,
        "rope": {"type": "neox", "theta": dims["rope_theta"], "dims": dims["head_dim"],
                 "note": "rotate_half over the two halves of each head; no Q/K weight permutation for qwen2"},
        "io": {
            "inputs": {"input_ids": ["int64", ["batch", "seq"]],
                       "position_ids": ["int64", ["batch", "seq"]],
                       "attention_mask": ["int64", ["batch", "past_seq+seq"]],
                       "past_key_values.{i}.key": ["float32", ["batch", dims["n_kv_heads"], "past_seq", dims["head_dim"]]],
                       "past_key_values.{i}.value": ["float32", ["batch", dims["n_kv_heads"], "past_seq", dims["head_dim"]]]},
            "outputs": {"logits": ["float32", ["batch", 1, dims["vocab_size"]]],
                        "present.{i}.key": ["float32", ["batch", dims["n_kv_heads"], "past_seq+seq", dims["head_dim"]]],
                        "present.{i}.value": ["float32", ["batch", dims["n_kv_heads"], "past_seq+seq", dims["head_dim"]]]},
            "logits": "last position only",
            "positions": ("position_ids per row (RoPE); the new tokens take cache slots past_seq + arange(seq); "
                          "attention_mask [batch, past_seq+seq]: 0 hides a slot (padding of a shorter row); "
                          "past_seq = 0 on the first call"),
        },
        "special_tokens": {
            "bos": g.meta("tokenizer.ggml.bos_token_id"),
            "eos": g.meta("tokenizer.ggml.eos_token_id"),
            "pad": g.meta("tokenizer.ggml.padding_token_id"),
            "add_bos": bool(g.meta("tokenizer.ggml.add_bos_token", False)),
            "endoftext": special.get("<|endoftext|>"),
            "im_start": special.get("<|im_start|>"),
            "im_end": special.get("<|im_end|>"),
            "stop": sorted({special.get("<|im_end|>"), special.get("<|endoftext|>")}),
        },
        "chat_template": g.meta("tokenizer.chat_template"),
        "chat_format": ("<|im_start|>{role}\\n{content}<|im_end|>\\n per message; if messages[0] is not a system "
                        "message the template first inserts <|im_start|>system\\nYou are Qwen, created by Alibaba "
                        "Cloud. You are a helpful assistant.<|im_end|>\\n; generation prompt "
                        "<|im_start|>assistant\\n"),
        "tokenizer": {
            "model": "byte-level BPE (GPT-2 style, tokenizer.ggml.model=gpt2, pre=qwen2)",
            "files": {"vocab": "vocab.json", "merges": "merges.txt", "hf": "tokenizer.json"},
            "vocab_size": nvocab, "n_merges": nmerges,
            "pretokenize_regex": QWEN2_PRETOKENIZE_REGEX,
            "normalizer": "NFC (HF Qwen2 tokenizer; llama.cpp applies none: equal for NFC input)",
            "added_tokens": added,
            "notes": ("split the text on added tokens (exact string match, longest first) before the regex; "
                      "each regex piece is mapped byte->unicode (GPT-2 table), then merged by merge rank; "
                      "no BOS is added"),
        },
    }
    with open(os.path.join(a.out_dir, "llm.json"), "w", encoding="utf-8") as f:
        json.dump(side, f, ensure_ascii=False, indent=1)
        f.write("\n")
    sizes = {n: os.path.getsize(os.path.join(a.out_dir, n)) for n in sorted(os.listdir(a.out_dir))}
    log("sizes", sizes)
    log(f"done in {time.time() - t0:.0f}s, peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
