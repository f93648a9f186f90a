#!/usr/bin/env python3
"""Regenerate the Silero VAD reference fixtures (tests/fixtures/vad/*.json).

Runs the packaged model with the Python onnxruntime exactly as the upstream
reference does (../shared/models/vad.py: chunk + context carried over, state
fed back, sr as an int64 scalar) and records P(speech) per chunk, so the Rust
wrapper can be checked against it without Python at test time.

  models/venv/bin/python scripts/vad-reference.py   # after scripts/setup.sh --test

Inputs: the real human speech clips of moonshine-voice==0.1.5 (models/fixtures/speech/),
at 16 kHz as shipped and at 8 kHz converted with `sox IN -D -r 8000 OUT` (no dither; the test runs the same command).
"""
import json, os, subprocess, sys, tempfile, wave
import numpy as np, onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.environ.get("SWITCHBOARD_MODELS", os.path.join(ROOT, "models"))
MODEL = os.path.join(MODELS, "silero_vad/silero_vad.onnx")
SPEECH = os.path.join(MODELS, "fixtures/speech")
OUT = os.path.join(ROOT, "tests/fixtures/vad")
CLIPS = ["beckett.wav", "clone-test.wav"]

def read(path):
    w = wave.open(path)
    return w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768

def probs(session, x, sr):
    n, c = (256, 32) if sr == 8000 else (512, 64)
    state = np.zeros((2, 1, 128), np.float32); ctx = np.zeros((1, c), np.float32); out = []
    for i in range(0, len(x) - n + 1, n):
        inp = np.concatenate([ctx, x[i:i + n][None, :]], axis=1)
        p, state = session.run(None, {"input": inp, "state": state, "sr": np.array(sr, np.int64)})
        ctx = inp[:, -c:]
        out.append(round(float(p[0, 0]), 6))
    return out

def main():
    so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
    s = ort.InferenceSession(MODEL, so, providers=["CPUExecutionProvider"])
    os.makedirs(OUT, exist_ok=True)
    for clip in CLIPS:
        src = os.path.join(SPEECH, clip)
        for sr in (16000, 8000):
            if sr == 16000:
                rate, x = read(src)
                assert rate == 16000, f"{clip} is {rate} Hz"
            else:
                with tempfile.TemporaryDirectory() as d:
                    p8 = os.path.join(d, "x.wav")
                    subprocess.run(["sox", src, "-D", "-r", "8000", p8], check=True)  # -D: no dither (it is random)
                    rate, x = read(p8)
            name = f"{os.path.splitext(clip)[0]}-{sr // 1000}k.json"
            data = {"clip": clip, "sample_rate": sr, "onnxruntime": ort.__version__, "probabilities": probs(s, x, sr)}
            with open(os.path.join(OUT, name), "w") as f:
                json.dump(data, f, separators=(",", ":"))
            print(f"{name}: {len(data['probabilities'])} chunks")

if __name__ == "__main__":
    sys.exit(main())
