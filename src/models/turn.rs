//! Smart Turn v3.2 (pipecat-ai 1.14.0): P(the user's turn is complete) from
//! the last 8 s of 16 kHz audio.
//!
//! As pipecat's `LocalSmartTurnAnalyzerV3` does: keep the last 8 s, or
//! left-pad with zeros to 8 s; Whisper log-mel features of the normalised
//! waveform (`melspec`, 80 × 800); the model's `input_features`
//! f32[1, 80, 800] gives `logits` f32[1, 1], already a probability.

use super::melspec::LogMel;
use super::runtime::{Provider, Runtime, RuntimeError, SessionOptions};
use ort::session::Session;
use ort::value::Tensor;
use std::path::Path;

/// Seconds of audio the model looks at.
pub const WINDOW_SECONDS: usize = 8;
/// Samples at 16 kHz the model looks at.
pub const WINDOW_SAMPLES: usize = WINDOW_SECONDS * 16000;
const FRAMES: usize = 800;

pub struct SmartTurn {
    session: Session,
    provider: Provider,
    mel: LogMel,
}

impl SmartTurn {
    pub fn load(rt: &Runtime, path: &Path, opts: &SessionOptions) -> Result<SmartTurn, RuntimeError> {
        let (session, provider) = rt.session("turn", path, opts)?;
        Ok(SmartTurn { session, provider, mel: LogMel::new(FRAMES) })
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The model's input for `audio_16k`: the last 8 s, left-padded with zeros, as features `[80][800]`.
    pub fn features(&self, audio_16k: &[f32]) -> Vec<f32> {
        let tail = &audio_16k[audio_16k.len().saturating_sub(WINDOW_SAMPLES)..];
        let mut x = vec![0f32; WINDOW_SAMPLES - tail.len()];
        x.extend_from_slice(tail);
        self.mel.compute(&x, true)
    }

    /// P(turn complete) for the audio so far (16 kHz, f32 in [-1, 1]; only the last 8 s are used).
    pub fn predict(&mut self, audio_16k: &[f32]) -> Result<f32, ort::Error> {
        let feats = self.features(audio_16k);
        let outputs = self.session.run(ort::inputs!["input_features" => Tensor::from_array(([1usize, 80, FRAMES], feats))?])?;
        let (_, p) = outputs["logits"].try_extract_tensor::<f32>()?;
        p.first().copied().ok_or_else(|| ort::Error::new("empty output from the turn model"))
    }
}

/// A prediction (one 8 s window: ~10–50 ms on a CPU core) running longer than this has hung.
pub const HANG_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Smart Turn on a `pool` thread: calls ask P(complete) without waiting.
pub struct TurnWorker {
    pool: super::pool::Pool<Vec<f32>, f32>,
    provider: Provider,
}

impl TurnWorker {
    pub fn spawn(mut model: SmartTurn, queue: usize) -> TurnWorker {
        let provider = model.provider();
        let work = move |audio: Vec<f32>, _: &super::pool::Cancel| model.predict(&audio).map_err(|e| e.to_string());
        TurnWorker { pool: super::pool::Pool::spawn(vec![work], queue, "turn"), provider }
    }

    /// Replace a copy whose prediction has not returned within `limit` (its call's turn is left
    /// to the eagerness bound, as when the model fails).
    pub fn watch(&self, limit: std::time::Duration, load: impl Fn() -> Result<SmartTurn, String> + Send + 'static) {
        self.pool.watch(limit, move || {
            let mut model = load()?;
            Ok(move |audio: Vec<f32>, _: &super::pool::Cancel| model.predict(&audio).map_err(|e| e.to_string()))
        });
    }

    pub fn client(&self) -> super::pool::PoolClient<Vec<f32>, f32> {
        self.pool.client()
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }
}
