//! Silero VAD on ONNX Runtime from Rust, checked against the Python reference
//! (tests/fixtures/vad/*.json, made by scripts/vad-reference.py) on real human
//! speech (moonshine-voice clips), streamed, batched and through the worker.

mod common;

use std::path::PathBuf;
use std::time::Duration;
use switchboard::models::runtime::{self, Provider, RuntimeError, SessionOptions};
use switchboard::models::vad::{self, Segmenter, SegmenterConfig, SileroVad, StreamState, VadWorker};

fn models_dir() -> PathBuf {
    common::models_dir("silero_vad/silero_vad.onnx")
}

fn rt() -> &'static runtime::Runtime {
    common::ort_runtime()
}

fn cpu() -> SessionOptions {
    common::cpu_options(1)
}

struct Fixture {
    name: String,
    sample_rate: u32,
    probabilities: Vec<f32>,
    audio: Vec<f32>,
}

/// The fixtures with their audio (8 kHz made with the same sox command as the script).
fn fixtures() -> Vec<Fixture> {
    let dir = common::repo_root().join("tests/fixtures/vad");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let clip = json_str(&text, "clip");
        let sample_rate: u32 = json_num(&text, "sample_rate") as u32;
        let probabilities = json_floats(&text, "probabilities");
        let src = models_dir().join("fixtures/speech").join(&clip);
        let wav = if sample_rate == 16000 {
            src
        } else {
            let out = common::test_dir("vad8k").join(format!("{clip}-8k.wav"));
            common::run_checked(
                std::process::Command::new(common::tool("sox")).arg(&src).args(["-D", "-r", "8000"]).arg(&out),
            );
            out
        };
        let (pcm, rate) = common::read_wav_mono_i16(&wav);
        assert_eq!(rate, sample_rate);
        let audio = pcm.iter().map(|&s| s as f32 / 32768.0).collect();
        out.push(Fixture {
            name: path.file_name().unwrap().to_string_lossy().into(),
            sample_rate,
            probabilities,
            audio,
        });
    }
    assert!(out.len() >= 4, "fixtures in {}", dir.display());
    out
}

fn json_str(t: &str, key: &str) -> String {
    let i = t.find(&format!("\"{key}\":\"")).unwrap() + key.len() + 4;
    t[i..].split('"').next().unwrap().to_string()
}
fn json_num(t: &str, key: &str) -> f64 {
    let i = t.find(&format!("\"{key}\":")).unwrap() + key.len() + 3;
    t[i..].split([',', '}']).next().unwrap().parse().unwrap()
}
fn json_floats(t: &str, key: &str) -> Vec<f32> {
    let i = t.find(&format!("\"{key}\":[")).unwrap() + key.len() + 4;
    t[i..].split(']').next().unwrap().split(',').map(|v| v.parse().unwrap()).collect()
}

fn stream_probs(vad: &mut SileroVad, f: &Fixture) -> Vec<f32> {
    let (n, _) = vad::chunk_len(f.sample_rate).unwrap();
    let mut st = StreamState::new(f.sample_rate).unwrap();
    f.audio.chunks_exact(n).map(|c| vad.infer(&mut [&mut st], &[c]).unwrap()[0]).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn segments(p: &[f32], chunk_ms: u64) -> Vec<vad::VadEvent> {
    let mut s = Segmenter::new(SegmenterConfig::default());
    p.iter().enumerate().filter_map(|(i, &p)| s.push(p, i as u64 * chunk_ms, (i as u64 + 1) * chunk_ms)).collect()
}

#[test]
fn rust_matches_the_python_reference_on_real_speech() {
    let mut vad = SileroVad::load(rt(), &models_dir().join("silero_vad/silero_vad.onnx"), &cpu()).unwrap();
    assert_eq!(vad.provider(), Provider::Cpu);
    for f in fixtures() {
        let ours = stream_probs(&mut vad, &f);
        let d = max_diff(&ours, &f.probabilities);
        assert!(d < 1e-3, "{}: max |Δp| = {d}", f.name);
        // Real speech is found, and the same segments come out of both.
        assert!(ours.iter().filter(|&&p| p > 0.5).count() > ours.len() / 4, "{}: speech detected", f.name);
        let ms = 32; // 512 samples at 16 kHz and 256 at 8 kHz are both 32 ms
        assert_eq!(segments(&ours, ms), segments(&f.probabilities, ms), "{}", f.name);
        assert!(!segments(&ours, ms).is_empty());
    }
}

#[test]
fn a_batch_across_calls_equals_each_call_alone() {
    let mut vad = SileroVad::load(rt(), &models_dir().join("silero_vad/silero_vad.onnx"), &cpu()).unwrap();
    let fx: Vec<Fixture> = fixtures().into_iter().filter(|f| f.sample_rate == 16000).collect();
    let alone: Vec<Vec<f32>> = fx.iter().map(|f| stream_probs(&mut vad, f)).collect();
    let mut states: Vec<StreamState> = fx.iter().map(|_| StreamState::new(16000).unwrap()).collect();
    let len = fx.iter().map(|f| f.audio.len() / 512).min().unwrap();
    let mut batched = vec![Vec::new(); fx.len()];
    for k in 0..len {
        let chunks: Vec<&[f32]> = fx.iter().map(|f| &f.audio[k * 512..(k + 1) * 512]).collect();
        let mut refs: Vec<&mut StreamState> = states.iter_mut().collect();
        for (i, p) in vad.infer(&mut refs, &chunks).unwrap().into_iter().enumerate() {
            batched[i].push(p);
        }
    }
    for i in 0..fx.len() {
        let d = max_diff(&batched[i], &alone[i][..len]);
        assert!(d < 1e-5, "{}: batched vs alone {d}", fx[i].name);
    }
}

#[test]
fn the_worker_batches_calls_and_answers_each_in_order() {
    let vad = SileroVad::load(rt(), &models_dir().join("silero_vad/silero_vad.onnx"), &cpu()).unwrap();
    let worker = VadWorker::spawn(vad, 1024, 64);
    let fx = fixtures();
    let mut clients: Vec<_> =
        fx.iter().enumerate().map(|(i, f)| worker.open(i as u64, f.sample_rate).unwrap()).collect();
    // Feed all calls 20 ms at a time, interleaved, like the media loops do.
    let longest = fx.iter().map(|f| f.audio.len()).max().unwrap();
    let mut got: Vec<Vec<(u64, f32)>> = vec![Vec::new(); fx.len()];
    for off in (0..longest).step_by(160) {
        for (i, f) in fx.iter().enumerate() {
            let (a, b) = (off * f.sample_rate as usize / 8000, (off + 160) * f.sample_rate as usize / 8000);
            if a < f.audio.len() {
                let pcm: Vec<i16> = f.audio[a..b.min(f.audio.len())].iter().map(|&x| (x * 32768.0) as i16).collect();
                assert!(clients[i].push(&pcm), "queue never full here");
            }
            while let Some(r) = clients[i].poll() {
                got[i].push((r.seq, r.probability));
            }
        }
    }
    // Drain every call in turn until each has all its answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fx.iter().enumerate().any(|(i, f)| got[i].len() < f.probabilities.len()) {
        assert!(
            std::time::Instant::now() < deadline,
            "answers missing: {:?}",
            got.iter().map(Vec::len).collect::<Vec<_>>()
        );
        for i in 0..fx.len() {
            while let Some(r) = clients[i].poll() {
                got[i].push((r.seq, r.probability));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    for (i, f) in fx.iter().enumerate() {
        assert!(got[i].windows(2).all(|w| w[1].0 == w[0].0 + 1), "in order");
        let p: Vec<f32> = got[i].iter().map(|x| x.1).collect();
        let d = max_diff(&p, &f.probabilities);
        assert!(d < 1e-3, "{} through the worker: {d}", f.name);
    }
    let s = worker.stats();
    let (batches, chunks) =
        (s.batches.load(std::sync::atomic::Ordering::Relaxed), s.chunks.load(std::sync::atomic::Ordering::Relaxed));
    assert!(chunks > batches, "chunks of several calls shared inferences: {chunks} chunks in {batches} batches");
}

#[test]
fn unavailable_provider_falls_back_or_fails_when_strict() {
    let path = models_dir().join("silero_vad/silero_vad.onnx");
    let opts = SessionOptions {
        providers: vec![Provider::Cuda, Provider::Cpu],
        strict: false,
        intra_threads: 1,
        inter_threads: 1,
        spin: true,
    };
    let vad = SileroVad::load(rt(), &path, &opts).unwrap();
    assert_eq!(vad.provider(), Provider::Cpu, "CUDA is not in the CPU library: CPU it is");
    let strict = SessionOptions { providers: vec![Provider::Cuda, Provider::Cpu], strict: true, ..opts };
    match SileroVad::load(rt(), &path, &strict) {
        Err(e @ RuntimeError::StrictProvider { .. }) => {
            let m = e.to_string();
            assert!(m.contains("cuda") && m.contains("libonnxruntime.so.1.32.0"), "{m}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("strict must refuse"),
    }
    assert!(matches!(
        SileroVad::load(rt(), &models_dir().join("nope.onnx"), &cpu()),
        Err(RuntimeError::MissingModel { .. })
    ));
}

fn check_models(yaml: &str) -> (bool, String) {
    let dir = common::test_dir("check");
    let cfg = dir.join("models.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let out = std::process::Command::new(common::appliance::switchboard_bin())
        .args(["check-models", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn models_yaml(library: &str, providers: &str, strict: bool) -> String {
    let m = models_dir();
    format!(
        "models:\n  runtime:\n    library: {library}\n  vad:\n    path: {}\n    providers: {providers}\n    strict: {strict}\nroutes:\n  - match: \"*\"\n    agent: a\nagents:\n  a: {{}}\n",
        m.join("silero_vad/silero_vad.onnx").display()
    )
}

#[test]
fn check_models_reports_providers_and_clear_errors() {
    let lib = models_dir().join("onnxruntime/libonnxruntime.so.1.32.0");
    let lib = lib.to_string_lossy();
    // cuda asked on the CPU library: falls back to cpu, with the log line.
    let (ok, out) = check_models(&models_yaml(&lib, "[cuda, cpu]", false));
    assert!(ok, "{out}");
    assert!(out.contains("vad: ") && out.contains(" on cpu"), "{out}");
    assert!(
        out.contains("execution provider not available") && out.contains("provider=\"cuda\""),
        "fallback logged: {out}"
    );
    // strict: start-up error naming the provider and the library.
    let (ok, out) = check_models(&models_yaml(&lib, "[cuda]", true));
    assert!(!ok);
    assert!(out.contains("`cuda` is not available") && out.contains("libonnxruntime.so.1.32.0"), "{out}");
    // A missing library: a clear error, not a panic.
    let (ok, out) = check_models(&models_yaml("/nonexistent/libonnxruntime.so.1.32.0", "[cpu]", false));
    assert!(!ok);
    assert!(
        out.contains("cannot load the ONNX Runtime library /nonexistent/libonnxruntime.so.1.32.0")
            && !out.contains("panicked"),
        "{out}"
    );
    // A library that is not ONNX Runtime at all (too old / wrong file): also an error.
    let (ok, out) = check_models(&models_yaml("/usr/lib/x86_64-linux-gnu/libopus.so.0", "[cpu]", false));
    assert!(!ok && out.contains("cannot load the ONNX Runtime library") && !out.contains("panicked"), "{out}");
}

#[test]
fn the_appliance_loads_the_vad_at_start_and_labels_its_provider() {
    let ports = common::alloc_ports();
    let lib = models_dir().join("onnxruntime/libonnxruntime.so.1.32.0");
    let app = common::Appliance::start(&models_yaml(&lib.to_string_lossy(), "[cuda, cpu]", false), &ports);
    assert_eq!(
        app.metric_value("switchboard_model_info{model=\"vad\",provider=\"cpu\"}"),
        Some(1.0),
        "{}",
        app.metrics()
    );
    assert!(app.log().contains("model loaded"), "{}", app.log_tail(20));
}

fn log_values(log: &str, needle: &str, field: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| l.split(&format!("{field}=")).nth(1)?.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn a_call_with_server_vad_gets_speech_events_from_the_shared_worker() {
    common::require_tools(&["sipp"]);
    let fx = common::fixtures();
    let m = models_dir();
    let ports = common::alloc_ports();
    let cfg = format!(
        "models:\n  runtime:\n    library: {}\n  vad:\n    path: {}\nroutes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n    mode: silent\n    turn_detection:\n      type: server_vad\n      silence_duration_ms: 700\n",
        m.join("onnxruntime/libonnxruntime.so.1.32.0").display(),
        m.join("silero_vad/silero_vad.onnx").display()
    );
    let app = common::Appliance::start(&cfg, &ports);
    let run = common::run_sipp(
        app.dir(),
        &common::scenario("uac_pcmu_speech.xml"),
        &ports.sip_addr(),
        &ports,
        &["-s", "1000", "-m", "1", "-d", "0"],
        Duration::from_secs(40),
    );
    assert!(run.successful == 1 && run.failed == 0, "{}\n{}", run.report(), app.log_tail(30));
    assert!(app.wait_log("media stopped", Duration::from_secs(3)));
    let log = app.log();
    let starts = log_values(&log, "speech started", "audio_start_ms");
    let stops = log_values(&log, "speech stopped", "audio_end_ms");
    let speech_ms = fx.speech_pcm().len() as u64 / 8;
    // The sentence plays right after the ACK (~speech_ms long): speech starts near 0 (minus padding)
    // and ends near its end (jitter buffer and resampler add tens of ms).
    assert!(!starts.is_empty() && starts[0] <= 800, "speech start: {starts:?}\n{}", app.log_tail(30));
    assert!(stops.len() == starts.len(), "every start has its stop: {starts:?} {stops:?}");
    let last = *stops.last().unwrap();
    assert!(last + 600 >= speech_ms && last <= speech_ms + 800, "speech end {last} ms vs sentence {speech_ms} ms");
    let speech_lines: Vec<&str> = log.lines().filter(|l| l.contains("speech st")).collect();
    assert!(
        speech_lines.iter().all(|l| l.contains("call{call_id=")),
        "speech events are logged in the call's span: {speech_lines:?}"
    );
    assert_eq!(
        app.metric_value("switchboard_speech_events_total{event=\"speech_started\"}"),
        Some(starts.len() as f64)
    );
    assert_eq!(app.metric_value("switchboard_model_work_dropped_total{model=\"vad\"}"), Some(0.0));
}
