//! Shared integration-test harness (std only).
//!
//! Each integration test file does `mod common;` and uses the parts it needs:
//!
//! * [`require_tools`] — fail loudly (never skip) when SIPp, baresip, sox, … are missing.
//! * [`ports::alloc_ports`] — a block of free loopback ports per test.
//! * [`appliance::Appliance`] — the real `switchboard` binary with a YAML config, /healthz, /metrics.
//! * [`capture::Capture`] — tcpdump on `lo`, parsed into [`pcap::UdpPacket`]s.
//! * [`audio`] — RTP → PCM (decoded by sox), WAV I/O, RMS/audibility, [`audio::find_in`].
//! * [`fixtures::fixtures`] — espeak-ng speech WAVs and SIPp RTP pcaps, generated once.
//! * [`sipp`] — run SIPp scenarios (`tests/scenarios/*.xml`) and parse their statistics.
//! * [`baresip::Baresip`] — a headless baresip softphone driven over its ctrl_tcp socket.
//!
//! Every artefact of a test (configs, logs, captures, recordings) goes to
//! `target/test-runs/<test binary>/<test name>-<n>/` (see [`test_dir`]), one directory per test
//! even when several `cargo test` runs share the target directory.
#![allow(dead_code)]
#![allow(unused_imports)]

pub mod appliance;
pub mod audio;
pub mod baresip;
pub mod capture;
pub mod fixtures;
pub mod impair;
pub mod kamailio;
pub mod listening_caller;
pub mod pcap;
pub mod ports;
pub mod sipp;
pub mod speech;
pub mod wer;

pub use appliance::Appliance;
pub use audio::{
    active_seconds, find_in, find_in_piecewise, is_audible, ncc_at, read_wav_mono_i16, rms, rtp_packets,
    rtp_stream_to_pcm, write_wav, PiecewiseMatch, RtpAudio, RtpPacket,
};
pub use baresip::{Baresip, BaresipConfig};
pub use capture::Capture;
pub use fixtures::{fixtures, Fixtures};
pub use kamailio::Kamailio;
pub use pcap::UdpPacket;
pub use ports::{alloc_ports, Ports};
pub use sipp::{run_sipp, scenario, spawn_sipp, SippProcess, SippRun};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Directories searched for tools besides `$PATH` (kamailio and tcpdump live in sbin on Debian).
const EXTRA_TOOL_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Absolute path of an executable found in `$PATH` (or an sbin directory), if any.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path_var).chain(EXTRA_TOOL_DIRS.iter().map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Some(candidate);
            }
        }
    }
    None
}

/// Path of a tool the harness runs; panics like [`require_tools`] when it is missing.
pub fn tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!(
            "required test tool `{name}` is not installed (not in PATH or sbin); \
             run scripts/setup.sh --test"
        )
    })
}

/// Panics (tests never silently skip) when any of `names` is not installed.
pub fn require_tools(names: &[&str]) {
    let missing: Vec<&str> = names.iter().copied().filter(|n| find_tool(n).is_none()).collect();
    if !missing.is_empty() {
        panic!("required test tool(s) missing: {}; run scripts/setup.sh --test", missing.join(", "));
    }
}

/// The crate root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Cargo's target directory (respects `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().map(Path::to_path_buf).unwrap_or_else(|| repo_root().join("target"))
}

/// The tests/scenarios directory (SIPp XML files).
pub fn scenarios_dir() -> PathBuf {
    repo_root().join("tests").join("scenarios")
}

/// Name of the running test binary without cargo's `-<hash>` suffix, e.g. `harness_selftest`.
pub fn test_binary_name() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe
        .as_deref()
        .and_then(Path::file_stem)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tests".to_string());
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() >= 8 && hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
        _ => stem,
    }
}

/// The current test's name (libtest names each test's thread after the test), sanitised for paths.
pub fn current_test_name() -> String {
    let name = std::thread::current().name().unwrap_or("test").to_string();
    sanitize(&name)
}

fn sanitize(s: &str) -> String {
    let out: String = s
        .replace("::", ".")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' { c } else { '_' })
        .collect();
    if out.is_empty() {
        "test".into()
    } else {
        out
    }
}

static CLEAN_RUNS: std::sync::Once = std::sync::Once::new();

/// A fresh, empty directory for one test's artefacts:
/// `target/test-runs/<test binary>/<test name>[-label]-<n>/`, with the smallest `n` not in use.
/// Each directory records its owner's pid in `.owner-pid`; the first call in a process removes the
/// directories whose owner is no longer running (previous runs), so concurrent `cargo test` runs of
/// the same binary never share or delete each other's directories.
pub fn test_dir(label: &str) -> PathBuf {
    let mut name = current_test_name();
    if !label.is_empty() {
        name.push('-');
        name.push_str(&sanitize(label));
    }
    let bin_dir = target_dir().join("test-runs").join(test_binary_name());
    CLEAN_RUNS.call_once(|| remove_stale_runs(&bin_dir));
    std::fs::create_dir_all(&bin_dir).unwrap_or_else(|e| panic!("create {}: {e}", bin_dir.display()));
    for n in 0.. {
        let dir = bin_dir.join(format!("{name}-{n}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::write(dir.join(".owner-pid"), std::process::id().to_string())
                    .unwrap_or_else(|e| panic!("write {}/.owner-pid: {e}", dir.display()));
                return dir;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("create {}: {e}", dir.display()),
        }
    }
    unreachable!()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn remove_stale_runs(bin_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(bin_dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let owner = std::fs::read_to_string(path.join(".owner-pid")).ok().and_then(|s| s.trim().parse::<u32>().ok());
        let stale = match owner {
            Some(pid) => pid != std::process::id() && !pid_alive(pid),
            // No owner file: a directory being created right now, or one from an older harness.
            None => entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(60)),
        };
        if stale {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// The first JSON call record written under `dir`/records (`calls.record_dir: {{run_dir}}/records`),
/// waited for up to 15 s (a call's record is written once its last transcripts are in).
pub fn wait_call_record(dir: &Path) -> serde_json::Value {
    let rec_dir = dir.join("records");
    let rec = wait_until(Duration::from_secs(15), || {
        std::fs::read_dir(&rec_dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "json"))
    })
    .unwrap_or_else(|| panic!("no call record in {}", rec_dir.display()));
    serde_json::from_str(&std::fs::read_to_string(&rec).unwrap()).unwrap()
}

/// One language model at a time in a test binary (an appliance with the embedded model, or a llama
/// server): each runs the 1.5B model, and two at once on a 2-core machine took 4.5 s to transcribe the
/// caller and 6 s to a tool call, which pushed spoken answers past the end of the callers' calls.
pub fn one_llm_call_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Polls `f` every 20 ms until it returns `Some`, or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An INVITE to the appliance (user 1000) from a socket of our own, with an SDP offer for port 40000
/// (nobody listens there): the first answer other than 100 Trying. A call it starts is left
/// unacknowledged; the appliance ends it on its own.
pub fn probe_invite(ports: &Ports, tag: &str) -> String {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";
    let inv = format!(
        "INVITE sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{tag};rport\r\nFrom: <sip:probe@127.0.0.1>;tag={tag}\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: {tag}@probe\r\nCSeq: 1 INVITE\r\nContact: <sip:probe@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    sock.send_to(inv.as_bytes(), ports.sip_addr()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = sock.recv_from(&mut buf).expect("an answer to the INVITE");
        let resp = String::from_utf8_lossy(&buf[..n]).to_string();
        if !resp.starts_with("SIP/2.0 100") {
            return resp;
        }
    }
}

/// The config of an appliance whose one agent (`a`, every number) is silent and transcribes its
/// callers (server_vad, tiny.en at `precision` from `m`, partials every `partial_ms`; 0 = none),
/// writing call records to `records`; `calls` is more of the `calls:` section (indented lines).
pub fn transcribing_appliance_yaml(m: &Path, records: &Path, calls: &str, precision: &str, partial_ms: u64) -> String {
    format!(
        "calls:\n  record_dir: {records}\n{calls}models:\n  runtime:\n    library: {lib}\n  vad:\n    path: {vad}\n  asr:\n    tiny:\n      path: {asr}\n      precision: {precision}\n      intra_threads: 2\n\
         routes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n    mode: silent\n    turn_detection:\n      type: server_vad\n    transcription:\n      partial_interval_ms: {partial_ms}\n",
        records = records.display(),
        lib = m.join("onnxruntime/libonnxruntime.so.1.32.0").display(),
        vad = m.join("silero_vad/silero_vad.onnx").display(),
        asr = m.join("whisper_tiny_en").display(),
    )
}

/// Waits (≤ `timeout`) until some process has bound UDP port `port` on 127.0.0.1 (e.g. a SIPp UAS
/// is ready). Returns false on timeout.
pub fn wait_udp_bound(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, || std::net::UdpSocket::bind(("127.0.0.1", port)).is_err().then_some(())).is_some()
}

/// Sends a signal (`"TERM"`, `"INT"`, `"KILL"`, …) with `kill(1)`; no libc needed.
pub fn send_signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Waits up to `timeout` for `child` to exit.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM (or `signal`), wait up to `grace`, then SIGKILL; always reaps the child.
pub fn stop_child(child: &mut Child, signal: &str, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    send_signal(child.id(), signal);
    if let Some(status) = wait_child(child, grace) {
        return Some(status);
    }
    let _ = child.kill();
    child.wait().ok()
}

/// Exit code of a process, or 128 + signal number when a signal ended it.
pub fn exit_code(status: &ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// The last `max_lines` lines of a text file (for panic messages).
pub fn file_tail(path: &Path, max_lines: usize) -> String {
    let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(max_lines);
    lines[start..].join("\n")
}

/// True when the tests run as root (tcpdump then needs `-Z root` to write into our directories).
pub fn running_as_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
    })
}

/// Runs a command to completion, panicking with its output when it fails.
pub fn run_checked(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// The models folder the set-up fills (`SWITCHBOARD_MODELS` overrides it), checked to hold `required`;
/// tests never skip: a missing model says how to get it.
pub fn models_dir(required: &str) -> PathBuf {
    let dir = std::env::var_os("SWITCHBOARD_MODELS").map(PathBuf::from).unwrap_or_else(|| repo_root().join("models"));
    assert!(dir.join(required).exists(), "{}: {required} missing; run scripts/setup.sh --test", dir.display());
    dir
}

/// The set-up's ONNX Runtime library, loaded once per test process.
pub fn ort_runtime() -> &'static switchboard::models::runtime::Runtime {
    let lib = models_dir("onnxruntime/libonnxruntime.so.1.32.0").join("onnxruntime/libonnxruntime.so.1.32.0");
    switchboard::models::runtime::init(&lib).unwrap_or_else(|e| panic!("{e}"))
}

/// CPU-only session options with `threads` intra-op threads.
pub fn cpu_options(threads: usize) -> switchboard::models::runtime::SessionOptions {
    use switchboard::models::runtime::{Provider, SessionOptions};
    SessionOptions {
        providers: vec![Provider::Cpu],
        strict: false,
        intra_threads: threads,
        inter_threads: 1,
        spin: true,
    }
}

/// The `models:` section of an appliance config on the packaged models in `m`, the language
/// model being the embedded default answering greedily: Silero, Piper on one thread, Whisper
/// tiny.en (its encoder window fitted to the turn with `window_floor_s`, or Whisper's 30 s window
/// with `None`), Qwen2.5 1.5B int4 on ONNX Runtime.
pub fn embedded_llm_models(m: &Path, window_floor_s: Option<f32>) -> String {
    let m = m.display();
    let floor = window_floor_s.map(|s| format!("      window_floor_s: {s}\n")).unwrap_or_default();
    format!(
        "models:\n  runtime:\n    library: {m}/onnxruntime/libonnxruntime.so.1.32.0\n  vad:\n    path: {m}/silero_vad/silero_vad.onnx\n  \
         tts:\n    path: {m}/piper/en_US-joe-medium.onnx\n    intra_threads: 1\n  asr:\n    tiny:\n      path: {m}/whisper_tiny_en\n{floor}  \
         llm:\n    embedded:\n      type: onnx\n      path: {m}/qwen2_5_coder_1_5b\n      temperature: 0\n"
    )
}

/// The Python with llama-cpp-python[server] that `scripts/setup.sh --test` builds
/// (`SWITCHBOARD_LLAMA_PYTHON` overrides it).
pub fn llama_python() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHBOARD_LLAMA_PYTHON") {
        return PathBuf::from(p);
    }
    models_dir("llamavenv/bin/python").join("llamavenv/bin/python")
}

/// The packaged Qwen2.5-Coder-1.5B-Instruct GGUF the set-up joins (`SWITCHBOARD_LLM_GGUF` overrides it).
pub fn llm_gguf() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHBOARD_LLM_GGUF") {
        return PathBuf::from(p);
    }
    let rel = "qwen_gguf/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf";
    models_dir(rel).join(rel)
}
