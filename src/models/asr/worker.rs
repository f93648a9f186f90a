//! Recognition off the async runtime: worker threads, each owning one
//! `Whisper` (ONNX Runtime sessions are not shared between threads), take
//! jobs from one bounded queue. A call submits a finished turn (or, when the
//! workers are idle, a partial of the turn in progress) and polls for the
//! answer from its media loop; it never waits. A full queue refuses the job
//! (the call counts it) rather than delaying every other call, and a model
//! error or panic answers that one job with an error and the worker goes on.

use super::{DecodeOptions, Transcript, Whisper};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

struct Job {
    seq: u64,
    audio: Vec<f32>,
    partial: bool,
    opts: Arc<DecodeOptions>,
    submitted: Instant,
    reply: Sender<AsrResult>,
}

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

/// The shared worker pool; cheap handles (`AsrClient`) go to calls.
pub struct AsrWorker {
    tx: SyncSender<Job>,
    /// Jobs submitted and not yet answered, across calls.
    pending: Arc<AtomicUsize>,
    threads: usize,
    provider: crate::models::runtime::Provider,
}

impl AsrWorker {
    /// One thread per model instance, all fed from one queue of `queue` jobs.
    pub fn spawn(models: Vec<Whisper>, queue: usize, name: &str) -> AsrWorker {
        let (tx, rx) = mpsc::sync_channel::<Job>(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let pending = Arc::new(AtomicUsize::new(0));
        let threads = models.len();
        let provider = models.first().map(|m| m.provider()).unwrap_or(crate::models::runtime::Provider::Cpu);
        for (i, model) in models.into_iter().enumerate() {
            let rx = rx.clone();
            let pending = pending.clone();
            std::thread::Builder::new()
                .name(format!("asr-{name}-{i}"))
                .spawn(move || run(model, rx, pending))
                .expect("spawn an ASR thread");
        }
        AsrWorker { tx, pending, threads, provider }
    }

    pub fn client(&self, opts: DecodeOptions) -> AsrClient {
        let (reply, results) = mpsc::channel();
        AsrClient { tx: self.tx.clone(), pending: self.pending.clone(), threads: self.threads, opts: Arc::new(opts), reply, results, next_seq: 0 }
    }

    pub fn provider(&self) -> crate::models::runtime::Provider {
        self.provider
    }

    /// Jobs waiting or running, across calls (for metrics and tests).
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }
}

fn run(mut model: Whisper, rx: Arc<Mutex<Receiver<Job>>>, pending: Arc<AtomicUsize>) {
    loop {
        // The lock is held only while waiting for the next job, never while decoding.
        let job = match rx.lock() {
            Ok(rx) => match rx.recv() {
                Ok(j) => j,
                Err(_) => return, // every sender is gone: shutting down
            },
            Err(_) => return,
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.transcribe(&job.audio, &job.opts)));
        let transcript = match outcome {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the recogniser panicked on this audio".to_string()),
        };
        pending.fetch_sub(1, Ordering::Relaxed);
        // A call that has ended dropped its receiver: nothing to do.
        let _ = job.reply.send(AsrResult {
            seq: job.seq,
            partial: job.partial,
            transcript,
            latency_ms: job.submitted.elapsed().as_secs_f64() * 1000.0,
        });
    }
}

/// One call's handle on the pool.
pub struct AsrClient {
    tx: SyncSender<Job>,
    pending: Arc<AtomicUsize>,
    threads: usize,
    opts: Arc<DecodeOptions>,
    reply: Sender<AsrResult>,
    results: Receiver<AsrResult>,
    next_seq: u64,
}

impl AsrClient {
    /// Queue 16 kHz audio for transcription; the sequence number identifies the answer.
    /// `None`: refused — the queue is full, or (a partial) no worker is idle.
    pub fn submit(&mut self, audio: Vec<f32>, partial: bool) -> Option<u64> {
        // Partials are a luxury: only when a worker would otherwise sit idle, so they
        // never delay a finished turn (this call's or another's).
        if partial && self.pending.load(Ordering::Relaxed) >= self.threads {
            return None;
        }
        let seq = self.next_seq;
        let job = Job { seq, audio, partial, opts: self.opts.clone(), submitted: Instant::now(), reply: self.reply.clone() };
        self.pending.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(job) {
            Ok(()) => {
                self.next_seq += 1;
                Some(seq)
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// The next answer, if one has arrived.
    pub fn poll(&mut self) -> Option<AsrResult> {
        self.results.try_recv().ok()
    }

    /// Wait for the next answer (tests and offline tools, not the media loop).
    pub fn wait(&mut self, timeout: std::time::Duration) -> Option<AsrResult> {
        self.results.recv_timeout(timeout).ok()
    }
}
