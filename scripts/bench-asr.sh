#!/usr/bin/env bash
# Speech-recognition benchmark: real-time factor of Whisper (tiny.en and base, fp32 and int8, 1 and 2
# threads) on the human recordings of moonshine-voice at 8 kHz μ-law telephone band, and the latency
# from the end of a 3 s turn to its transcript (the wall time of transcribing that turn: the call
# submits the turn the moment the VAD ends it). --window-floor compares encoder windows (seconds; 30 = the
# fixed 30 s window; default 30,20,6: fitted to each clip, at least that long).
#   scripts/bench-asr.sh [--models tiny_en,base] [--runs N] [--window-floor 30,10,2]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODELS_LIST=tiny_en,base
RUNS=3
FLOORS=30,20,6
while [ $# -gt 0 ]; do
    case "$1" in
        --models) MODELS_LIST="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --window-floor) FLOORS="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
M="${SWITCHBOARD_MODELS:-$ROOT/models}"
for f in "$M/whisper_tiny_en/whisper.json" "$M/whisper_base/whisper.json" "$M/fixtures/speech/beckett.wav"; do
    [ -e "$f" ] || { echo "missing $f: run scripts/setup.sh --test" >&2; exit 1; }
done
command -v sox >/dev/null || { echo "sox missing: run scripts/setup.sh --test" >&2; exit 1; }
cargo build --release --locked -q
OUT="$ROOT/target/bench-asr"
mkdir -p "$OUT"
# 8 kHz μ-law, 300-3400 Hz, back to 16 kHz (what a G.711 call delivers to the recogniser).
tel() { sox -G "$1" -D -c 1 -r 8000 -e u-law -b 8 "$OUT/tmp.wav" sinc 300-3400 && sox "$OUT/tmp.wav" -D -e signed-integer -b 16 -r 16000 "$2"; }
for c in beckett clone-test endgame_nagg_nell; do tel "$M/fixtures/speech/$c.wav" "$OUT/$c.wav"; done
# two_cities is 44 s: its first 30 s (one Whisper window).
sox "$M/fixtures/speech/two_cities.wav" "$OUT/two_cities_30s.src.wav" trim 0 30 && tel "$OUT/two_cities_30s.src.wav" "$OUT/two_cities_30s.wav"
# A 3 s turn: "It was the best of times, it was the worst of times" (0.9-3.9 s of two_cities).
sox "$M/fixtures/speech/two_cities.wav" "$OUT/turn3s.src.wav" trim 0.9 3.0 && tel "$OUT/turn3s.src.wav" "$OUT/turn3s.wav"
CFG="$OUT/bench.yaml"
cat > "$CFG" <<YAML
models:
  runtime:
    library: $M/onnxruntime/libonnxruntime.so.1.32.0
  asr:
    tiny_en: {path: $M/whisper_tiny_en}
    base: {path: $M/whisper_base, language: en}
routes: [{match: "*", agent: a}]
agents:
  a: {mode: silent}
YAML
IFS=, read -ra LIST <<< "$MODELS_LIST"
for m in "${LIST[@]}"; do
    echo
    RUST_LOG=warn target/release/switchboard bench-asr -c "$CFG" --model "$m" --runs "$RUNS" --window-floor "$FLOORS" \
        "$OUT/turn3s.wav" "$OUT/beckett.wav" "$OUT/clone-test.wav" "$OUT/endgame_nagg_nell.wav" "$OUT/two_cities_30s.wav"
done
