#!/usr/bin/env bash
# Build (release) and run the appliance with config/switchboard.yaml.
#   scripts/run.sh [extra switchboard run arguments, e.g. --sip-listen 0.0.0.0:5060]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/setup.sh" --runtime
echo "[run] cargo build --release --locked"
cargo build --release --locked
echo "[run] exec target/release/switchboard run --config config/switchboard.yaml $*"
exec "$ROOT/target/release/switchboard" run --config "$ROOT/config/switchboard.yaml" "$@"
