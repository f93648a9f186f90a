#!/usr/bin/env python3
"""Reference runner and checks for the Qwen2 ONNX decoder written by scripts/llm-to-onnx.py.

  # ONNX Runtime (tokenisation: the pure-Python byte-level BPE below, from vocab.json + merges.txt)
  python scripts/llm-reference.py run --backend onnx --model-dir OUT_DIR --out onnx.json [--threads 2]
  # llama.cpp (llama-cpp-python) on the same GGUF, for comparison
  python scripts/llm-reference.py run --backend llama --gguf MODEL.gguf --model-dir OUT_DIR --out llama.json
  # side-by-side: logits agreement, answers and facts, timings
  python scripts/llm-reference.py compare llama.json onnx.json [more.json ...]

`run` does, for the prompt set (default tests/fixtures/llm/prompts.json):
  * tokenises every chat (chat template from llm.json rendered with jinja2, checked against a hand-written
    formatter) - with --backend llama also with llama.cpp's tokenizer, and reports any difference;
  * next-token logits of each logit prompt (saved next to --out as .npz);
  * greedy answers (KV cache, stop at <|im_end|>/<|endoftext|>) and the fact checks;
  * --bench: time to first token for the longest chat prompt and decode tokens/s (64 tokens), peak RSS.
Each backend runs in its own process so that its peak RSS is its own.
"""
import argparse
import json
import os
import re
import resource
import sys
import time
import unicodedata

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROMPTS = os.path.join(HERE, "..", "tests", "fixtures", "llm", "prompts.json")


def vm_hwm_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def vm_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------- tokenizer (pure Python byte-level BPE)
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


class BPETokenizer:
    def __init__(self, model_dir):
        import regex

        side = json.load(open(os.path.join(model_dir, "llm.json"), encoding="utf-8"))
        tk = side["tokenizer"]
        self.vocab = json.load(open(os.path.join(model_dir, tk["files"]["vocab"]), encoding="utf-8"))
        self.id_to_tok = {i: t for t, i in self.vocab.items()}
        with open(os.path.join(model_dir, tk["files"]["merges"]), encoding="utf-8") as f:
            merges = [tuple(l.rstrip("\n").split(" ")) for l in f if l.rstrip("\n")]
        self.ranks = {m: r for r, m in enumerate(merges)}
        self.pat = regex.compile(tk["pretokenize_regex"])
        self.added = {a["content"]: a["id"] for a in tk["added_tokens"]}
        alts = sorted(self.added, key=len, reverse=True)
        self.added_pat = re.compile("(" + "|".join(re.escape(a) for a in alts) + ")")
        self.b2u = bytes_to_unicode()
        self.u2b = {u: b for b, u in self.b2u.items()}
        self.cache = {}

    def _bpe(self, piece):
        if piece in self.cache:
            return self.cache[piece]
        word = list(piece)
        while len(word) > 1:
            best, bi = None, -1
            for i in range(len(word) - 1):
                r = self.ranks.get((word[i], word[i + 1]))
                if r is not None and (best is None or r < best):
                    best, bi = r, i
            if best is None:
                break
            a, b = word[bi], word[bi + 1]
            out, i = [], 0
            while i < len(word):  # merge every occurrence of the pair, left to right
                if i < len(word) - 1 and word[i] == a and word[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = out
        ids = [self.vocab[w] for w in word]
        self.cache[piece] = ids
        return ids

    def encode(self, text):
        ids = []
        for seg in self.added_pat.split(text):
            if not seg:
                continue
            if seg in self.added:
                ids.append(self.added[seg])
                continue
            seg = unicodedata.normalize("NFC", seg)
            for m in self.pat.findall(seg):
                ids.extend(self._bpe("".join(self.b2u[c] for c in m.encode("utf-8"))))
        return ids

    def decode(self, ids, skip_special=True):
        out = bytearray()
        for i in ids:
            t = self.id_to_tok[int(i)]
            if t in self.added:
                if not skip_special:
                    out += t.encode("utf-8")
                continue
            out += bytes(self.u2b[c] for c in t)
        return out.decode("utf-8", errors="replace")


def render_chat(template, messages, add_generation_prompt=True):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, tools=None, add_generation_prompt=add_generation_prompt)


def format_chat(messages, add_generation_prompt=True):
    """What the Rust side has to do (no tools): equal to render_chat for these messages."""
    s = ""
    if not messages or messages[0]["role"] != "system":
        s += "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    for m in messages:
        s += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
    if add_generation_prompt:
        s += "<|im_start|>assistant\n"
    return s


# ---------------------------------------------------------------- backends
class OnnxLM:
    def __init__(self, model_dir, threads):
        import onnxruntime as ort

        self.side = json.load(open(os.path.join(model_dir, "llm.json"), encoding="utf-8"))
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        t = time.time()
        self.sess = ort.InferenceSession(os.path.join(model_dir, "model.onnx"), so, providers=["CPUExecutionProvider"])
        self.load_s = time.time() - t
        self.L = self.side["n_layers"]
        self.kvh = self.side["n_kv_heads"]
        self.hd = self.side["head_dim"]
        self.version = "onnxruntime " + ort.__version__

    def reset(self):
        z = np.zeros((1, self.kvh, 0, self.hd), np.float32)
        self.past = {f"past_key_values.{i}.{kv}": z for i in range(self.L) for kv in ("key", "value")}

    def forward(self, ids):
        past = self.past["past_key_values.0.key"].shape[2]
        total = past + len(ids)
        feed = {"input_ids": np.asarray([ids], np.int64), **self.past,
                "position_ids": np.arange(past, total, dtype=np.int64)[None, :],
                "attention_mask": np.ones((1, total), np.int64)}
        outs = self.sess.run(None, feed)
        names = [o.name for o in self.sess.get_outputs()]
        res = dict(zip(names, outs))
        self.past = {n.replace("present.", "past_key_values."): v for n, v in res.items() if n.startswith("present.")}
        return res["logits"][0, -1]


class LlamaLM:
    def __init__(self, gguf, threads, n_ctx=2048):
        import llama_cpp

        t = time.time()
        self.llm = llama_cpp.Llama(model_path=gguf, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                   n_batch=512, logits_all=False, verbose=False, seed=0)
        self.load_s = time.time() - t
        self.n_vocab = self.llm.n_vocab()
        self.version = "llama-cpp-python " + llama_cpp.__version__

    def tokenize(self, text):
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def reset(self):
        self.llm.reset()

    def forward(self, ids):
        # llama-cpp-python 0.3.x no longer copies logits into .scores unless logits_all=True (an
        # n_ctx x vocab array): read the last token's row from the context directly.
        self.llm.eval(list(ids))
        return np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.n_vocab,)).astype(np.float32)


def greedy(lm, ids, max_new, stop):
    lm.reset()
    t0 = time.perf_counter()
    logits = first = lm.forward(ids)
    tok = int(np.argmax(logits))
    ttft = time.perf_counter() - t0
    out = [tok]
    t1 = time.perf_counter()
    while len(out) < max_new and (stop is None or tok not in stop):
        logits = lm.forward([tok])
        tok = int(np.argmax(logits))
        out.append(tok)
    dt = time.perf_counter() - t1
    if stop is not None and out and out[-1] in stop:
        out = out[:-1]
    return out, ttft, dt, len(out) - 1, first


def check_facts(text, case):
    ok_e = [bool(re.search(p, text, re.I)) for p in case.get("expect", [])]
    ok_f = [not re.search(p, text, re.I) for p in case.get("forbid", [])]
    return all(ok_e) and all(ok_f)


def cmd_run(a):
    prompts = json.load(open(a.prompts, encoding="utf-8"))
    tok = BPETokenizer(a.model_dir)
    side = json.load(open(os.path.join(a.model_dir, "llm.json"), encoding="utf-8"))
    stop = set(side["special_tokens"]["stop"])
    if a.backend == "onnx":
        lm = OnnxLM(a.model_dir, a.threads)
    else:
        lm = LlamaLM(a.gguf, a.threads)
    res = {"backend": a.backend, "version": lm.version, "model": a.model_dir if a.backend == "onnx" else a.gguf,
           "threads": a.threads, "load_s": round(lm.load_s, 2), "rss_after_load_mib": round(vm_rss_mib()),
           "cases": [], "tokenizer_mismatches": []}
    if a.backend == "onnx":
        res["quant"] = side.get("quant")

    def ids_for(text):
        mine = tok.encode(text)
        if a.backend == "llama":
            theirs = lm.tokenize(text)
            if theirs != mine:
                res["tokenizer_mismatches"].append({"text": text[:200], "bpe": mine, "llama": theirs})
            return theirs
        return mine

    # next-token logits
    logit_rows = {}
    for j, p in enumerate(prompts["logit_prompts"]):
        ids = ids_for(p)
        lm.reset()
        logit_rows[f"raw{j}"] = lm.forward(ids)
    # chats
    for c in prompts["cases"]:
        msgs = [{"role": "system", "content": prompts["system"]}] + c["messages"]
        text = render_chat(side["chat_template"], msgs)
        assert text == format_chat(msgs), "chat template and format_chat disagree"
        ids = ids_for(text)
        out, ttft, dt, n, first = greedy(lm, ids, prompts["max_new_tokens"], stop)
        answer = tok.decode(out)
        logit_rows[c["id"]] = first
        r = {"id": c["id"], "n_prompt": len(ids), "answer": answer, "tokens": out, "facts": c.get("facts"),
             "facts_ok": check_facts(answer, c), "ttft_s": round(ttft, 3),
             "tok_per_s": round(n / dt, 2) if n > 0 and dt > 0 else None}
        res["cases"].append(r)
        print(f"[{a.backend}] {c['id']:20s} ok={r['facts_ok']!s:5s} n={len(ids)} {answer!r}", file=sys.stderr, flush=True)
    np.savez(os.path.splitext(a.out)[0] + ".logits.npz", **{k: v for k, v in logit_rows.items()})
    res["facts_ok"] = sum(c["facts_ok"] for c in res["cases"])

    if a.bench:
        c = max(prompts["cases"], key=lambda c: sum(len(m["content"]) for m in c["messages"]))
        msgs = [{"role": "system", "content": prompts["system"]}] + c["messages"]
        ids = ids_for(format_chat(msgs))
        runs = []
        for _ in range(a.bench_runs):
            _, ttft, dt, n, _ = greedy(lm, ids, a.bench_tokens, None)
            runs.append((ttft, n / dt))
        res["bench"] = {"prompt_tokens": len(ids), "new_tokens": a.bench_tokens,
                        "ttft_s": [round(r[0], 3) for r in runs], "tok_per_s": [round(r[1], 2) for r in runs]}
        print(f"[{a.backend}] bench {res['bench']}", file=sys.stderr)
    res["peak_rss_mib"] = round(vm_hwm_mib())
    ru = resource.getrusage(resource.RUSAGE_SELF)
    res["cpu_s"] = round(ru.ru_utime + ru.ru_stime, 1)
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(res, f, ensure_ascii=False, indent=1)
    print(f"[{a.backend}] facts {res['facts_ok']}/{len(res['cases'])}, peak RSS {res['peak_rss_mib']} MiB, "
          f"tokenizer mismatches {len(res['tokenizer_mismatches'])}", file=sys.stderr)


def cmd_compare(a):
    runs = [json.load(open(p, encoding="utf-8")) for p in a.results]
    cases = {c["id"]: c for c in json.load(open(a.prompts, encoding="utf-8"))["cases"]}
    for r in runs:  # re-judge against the current fixture
        for c in r["cases"]:
            c["facts_ok"] = check_facts(c["answer"], cases[c["id"]])
        r["facts_ok"] = sum(c["facts_ok"] for c in r["cases"])
    lg = [np.load(os.path.splitext(p)[0] + ".logits.npz") for p in a.results]
    ref, rl = runs[0], lg[0]
    names = [os.path.splitext(os.path.basename(p))[0] for p in a.results]
    print("reference:", names[0], ref["version"])
    for r, l, nm in zip(runs[1:], lg[1:], names[1:]):
        print(f"\n== {nm} ({r['version']}) vs {names[0]}: next-token logits")
        agree = 0
        for k in rl.files:
            x, y = rl[k], l[k]
            t1x, t1y = int(np.argmax(x)), int(np.argmax(y))
            top5 = len(set(np.argsort(-x)[:5]) & set(np.argsort(-y)[:5]))
            agree += t1x == t1y
            srt = np.sort(x)[::-1]
            gap = f"  (ref top1-top2 margin {srt[0] - srt[1]:.3f})" if t1x != t1y else ""
            print(f"  {k:20s} top1 {t1x:6d}/{t1y:6d} {'==' if t1x == t1y else '!='}{gap}  top5 overlap {top5}/5  "
                  f"max|dlogit| {np.abs(x - y).max():.3f}  mean|dlogit| {np.abs(x - y).mean():.3f}")
        print(f"  top-1 agreement {agree}/{len(rl.files)}")
    print("\n== answers")
    for i, c in enumerate(ref["cases"]):
        print(f"- {c['id']} ({c['facts']})")
        for r, nm in zip(runs, names):
            cc = r["cases"][i]
            same = "" if r is ref else (" [identical tokens]" if cc["tokens"] == c["tokens"] else
                                        f" [first {next((j for j, (u, v) in enumerate(zip(cc['tokens'], c['tokens'])) if u != v), min(len(cc['tokens']), len(c['tokens'])))} tokens identical]")
            print(f"    {nm:14s} facts {'OK ' if cc['facts_ok'] else 'BAD'} {cc['answer']!r}{same}")
    print("\n== summary")
    for r, nm in zip(runs, names):
        b = r.get("bench", {})
        print(f"  {nm:14s} facts {r['facts_ok']}/{len(r['cases'])}  load {r['load_s']}s  "
              f"bench prompt {b.get('prompt_tokens')} tok: ttft {b.get('ttft_s')} s, decode {b.get('tok_per_s')} tok/s  "
              f"peak RSS {r['peak_rss_mib']} MiB  tokenizer mismatches {len(r['tokenizer_mismatches'])}")


TOKCHECK_TEXTS = [
    "Hello world", " leading space", "double  space and   triple", "trailing space ", "tabs\tand\nnewlines\n\n\nx",
    "I'm, you're, we'll, he'd, they've, it's; I'M YOU'RE", "Numbers: 555-0100, 7:00-18:00, 3.14159, 1234567, 2024",
    "Caf\u00e9 na\u00efve \u00fcber Stra\u00dfe \u0645\u0631\u062d\u0628\u0627 \u4f60\u597d\u4e16\u754c \u3053\u3093\u306b\u3061\u306f \U0001F600\U0001F35E emoji",
    "def f(x):\n    return x**2  # comment\n", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "a<|endoftext|>b<tool_call>{\"name\": 1}</tool_call>", "!!!??? ... --- ___ ***", "   \n  \n", "e\u0301 (combining acute)",
    "URL https://example.com/a?b=c&d=e", "x" * 50 + " " + "ab" * 20,
]


def cmd_tokcheck(a):
    tok = BPETokenizer(a.model_dir)
    checks = {}
    if a.gguf:
        import llama_cpp

        llm = llama_cpp.Llama(model_path=a.gguf, n_ctx=64, vocab_only=True, verbose=False)
        checks["llama.cpp"] = lambda t: llm.tokenize(t.encode("utf-8"), add_bos=False, special=True)
    try:
        import tokenizers

        hf = tokenizers.Tokenizer.from_file(os.path.join(a.model_dir, "tokenizer.json"))
        checks["tokenizers(tokenizer.json)"] = lambda t: hf.encode(t, add_special_tokens=False).ids
    except ImportError:
        pass
    prompts = json.load(open(a.prompts, encoding="utf-8"))
    texts = TOKCHECK_TEXTS + [prompts["system"]] + prompts["logit_prompts"]
    bad = 0
    for t in texts:
        mine = tok.encode(t)
        assert tok.decode(mine, skip_special=False) == unicodedata.normalize("NFC", t) or "\u0301" in t, t
        for nm, f in checks.items():
            other = list(f(t))
            if other != mine:
                bad += 1
                print(f"MISMATCH {nm}: {t!r}\n  bpe   {mine}\n  other {other}")
    print(f"tokcheck: {len(texts)} texts, checkers {list(checks)}, mismatches {bad}")
    if a.write:
        # The Rust tokenizer's test fixture: llama.cpp's ids for every text and for every case's chat prompt.
        if "llama.cpp" not in checks:
            sys.exit("--write needs --gguf (the fixture holds llama.cpp's ids)")
        side = json.load(open(os.path.join(a.model_dir, "llm.json"), encoding="utf-8"))
        chats = []
        for c in prompts["cases"]:
            msgs = [{"role": "system", "content": prompts["system"]}] + c["messages"]
            text = render_chat(side["chat_template"], msgs)
            chats.append({"id": c["id"], "ids": list(checks["llama.cpp"](text))})
        out = {"source": "llama.cpp tokenize(special=True) via scripts/llm-reference.py tokcheck --write",
               "texts": [{"text": t, "ids": list(checks["llama.cpp"](t))} for t in texts], "chats": chats}
        with open(a.write, "w", encoding="utf-8") as f:
            json.dump(out, f, ensure_ascii=False, indent=0)
        print(f"wrote {a.write}")


def numpy_forward(gguf_path, ids):
    """Independent float64 numpy Qwen2 forward over the dequantised GGUF weights (no cache): last logits.
    Follows HF Qwen2 (neox RoPE, GQA by repeating K/V heads, untied lm_head unless output.weight is absent)."""
    import gguf

    r = gguf.GGUFReader(gguf_path)
    T = {t.name: t for t in r.tensors}
    f = lambda k: r.fields[k].contents()

    def W(name):
        t = T[name]
        a = np.array(t.data, np.float32) if t.tensor_type == gguf.GGMLQuantizationType.F32 else \
            gguf.quants.dequantize(t.data, t.tensor_type)
        return a.reshape(tuple(int(x) for x in reversed(t.shape))).astype(np.float64)

    L, H, KVH = f("qwen2.block_count"), f("qwen2.attention.head_count"), f("qwen2.attention.head_count_kv")
    D = f("qwen2.embedding_length")
    HD, eps, theta = D // H, f("qwen2.attention.layer_norm_rms_epsilon"), f("qwen2.rope.freq_base")
    n = len(ids)
    x = W("token_embd.weight")[ids]
    inv = 1.0 / theta ** (np.arange(0, HD, 2) / HD)
    ang = np.arange(n)[:, None] * inv[None]
    cos, sin = np.cos(np.concatenate([ang, ang], 1)), np.sin(np.concatenate([ang, ang], 1))
    rot = lambda v: v * cos + np.concatenate([-v[..., HD // 2:], v[..., :HD // 2]], -1) * sin
    norm = lambda v, w: v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * w
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(L):
        p = f"blk.{i}."
        h = norm(x, W(p + "attn_norm.weight"))
        q = (h @ W(p + "attn_q.weight").T + W(p + "attn_q.bias")).reshape(n, H, HD).transpose(1, 0, 2)
        k = (h @ W(p + "attn_k.weight").T + W(p + "attn_k.bias")).reshape(n, KVH, HD).transpose(1, 0, 2)
        v = (h @ W(p + "attn_v.weight").T + W(p + "attn_v.bias")).reshape(n, KVH, HD).transpose(1, 0, 2)
        q, k = rot(q), rot(k)
        k, v = np.repeat(k, H // KVH, 0), np.repeat(v, H // KVH, 0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(HD) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        a = (s / s.sum(-1, keepdims=True)) @ v
        x = x + a.transpose(1, 0, 2).reshape(n, D) @ W(p + "attn_output.weight").T
        h = norm(x, W(p + "ffn_norm.weight"))
        g = h @ W(p + "ffn_gate.weight").T
        x = x + ((g / (1 + np.exp(-g))) * (h @ W(p + "ffn_up.weight").T)) @ W(p + "ffn_down.weight").T
    h = norm(x[-1:], W("output_norm.weight"))
    return (h @ W("output.weight" if "output.weight" in T else "token_embd.weight").T)[0]


def cmd_numpycheck(a):
    """ONNX (full prefill, and prefill + cached single-token steps) against the numpy forward."""
    tok = BPETokenizer(a.model_dir)
    side = json.load(open(os.path.join(a.model_dir, "llm.json"), encoding="utf-8"))
    ids = tok.encode(format_chat([{"role": "user", "content": "Are you open on Sunday?"}]))[-a.n:]
    ref = numpy_forward(a.gguf, ids)
    lm = OnnxLM(a.model_dir, a.threads)
    lm.reset()
    full = lm.forward(ids)
    lm.reset()
    inc = lm.forward(ids[: a.n - 3])
    for t in ids[a.n - 3:]:
        inc = lm.forward([t])
    for nm, y in (("prefill", full), ("prefill+3 cached steps", inc)):
        print(f"{side['quant']:5s} {nm:24s} vs numpy float64 ({len(ids)} tokens): top1 {int(np.argmax(ref))}/{int(np.argmax(y))} "
              f"max|dlogit| {np.abs(ref - y).max():.5f} mean {np.abs(ref - y).mean():.5f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp = ap.add_subparsers(dest="cmd", required=True)
    r = sp.add_parser("run")
    r.add_argument("--backend", choices=["onnx", "llama"], required=True)
    r.add_argument("--model-dir", required=True, help="converter output (llm.json, vocab.json, merges.txt, model.onnx)")
    r.add_argument("--gguf")
    r.add_argument("--prompts", default=DEFAULT_PROMPTS)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--out", required=True)
    r.add_argument("--bench", action="store_true")
    r.add_argument("--bench-runs", type=int, default=3)
    r.add_argument("--bench-tokens", type=int, default=64)
    t = sp.add_parser("tokcheck")
    t.add_argument("--model-dir", required=True)
    t.add_argument("--gguf")
    t.add_argument("--prompts", default=DEFAULT_PROMPTS)
    t.add_argument("--write", help="write llama.cpp's ids as a JSON fixture (tests/fixtures/llm/tokens.json)")
    nc = sp.add_parser("numpycheck")
    nc.add_argument("--model-dir", required=True)
    nc.add_argument("--gguf", required=True)
    nc.add_argument("--n", type=int, default=12, help="number of prompt tokens (the last n of a chat prompt)")
    nc.add_argument("--threads", type=int, default=2)
    c = sp.add_parser("compare")
    c.add_argument("results", nargs="+")
    c.add_argument("--prompts", default=DEFAULT_PROMPTS)
    a = ap.parse_args()
    {"run": cmd_run, "compare": cmd_compare, "tokcheck": cmd_tokcheck, "numpycheck": cmd_numpycheck}[a.cmd](a)


if __name__ == "__main__":
    main()
