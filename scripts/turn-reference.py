#!/usr/bin/env python3
"""Regenerate the Smart Turn v3.2 reference fixtures (tests/fixtures/turn/*.json).

Runs the packaged model with the Python onnxruntime exactly as pipecat-ai==1.14.0
does (pipecat/audio/turn/smart_turn/local_smart_turn_v3.py): keep the last 8 s
at 16 kHz or left-pad with zeros to 8 s, then pipecat's numpy Whisper front end
(`_whisper_features.compute_whisper_log_mel_features(x, do_normalize=True)`,
loaded straight from the cached wheel: it needs only numpy) -> f32[1, 80, 800]
-> P(turn complete). Records the probability and a few log-mel values so the
Rust front end (src/models/melspec.rs) and wrapper (src/models/turn.rs) can be
checked without Python at test time.

  models/venv/bin/python scripts/turn-reference.py   # after scripts/setup.sh --test
  models/venv/bin/python scripts/turn-reference.py --probabilities   # print, write nothing

The model is int8: its probabilities depend on the CPU's int8 kernels (beckett cut at
2.0 s: 0.027 where the fixtures were made, 0.339 on an AMD EPYC without VNNI). The
stored probabilities say what the reference said where they were made; tests/models_turn.rs
compares the Rust wrapper with `--probabilities` run on the machine under test.

Inputs: the real human speech clips of moonshine-voice==0.1.5 (models/fixtures/speech/,
16 kHz as shipped), whole and cut after `cut_seconds` (round(cut * 16000) samples).
"""
import glob, json, os, sys, types, wave, zipfile
import numpy as np, onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.environ.get("SWITCHBOARD_MODELS", os.path.join(ROOT, "models"))
MODEL = os.path.join(MODELS, "smart_turn/smart-turn-v3.2-cpu.onnx")
SPEECH = os.path.join(MODELS, "fixtures/speech")
WHEEL = os.environ.get("PIPECAT_WHEEL", os.path.expanduser("~/.cache/switchboard/wheels/pipecat_ai-1.14.0-py3-none-any.whl"))
OUT = os.path.join(ROOT, "tests/fixtures/turn")
# (clip, cut seconds or None for the whole clip)
CASES = [("beckett.wav", None), ("beckett.wav", 2.0), ("beckett.wav", 3.3),
         ("clone-test.wav", None), ("clone-test.wav", 1.5), ("clone-test.wav", 2.6)]
BANDS = [0, 40, 79]
FRAMES = [0, 1, 2, 3, 4, 400, 795, 796, 797, 798, 799]
N = 8 * 16000

def whisper_features():
    # The set-up extracts the same file from the same wheel; the wheel cache may be gone.
    extracted = os.path.join(MODELS, "smart_turn/_whisper_features.py")
    if os.path.exists(extracted):
        with open(extracted) as f:
            src = f.read()
    else:
        with zipfile.ZipFile(WHEEL) as z:
            src = z.read("pipecat/audio/turn/smart_turn/_whisper_features.py").decode()
    m = types.ModuleType("_whisper_features"); exec(compile(src, "_whisper_features.py", "exec"), m.__dict__)
    return m

def read(path):
    w = wave.open(path)
    assert w.getframerate() == 16000 and w.getnchannels() == 1, path
    return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768

def last_8s(x):  # pipecat's truncate_audio_to_last_n_seconds
    return x[-N:] if len(x) > N else np.pad(x, (N - len(x), 0), mode="constant", constant_values=0)

def fixture_name(clip, cut):
    return f"{os.path.splitext(clip)[0]}-{'full' if cut is None else f'cut{cut:.1f}s'}.json"

def reference(wf, s, clip, cut):
    """The clip (cut), its features and P(turn complete), as pipecat computes them."""
    x = read(os.path.join(SPEECH, clip))
    if cut is not None:
        x = x[:int(round(cut * 16000))]
    feats = wf.compute_whisper_log_mel_features(last_8s(x), do_normalize=True)
    assert feats.shape == (80, 800)
    return x, feats, float(s.run(None, {"input_features": feats[None].astype(np.float32)})[0][0].item())

def main():
    wf = whisper_features()
    so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
    s = ort.InferenceSession(MODEL, so, providers=["CPUExecutionProvider"])
    if sys.argv[1:] == ["--probabilities"]:
        print(json.dumps({fixture_name(clip, cut): reference(wf, s, clip, cut)[2] for clip, cut in CASES}))
        return 0
    os.makedirs(OUT, exist_ok=True)
    for old in glob.glob(os.path.join(OUT, "*.json")):
        os.remove(old)
    for clip, cut in CASES:
        x, feats, p = reference(wf, s, clip, cut)
        name = fixture_name(clip, cut)
        data = {"clip": clip, "cut_seconds": cut, "samples": int(len(x)), "onnxruntime": ort.__version__,
                "probability": round(p, 6),
                "mel_bands": BANDS, "mel_frames": FRAMES,
                "mel": [round(float(feats[b, f]), 6) for b in BANDS for f in FRAMES],
                "mel_mean": round(float(feats.astype(np.float64).mean()), 6),
                "mel_mean_abs": round(float(np.abs(feats.astype(np.float64)).mean()), 6)}
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(data, f, separators=(",", ":"))
        print(f"{name}: {len(x) / 16000:.2f} s, P(turn complete) = {p:.4f}")

if __name__ == "__main__":
    sys.exit(main())
