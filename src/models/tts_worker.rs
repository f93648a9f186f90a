//! Speech synthesis off the async runtime, streamed sentence by sentence.
//!
//! A `TtsWorker` is a thread owning one Piper voice. A request (text plus the
//! agent's style) is split into sentences (`tts::sentences`); each sentence is
//! synthesised and sent as soon as it is ready, so the first sentence reaches
//! the pacer (and the wire) while the rest is still being synthesised. A
//! request can be cancelled (the caller interrupted): the worker checks
//! between sentences and drops the rest. At most `queue` requests wait; one
//! more is refused at once (the agent plays its fallback instead of waiting).
//!
//! One voice serves every call's replies. A reply's first phrase is urgent
//! (`Priority::First`: its caller hears silence until it is synthesised); the
//! phrases after it are not (the first is still playing). The worker takes the
//! oldest urgent request first, so one call's long reply does not hold another
//! caller's first words: with the language model decoding all calls' replies
//! together, their later phrases reach the voice as fast as a new turn's first.

use super::tts::{PiperVoice, Scales};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::time::Instant;

/// What comes back for one request, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum SpeechChunk {
    /// One sentence, 16 kHz mono.
    Audio { sentence: usize, text: String, pcm: Vec<i16>, synth_ms: f64 },
    /// Every sentence was sent (or the request was cancelled).
    Done { sentences: usize, cancelled: bool },
    /// Synthesis failed at this sentence; nothing more follows.
    Failed { sentence: usize, reason: String },
}

/// How an agent wants its text spoken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Style {
    pub scales: Scales,
    pub speaking_rate: f32,
}

/// How soon a request is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A reply's first phrase: its caller is waiting in silence.
    First,
    /// The rest of a reply, a greeting, a prompt: in the order asked.
    Later,
}

struct Job {
    text: String,
    style: Style,
    priority: Priority,
    cancel: Arc<AtomicBool>,
    reply: Sender<SpeechChunk>,
}

#[derive(Clone)]
pub struct TtsWorker {
    // (Debug below: the channel has nothing worth printing.)
    tx: SyncSender<Job>,
    default_scales: Scales,
    /// Requests asked and not yet begun (the worker takes them off the channel to choose among
    /// them, so the channel's bound alone would not bound them).
    waiting: Arc<AtomicUsize>,
    bound: usize,
}

impl std::fmt::Debug for TtsWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TtsWorker")
    }
}

impl TtsWorker {
    pub fn spawn(voice: PiperVoice, queue: usize, name: &str) -> TtsWorker {
        let default_scales = voice.scales();
        let (tx, rx) = mpsc::sync_channel::<Job>(queue.max(1));
        let waiting = Arc::new(AtomicUsize::new(0));
        let begun = waiting.clone();
        std::thread::Builder::new().name(format!("tts-{name}")).spawn(move || run(voice, rx, &begun)).expect("spawn the TTS thread");
        TtsWorker { tx, default_scales, waiting, bound: queue.max(1) }
    }

    /// The voice's own scales (the starting point for an agent's style).
    pub fn default_scales(&self) -> Scales {
        self.default_scales
    }

    /// Start speaking `text`; `None` when the queue is full (or the worker is gone).
    pub fn speak(&self, text: &str, style: Style) -> Option<Speech> {
        self.speak_with(text, style, Priority::Later)
    }

    /// `speak`, with how soon it is wanted (`Priority::First` for a reply's first phrase).
    pub fn speak_with(&self, text: &str, style: Style, priority: Priority) -> Option<Speech> {
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.bound {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let (reply, rx) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        if self.tx.try_send(Job { text: text.to_string(), style, priority, cancel: cancel.clone(), reply }).is_err() {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Speech { rx, cancel, finished: false })
    }
}

/// Sentences being synthesised now, across the process's voices. The cores are the process's:
/// the language model's worker yields them while the voice works, unless a caller is waiting for
/// its first words (`llm::schedule::YIELD_AHEAD_S`) — a reply's first phrase reaches the caller
/// sooner (Piper took ~190 ms for a first phrase with the model decoding beside it, ~100 ms alone
/// on 2 cores), and the model's next phrase is not due until the first has played.
static SYNTHESISING: AtomicUsize = AtomicUsize::new(0);

/// Whether a voice is synthesising now (see `SYNTHESISING`).
pub fn synthesising() -> bool {
    SYNTHESISING.load(Ordering::Relaxed) > 0
}

/// Counts one synthesis in `SYNTHESISING` while alive (a panic in the voice included).
struct Synthesising;

impl Synthesising {
    fn start() -> Synthesising {
        SYNTHESISING.fetch_add(1, Ordering::Relaxed);
        Synthesising
    }
}

impl Drop for Synthesising {
    fn drop(&mut self) {
        SYNTHESISING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The next request: the oldest first phrase, else the oldest. `queue` holds what was taken off
/// the channel and not yet served; `None` when the channel is closed and nothing is left.
fn next_job(rx: &Receiver<Job>, queue: &mut std::collections::VecDeque<Job>) -> Option<Job> {
    if queue.is_empty() {
        queue.push_back(rx.recv().ok()?);
    }
    queue.extend(rx.try_iter());
    let i = queue.iter().position(|j| j.priority == Priority::First).unwrap_or(0);
    queue.remove(i)
}

fn run(mut voice: PiperVoice, rx: Receiver<Job>, waiting: &AtomicUsize) {
    let mut queue = std::collections::VecDeque::new();
    while let Some(job) = next_job(&rx, &mut queue) {
        waiting.fetch_sub(1, Ordering::SeqCst);
        let parts = super::tts::sentences(&job.text);
        let mut sent = 0;
        let mut cancelled = false;
        let mut failed = false;
        for (i, s) in parts.iter().enumerate() {
            if job.cancel.load(Ordering::Relaxed) {
                cancelled = true;
                break;
            }
            let t0 = Instant::now();
            let busy = Synthesising::start();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| voice.synthesize_16k_with(s, job.style.scales, job.style.speaking_rate)));
            drop(busy);
            match r {
                Ok(Ok(pcm)) => {
                    let synth_ms = t0.elapsed().as_secs_f64() * 1000.0;
                    // The voice-to-voice bench reads this (the TTS stage of a turn).
                    tracing::debug!(chars = s.len(), synth_ms = synth_ms as u64, "speech ready");
                    let chunk = SpeechChunk::Audio { sentence: i, text: s.clone(), pcm, synth_ms };
                    if job.reply.send(chunk).is_err() {
                        cancelled = true; // nobody listens any more
                        break;
                    }
                    sent += 1;
                }
                Ok(Err(e)) => {
                    let _ = job.reply.send(SpeechChunk::Failed { sentence: i, reason: e.to_string() });
                    failed = true;
                    break;
                }
                Err(_) => {
                    let _ = job.reply.send(SpeechChunk::Failed { sentence: i, reason: "the voice panicked on this sentence".into() });
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            let _ = job.reply.send(SpeechChunk::Done { sentences: sent, cancelled });
        }
    }
}

/// One request in progress.
pub struct Speech {
    rx: Receiver<SpeechChunk>,
    cancel: Arc<AtomicBool>,
    finished: bool,
}

impl Speech {
    /// The next chunk, if one is ready (never waits).
    pub fn poll(&mut self) -> Option<SpeechChunk> {
        if self.finished {
            return None;
        }
        match self.rx.try_recv() {
            Ok(c) => {
                self.finished = matches!(c, SpeechChunk::Done { .. } | SpeechChunk::Failed { .. });
                Some(c)
            }
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => {
                self.finished = true;
                Some(SpeechChunk::Failed { sentence: 0, reason: "the TTS worker stopped".into() })
            }
        }
    }

    /// Wait for the next chunk (tests and tools, not the media loop).
    pub fn wait(&mut self, timeout: std::time::Duration) -> Option<SpeechChunk> {
        if self.finished {
            return None;
        }
        let c = self.rx.recv_timeout(timeout).ok()?;
        self.finished = matches!(c, SpeechChunk::Done { .. } | SpeechChunk::Failed { .. });
        Some(c)
    }

    /// Stop after the sentence being synthesised now.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }
}
