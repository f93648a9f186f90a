//! Speech models on ONNX Runtime. `runtime` loads the library and builds
//! sessions on the configured execution providers; `vad` is Silero VAD,
//! streamed per call and batched across calls on a worker thread.

pub mod asr;
pub mod backlog;
pub mod llm;
pub mod melspec;
pub mod pool;
pub mod runtime;
pub mod splitter;
pub mod turn;
pub mod vad;

use crate::config::LoadedConfig;
use runtime::RuntimeError;
use std::collections::BTreeMap;

/// Called by a model's worker before each step of its work (tests make a model hang with it, to
/// show the watchdog replaces it).
#[derive(Clone)]
pub struct StepHook(pub std::sync::Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for StepHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StepHook")
    }
}

/// How often a watchdog tries again to load a fresh copy after a load failed (a load reads the
/// whole model).
pub(crate) const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// A model's watchdog thread, named `thread`: `tick` runs every quarter of `limit` (10 ms to 1 s)
/// while `alive` can be upgraded (the model's handles last), until it returns false.
pub(crate) fn spawn_watchdog(
    thread: String,
    limit: std::time::Duration,
    alive: std::sync::Weak<()>,
    mut tick: impl FnMut() -> bool + Send + 'static,
) -> std::io::Result<()> {
    let every = (limit / 4).clamp(std::time::Duration::from_millis(10), std::time::Duration::from_secs(1));
    let run = move || {
        while alive.upgrade().is_some() {
            std::thread::sleep(every);
            if !tick() {
                return;
            }
        }
    };
    std::thread::Builder::new().name(thread).spawn(run).map(drop)
}

/// The models a config asks for, loaded (the workers run them).
pub struct Models {
    pub vad: Option<vad::VadWorker>,
    /// Smart Turn on its own thread(s): P(turn complete) for semantic_vad.
    pub turn: Option<turn::TurnWorker>,
    pub tts: Option<std::sync::Mutex<tts::PiperVoice>>,
    /// `models.voices`, by name.
    pub voices: BTreeMap<String, std::sync::Mutex<tts::PiperVoice>>,
    /// `models.asr`: one worker pool per recogniser, by name.
    pub asr: BTreeMap<String, asr::worker::AsrWorker>,
    /// `models.llm` of type onnx: the embedded language models on their threads, by name.
    pub llm: BTreeMap<String, llm::local::LocalLlm>,
    /// One line per model: name, provider, path (for logs and `check-models`).
    pub summary: Vec<String>,
}

impl std::fmt::Display for Models {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for l in &self.summary {
            writeln!(f, "{l}")?;
        }
        Ok(())
    }
}

/// Load the runtime and every configured model: a problem is a start-up error.
pub fn load_all(cfg: &LoadedConfig) -> Result<Models, RuntimeError> {
    let Some(m) = &cfg.config.models else {
        return Ok(Models {
            vad: None,
            turn: None,
            tts: None,
            voices: BTreeMap::new(),
            asr: BTreeMap::new(),
            llm: BTreeMap::new(),
            summary: vec!["no models configured".into()],
        });
    };
    let rt = runtime::init(&cfg.resolve(&m.runtime.library))?;
    let mut summary = vec![format!("onnxruntime {} from {}", rt.version(), rt.library().display())];
    let vad = match &m.vad {
        Some(v) => {
            let path = cfg.resolve(&v.path);
            let mut model = vad::SileroVad::load(rt, &path, &v.session_options())?;
            // One real inference now: a provider that registers but cannot run fails here, at start-up.
            let t0 = std::time::Instant::now();
            let mut st = vad::StreamState::new(16000).expect("16 kHz is supported");
            model
                .infer(&mut [&mut st], &[&[0.0f32; 512][..]])
                .map_err(|source| RuntimeError::Ort { model: "vad".into(), source })?;
            summary.push(format!(
                "vad: {} on {} (silero-vad 6.2.3; first inference {:.1} ms)",
                path.display(),
                model.provider().label(),
                t0.elapsed().as_secs_f64() * 1000.0
            ));
            let worker = vad::VadWorker::spawn(model, v.queue.get() as usize, v.max_batch.get() as usize);
            let opts = v.session_options();
            worker.watch(vad::HANG_LIMIT, move || vad::SileroVad::load(rt, &path, &opts).map_err(|e| e.to_string()));
            Some(worker)
        }
        None => None,
    };
    let turn = match &m.turn {
        Some(t) => {
            let path = cfg.resolve(&t.path);
            let mut model = turn::SmartTurn::load(rt, &path, &t.session_options())?;
            let t0 = std::time::Instant::now();
            let p =
                model.predict(&[0.0f32; 16000]).map_err(|source| RuntimeError::Ort { model: "turn".into(), source })?;
            summary.push(format!(
                "turn: {} on {} (smart-turn v3.2; first decision {:.1} ms, P(complete | 1 s silence) = {p:.2})",
                path.display(),
                model.provider().label(),
                t0.elapsed().as_secs_f64() * 1000.0
            ));
            let worker = turn::TurnWorker::spawn(model, t.max_batch.get() as usize, t.queue.get() as usize);
            let opts = t.session_options();
            worker.watch(turn::HANG_LIMIT, move || turn::SmartTurn::load(rt, &path, &opts).map_err(|e| e.to_string()));
            Some(worker)
        }
        None => None,
    };
    let tts = match &m.tts {
        Some(t) => Some(load_voice(rt, cfg, "tts", t, &mut summary)?),
        None => None,
    };
    let mut voices = BTreeMap::new();
    for (name, v) in &m.voices {
        voices.insert(name.clone(), load_voice(rt, cfg, &format!("voices.{name}"), v, &mut summary)?);
    }
    let mut asr = BTreeMap::new();
    for (name, a) in &m.asr {
        asr.insert(name.clone(), load_asr(rt, cfg, name, a, &mut summary)?);
    }
    let mut llm = BTreeMap::new();
    for (name, l) in m.llm.iter().filter(|(_, l)| l.kind == crate::config::LlmKind::Onnx) {
        llm.insert(name.clone(), load_llm(rt, cfg, name, l, &mut summary)?);
    }
    Ok(Models { vad, turn, tts, voices, asr, llm, summary })
}

/// A fresh copy of a configured voice (`models.voices.NAME`, or `models.tts` for `None`) each time
/// it is called: the voice's watchdog replaces a hung one with it.
pub fn voice_loader(
    cfg: &LoadedConfig,
    name: Option<&str>,
) -> Option<impl Fn() -> Result<tts::PiperVoice, String> + Send + 'static> {
    let m = cfg.config.models.as_ref()?;
    let t = match name {
        Some(n) => m.voices.get(n)?,
        None => m.tts.as_ref()?,
    };
    let rt = runtime::init(&cfg.resolve(&m.runtime.library)).ok()?;
    let path = cfg.resolve(&t.path);
    let mut json = path.clone().into_os_string();
    json.push(".json");
    let opts = t.session_options();
    Some(move || tts::PiperVoice::load(rt, &path, std::path::Path::new(&json), &opts).map_err(|e| e.to_string()))
}

/// A Piper voice (`.onnx` with its `.onnx.json` beside it), tried once on "Hello.".
fn load_voice(
    rt: &runtime::Runtime,
    cfg: &LoadedConfig,
    label: &str,
    t: &crate::config::ModelConfig,
    summary: &mut Vec<String>,
) -> Result<std::sync::Mutex<tts::PiperVoice>, RuntimeError> {
    let path = cfg.resolve(&t.path);
    let mut json = path.clone().into_os_string();
    json.push(".json");
    let err = |e: tts::TtsError| RuntimeError::Model { model: label.into(), reason: e.to_string() };
    let mut voice = tts::PiperVoice::load(rt, &path, std::path::Path::new(&json), &t.session_options()).map_err(err)?;
    let t0 = std::time::Instant::now();
    let audio = voice.synthesize_16k("Hello.").map_err(err)?;
    summary.push(format!(
        "{label}: {} on {} (piper; \"Hello.\" = {} ms of audio in {:.0} ms)",
        path.display(),
        voice.provider().label(),
        audio.len() / 16,
        t0.elapsed().as_secs_f64() * 1000.0
    ));
    Ok(std::sync::Mutex::new(voice))
}

/// A Whisper recogniser: `workers` copies on their threads, each tried once on a second of
/// silence (which must come out empty), and every agent's language checked against it.
fn load_asr(
    rt: &'static runtime::Runtime,
    cfg: &LoadedConfig,
    name: &str,
    a: &crate::config::AsrModelConfig,
    summary: &mut Vec<String>,
) -> Result<asr::worker::AsrWorker, RuntimeError> {
    let label = format!("asr.{name}");
    let dir = cfg.resolve(&a.path);
    let mut copies = Vec::new();
    for _ in 0..a.workers.get() {
        let mut w = asr::Whisper::load(rt, &label, &dir, a.precision, &a.session_options())?;
        w.set_window_floor(a.window_floor_s());
        copies.push(w);
    }
    let first = &mut copies[0];
    for (agent, ac) in &cfg.config.agents {
        if cfg.config.asr_model_of(ac).is_some_and(|(m, _)| m == name) {
            let lang = ac.transcription.as_ref().and_then(|t| t.language.clone()).unwrap_or_else(|| a.language.clone());
            first.check_language(&lang).map_err(|reason| RuntimeError::Model {
                model: format!("agents.{agent}.transcription.language"),
                reason,
            })?;
        }
    }
    first
        .check_language(&a.language)
        .map_err(|reason| RuntimeError::Model { model: format!("models.asr.{name}.language"), reason })?;
    let t0 = std::time::Instant::now();
    let opts = asr::DecodeOptions { language: a.language.clone(), ..Default::default() };
    let t = first
        .transcribe(&[0.0f32; 16000], &opts)
        .map_err(|source| RuntimeError::Ort { model: label.clone(), source })?;
    let first = &copies[0];
    summary.push(format!(
        "{label}: {} {} on {} ({}; {} worker(s), batches of up to {}; window {}; 1 s of silence in {:.0} ms → {:?}, P(no speech) {:.2})",
        dir.display(),
        a.precision.label(),
        first.provider().label(),
        if first.spec().source.is_empty() { "whisper" } else { &first.spec().source },
        copies.len(),
        a.max_batch.get(),
        if first.window_frames(0) == asr::FRAMES { "30 s".to_string() } else { format!("fitted, floor {} s", a.window_floor_s()) },
        t0.elapsed().as_secs_f64() * 1000.0,
        t.text,
        t.no_speech_prob
    ));
    let worker = asr::worker::AsrWorker::spawn(copies, a.max_batch.get() as usize, a.queue.get() as usize, name);
    // A recogniser that hangs is replaced by a fresh copy (its turn fails, the other calls go on).
    let (precision, opts, floor) = (a.precision, a.session_options(), a.window_floor_s());
    worker.watch(asr::worker::HANG_LIMIT, move || {
        let mut w = asr::Whisper::load(rt, &label, &dir, precision, &opts).map_err(|e| e.to_string())?;
        w.set_window_floor(floor);
        Ok(w)
    });
    Ok(worker)
}

/// An embedded language model on its worker thread, after one real step (a provider that
/// registers but cannot run fails here, at start-up).
fn load_llm(
    rt: &'static runtime::Runtime,
    cfg: &LoadedConfig,
    name: &str,
    l: &crate::config::LlmBackendConfig,
    summary: &mut Vec<String>,
) -> Result<llm::local::LocalLlm, RuntimeError> {
    let label = format!("llm.{name}");
    let dir = cfg.resolve(l.path.as_deref().unwrap_or(std::path::Path::new(".")));
    let t0 = std::time::Instant::now();
    let mut model = llm::qwen::Qwen::load(rt, &label, &dir, &l.session_options())?;
    let load_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let t1 = std::time::Instant::now();
    let mut cache = model.empty_cache().map_err(|source| RuntimeError::Ort { model: label.clone(), source })?;
    let hello = model.tokenizer().encode("Hello");
    model.forward(&mut cache, &hello).map_err(|source| RuntimeError::Ort { model: label.clone(), source })?;
    summary.push(format!(
        "{label}: {} ({} {}, on {}; loaded in {load_ms:.0} ms, first step {:.0} ms)",
        dir.display(),
        model.spec().name,
        model.spec().quant,
        model.provider().label(),
        t1.elapsed().as_secs_f64() * 1000.0
    ));
    let settings = llm::local::LocalSettings {
        sampling: llm::sampler::Sampling {
            temperature: l.temperature,
            top_k: l.top_k.get() as usize,
            top_p: l.top_p,
            repetition_penalty: l.repetition_penalty,
        },
        cache_bytes: l.cache_mb.get() as usize * 1024 * 1024,
        seed: l.seed,
        step_hook: None,
    };
    let llm = llm::local::LocalLlm::spawn(model, settings, l.queue.get() as usize, name)
        .map_err(|reason| RuntimeError::Model { model: label.clone(), reason })?;
    // A model that hangs is replaced by a fresh copy (the replies in flight fail, the calls go on).
    let opts = l.session_options();
    llm.watch(llm::local::HANG_LIMIT, move || {
        llm::qwen::Qwen::load(rt, &label, &dir, &opts).map_err(|e| e.to_string())
    });
    Ok(llm)
}
pub mod tts;
pub mod tts_worker;
