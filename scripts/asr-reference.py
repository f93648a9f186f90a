#!/usr/bin/env python3
"""Reference Whisper transcription with the converted ONNX graphs (scripts/whisper-to-onnx.py), in
numpy + the Python onnxruntime: what the Rust ASR (src/) must reproduce token for token.

  models/venv/bin/python scripts/asr-reference.py [--model whisper_tiny_en] [--int8] [--compare] [WAV...]

  --model NAME|DIR   converted model folder (a name is looked up under models/): whisper_tiny_en, whisper_base
  --int8             run encoder.int8.onnx / decoder.int8.onnx instead of the float32 graphs
  --compare          also decode with CTranslate2 (compute_type float32) from the source CTranslate2 model
                     (--ct2 DIR, default models/<model>_ct2) and compare the tokens; exit 1 on a difference
  --language en      language token for a multilingual model (prompt <|sot|><|en|><|transcribe|><|notimestamps|>)
  --json FILE        also write the results (tokens, text, no-speech probability, timings) as JSON
  WAV                16-bit PCM WAV files (any rate: resampled to 16 kHz by linear interpolation, as
                     scripts/transcribe.py does), or @silence / @noise (10 s of zeros / of white noise);
                     default: the real speech clips in models/fixtures/speech/

Decoding (the algorithm the appliance implements):
  - front end: 16 kHz, zero-pad/cut to 30 s, log-mel 80 x 3000 (pipecat's numpy Whisper features as in
    scripts/transcribe.py: STFT 400/160, Slaney mel, log10, clamp at max - 8, (x + 4) / 4)
  - encoder once -> cross_kv; decoder on the whole prompt with an empty cache (past_len 0), then one token
    at a time with the cache it returns
  - prompt: [SOT, notimestamps] for an English-only model, [SOT, lang, transcribe, notimestamps] otherwise
  - no-speech probability: softmax over the full vocabulary of the logits at the SOT position (first step),
    probability of the <|nocaptions|>/<|nospeech|> token
  - greedy: suppress_ids masked at every step, suppress_ids_begin at the first generated step only;
    stop at EOT or when the sequence (prompt included) reaches max_length (448)
  - text: byte-level BPE, line i of vocabulary.txt is token i; tokens >= EOT (special) are dropped
"""
import argparse, importlib.util, json, os, sys, time, wave
import numpy as np, onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.environ.get("SWITCHBOARD_MODELS", os.path.join(ROOT, "models"))
SPEECH = os.path.join(MODELS, "fixtures/speech")
SR = 16000
N_SAMPLES = 30 * SR


# ---- front end ------------------------------------------------------------------------------------------
def whisper_features():
    spec = importlib.util.spec_from_file_location("wf", os.path.join(MODELS, "smart_turn/_whisper_features.py"))
    wf = importlib.util.module_from_spec(spec); spec.loader.exec_module(wf)
    return wf


def feats30(wf, x):
    x = np.pad(x.astype(np.float32), (0, max(0, N_SAMPLES - len(x))))[:N_SAMPLES]
    mag = wf._power_spectrogram(x, wf._HANN_WINDOW, wf._N_FFT, wf._HOP_LENGTH)
    ls = np.log10(np.maximum(1e-10, wf._MEL_FILTERS.T @ mag))[:, :-1]  # drop the last frame: 3000 frames
    ls = np.maximum(ls, ls.max() - 8.0)
    return ((ls + 4.0) / 4.0).astype(np.float32)


def load_audio(path):
    """(float32 samples at 16 kHz, description)."""
    if path in ("@silence", "@noise"):
        n = 10 * SR
        if path == "@silence":
            return np.zeros(n, np.float32), "10.0 s of digital silence"
        x = np.random.default_rng(0).normal(0.0, 0.1, n).clip(-1, 1).astype(np.float32)
        return x, "10.0 s of white noise, rms 0.1 (seed 0)"
    w = wave.open(path)
    sr, ch = w.getframerate(), w.getnchannels()
    if w.getsampwidth() != 2:
        raise SystemExit(f"{path}: only 16-bit PCM WAV is read here")
    x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
    if ch > 1:
        x = x.reshape(-1, ch).mean(axis=1)
    if sr != SR:  # linear interpolation, as scripts/transcribe.py
        t = np.arange(int(len(x) * SR / sr)) * sr / SR
        x = np.interp(t, np.arange(len(x)), x).astype(np.float32)
    return x, f"{sr} Hz, {len(x) / SR:.1f} s"


# ---- tokens -----------------------------------------------------------------------------------------------
def read_vocabulary(path):
    with open(path, "rb") as f:
        lines = f.read().decode("utf-8").split("\n")  # not splitlines(): tokens may hold U+0085 / U+2028
    return lines[:-1] if lines and lines[-1] == "" else lines


def byte_decoder():
    """Inverse of GPT-2's bytes_to_unicode: printable stand-in character -> byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def detokenize(tokens, vocab, eot, bd):
    data = bytes(bd[c] for t in tokens if t < eot for c in vocab[t])
    return data.decode("utf-8", errors="replace").strip()


# ---- ONNX model -------------------------------------------------------------------------------------------
class OnnxWhisper:
    def __init__(self, folder, int8, threads):
        with open(os.path.join(folder, "whisper.json")) as f:
            self.cfg = json.load(f)
        self.vocab = read_vocabulary(os.path.join(folder, "vocabulary.txt"))
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        suffix = ".int8.onnx" if int8 else ".onnx"
        t0 = time.perf_counter()
        self.enc = ort.InferenceSession(os.path.join(folder, "encoder" + suffix), so, providers=["CPUExecutionProvider"])
        self.dec = ort.InferenceSession(os.path.join(folder, "decoder" + suffix), so, providers=["CPUExecutionProvider"])
        self.load_s = time.perf_counter() - t0

    def prompt(self, language):
        c = self.cfg
        if not c["multilingual"]:
            return [c["sot"], c["notimestamps"]]
        if language not in c["lang_ids"]:
            raise SystemExit(f"unknown language '{language}' (the model has {', '.join(sorted(c['lang_ids']))})")
        return [c["sot"], c["lang_ids"][language], c["transcribe"], c["notimestamps"]]

    def transcribe(self, mel, language):
        c = self.cfg
        L, D = c["n_layers"], c["d_model"]
        t0 = time.perf_counter()
        cross_kv = self.enc.run(["cross_kv"], {"mel": mel[None]})[0]
        t1 = time.perf_counter()
        prompt = self.prompt(language)
        self_kv = np.zeros((2 * L, 1, 0, D), np.float32)  # past_len 0 on the first step
        feed = np.array([prompt], np.int64)
        suppress = np.array(c["suppress_ids"], np.int64)
        suppress_begin = np.array(c["suppress_ids_begin"], np.int64)
        out, no_speech = [], None
        while True:
            logits, self_kv = self.dec.run(["logits", "self_kv_out"], {"tokens": feed, "self_kv": self_kv, "cross_kv": cross_kv})
            if no_speech is None:
                # Position 0 of the first step is SOT: P(no speech) over the full, unsuppressed vocabulary.
                z = logits[0, 0].astype(np.float64)
                p = np.exp(z - z.max())
                no_speech = float(p[c["no_speech"]] / p.sum())
            step = logits[0, -1].copy()
            step[suppress] = -np.inf
            if not out:
                step[suppress_begin] = -np.inf
            t = int(np.argmax(step))
            if t == c["eot"]:
                break
            out.append(t)
            if len(prompt) + len(out) >= c["max_length"]:
                break
            feed = np.array([[t]], np.int64)
        t2 = time.perf_counter()
        return {"tokens": out, "no_speech_prob": no_speech, "encoder_ms": (t1 - t0) * 1e3, "decoder_ms": (t2 - t1) * 1e3,
                "decoder_steps": len(out) + 1}


def ct2_decode(ct2_dir, threads):
    import ctranslate2
    m = ctranslate2.models.Whisper(ct2_dir, device="cpu", compute_type="float32", intra_threads=threads)

    def run(mel, prompt):
        t0 = time.perf_counter()
        r = m.generate(ctranslate2.StorageView.from_array(mel[None]), [prompt], beam_size=1, return_no_speech_prob=True)
        return list(r[0].sequences_ids[0]), float(r[0].no_speech_prob), (time.perf_counter() - t0) * 1e3
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wavs", nargs="*")
    ap.add_argument("--model", default="whisper_tiny_en")
    ap.add_argument("--int8", action="store_true")
    ap.add_argument("--compare", action="store_true")
    ap.add_argument("--ct2", default=None)
    ap.add_argument("--language", default="en")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    folder = args.model if os.sep in args.model else os.path.join(MODELS, args.model)
    wavs = args.wavs or sorted(os.path.join(SPEECH, f) for f in os.listdir(SPEECH) if f.endswith(".wav"))
    wf = whisper_features()
    model = OnnxWhisper(folder, args.int8, args.threads)
    eot = model.cfg["eot"]
    bd = byte_decoder()
    ct2 = ct2_decode(args.ct2 or os.path.normpath(folder) + "_ct2", args.threads) if args.compare else None
    print(f"# {folder} ({'int8' if args.int8 else 'float32'}, {model.cfg['source']}): sessions loaded in "
          f"{model.load_s:.2f} s, {args.threads} thread(s)", flush=True)

    results, mismatches = [], 0
    for path in wavs:
        x, desc = load_audio(path)
        t0 = time.perf_counter()
        mel = feats30(wf, x)
        fe_ms = (time.perf_counter() - t0) * 1e3
        r = model.transcribe(mel, args.language)
        r.update(clip=os.path.basename(path), audio=desc, text=detokenize(r["tokens"], model.vocab, eot, bd), frontend_ms=fe_ms)
        steps = r["decoder_steps"]
        line = (f"{r['clip']} ({desc}): {r['text']!r}\n    {len(r['tokens'])} tokens, no_speech {r['no_speech_prob']:.4f}; "
                f"front end {fe_ms:.0f} ms, encoder {r['encoder_ms']:.0f} ms, decoder {r['decoder_ms']:.0f} ms "
                f"({r['decoder_ms'] / steps:.1f} ms/step)")
        if ct2:
            ids, ns, ms = ct2(mel, model.prompt(args.language))
            r.update(ct2_tokens=ids, ct2_no_speech_prob=ns, ct2_ms=ms, match=ids == r["tokens"])
            if ids == r["tokens"]:
                line += f"\n    CTranslate2 float32: SAME {len(ids)} tokens (no_speech {ns:.4f}, {ms:.0f} ms)"
            else:
                mismatches += 1
                i = next((i for i, (a, b) in enumerate(zip(ids, r["tokens"])) if a != b), min(len(ids), len(r["tokens"])))
                line += (f"\n    CTranslate2 float32: DIFFERS from token {i} ({len(ids)} tokens, no_speech {ns:.4f}): "
                         f"{detokenize(ids, model.vocab, eot, bd)!r}")
        print(line, flush=True)
        results.append(r)
    if ct2:
        print(f"# {len(results) - mismatches}/{len(results)} clips token-identical to CTranslate2 float32")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": folder, "int8": args.int8, "source": model.cfg["source"], "clips": results}, f, indent=1)
    sys.exit(1 if mismatches else 0)


if __name__ == "__main__":
    main()
