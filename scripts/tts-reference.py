#!/usr/bin/env python3
"""Reference for tests/models_tts.rs: the logic of /work/shared/models/piper.py
(espeak-ng IPA per clause, each clause + ".", joined by " "; ids ^ _ (c _)* $)
on two fixed sentences, with noise_scale = noise_w = 0 so the VITS sampling
is deterministic. Writes tests/fixtures/tts/<n>.json: the phoneme ids and a
summary of the audio (length, RMS, 50 evenly spaced 20 ms RMS values).

usage: models/venv/bin/python scripts/tts-reference.py [models_dir]
"""
import json, os, subprocess, sys
import numpy as np, onnxruntime as ort

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
models = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SWITCHBOARD_MODELS", os.path.join(root, "models"))
model = os.path.join(models, "piper/en_US-joe-medium.onnx")
cfg = json.load(open(model + ".json"))
idmap = cfg["phoneme_id_map"]; sr = cfg["audio"]["sample_rate"]
SENTENCES = ["Thank you for calling switchboard.",
             "Our opening hours are nine to five, Monday to Friday."]
ENVELOPE_POINTS = 50

def phoneme_ids(text):
    ipa = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", cfg["espeak"]["voice"], text],
                         capture_output=True, text=True, check=True).stdout
    clauses = [l.strip() for l in ipa.splitlines() if l.strip()]
    phon = " ".join(c + "." for c in clauses)
    ids = list(idmap["^"]) + list(idmap["_"])
    missing = set()
    for ch in phon:
        if ch in idmap: ids += idmap[ch] + idmap["_"]
        else: missing.add(ch)
    ids += idmap["$"]
    return phon, ids, missing

def envelope(pcm, n=ENVELOPE_POINTS):
    """RMS of 20 ms windows centred on n evenly spaced points (same in the Rust test)."""
    w = sr // 50; x = pcm.astype(np.float64) / 32768.0; out = []
    for k in range(n):
        c = int(round((k + 0.5) * len(x) / n)); a = max(0, c - w // 2); b = min(len(x), a + w)
        out.append(float(np.sqrt(np.mean(x[a:b] ** 2))) if b > a else 0.0)
    return out

so = ort.SessionOptions(); so.intra_op_num_threads = 2
s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
inf = cfg["inference"]
for n, text in enumerate(SENTENCES, 1):
    phon, ids, missing = phoneme_ids(text)
    feeds = {"input": np.array([ids], np.int64), "input_lengths": np.array([len(ids)], np.int64),
             "scales": np.array([0.0, inf["length_scale"], 0.0], np.float32)}
    runs = [s.run(None, feeds)[0].squeeze() for _ in range(2)]
    deterministic = bool(np.array_equal(runs[0], runs[1]))
    pcm = (np.clip(runs[0], -1, 1) * 32767).astype(np.int16)
    x = pcm.astype(np.float64) / 32768.0
    fx = {"text": text, "phonemes": phon, "missing": sorted(missing), "phoneme_ids": ids,
          "scales": [0.0, inf["length_scale"], 0.0], "sample_rate": sr, "deterministic": deterministic,
          "samples": int(len(pcm)), "rms": float(np.sqrt(np.mean(x ** 2))),
          "envelope": [round(v, 6) for v in envelope(pcm)]}
    path = os.path.join(root, "tests/fixtures/tts", f"{n}.json")
    with open(path, "w") as f: json.dump(fx, f, ensure_ascii=False, separators=(",", ":")); f.write("\n")
    print(f"{path}: {len(ids)} ids, {len(pcm)} samples ({len(pcm)/sr:.2f} s), rms {fx['rms']:.4f}, deterministic={deterministic}, missing={missing}")
