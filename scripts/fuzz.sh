#!/usr/bin/env bash
# Fuzz the parsers of untrusted input (cargo-fuzz / libFuzzer), one target at a time.
#   scripts/fuzz.sh [SECONDS_PER_TARGET (default 300)] [TARGET...]
# Targets (fuzz/fuzz_targets/, bodies in src/fuzzing.rs): sip_message sdp rtp_rtcp rfc4733 yaml_config
# (default: all). Each run starts from fuzz/corpus/<target>/ and adds what it finds there; afterwards
# `cargo fuzz cmin` keeps only the inputs that add edge coverage (FUZZ_CMIN=0 skips it). Crash, timeout and
# OOM reproducers go to fuzz/artifacts/<target>/ (not in git): minimise one with
# `cargo fuzz tmin <target> <file>`, fix the bug, and keep it in fuzz/regressions/<target>/ so that
# tests/fuzz_corpus.rs replays it on every `cargo test`.
#
# Needs no nightly toolchain: RUSTC_BOOTSTRAP=1 lets stable rustc take cargo-fuzz's -Z flags.
# FUZZ_SANITIZER=address (default) or none. Not run by CI; prints per target the executions, exec/s,
# corpus size and crashes, and exits non-zero when any target crashed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/fuzz"

SECONDS_PER_TARGET="${1:-300}"
shift || true
ALL=(sip_message sdp rtp_rtcp rfc4733 yaml_config)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")
SANITIZER="${FUZZ_SANITIZER:-address}"
CMIN="${FUZZ_CMIN:-1}"

# Longest input per target: a SIP datagram (several, for sip_message) fits in 8 KiB, SDP bodies and
# media packets are far smaller; the shipped switchboard.yaml is ~10 KB.
max_len() {
    case "$1" in
        sip_message) echo 8192 ;;
        sdp) echo 4096 ;;
        rtp_rtcp | rfc4733) echo 2048 ;;
        yaml_config) echo 16384 ;;
        *) echo 4096 ;;
    esac
}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "[fuzz] installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
LOGS="$ROOT/fuzz/target/logs"
mkdir -p "$LOGS"

declare -a ROWS
failed=0
for t in "${TARGETS[@]}"; do
    [ -f "fuzz_targets/$t.rs" ] || { echo "[fuzz] unknown target $t (known: ${ALL[*]})" >&2; exit 2; }
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "[fuzz] building $t (sanitizer: $SANITIZER)"
    cargo fuzz build -s "$SANITIZER" "$t"
    stamp="$LOGS/$t.start"
    touch "$stamp"
    log="$LOGS/$t.log"
    echo "[fuzz] $t for ${SECONDS_PER_TARGET}s, -max_len=$(max_len "$t") (log: $log)"
    set +e
    # stdin from /dev/null: the config target must never wait on a terminal it might name.
    cargo fuzz run -s "$SANITIZER" "$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -max_len="$(max_len "$t")" -timeout=10 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" </dev/null >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    crashes=$(find "artifacts/$t" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) -newer "$stamp" | wc -l)
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        echo "[fuzz] $t: cargo fuzz run exited $rc without an artifact; tail of $log:" >&2
        tail -20 "$log" >&2
        crashes="?"
        failed=1
    fi
    if [ "$crashes" != "?" ] && [ "$crashes" -gt 0 ]; then
        failed=1
        echo "[fuzz] $t: $crashes crash artifact(s):" >&2
        find "artifacts/$t" -maxdepth 1 -type f -newer "$stamp" >&2
        grep -m1 -A8 -E "panicked at|ERROR: (AddressSanitizer|libFuzzer)" "$log" >&2 || true
    fi
    if [ "$CMIN" = 1 ] && [ "$crashes" = 0 ]; then
        # Edges only (-use_counters=0): the corpus kept in git stays a few hundred KB; the fuzzer
        # finds the hit-count variants again within seconds of the next run.
        echo "[fuzz] minimising corpus/$t"
        cargo fuzz cmin -s "$SANITIZER" "$t" "corpus/$t" -- -use_counters=0 -max_len="$(max_len "$t")" -rss_limit_mb=2048 -timeout=10 \
            >"$LOGS/$t.cmin.log" 2>&1 </dev/null || echo "[fuzz] cmin of $t failed (see $LOGS/$t.cmin.log)" >&2
    fi
    files=$(find "corpus/$t" -type f | wc -l)
    kib=$(du -sk --apparent-size "corpus/$t" | cut -f1)
    ROWS+=("$(printf '%-12s %8s %14s %8s %8s %9s %7s' "$t" "$SECONDS_PER_TARGET" "${execs:-?}" "${rate:-?}" "$files" "${kib}K" "$crashes")")
done

echo
printf '%-12s %8s %14s %8s %8s %9s %7s\n' target seconds executions exec/s corpus size crashes
printf '%s\n' "${ROWS[@]}"
exit "$failed"
