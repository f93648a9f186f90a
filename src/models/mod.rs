//! Speech models on ONNX Runtime. `runtime` loads the library and builds
//! sessions on the configured execution providers; `vad` is Silero VAD,
//! streamed per call and batched across calls on a worker thread.

pub mod runtime;
pub mod vad;
pub mod melspec; pub mod turn;

use crate::config::LoadedConfig;
use runtime::RuntimeError;

/// The models a config asks for, loaded (the workers run them).
pub struct Models {
    pub vad: Option<vad::VadWorker>,
    pub turn: Option<std::sync::Mutex<turn::SmartTurn>>,
    pub tts: Option<std::sync::Mutex<tts::PiperVoice>>,
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
        return Ok(Models { vad: None, turn: None, tts: None, summary: vec!["no models configured".into()] });
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
            model.infer(&mut [&mut st], &[&[0.0f32; 512][..]]).map_err(|source| RuntimeError::Ort { model: "vad".into(), source })?;
            summary.push(format!(
                "vad: {} on {} (silero-vad 6.2.3; first inference {:.1} ms)",
                path.display(),
                model.provider().label(),
                t0.elapsed().as_secs_f64() * 1000.0
            ));
            Some(vad::VadWorker::spawn(model, v.queue.get() as usize, v.max_batch.get() as usize))
        }
        None => None,
    };
    let turn = match &m.turn {
        Some(t) => {
            let path = cfg.resolve(&t.path);
            let mut model = turn::SmartTurn::load(rt, &path, &t.session_options())?;
            let t0 = std::time::Instant::now();
            let p = model.predict(&[0.0f32; 16000]).map_err(|source| RuntimeError::Ort { model: "turn".into(), source })?;
            summary.push(format!(
                "turn: {} on {} (smart-turn v3.2; first decision {:.1} ms, P(complete | 1 s silence) = {p:.2})",
                path.display(),
                model.provider().label(),
                t0.elapsed().as_secs_f64() * 1000.0
            ));
            Some(std::sync::Mutex::new(model))
        }
        None => None,
    };
    let tts = match &m.tts {
        Some(t) => {
            let path = cfg.resolve(&t.path);
            let mut json = path.clone().into_os_string();
            json.push(".json");
            let mut voice = tts::PiperVoice::load(rt, &path, std::path::Path::new(&json), &t.session_options())
                .map_err(|e| RuntimeError::Model { model: "tts".into(), reason: e.to_string() })?;
            let t0 = std::time::Instant::now();
            let audio = voice.synthesize_16k("Hello.").map_err(|e| RuntimeError::Model { model: "tts".into(), reason: e.to_string() })?;
            summary.push(format!(
                "tts: {} on {} (piper en_US-joe-medium; \"Hello.\" = {} ms of audio in {:.0} ms)",
                path.display(),
                voice.provider().label(),
                audio.len() / 16,
                t0.elapsed().as_secs_f64() * 1000.0
            ));
            Some(std::sync::Mutex::new(voice))
        }
        None => None,
    };
    Ok(Models { vad, turn, tts, summary })
}
pub mod tts;
