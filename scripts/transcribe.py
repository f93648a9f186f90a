#!/usr/bin/env python3
"""Transcribe WAV files with Whisper tiny.en on the CTranslate2 runtime — the tests' oracle
for "the caller heard these words" until the appliance's own ASR lands (step 4).

  models/venv/bin/python scripts/transcribe.py [--model CT2_DIR] [--language en] FILE.wav...
  (after scripts/setup.sh --test; the default model is models/whisper_tiny_en_ct2, and
  models/whisper_base_ct2 is the multilingual base)

Prints one line per file: the transcript. Follows ../shared/models/asr_ct2.py: pipecat's numpy
Whisper front end (30 s log-mel), float32 (int8 changes transcripts), greedy decoding with the
<|startoftranscript|><|notimestamps|> prompt.
"""
import importlib.util, os, sys, wave
import numpy as np, ctranslate2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.environ.get("SWITCHBOARD_MODELS", os.path.join(ROOT, "models"))
spec = importlib.util.spec_from_file_location("wf", os.path.join(MODELS, "smart_turn/_whisper_features.py"))
wf = importlib.util.module_from_spec(spec); spec.loader.exec_module(wf)

def feats30(x):
    x = np.pad(x.astype(np.float32), (0, max(0, 480000 - len(x))))[:480000]
    mag = wf._power_spectrogram(x, wf._HANN_WINDOW, wf._N_FFT, wf._HOP_LENGTH)
    ls = np.log10(np.maximum(1e-10, wf._MEL_FILTERS.T @ mag))[:, :-1]
    ls = np.maximum(ls, ls.max() - 8.0)
    return ((ls + 4.0) / 4.0).astype(np.float32)

def main():
    args = sys.argv[1:]
    model, language = os.path.join(MODELS, "whisper_tiny_en_ct2"), "en"
    while args and args[0].startswith("--"):
        if args[0] == "--model":
            model, args = args[1], args[2:]
        elif args[0] == "--language":
            language, args = args[1], args[2:]
        else:
            sys.exit(f"unknown option {args[0]}")
    m = ctranslate2.models.Whisper(model, device="cpu", compute_type="float32", intra_threads=2)
    prompt = ["<|startoftranscript|>", "<|notimestamps|>"]
    if m.is_multilingual:
        prompt = ["<|startoftranscript|>", f"<|{language}|>", "<|transcribe|>", "<|notimestamps|>"]
    for p in args:
        w = wave.open(p); sr = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
        if w.getnchannels() > 1:
            x = x.reshape(-1, w.getnchannels()).mean(axis=1)
        if sr != 16000:  # linear interpolation: enough for an oracle
            t = np.arange(int(len(x) * 16000 / sr)) * sr / 16000
            x = np.interp(t, np.arange(len(x)), x)
        r = m.generate(ctranslate2.StorageView.from_array(feats30(x)[None]), [prompt], beam_size=1)
        print("".join(r[0].sequences[0]).replace("\u0120", " ").strip())

if __name__ == "__main__":
    main()
