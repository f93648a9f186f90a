#!/usr/bin/env bash
# Install the test peers, build every target and run all tests (unit, integration, property tests).
# Benches are compiled but not run. Exit code = the test run's exit code.
#   scripts/test.sh [extra cargo test arguments, e.g. --test sip_basic]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/setup.sh" --test

# A from-scratch build gains nothing from incremental state, which would add gigabytes under target/.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
mkdir -p "$ROOT/target"
echo "[test] disk: $(df -h --output=avail "$ROOT/target" | tail -1 | tr -d ' ') free for target/ (a fresh test build takes ~1.5 GB)"
echo "[test] cargo fmt --check (the style is rustfmt.toml's; \`cargo fmt\` applies it)"
cargo fmt --check
echo "[test] cargo build --all-targets --locked"
cargo build --all-targets --locked
echo "[test] cargo clippy --all-targets --locked -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

LOG_DIR="$ROOT/target/test-runs"
mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/cargo-test.log"
echo "[test] cargo test --locked --no-fail-fast $* (output also in $LOG)"
start=$(date +%s)
set +e
cargo test --locked --no-fail-fast "$@" 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e
elapsed=$(($(date +%s) - start))

# Summary: sum the "test result:" lines of every test binary.
passed=0 failed=0 ignored=0 binaries=0
while read -r p f i; do
    passed=$((passed + p)) failed=$((failed + f)) ignored=$((ignored + i)) binaries=$((binaries + 1))
done < <(sed -n -E 's/^test result: [A-Za-z]+\. ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/p' "$LOG")
echo
echo "==================== test summary ===================="
echo "test binaries/doc suites: $binaries   passed: $passed   failed: $failed   ignored: $ignored   (${elapsed}s)"
if [ "$failed" -gt 0 ] || [ "$rc" -ne 0 ]; then
    grep -E '^test .* FAILED$|^    [A-Za-z0-9_:]+$' "$LOG" | grep -v '^test result' | sed 's/^/  /' | head -50 || true
    # Why each failed, at the end where a truncated CI log still shows it: the panic and its message.
    echo "why:"
    grep -A2 -E "^thread '.*' .*panicked at " "$LOG" | grep -v '^stack backtrace:' | cut -c1-400 | sed 's/^/  /' | head -60 || true
    echo "RESULT: FAILED (cargo test exit code $rc); per-test logs under target/test-runs/"
else
    echo "RESULT: OK"
fi
exit "$rc"
