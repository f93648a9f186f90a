//! Silero VAD (silero-vad 6.2.3) streamed per call and batched across calls.
//!
//! The model takes, per stream, one chunk (512 samples at 16 kHz, 256 at
//! 8 kHz) prefixed by the last 64 (32) samples of the previous chunk, plus
//! its recurrent state `[2, B, 128]`, and returns P(speech) and the next
//! state. The batch dimension is free, so one inference serves every call
//! that has a chunk ready: that is what `VadWorker` does on its own thread.
//!
//! `Segmenter` turns probabilities into speech start/stop events with the
//! OpenAI Realtime `server_vad` parameters (threshold, prefix_padding_ms,
//! silence_duration_ms) plus a minimum speech duration.
//!
//! A model that hangs (an inference that neither returns nor panics) is caught
//! by the worker's watchdog (`VadWorker::watch`): a new thread with a fresh
//! copy serves the queue. The streams (their state and answer channel) live
//! in a registry both share, never locked while the model runs, so every call
//! keeps its speech detection; only the hung batch's chunks go unanswered.

use super::runtime::{Runtime, RuntimeError, SessionOptions};
use ort::session::Session;
use ort::value::Tensor;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// An inference (one chunk of every call: ~1 ms) running longer than this has hung.
pub const HANG_LIMIT: Duration = Duration::from_secs(5);

const STATE: usize = 2 * 128;

/// Chunk and context lengths for a sample rate (the model supports 8 and 16 kHz).
pub fn chunk_len(sample_rate: u32) -> Option<(usize, usize)> {
    match sample_rate {
        16000 => Some((512, 64)),
        8000 => Some((256, 32)),
        _ => None,
    }
}

/// One stream's memory between chunks.
#[derive(Clone)]
pub struct StreamState {
    sample_rate: u32,
    context: Vec<f32>,
    state: Vec<f32>,
}

impl StreamState {
    pub fn new(sample_rate: u32) -> Option<StreamState> {
        let (_, ctx) = chunk_len(sample_rate)?;
        Some(StreamState { sample_rate, context: vec![0.0; ctx], state: vec![0.0; STATE] })
    }
}

/// The Silero session.
pub struct SileroVad {
    session: Session,
    provider: super::runtime::Provider,
}

impl SileroVad {
    pub fn load(rt: &Runtime, path: &Path, opts: &SessionOptions) -> Result<SileroVad, RuntimeError> {
        let (session, provider) = rt.session("vad", path, opts)?;
        Ok(SileroVad { session, provider })
    }

    pub fn provider(&self) -> super::runtime::Provider {
        self.provider
    }

    /// One chunk for each stream (all at the same sample rate): P(speech) per
    /// stream, and each stream's context and state advanced.
    pub fn infer(&mut self, streams: &mut [&mut StreamState], chunks: &[&[f32]]) -> Result<Vec<f32>, ort::Error> {
        let b = streams.len();
        if b == 0 {
            return Ok(Vec::new());
        }
        let sr = streams[0].sample_rate;
        let (n, c) = chunk_len(sr).ok_or_else(|| ort::Error::new("unsupported sample rate"))?;
        let mut input = Vec::with_capacity(b * (n + c));
        let mut state = vec![0f32; 2 * b * 128];
        for (i, (s, chunk)) in streams.iter().zip(chunks).enumerate() {
            if s.sample_rate != sr || chunk.len() != n {
                return Err(ort::Error::new("a batch must hold whole chunks at one sample rate"));
            }
            input.extend_from_slice(&s.context);
            input.extend_from_slice(chunk);
            // state is [2][B][128]: layer-major.
            for layer in 0..2 {
                state[(layer * b + i) * 128..(layer * b + i + 1) * 128]
                    .copy_from_slice(&s.state[layer * 128..(layer + 1) * 128]);
            }
        }
        let outputs = self.session.run(ort::inputs![
            "input" => Tensor::from_array(([b, n + c], input))?,
            "state" => Tensor::from_array(([2, b, 128], state))?,
            "sr" => Tensor::from_array(((), vec![sr as i64]))?,
        ])?;
        let (_, probs) = outputs["output"].try_extract_tensor::<f32>()?;
        let (_, next) = outputs["stateN"].try_extract_tensor::<f32>()?;
        if probs.len() != b || next.len() != 2 * b * 128 {
            return Err(ort::Error::new("unexpected output shape from the VAD model"));
        }
        for (i, s) in streams.iter_mut().enumerate() {
            for layer in 0..2 {
                s.state[layer * 128..(layer + 1) * 128]
                    .copy_from_slice(&next[(layer * b + i) * 128..(layer * b + i + 1) * 128]);
            }
            // The next context is the tail of this chunk (n > c).
            s.context.copy_from_slice(&chunks[i][n - c..]);
        }
        Ok(probs.to_vec())
    }
}

// ------------------------------------------------------------------ worker

/// Identifies one stream (call) on a `VadWorker`.
pub type StreamId = u64;

/// What the worker answers for each chunk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadResult {
    pub stream: StreamId,
    /// Index of the chunk within its stream (0, 1, …).
    pub seq: u64,
    pub probability: f32,
}

enum Request {
    Open { id: StreamId, sample_rate: u32, reply: mpsc::SyncSender<VadResult> },
    Chunk { id: StreamId, seq: u64, samples: Vec<f32> },
    Close { id: StreamId },
}

/// Counters of a worker (for metrics and tests).
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub batches: std::sync::atomic::AtomicU64,
    pub chunks: std::sync::atomic::AtomicU64,
    /// Chunks not analysed (queue full) or results not delivered (the call's channel full).
    pub dropped: std::sync::atomic::AtomicU64,
    pub errors: std::sync::atomic::AtomicU64,
}

/// A thread owning the VAD session and every stream's state. Calls submit
/// chunks without blocking; the worker runs whatever is queued as one batch
/// per sample rate and answers on each stream's own channel.
#[derive(Clone)]
pub struct VadWorker {
    tx: mpsc::SyncSender<Request>,
    stats: std::sync::Arc<WorkerStats>,
    provider: super::runtime::Provider,
    /// What a replacement thread takes over (`watch`).
    shared: Arc<Shared>,
    life: Arc<Mutex<Arc<Life>>>,
    max_batch: usize,
    /// The watchdog ends when the last handle goes.
    alive: Arc<()>,
}

/// The queue and the streams, shared by the worker thread and the one that replaces it. The
/// streams are never locked while the model runs.
struct Shared {
    rx: Mutex<mpsc::Receiver<Request>>,
    streams: Mutex<HashMap<StreamId, Stream>>,
}

/// One worker thread, as the watchdog sees it: when the inference now running began, and whether
/// the watchdog gave up on it (one lock, so that an inference that ends is never retired after).
#[derive(Default)]
struct Life(Mutex<(Option<Instant>, bool)>);

impl Life {
    fn retired(&self) -> bool {
        lock(&self.0).1
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One call's handle: submit chunks, read probabilities.
pub struct VadClient {
    id: StreamId,
    worker: VadWorker,
    rx: mpsc::Receiver<VadResult>,
    sample_rate: u32,
    next_seq: u64,
    pending: Vec<f32>,
}

impl VadWorker {
    /// `queue` bounds the requests waiting (across all calls); `max_batch` the streams per inference.
    pub fn spawn(vad: SileroVad, queue: usize, max_batch: usize) -> VadWorker {
        let provider = vad.provider();
        let (tx, rx) = mpsc::sync_channel::<Request>(queue.max(1));
        let stats = std::sync::Arc::new(WorkerStats::default());
        let shared = Arc::new(Shared { rx: Mutex::new(rx), streams: Mutex::new(HashMap::new()) });
        let life = Arc::new(Life::default());
        start_worker(vad, &shared, max_batch.max(1), &stats, &life);
        VadWorker {
            tx,
            stats,
            provider,
            shared,
            life: Arc::new(Mutex::new(life)),
            max_batch: max_batch.max(1),
            alive: Arc::new(()),
        }
    }

    /// Watch the worker: an inference running longer than `limit` has hung, and a new thread
    /// with the model `load` returns serves the queue and the streams. If no copy loads, every
    /// stream is given up (its call sees its speech detection lost, and apologises and ends).
    pub fn watch(&self, limit: Duration, load: impl Fn() -> Result<SileroVad, String> + Send + 'static) {
        watch_with(&self.shared, &self.life, &self.stats, self.max_batch, &self.alive, limit, load);
    }

    /// The execution provider the model really runs on.
    pub fn provider(&self) -> super::runtime::Provider {
        self.provider
    }

    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// Open a stream. Results for it arrive on the client's own bounded channel.
    pub fn open(&self, id: StreamId, sample_rate: u32) -> Option<VadClient> {
        chunk_len(sample_rate)?;
        let (reply, rx) = mpsc::sync_channel(256);
        self.tx.send(Request::Open { id, sample_rate, reply }).ok()?;
        Some(VadClient { id, worker: self.clone(), rx, sample_rate, next_seq: 0, pending: Vec::new() })
    }
}

impl VadClient {
    /// Feed PCM (any length): whole chunks are submitted. Returns false when the
    /// worker's queue was full and a chunk was dropped (the call degrades; RTP does not wait).
    pub fn push(&mut self, pcm: &[i16]) -> bool {
        let (n, _) = chunk_len(self.sample_rate).expect("checked at open");
        self.pending.extend(pcm.iter().map(|&s| s as f32 / 32768.0));
        let mut ok = true;
        while self.pending.len() >= n {
            let samples: Vec<f32> = self.pending.drain(..n).collect();
            let seq = self.next_seq;
            self.next_seq += 1;
            if self.worker.tx.try_send(Request::Chunk { id: self.id, seq, samples }).is_err() {
                self.worker.stats.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ok = false;
            }
        }
        ok
    }

    /// Results that have arrived (non-blocking).
    pub fn poll(&mut self) -> Option<VadResult> {
        self.rx.try_recv().ok()
    }

    /// A client whose worker has already given it up (tests of what a call does then).
    #[cfg(test)]
    pub fn given_up(sample_rate: u32) -> VadClient {
        // No worker takes requests: the channel's receiver is gone, so sending fails at once (a
        // receiver kept alive would let the Close on drop block on the full channel).
        let (tx, _) = mpsc::sync_channel(1);
        let (_, unused) = mpsc::sync_channel(1);
        let shared = Arc::new(Shared { rx: Mutex::new(unused), streams: Mutex::new(HashMap::new()) });
        let worker = VadWorker {
            tx,
            stats: Default::default(),
            provider: super::runtime::Provider::Cpu,
            shared,
            life: Default::default(),
            max_batch: 1,
            alive: Arc::new(()),
        };
        let (_, rx) = mpsc::sync_channel(1);
        VadClient { id: 0, worker, rx, sample_rate, next_seq: 0, pending: Vec::new() }
    }

    /// Has the worker given this stream up (the model panicked on its audio, or the worker is
    /// gone)? Nothing more will arrive.
    pub fn lost(&self) -> bool {
        matches!(self.rx.try_recv(), Err(mpsc::TryRecvError::Disconnected))
    }

    /// Wait for a result (tests, offline use).
    pub fn recv_timeout(&mut self, t: std::time::Duration) -> Option<VadResult> {
        self.rx.recv_timeout(t).ok()
    }

    pub fn chunk_ms(&self) -> u32 {
        let (n, _) = chunk_len(self.sample_rate).expect("checked at open");
        (n as u32 * 1000) / self.sample_rate
    }
}

impl Drop for VadClient {
    fn drop(&mut self) {
        let _ = self.worker.tx.send(Request::Close { id: self.id });
    }
}

struct Stream {
    state: StreamState,
    reply: mpsc::SyncSender<VadResult>,
}

/// A chunk waiting for the model: its stream, its number in the stream, its samples.
type Chunk = (StreamId, u64, Vec<f32>);

/// One batched inference; the worker is written against this so that its failure handling can
/// be tested without a model.
trait BatchInfer {
    fn infer_batch(&mut self, streams: &mut [&mut StreamState], chunks: &[&[f32]]) -> Result<Vec<f32>, String>;
}

impl BatchInfer for SileroVad {
    fn infer_batch(&mut self, streams: &mut [&mut StreamState], chunks: &[&[f32]]) -> Result<Vec<f32>, String> {
        self.infer(streams, chunks).map_err(|e| e.to_string())
    }
}

/// Run a batch, surviving a panic in the model: when the whole batch panics, each stream is
/// run alone, and only a stream that panics alone is given up (Err for it); the others get
/// their results. One caller's audio can never take speech detection away from the rest.
fn infer_isolated<V: BatchInfer>(
    vad: &mut V,
    states: &mut [StreamState],
    chunks: &[&[f32]],
) -> Vec<Result<f32, String>> {
    let whole = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut refs: Vec<&mut StreamState> = states.iter_mut().collect();
        vad.infer_batch(&mut refs, chunks)
    }));
    match whole {
        Ok(Ok(probs)) if probs.len() == states.len() => probs.into_iter().map(Ok).collect(),
        Ok(Ok(_)) => states.iter().map(|_| Err("the model gave the wrong number of results".to_string())).collect(),
        Ok(Err(e)) => states.iter().map(|_| Err(e.clone())).collect(),
        Err(_) if states.len() == 1 => vec![Err("the model panicked on this stream".into())],
        Err(_) => states
            .iter_mut()
            .zip(chunks)
            .map(|(st, chunk)| {
                let mut one = st.clone();
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    vad.infer_batch(&mut [&mut one], &[chunk])
                }));
                match r {
                    Ok(Ok(p)) if p.len() == 1 => {
                        *st = one;
                        Ok(p[0])
                    }
                    Ok(Ok(_)) => Err("the model gave the wrong number of results".into()),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err("the model panicked on this stream".into()),
                }
            })
            .collect(),
    }
}

fn start_worker<V: BatchInfer + Send + 'static>(
    mut vad: V,
    shared: &Arc<Shared>,
    max_batch: usize,
    stats: &Arc<WorkerStats>,
    life: &Arc<Life>,
) {
    let (shared, stats, life) = (shared.clone(), stats.clone(), life.clone());
    let spawned = std::thread::Builder::new()
        .name("vad-worker".into())
        .spawn(move || worker_loop(&mut vad, &shared, max_batch, &stats, &life));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the VAD worker thread");
    }
}

/// The watchdog (`VadWorker::watch`), over any model (tests give it one that hangs).
fn watch_with<V: BatchInfer + Send + 'static>(
    shared: &Arc<Shared>,
    life: &Arc<Mutex<Arc<Life>>>,
    stats: &Arc<WorkerStats>,
    max_batch: usize,
    alive: &Arc<()>,
    limit: Duration,
    load: impl Fn() -> Result<V, String> + Send + 'static,
) {
    let (shared, life, stats) = (shared.clone(), life.clone(), stats.clone());
    let alive: Weak<()> = Arc::downgrade(alive);
    let spawned = crate::models::spawn_watchdog("vad-watchdog".into(), limit, alive, move || {
        let current = lock(&life).clone();
        {
            let mut state = lock(&current.0);
            if state.0.is_none_or(|t| t.elapsed() <= limit) {
                return true;
            }
            state.1 = true;
        }
        stats.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(
            limit_ms = limit.as_millis() as u64,
            "a VAD inference did not return: a fresh copy takes its place (that batch's chunks are lost)"
        );
        match load() {
            Ok(vad) => {
                let next = Arc::new(Life::default());
                start_worker(vad, &shared, max_batch, &stats, &next);
                *lock(&life) = next;
            }
            Err(e) => {
                // Without speech detection the calls cannot go on: let them know (`lost`).
                tracing::error!(error = %e, "cannot replace the hung VAD: every call's speech detection is given up");
                lock(&shared.streams).clear();
                return false;
            }
        }
        true
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the VAD's watchdog");
    }
}

fn worker_loop<V: BatchInfer>(vad: &mut V, shared: &Shared, max_batch: usize, stats: &WorkerStats, life: &Life) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut batch: Vec<(StreamId, u64, Vec<f32>)> = Vec::new();
    while !life.retired() {
        {
            // The queue is held while a batch is taken, never while the model runs.
            let rx = lock(&shared.rx);
            let Ok(first) = rx.recv() else { return };
            let mut next = Some(first);
            // Take what is queued right now (up to max_batch chunks) as one batch.
            loop {
                match next.take() {
                    Some(Request::Open { id, sample_rate, reply }) => {
                        if let Some(state) = StreamState::new(sample_rate) {
                            lock(&shared.streams).insert(id, Stream { state, reply });
                        }
                    }
                    Some(Request::Close { id }) => {
                        lock(&shared.streams).remove(&id);
                    }
                    Some(Request::Chunk { id, seq, samples }) => batch.push((id, seq, samples)),
                    None => {}
                }
                if batch.len() >= max_batch {
                    break;
                }
                match rx.try_recv() {
                    Ok(r) => next = Some(r),
                    Err(_) => break,
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        if !run_batch(vad, shared, &mut batch, stats, life) {
            return;
        }
        stats.batches.fetch_add(1, Relaxed);
    }
}

/// One inference per sample rate, one chunk per stream (a stream with two
/// chunks queued goes in two rounds: its state must advance in order). False when the watchdog
/// retired this thread while the model ran: the streams are the new thread's.
fn run_batch<V: BatchInfer>(
    vad: &mut V,
    shared: &Shared,
    batch: &mut Vec<(StreamId, u64, Vec<f32>)>,
    stats: &WorkerStats,
    life: &Life,
) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    while !batch.is_empty() {
        let mut round: Vec<(StreamId, u64, Vec<f32>)> = Vec::new();
        let mut rest = Vec::new();
        for item in batch.drain(..) {
            if round.iter().any(|(id, _, _)| *id == item.0) {
                rest.push(item);
            } else {
                round.push(item);
            }
        }
        *batch = rest;
        for rate in [16000u32, 8000] {
            // The states are copied out, the model runs without the lock, and they go back.
            let (group, mut states): (Vec<&Chunk>, Vec<StreamState>) = {
                let streams = lock(&shared.streams);
                round
                    .iter()
                    .filter_map(|g| {
                        streams.get(&g.0).filter(|s| s.state.sample_rate == rate).map(|s| (g, s.state.clone()))
                    })
                    .unzip()
            };
            if group.is_empty() {
                continue;
            }
            let chunks: Vec<&[f32]> = group.iter().map(|g| g.2.as_slice()).collect();
            lock(&life.0).0 = Some(Instant::now());
            let results = infer_isolated(vad, &mut states, &chunks);
            {
                let mut state = lock(&life.0);
                if state.1 {
                    return false;
                }
                state.0 = None;
            }
            let mut streams = lock(&shared.streams);
            for ((g, st), r) in group.iter().zip(states).zip(results) {
                match r {
                    Ok(p) => {
                        stats.chunks.fetch_add(1, Relaxed);
                        if let Some(s) = streams.get_mut(&g.0) {
                            s.state = st;
                            // A call that stopped reading loses results, counted: never block the worker.
                            if s.reply.try_send(VadResult { stream: g.0, seq: g.1, probability: p }).is_err() {
                                stats.dropped.fetch_add(1, Relaxed);
                            }
                        }
                    }
                    Err(e) if e.contains("panicked") => {
                        // Its state may be what made the model panic: this stream is given up (its
                        // call hears no more turns; its client sees the worker gone for it).
                        stats.errors.fetch_add(1, Relaxed);
                        tracing::error!(stream = ?g.0, error = %e, "VAD panicked on one call's audio: that call's speech detection stops, the others go on");
                        streams.remove(&g.0);
                    }
                    Err(e) => {
                        stats.errors.fetch_add(1, Relaxed);
                        tracing::warn!(stream = ?g.0, error = %e, "VAD inference failed");
                    }
                }
            }
        }
    }
    true
}

// ------------------------------------------------------------------ segmenter

/// The `server_vad` parameters of the OpenAI Realtime API, plus a minimum speech duration.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmenterConfig {
    pub threshold: f32,
    /// Audio before the detected start that belongs to the utterance.
    pub prefix_padding_ms: u32,
    /// Silence that ends the utterance.
    pub silence_duration_ms: u32,
    /// Shorter bursts are not speech (coughs, clicks).
    pub min_speech_ms: u32,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        SegmenterConfig { threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500, min_speech_ms: 250 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech began at `audio_start_ms` (prefix padding included), in the stream's audio time.
    SpeechStarted { audio_start_ms: u64 },
    /// Speech ended at `audio_end_ms` (before the trailing silence).
    SpeechStopped { audio_end_ms: u64 },
}

/// Probabilities in, speech start/stop events out (sans-IO; time is the stream's audio time).
#[derive(Debug, Clone)]
pub struct Segmenter {
    cfg: SegmenterConfig,
    in_speech: bool,
    /// Start of the current run of speech chunks (candidate start).
    run_start: Option<u64>,
    /// Start of the current run of silence chunks while in speech.
    silence_start: Option<u64>,
}

impl Segmenter {
    pub fn new(cfg: SegmenterConfig) -> Segmenter {
        Segmenter { cfg, in_speech: false, run_start: None, silence_start: None }
    }

    /// The probability for the chunk covering [start_ms, end_ms).
    pub fn push(&mut self, p: f32, start_ms: u64, end_ms: u64) -> Option<VadEvent> {
        // Hysteresis as in Silero's own iterator: leaving speech needs p below threshold - 0.15.
        let speechy = p >= self.cfg.threshold;
        let quiet = p < (self.cfg.threshold - 0.15).max(0.01);
        if !self.in_speech {
            if speechy {
                let start = *self.run_start.get_or_insert(start_ms);
                if end_ms - start >= self.cfg.min_speech_ms as u64 {
                    self.in_speech = true;
                    self.silence_start = None;
                    return Some(VadEvent::SpeechStarted {
                        audio_start_ms: start.saturating_sub(self.cfg.prefix_padding_ms as u64),
                    });
                }
            } else {
                self.run_start = None;
            }
            return None;
        }
        if quiet {
            let s = *self.silence_start.get_or_insert(start_ms);
            if end_ms - s >= self.cfg.silence_duration_ms as u64 {
                self.in_speech = false;
                self.run_start = None;
                self.silence_start = None;
                return Some(VadEvent::SpeechStopped { audio_end_ms: s });
            }
        } else if speechy {
            self.silence_start = None;
        }
        None
    }

    pub fn in_speech(&self) -> bool {
        self.in_speech
    }

    /// Inside an utterance, the audio time since which the caller has been quiet (the speech stop
    /// it would become if the quiet lasts `silence_duration_ms`); None while they speak or outside one.
    pub fn quiet_since(&self) -> Option<u64> {
        if self.in_speech {
            self.silence_start
        } else {
            None
        }
    }
}

/// Turn detection's settings as the segmenter's.
impl crate::config::TurnDetection {
    pub fn segmenter_config(&self) -> SegmenterConfig {
        SegmenterConfig {
            threshold: self.threshold,
            prefix_padding_ms: self.prefix_padding_ms.get() as u32,
            silence_duration_ms: self.silence_ms() as u32,
            min_speech_ms: self.min_speech_ms.get() as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(probs: &[f32], cfg: SegmenterConfig) -> Vec<VadEvent> {
        let mut s = Segmenter::new(cfg);
        probs.iter().enumerate().filter_map(|(i, &p)| s.push(p, i as u64 * 32, (i as u64 + 1) * 32)).collect()
    }

    #[test]
    fn segments_with_padding_min_speech_and_silence() {
        // 10 chunks silence, 20 speech, 5 quiet (160 ms < 500), 10 speech, 20 quiet.
        let mut p = vec![0.05; 10];
        p.extend(vec![0.9; 20]);
        p.extend(vec![0.1; 5]);
        p.extend(vec![0.9; 10]);
        p.extend(vec![0.1; 20]);
        let ev = run(&p, SegmenterConfig::default());
        assert_eq!(
            ev,
            vec![
                VadEvent::SpeechStarted { audio_start_ms: 320 - 300 },
                VadEvent::SpeechStopped { audio_end_ms: 45 * 32 }
            ],
            "one utterance: the short pause does not split it"
        );
    }

    #[test]
    fn short_bursts_are_not_speech_and_hysteresis_holds() {
        // 4 chunks (128 ms) of speech: below min_speech_ms.
        let mut p = vec![0.05; 5];
        p.extend(vec![0.9; 4]);
        p.extend(vec![0.05; 30]);
        assert!(run(&p, SegmenterConfig::default()).is_empty());
        // Values between threshold-0.15 and threshold do not end speech.
        let mut p = vec![0.9; 20];
        p.extend(vec![0.4; 40]);
        let ev = run(&p, SegmenterConfig::default());
        assert_eq!(ev.len(), 1, "{ev:?}");
    }

    /// A model that panics on one caller's audio (a chunk starting with 0.5) and answers 0.25
    /// otherwise, like a real one would for its batch.
    struct Touchy;
    impl BatchInfer for Touchy {
        fn infer_batch(&mut self, streams: &mut [&mut StreamState], chunks: &[&[f32]]) -> Result<Vec<f32>, String> {
            if chunks.iter().any(|c| c[0] == 0.5) {
                panic!("a model bug");
            }
            Ok(streams.iter().map(|_| 0.25).collect())
        }
    }

    #[test]
    fn a_panic_on_one_calls_audio_stops_only_that_calls_detection() {
        let (n, _) = chunk_len(16000).unwrap();
        let (tx, rx) = mpsc::sync_channel::<Request>(64);
        let stats = std::sync::Arc::new(WorkerStats::default());
        let st = stats.clone();
        let shared = Shared { rx: Mutex::new(rx), streams: Mutex::new(HashMap::new()) };
        let worker = std::thread::spawn(move || worker_loop(&mut Touchy, &shared, 16, &st, &Life::default()));
        let mut replies = Vec::new();
        for id in 0..3u64 {
            let (reply, rrx) = mpsc::sync_channel(16);
            tx.send(Request::Open { id, sample_rate: 16000, reply }).unwrap();
            replies.push(rrx);
        }
        // One batch holding all three, stream 1 with the poison chunk; then a normal round.
        for id in 0..3u64 {
            let mut samples = vec![0.0f32; n];
            samples[0] = if id == 1 { 0.5 } else { 0.0 };
            tx.send(Request::Chunk { id, seq: 0, samples }).unwrap();
        }
        for id in 0..3u64 {
            tx.send(Request::Chunk { id, seq: 1, samples: vec![0.0; n] }).unwrap();
        }
        drop(tx);
        worker.join().expect("the worker thread survived the panic");
        let got: Vec<Vec<u64>> = replies.iter().map(|r| r.try_iter().map(|v| v.seq).collect()).collect();
        assert_eq!(got[0], vec![0, 1]);
        assert_eq!(got[1], Vec::<u64>::new(), "the poisoned stream is given up");
        assert_eq!(got[2], vec![0, 1]);
        assert_eq!(stats.errors.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    /// A model that answers 0.75, and hangs for ever on a chunk starting with 0.5 while `armed`.
    struct Hangs(Arc<std::sync::atomic::AtomicBool>);
    impl BatchInfer for Hangs {
        fn infer_batch(&mut self, streams: &mut [&mut StreamState], chunks: &[&[f32]]) -> Result<Vec<f32>, String> {
            if chunks.iter().any(|c| c[0] == 0.5) && self.0.swap(false, std::sync::atomic::Ordering::SeqCst) {
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            Ok(streams.iter().map(|_| 0.75).collect())
        }
    }

    /// The model hangs on a batch: the watchdog starts a fresh copy, which serves the same
    /// streams (opened before the hang, on their own answer channels) and the chunks after it;
    /// only the hung batch goes unanswered, and no stream is given up.
    #[test]
    fn a_hung_inference_is_replaced_and_every_stream_goes_on() {
        let (n, _) = chunk_len(8000).unwrap();
        let (tx, rx) = mpsc::sync_channel::<Request>(64);
        let stats = Arc::new(WorkerStats::default());
        let shared = Arc::new(Shared { rx: Mutex::new(rx), streams: Mutex::new(HashMap::new()) });
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let life = Arc::new(Life::default());
        start_worker(Hangs(armed.clone()), &shared, 16, &stats, &life);
        let (life, alive) = (Arc::new(Mutex::new(life)), Arc::new(()));
        let copies = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let made = copies.clone();
        let fresh = armed.clone();
        watch_with(&shared, &life, &stats, 16, &alive, Duration::from_millis(200), move || {
            made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Hangs(fresh.clone()))
        });
        let mut replies = Vec::new();
        for id in 0..2u64 {
            let (reply, rrx) = mpsc::sync_channel(16);
            tx.send(Request::Open { id, sample_rate: 8000, reply }).unwrap();
            replies.push(rrx);
        }
        let chunk = |first: f32| {
            let mut c = vec![0.0f32; n];
            c[0] = first;
            c
        };
        tx.send(Request::Chunk { id: 0, seq: 0, samples: chunk(0.0) }).unwrap();
        assert_eq!(replies[0].recv_timeout(Duration::from_secs(5)).map(|r| r.seq), Ok(0));
        // This one hangs the model.
        tx.send(Request::Chunk { id: 1, seq: 0, samples: chunk(0.5) }).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        for id in 0..2u64 {
            tx.send(Request::Chunk { id, seq: 1, samples: chunk(0.0) }).unwrap();
        }
        for (id, r) in replies.iter().enumerate() {
            let got = r
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("stream {id} is answered after the hang"));
            assert_eq!((got.seq, got.probability), (1, 0.75), "stream {id}");
        }
        assert!(!armed.load(std::sync::atomic::Ordering::SeqCst), "the model hung");
        assert_eq!(copies.load(std::sync::atomic::Ordering::SeqCst), 1, "one fresh copy");
        assert!(replies[1].try_recv().is_err(), "the hung chunk is not answered");
        assert_eq!(shared.streams.lock().unwrap().len(), 2, "no stream was given up");
    }
}
