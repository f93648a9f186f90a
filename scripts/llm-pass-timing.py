#!/usr/bin/env python3
"""Time one forward pass of the converted language model over N new tokens (a turn's prompt) with
300 tokens of past, as the appliance runs it (2 threads, no spinning), and optionally profile it.

  models/venv/bin/python scripts/llm-pass-timing.py models/qwen2_5_coder_1_5b [--tokens 1,2,4,8,16,32]
                                                     [--threads 2] [--past 300] [--profile N]

--profile N writes ONNX Runtime's profile of N-token passes and prints the time by operator and by
the layers' matrices (summed over the layers)."""
import argparse, collections, json, os, re, time
import numpy as np
import onnxruntime as ort

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("model_dir")
ap.add_argument("--tokens", default="1,2,4,8,16,32")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--past", type=int, default=300)
ap.add_argument("--profile", type=int, default=0)
a = ap.parse_args()

so = ort.SessionOptions()
so.intra_op_num_threads, so.inter_op_num_threads = a.threads, 1
so.add_session_config_entry("session.intra_op.allow_spinning", "0")
if a.profile:
    so.enable_profiling = True
    so.profile_file_prefix = "/tmp/llm-pass"
s = ort.InferenceSession(os.path.join(a.model_dir, "model.onnx"), so, providers=["CPUExecutionProvider"])
layers = sum(1 for i in s.get_inputs() if i.name.endswith(".key"))
rng = np.random.default_rng(0)


def run(m):
    feeds = {
        "input_ids": rng.integers(100, 5000, (1, m)).astype(np.int64),
        "position_ids": (a.past + np.arange(m)).reshape(1, m).astype(np.int64),
        "attention_mask": np.ones((1, a.past + m), np.int64),
    }
    for i in range(layers):
        for kv in ("key", "value"):
            feeds[f"past_key_values.{i}.{kv}"] = rng.random((1, 2, a.past, 128), dtype=np.float32)
    t = time.perf_counter()
    s.run(["logits"], feeds)
    return (time.perf_counter() - t) * 1000


run(8)  # warm-up
for m in ([a.profile] if a.profile else [int(x) for x in a.tokens.split(",")]):
    ts = [run(m) for _ in range(3)]
    print(f"{m:3d} new tokens: {' '.join(f'{t:.0f}' for t in ts)} ms a pass, {min(ts) / m:.1f} ms a token")
if a.profile:
    ev = json.load(open(s.end_profiling()))
    by_op, by_matrix = collections.Counter(), collections.Counter()
    for e in ev:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"].get("op_name")] += e["dur"]
            if e["args"].get("op_name") == "MatMulNBits":
                by_matrix[re.sub(r"\d+", "#", e["name"][: -len("_kernel_time")])] += e["dur"]
    total = sum(by_op.values())
    runs = 4  # the warm-up and three timed passes
    for op, d in by_op.most_common(8):
        print(f"  {op:28s} {d / 1000 / runs:7.1f} ms a pass  {100 * d / total:4.1f} %")
    for k, d in by_matrix.most_common(8):
        print(f"  MatMulNBits {k:16s} {d / 1000 / runs:7.1f} ms a pass")
