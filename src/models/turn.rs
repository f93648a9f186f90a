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
        Ok(self.predict_batch(&[audio_16k])?[0])
    }

    /// `predict` for the turns of several calls in one inference (the model's batch axis).
    pub fn predict_batch(&mut self, audios: &[&[f32]]) -> Result<Vec<f32>, ort::Error> {
        let mut feats = Vec::with_capacity(audios.len() * 80 * FRAMES);
        for a in audios {
            feats.extend(self.features(a));
        }
        let outputs = self
            .session
            .run(ort::inputs!["input_features" => Tensor::from_array(([audios.len(), 80, FRAMES], feats))?])?;
        let (_, p) = outputs["logits"].try_extract_tensor::<f32>()?;
        if p.len() != audios.len() {
            return Err(ort::Error::new(format!(
                "the turn model gave {} answers for {} inputs",
                p.len(),
                audios.len()
            )));
        }
        Ok(p.to_vec())
    }
}

/// One call's question: its audio, and whether it is still wanted.
type Question = (Vec<f32>, super::pool::Cancel);

/// A pool thread's work: the predictions waiting, in one inference.
fn batch(mut model: SmartTurn) -> impl FnMut(Vec<Question>) -> Vec<Result<f32, String>> {
    move |jobs: Vec<Question>| {
        let audios: Vec<&[f32]> = jobs.iter().map(|(a, _)| a.as_slice()).collect();
        match model.predict_batch(&audios) {
            Ok(p) => p.into_iter().map(Ok).collect(),
            Err(e) => jobs.iter().map(|_| Err(e.to_string())).collect(),
        }
    }
}

/// A prediction (one 8 s window: ~10–50 ms on a CPU core) running longer than this has hung.
pub const HANG_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Smart Turn on a batching `pool` thread: calls ask P(complete) without waiting, and the
/// questions of several calls waiting when the thread is free are answered in one inference.
pub struct TurnWorker {
    pool: super::pool::Pool<Vec<f32>, f32>,
    provider: Provider,
}

impl TurnWorker {
    /// One copy of the model answering up to `max_batch` predictions per inference.
    pub fn spawn(model: SmartTurn, max_batch: usize, queue: usize) -> TurnWorker {
        let provider = model.provider();
        TurnWorker { pool: super::pool::Pool::spawn_batched(vec![batch(model)], max_batch, queue, "turn"), provider }
    }

    /// Replace a copy whose prediction has not returned within `limit` (its call's turn is left
    /// to the eagerness bound, as when the model fails).
    pub fn watch(&self, limit: std::time::Duration, load: impl Fn() -> Result<SmartTurn, String> + Send + 'static) {
        self.pool.watch_batched(limit, move || load().map(batch));
    }

    pub fn client(&self) -> super::pool::PoolClient<Vec<f32>, f32> {
        self.pool.client()
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }
}
