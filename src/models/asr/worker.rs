//! Recognition on a batching `models::pool`: `workers` threads, each owning
//! one `Whisper` (one unless the config says more: one copy per device; the
//! shipped config has two on 2 CPU cores, where that measured better), each
//! taking its share of the turns waiting when it is free (up to `max_batch`)
//! and recognising them together (`asr::batch`); calls submit finished turns
//! (and, when a thread is idle, partials) and poll for the answers from their
//! media loop.

use super::batch::Request;
use super::{DecodeOptions, Transcript, Whisper};
use crate::models::pool::{Cancel, Pool, PoolClient};
use crate::models::runtime::Provider;
use std::sync::Arc;

/// A turn's audio, how to decode it, and a draft of its tokens (see `asr::batch`).
type Input = (Vec<f32>, Arc<DecodeOptions>, Vec<i64>);

/// A transcription running longer than this has hung: a turn is at most one 30 s window, which
/// takes seconds on the slowest CPU this runs on (tiny.en: ~1 s, base: ~3 s on 2 cores).
pub const HANG_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// One job's answer.
#[derive(Debug, Clone)]
pub struct AsrResult {
    /// The number `submit` returned.
    pub seq: u64,
    pub partial: bool,
    pub transcript: Result<Transcript, String>,
    /// From submit to the answer, queueing included.
    pub latency_ms: f64,
}

pub struct AsrWorker {
    pool: Pool<Input, Transcript>,
    provider: Provider,
}

/// A pool thread's work with its own copy of Whisper: transcribe a batch of turns together, a
/// turn leaving the batch when it is cancelled.
fn batch(mut m: Whisper) -> impl FnMut(Vec<(Input, Cancel)>) -> Vec<Result<Transcript, String>> {
    move |jobs: Vec<(Input, Cancel)>| {
        let stops: Vec<_> = jobs.iter().map(|(_, cancel)| move || cancel.is_cancelled()).collect();
        let requests: Vec<Request> = jobs
            .iter()
            .zip(&stops)
            .map(|(((audio, opts, draft), _), stop)| Request { audio, opts, stop, draft })
            .collect();
        m.transcribe_batch(&requests).into_iter().map(|r| r.map_err(|e| e.to_string())).collect()
    }
}

impl AsrWorker {
    /// One thread per copy in `models`, each recognising up to `max_batch` turns at once.
    pub fn spawn(models: Vec<Whisper>, max_batch: usize, queue: usize, name: &str) -> AsrWorker {
        let provider = models.first().map(|m| m.provider()).unwrap_or(Provider::Cpu);
        let workers: Vec<_> = models.into_iter().map(batch).collect();
        AsrWorker { pool: Pool::spawn_batched(workers, max_batch, queue, &format!("asr-{name}")), provider }
    }

    /// Replace a recogniser that hangs (see `Pool::watch_batched`) with a copy made by `load`.
    pub fn watch(
        &self,
        limit: std::time::Duration,
        mut load: impl FnMut() -> Result<Whisper, String> + Send + 'static,
    ) {
        self.pool.watch_batched(limit, move || load().map(batch));
    }

    pub fn client(&self, opts: DecodeOptions) -> AsrClient {
        let partial_opts = Arc::new(DecodeOptions { redo_runaway: false, ..opts.clone() });
        AsrClient { inner: self.pool.client(), opts: Arc::new(opts), partial_opts }
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// Jobs waiting or running, across calls.
    pub fn pending(&self) -> usize {
        self.pool.pending()
    }

    /// The turns waiting for a recogniser.
    pub fn backlog(&self) -> &std::sync::Arc<crate::models::backlog::Backlog> {
        self.pool.backlog()
    }
}

/// One call's handle on the recognisers.
pub struct AsrClient {
    inner: PoolClient<Input, Transcript>,
    opts: Arc<DecodeOptions>,
    /// For partial transcripts: no redo of a runaway decode.
    partial_opts: Arc<DecodeOptions>,
}

impl AsrClient {
    /// Queue 16 kHz audio; `None` when refused (queue full, or a partial while no thread is idle).
    pub fn submit(&mut self, audio: Vec<f32>, partial: bool) -> Option<u64> {
        self.submit_drafted(audio, partial, Vec::new())
    }

    /// `submit` with a draft: the tokens of a partial transcript of the same turn, which the
    /// recogniser checks in one step instead of decoding them one by one (`asr::batch`).
    pub fn submit_drafted(&mut self, audio: Vec<f32>, partial: bool, draft: Vec<i64>) -> Option<u64> {
        let opts = if partial { &self.partial_opts } else { &self.opts };
        self.inner.submit((audio, opts.clone(), draft), partial)
    }

    pub fn poll(&mut self) -> Option<AsrResult> {
        self.inner.poll().map(convert)
    }

    /// The answer to `seq` is not wanted (a tentative turn end the caller talked past).
    pub fn cancel(&mut self, seq: u64) {
        self.inner.cancel(seq);
    }

    /// Wait for the next answer (tests and offline tools, not the media loop).
    pub fn wait(&mut self, timeout: std::time::Duration) -> Option<AsrResult> {
        self.inner.wait(timeout).map(convert)
    }
}

fn convert(a: crate::models::pool::Answer<Transcript>) -> AsrResult {
    AsrResult { seq: a.seq, partial: a.low_priority, transcript: a.result, latency_ms: a.latency_ms }
}
