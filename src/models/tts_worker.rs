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
//!
//! A voice that hangs (a sentence that neither returns nor panics) is caught by
//! the watchdog (`watch`): the sentence's request gets `Failed` at once (the
//! agent goes on with its next sentence), and a new thread with a fresh copy
//! of the voice serves the requests waiting. The hung thread is left to
//! itself and ends without a word if its sentence ever returns.

use super::tts::{PiperVoice, Scales};
use super::StepHook;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// A sentence taking longer than this has hung (Piper: ~0.1 s for a phrase, ~1 s for a long
/// sentence on 2 cores).
pub const HANG_LIMIT: Duration = Duration::from_secs(10);

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
    /// What a replacement thread takes over (`watch`).
    inbox: Arc<Inbox>,
    life: Arc<Mutex<Arc<Life>>>,
    hook: Option<StepHook>,
    name: Arc<str>,
    /// The watchdog ends when the last handle goes.
    alive: Arc<()>,
}

/// The requests: the channel, and those taken off it to choose among and not yet begun. Shared
/// by the voice's thread and the one that replaces it; never locked while synthesising.
struct Inbox {
    rx: Mutex<Receiver<Job>>,
    queue: Mutex<VecDeque<Job>>,
}

/// One voice thread, as the watchdog sees it.
#[derive(Default)]
struct Life {
    state: Mutex<LifeState>,
}

#[derive(Default)]
struct LifeState {
    retired: bool,
    /// The sentence being synthesised: its request's answer channel, its number, since when, and
    /// its count in `SYNTHESISING`.
    current: Option<(Sender<SpeechChunk>, usize, Instant, Arc<AtomicBool>)>,
}

impl Life {
    fn state(&self) -> MutexGuard<'_, LifeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl std::fmt::Debug for TtsWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TtsWorker")
    }
}

impl TtsWorker {
    pub fn spawn(voice: PiperVoice, queue: usize, name: &str) -> TtsWorker {
        Self::spawn_hooked(voice, queue, name, None)
    }

    /// `spawn`, with `hook` called before each sentence (tests make the voice hang with it).
    pub fn spawn_hooked(voice: PiperVoice, queue: usize, name: &str, hook: Option<StepHook>) -> TtsWorker {
        let default_scales = voice.scales();
        let (tx, rx) = mpsc::sync_channel::<Job>(queue.max(1));
        let waiting = Arc::new(AtomicUsize::new(0));
        let inbox = Arc::new(Inbox { rx: Mutex::new(rx), queue: Mutex::new(VecDeque::new()) });
        let life = Arc::new(Life::default());
        start_thread(voice, &inbox, &waiting, &life, hook.clone(), name);
        TtsWorker {
            tx,
            default_scales,
            waiting,
            bound: queue.max(1),
            inbox,
            life: Arc::new(Mutex::new(life)),
            hook,
            name: name.into(),
            alive: Arc::new(()),
        }
    }

    /// Watch the voice: a sentence running longer than `limit` has hung. Its request is answered
    /// `Failed` at once, and a new thread with the voice `load` returns serves the requests
    /// waiting. While no copy loads, the requests fail at once.
    pub fn watch(&self, limit: Duration, load: impl Fn() -> Result<PiperVoice, String> + Send + 'static) {
        let (inbox, waiting, life, hook, name) =
            (self.inbox.clone(), self.waiting.clone(), self.life.clone(), self.hook.clone(), self.name.clone());
        let alive: Weak<()> = Arc::downgrade(&self.alive);
        let mut retry_at = Instant::now();
        let spawned = crate::models::spawn_watchdog(format!("tts-{}-watchdog", self.name), limit, alive, move || {
            let current = lock(&life).clone();
            {
                let mut s = current.state();
                if s.retired {
                    // No thread runs: the last replacement failed to load. Refuse what waits,
                    // and try again now and then.
                    drop(s);
                    refuse_waiting(&inbox, &waiting);
                    if Instant::now() < retry_at {
                        return true;
                    }
                } else {
                    match &s.current {
                        Some((_, _, since, _)) if since.elapsed() > limit => {}
                        _ => return true,
                    }
                    s.retired = true;
                    if let Some((reply, sentence, _, counted)) = s.current.take() {
                        uncount(&counted);
                        let reason = format!("the voice did not finish this sentence within {} ms", limit.as_millis());
                        let _ = reply.send(SpeechChunk::Failed { sentence, reason });
                    }
                    tracing::error!(voice = %name, limit_ms = limit.as_millis() as u64, "a sentence did not return from the voice: it failed, a fresh copy takes the voice's place");
                }
            }
            match load() {
                Ok(voice) => {
                    let next = Arc::new(Life::default());
                    start_thread(voice, &inbox, &waiting, &next, hook.clone(), &name);
                    *lock(&life) = next;
                    tracing::info!(voice = %name, "a new voice thread serves the requests");
                }
                Err(e) => {
                    tracing::error!(voice = %name, error = %e, "cannot replace the hung voice; its requests fail until a copy loads");
                    retry_at = Instant::now() + super::RELOAD_EVERY;
                }
            }
            true
        });
        if let Err(e) = spawned {
            tracing::error!(voice = %self.name, error = %e, "cannot start the voice's watchdog");
        }
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

/// Counts one synthesis in `SYNTHESISING` while alive (a panic in the voice included), unless the
/// watchdog uncounted it first (the voice hung: the flag it shares says so).
struct Synthesising(Arc<AtomicBool>);

impl Synthesising {
    fn start() -> Synthesising {
        SYNTHESISING.fetch_add(1, Ordering::Relaxed);
        Synthesising(Arc::new(AtomicBool::new(true)))
    }
}

/// Take one synthesis out of `SYNTHESISING`, once (by its thread or the watchdog).
fn uncount(counted: &AtomicBool) {
    if counted.swap(false, Ordering::Relaxed) {
        SYNTHESISING.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Synthesising {
    fn drop(&mut self) {
        uncount(&self.0);
    }
}

/// The next request: the oldest first phrase, else the oldest. The inbox's queue holds what was
/// taken off the channel and not yet served; `None` when the channel is closed and nothing is left.
fn next_job(inbox: &Inbox) -> Option<Job> {
    let rx = lock(&inbox.rx);
    let mut queue = lock(&inbox.queue);
    if queue.is_empty() {
        // Wait for a request without holding the queue (the watchdog may refuse what waits).
        drop(queue);
        let job = rx.recv().ok()?;
        queue = lock(&inbox.queue);
        queue.push_back(job);
    }
    queue.extend(rx.try_iter());
    let i = queue.iter().position(|j| j.priority == Priority::First).unwrap_or(0);
    queue.remove(i)
}

/// With no voice thread: the requests waiting fail at once rather than wait for one.
fn refuse_waiting(inbox: &Inbox, waiting: &AtomicUsize) {
    let Ok(rx) = inbox.rx.try_lock() else { return };
    let mut queue = lock(&inbox.queue);
    queue.extend(rx.try_iter());
    for job in queue.drain(..) {
        waiting.fetch_sub(1, Ordering::SeqCst);
        let _ = job.reply.send(SpeechChunk::Failed {
            sentence: 0,
            reason: "the voice is not running (it hung and no copy could be loaded)".into(),
        });
    }
}

fn start_thread(
    voice: PiperVoice,
    inbox: &Arc<Inbox>,
    waiting: &Arc<AtomicUsize>,
    life: &Arc<Life>,
    hook: Option<StepHook>,
    name: &str,
) {
    let (inbox, waiting, life) = (inbox.clone(), waiting.clone(), life.clone());
    let spawned = std::thread::Builder::new()
        .name(format!("tts-{name}"))
        .spawn(move || run(voice, &inbox, &waiting, &life, hook));
    if let Err(e) = spawned {
        tracing::error!(voice = %name, error = %e, "cannot start the voice's thread");
    }
}

fn run(mut voice: PiperVoice, inbox: &Inbox, waiting: &AtomicUsize, life: &Life, hook: Option<StepHook>) {
    while let Some(job) = next_job(inbox) {
        if life.state().retired {
            // Retired while it waited for the lock: the job is the new thread's.
            lock(&inbox.queue).push_front(job);
            return;
        }
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
            life.state().current = Some((job.reply.clone(), i, t0, busy.0.clone()));
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if let Some(h) = &hook {
                    (h.0)();
                }
                voice.synthesize_16k_with(s, job.style.scales, job.style.speaking_rate)
            }));
            drop(busy);
            {
                let mut st = life.state();
                if st.retired {
                    // The watchdog answered for this sentence and gave the voice to another thread.
                    return;
                }
                st.current = None;
            }
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
                    let _ = job.reply.send(SpeechChunk::Failed {
                        sentence: i,
                        reason: "the voice panicked on this sentence".into(),
                    });
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
