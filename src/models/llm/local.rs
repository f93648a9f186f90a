//! The `onnx` backend: the embedded Qwen model on a thread of its own (model
//! work never runs on the async runtime), streaming the same events as the
//! `openai` backend.
//!
//! Each call is a session. The worker keeps every session's KV cache: a new
//! request is compared with the cache token by token and only the tokens
//! after the common prefix are computed, so a turn costs its new words, not
//! the whole conversation. A session with no cache starts from the longest
//! prefix any other session has (calls of one agent share the instructions).
//! `warm` computes a session's prefix while the call rings. Caches beyond the
//! memory budget are dropped, least recently used first; dropping one only
//! costs time.
//!
//! The worker serves all sessions a step at a time (a chunk of a prompt, or
//! one token of every reply being decoded), the most urgent first
//! (`schedule`): a caller waiting for a first phrase does not wait for another
//! call's long reply to end. Replies decode together, continuously batched:
//! each decoding step feeds one token to every reply whose prompt is in, in
//! one forward pass (`qwen::BatchCache`), and replies join and leave the batch
//! between steps. On two CPU cores a pass for four replies costs about 1.6
//! times one for a single reply; a sequence's tokens are the same in a batch as
//! alone (the padding is masked, the positions are each row's own).
//!
//! A step that does not return (a hung model) is caught by the watchdog (`watch`, `worker_life`):
//! the replies in flight fail at once (their callers hear the apology) and a new worker with a
//! fresh copy of the model serves the queue.

use super::chat::{ChatRequest, LlmEvent, ToolCall, ToolChoice, ToolSpec, Usage};
use super::constrain::{Check, ToolGrammar};
use super::qwen::{BatchCache, KvCache, Qwen};
use super::sampler::{argmax, Sampler, Sampling};
use super::schedule::{self, Progress};
use super::template::{prompt_tokens, Controls};
use super::tokenizer::Utf8Stream;
use super::worker_life::{Generation, Owed, Ticket};
use super::{LlmError, LlmStream};
use crate::models::backlog::{Backlog, Waiting};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct LocalSettings {
    pub sampling: Sampling,
    /// Total KV-cache memory kept across sessions.
    pub cache_bytes: usize,
    /// Seed of the sampler (each reply draws from its own generator seeded from this and a counter).
    pub seed: u64,
    /// Called by the worker before each step: tests make a model hang with it.
    pub step_hook: Option<StepHook>,
}

pub use crate::models::StepHook;

/// A step running longer than this has hung. A step is one prompt chunk (`PREFILL_CHUNK` tokens)
/// or one batched decoding pass: ~0.5 s and ~0.2 s on 2 cores, a few seconds on the slowest CPU
/// this runs on; the caller hears silence until then, and the apology after.
pub const HANG_LIMIT: Duration = Duration::from_secs(10);

enum Job {
    Generate {
        session: u64,
        req: ChatRequest,
        cancel: Arc<AtomicBool>,
        reply: Sender<Result<LlmEvent, LlmError>>,
        queued: Instant,
        waiting: Waiting,
    },
    Warm {
        session: u64,
        req: ChatRequest,
    },
    End {
        session: u64,
    },
}

/// Batch sizes counted apart in `LlmStats::passes`: 1, 2, ... and this many or more.
pub const BATCH_ROWS_COUNTED: usize = 8;

/// What the worker has computed, for the metrics (`switchboard_llm_*`) and the tests.
#[derive(Debug, Default)]
pub struct LlmStats {
    /// Decoding passes by the replies in them: `[n - 1]` for n rows (the last: that many or more).
    pub passes: [AtomicU64; BATCH_ROWS_COUNTED],
    /// Tokens decoded (one per row of each pass).
    pub tokens: AtomicU64,
    /// Prompt tokens computed (not found in a cache).
    pub prompt_tokens: AtomicU64,
    /// Workers the watchdog replaced because a step hung.
    pub replaced: AtomicU64,
}

impl LlmStats {
    /// Decoding passes with at least `rows` replies in them.
    pub fn passes_with(&self, rows: usize) -> u64 {
        self.passes[rows.clamp(1, BATCH_ROWS_COUNTED) - 1..].iter().map(|p| p.load(Ordering::Relaxed)).sum()
    }
}

/// A handle on the worker; cheap to clone.
#[derive(Clone)]
pub struct LocalLlm {
    tx: SyncSender<Job>,
    name: Arc<str>,
    /// Jobs sent and not yet finished by the worker.
    jobs: Arc<AtomicUsize>,
    /// Replies not yet begun.
    backlog: Arc<Backlog>,
    stats: Arc<LlmStats>,
    /// What a replacement worker needs (`watch`).
    rx: Arc<Mutex<Receiver<Job>>>,
    life: Arc<Mutex<Arc<Generation>>>,
    settings: LocalSettings,
    capacity: usize,
    /// The watchdog ends when the last handle goes.
    alive: Arc<()>,
}

impl std::fmt::Debug for LocalLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLlm").field("name", &self.name).finish()
    }
}

impl LocalLlm {
    /// Start the worker thread owning `model`; up to `queue` replies are computed or wait at once
    /// (more answer `Busy`).
    pub fn spawn(model: Qwen, settings: LocalSettings, queue: usize, name: &str) -> Result<LocalLlm, String> {
        let (tx, rx) = mpsc::sync_channel(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let stats = Arc::new(LlmStats::default());
        let jobs = Arc::new(AtomicUsize::new(0));
        let life = Generation::new();
        start_worker(model, &settings, queue.max(1), &stats, &rx, &jobs, &life, name)?;
        let life = Arc::new(Mutex::new(life));
        Ok(LocalLlm {
            tx,
            name: name.into(),
            jobs,
            backlog: Backlog::new(),
            stats,
            rx,
            life,
            settings,
            capacity: queue.max(1),
            alive: Arc::new(()),
        })
    }

    /// Watch the worker: a step running longer than `limit` has hung. The replies it owes fail
    /// at once (`LlmError::Timeout`), and a new worker with the model `load` returns serves the
    /// queue (its caches start empty). While no copy loads, the replies asked for fail at once.
    pub fn watch(&self, limit: Duration, load: impl Fn() -> Result<Qwen, String> + Send + 'static) {
        let (rx, life, jobs, stats) = (self.rx.clone(), self.life.clone(), self.jobs.clone(), self.stats.clone());
        let (settings, capacity, name) = (self.settings.clone(), self.capacity, self.name.clone());
        let alive: Weak<()> = Arc::downgrade(&self.alive);
        let mut retry_at = Instant::now();
        let spawned = crate::models::spawn_watchdog(format!("llm-{}-watchdog", self.name), limit, alive, move || {
            let current = life.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if current.is_retired() {
                // No worker runs: the last replacement failed to load. Refuse what waits, and
                // try again now and then (a load reads the whole model).
                refuse_waiting(&rx, &jobs);
                if Instant::now() < retry_at {
                    return true;
                }
            } else if current.stuck_for().is_none_or(|t| t <= limit) {
                return true;
            } else {
                let failed =
                    current.retire(&jobs, "the embedded model stopped answering; a fresh copy takes its place");
                stats.replaced.fetch_add(1, Ordering::Relaxed);
                tracing::error!(model = %name, limit_ms = limit.as_millis() as u64, replies_failed = failed, "a language-model step did not return: its replies failed, a new worker takes its place");
            }
            let next = Generation::new();
            match load().and_then(|model| start_worker(model, &settings, capacity, &stats, &rx, &jobs, &next, &name)) {
                Ok(()) => {
                    tracing::info!(model = %name, "a new language-model worker serves the queue");
                    *life.lock().unwrap_or_else(|p| p.into_inner()) = next;
                }
                Err(e) => {
                    tracing::error!(model = %name, error = %e, "cannot replace the hung language-model worker; replies fail until a copy loads");
                    retry_at = Instant::now() + crate::models::RELOAD_EVERY;
                }
            }
            true
        });
        if let Err(e) = spawned {
            tracing::error!(model = %self.name, error = %e, "cannot start the language model's watchdog");
        }
    }

    /// What the worker has computed so far.
    pub fn stats(&self) -> &Arc<LlmStats> {
        &self.stats
    }

    /// The replies waiting for their first step.
    pub fn backlog(&self) -> &Arc<Backlog> {
        &self.backlog
    }

    /// Queue a job; false when the queue is full.
    fn send(&self, job: Job) -> bool {
        self.jobs.fetch_add(1, Ordering::SeqCst);
        let sent = self.tx.try_send(job).is_ok();
        if !sent {
            self.jobs.fetch_sub(1, Ordering::SeqCst);
        }
        sent
    }

    /// Nothing queued or computing (the appliance waits for this before it exits: ONNX Runtime
    /// torn down under a running session logs errors).
    pub fn is_idle(&self) -> bool {
        self.jobs.load(Ordering::SeqCst) == 0
    }

    /// Start a reply. A full queue answers at once with an error (the agent apologises).
    pub fn stream(&self, req: &ChatRequest, session: u64) -> LlmStream {
        let (reply, rx) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let queued = Instant::now();
        let job = Job::Generate {
            session,
            req: req.clone(),
            cancel: cancel.clone(),
            reply: reply.clone(),
            queued,
            waiting: self.backlog.enter(queued),
        };
        if !self.send(job) {
            let _ = reply.send(Err(LlmError::Busy));
        }
        LlmStream::with_flag(rx, cancel)
    }

    /// Compute the prompt prefix of `req` for `session` ahead of its first reply (best effort).
    pub fn warm(&self, req: &ChatRequest, session: u64) {
        self.send(Job::Warm { session, req: req.clone() });
    }

    /// The session is over: its cache may go.
    pub fn end(&self, session: u64) {
        self.send(Job::End { session });
    }
}

/// Start a worker thread of generation `life` on the queue.
#[allow(clippy::too_many_arguments)]
fn start_worker(
    model: Qwen,
    settings: &LocalSettings,
    capacity: usize,
    stats: &Arc<LlmStats>,
    rx: &Arc<Mutex<Receiver<Job>>>,
    jobs: &Arc<AtomicUsize>,
    life: &Arc<Generation>,
    name: &str,
) -> Result<(), String> {
    let controls = Controls::of(model.tokenizer())?;
    let worker = Worker::new(model, settings.clone(), controls, capacity, stats.clone(), life.clone());
    let (rx, jobs) = (rx.clone(), jobs.clone());
    std::thread::Builder::new()
        .name(format!("llm-{name}"))
        .spawn(move || worker.run(&rx, &jobs))
        .map_err(|e| format!("spawn the LLM thread: {e}"))?;
    Ok(())
}

/// With no worker: the replies waiting in the queue fail at once rather than wait for one.
fn refuse_waiting(rx: &Mutex<Receiver<Job>>, jobs: &AtomicUsize) {
    let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
    while let Ok(job) = rx.try_recv() {
        jobs.fetch_sub(1, Ordering::SeqCst);
        if let Job::Generate { reply, .. } = job {
            let _ = reply.send(Err(LlmError::Model(
                "the embedded model is not running (its worker hung and no copy could be loaded)".into(),
            )));
        }
    }
}

struct Entry {
    cache: KvCache,
    used: u64,
}

/// Prompt tokens fed in one step: a long prompt (a new call's instructions) is computed a chunk
/// at a time, so that other calls' replies go on between chunks.
const PREFILL_CHUNK: usize = 32;

/// One job being computed: a prompt brought into its session's cache a chunk at a time, then, for
/// a reply, one token per step.
struct Task {
    session: u64,
    progress: Progress,
    prompt: Vec<u32>,
    /// Prompt tokens in the cache so far; `None` before the first step.
    fed_to: Option<usize>,
    /// Prompt tokens computed (not found in a cache).
    fed: usize,
    started: Option<Instant>,
    /// A reply is in the backlog until its first step.
    in_backlog: Option<Waiting>,
    /// A reply's generation; `None` for a warm-up.
    reply: Option<Box<Reply>>,
    /// Ends the job for the handle's `is_idle` when the task goes.
    _ticket: Ticket,
}

/// A reply after its prompt: what it has generated and said.
struct Reply {
    cancel: Arc<AtomicBool>,
    tx: Sender<Result<LlmEvent, LlmError>>,
    /// The last position's logits, once the prompt is in.
    logits: Option<Vec<f32>>,
    prefill_ms: u64,
    sampler: Sampler,
    max_tokens: usize,
    stop: Vec<u32>,
    banned: Vec<u32>,
    ban_text: Vec<u32>,
    callable: Vec<ToolSpec>,
    forced: Vec<u32>,
    generated: Vec<u32>,
    text: Utf8Stream,
    held: HeldText,
    in_call: Option<Vec<u8>>,
    calls: usize,
    /// The watchdog answers it if the worker hangs.
    _owed: Owed,
}

struct Worker {
    model: Qwen,
    settings: LocalSettings,
    controls: Controls,
    sessions: HashMap<u64, Entry>,
    clock: u64,
    replies: u64,
    /// Control tokens a reply may never contain (everything but the stop and tool-call tokens).
    banned: Vec<u32>,
    /// Tasks being computed, at most one per session.
    tasks: Vec<Task>,
    /// Tasks whose session has one running already, in arrival order.
    waiting: VecDeque<Task>,
    /// Replies computed or waiting at most; more are refused (`LlmError::Busy`).
    capacity: usize,
    /// The replies decoding together, with their caches (taken out of `sessions` meanwhile).
    batch: Option<Decoding>,
    stats: Arc<LlmStats>,
    life: Arc<Generation>,
}

/// The batch of replies being decoded: their sessions, in the order of the batch's rows.
struct Decoding {
    sessions: Vec<u64>,
    cache: BatchCache,
}

/// What a reply does next: feed these tokens, or end.
enum Choice {
    Feed(Vec<u32>),
    Finish(&'static str),
}

/// A reply whose prompt is in: its next step is a token.
fn decoding(t: &Task) -> bool {
    t.reply.as_ref().is_some_and(|r| r.logits.is_some())
}

/// Length of the common prefix.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Worker {
    fn new(
        model: Qwen,
        settings: LocalSettings,
        controls: Controls,
        capacity: usize,
        stats: Arc<LlmStats>,
        life: Arc<Generation>,
    ) -> Worker {
        let spec = model.spec();
        let tok = model.tokenizer();
        let stop = &spec.special_tokens.stop;
        let banned = (0..spec.vocab_size as u32)
            .filter(|&id| {
                let filler = id as usize >= tok.vocab_size() || tok.token_bytes(id).is_empty();
                (tok.is_added(id) || filler)
                    && !stop.contains(&id)
                    && id != controls.tool_call
                    && id != controls.tool_call_end
            })
            .collect();
        Worker {
            model,
            settings,
            controls,
            sessions: HashMap::new(),
            clock: 0,
            replies: 0,
            banned,
            tasks: Vec::new(),
            waiting: VecDeque::new(),
            capacity,
            batch: None,
            stats,
            life,
        }
    }

    /// Take jobs (waiting for one only when nothing is to be computed) and compute the most urgent
    /// task one step at a time.
    /// Ends when every handle is gone, or when the watchdog retired this worker.
    fn run(mut self, rx: &Mutex<Receiver<Job>>, jobs: &Arc<AtomicUsize>) {
        loop {
            if self.life.is_retired() {
                return;
            }
            {
                // The lock is held only while taking jobs, never while computing: a replacement
                // worker can take the queue over from one that hangs.
                let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
                if self.tasks.is_empty() && self.waiting.is_empty() {
                    self.life.idle();
                    match rx.recv() {
                        Ok(job) => self.accept(job, Ticket::new(jobs, &self.life)),
                        Err(_) => return,
                    }
                }
                while let Ok(job) = rx.try_recv() {
                    self.accept(job, Ticket::new(jobs, &self.life));
                }
            }
            self.life.busy();
            if let Some(hook) = &self.settings.step_hook {
                (hook.0)();
            }
            self.drop_cancelled();
            self.start_waiting();
            let now = Instant::now();
            let Some(i) = schedule::pick(self.tasks.iter().map(|t| &t.progress), now) else { continue };
            if crate::models::tts_worker::synthesising() && schedule::yields_to_voice(&self.tasks[i].progress, now) {
                // The most urgent task can wait for the voice (see `schedule::YIELD_AHEAD_S`).
                std::thread::sleep(std::time::Duration::from_millis(2));
                continue;
            }
            if decoding(&self.tasks[i]) {
                self.decode_all();
                continue;
            }
            let task = self.tasks.swap_remove(i);
            if let Some(task) = self.step(task) {
                self.tasks.push(task);
            }
        }
    }

    fn accept(&mut self, job: Job, ticket: Ticket) {
        match job {
            Job::End { session } => {
                // The call is over: whatever it still had running is nobody's.
                if self.batch.as_ref().is_some_and(|b| b.sessions.contains(&session)) {
                    self.release_batch();
                }
                self.tasks.retain(|t| t.session != session);
                self.waiting.retain(|t| t.session != session);
                self.sessions.remove(&session);
            }
            Job::Warm { session, req } => {
                let prompt = prompt_tokens(self.model.tokenizer(), &self.controls, &req, false);
                let task = Task {
                    session,
                    progress: Progress::warm(Instant::now()),
                    prompt,
                    fed_to: None,
                    fed: 0,
                    started: None,
                    in_backlog: None,
                    reply: None,
                    _ticket: ticket,
                };
                self.queue(task);
            }
            Job::Generate { session, req, cancel, reply, queued, waiting } => {
                if self.tasks.iter().chain(&self.waiting).filter(|t| t.reply.is_some()).count() >= self.capacity {
                    let _ = reply.send(Err(LlmError::Busy));
                    return;
                }
                let mut task = self.reply_task(session, &req, cancel, reply, queued, ticket);
                task.in_backlog = Some(waiting);
                self.queue(task);
            }
        }
    }

    /// Start `task` now, or after the task its session has running. A reply replaces its session's
    /// warm-up, and a newer warm-up an older one (what the older one computed stays in the cache
    /// as far as the two prompts agree). A warm-up never follows a reply of its session: its prompt
    /// lacks the reply, and computing it would drop the reply's words from the cache.
    fn queue(&mut self, task: Task) {
        let session = task.session;
        if task.reply.is_none()
            && self.tasks.iter().chain(&self.waiting).any(|t| t.session == session && t.reply.is_some())
        {
            return;
        }
        self.tasks.retain(|t| t.session != session || t.reply.is_some());
        self.waiting.retain(|t| t.session != session || t.reply.is_some());
        if self.tasks.iter().any(|t| t.session == task.session) {
            self.waiting.push_back(task);
        } else {
            self.tasks.push(task);
        }
    }

    fn start_waiting(&mut self) {
        let mut i = 0;
        while i < self.waiting.len() {
            if self.tasks.iter().any(|t| t.session == self.waiting[i].session) {
                i += 1;
            } else if let Some(t) = self.waiting.remove(i) {
                self.tasks.push(t);
            }
        }
    }

    /// A cancelled reply frees its place at once (barge-in, hang-up, a dropped speculative start).
    fn drop_cancelled(&mut self) {
        let cancelled = |t: &Task| t.reply.as_ref().is_some_and(|r| r.cancel.load(Ordering::Relaxed));
        self.waiting.retain(|t| !cancelled(t));
        let mut i = 0;
        while i < self.tasks.len() {
            if cancelled(&self.tasks[i]) {
                let t = self.tasks.swap_remove(i);
                self.finish(t, "cancelled");
            } else {
                i += 1;
            }
        }
    }

    fn reply_task(
        &mut self,
        session: u64,
        req: &ChatRequest,
        cancel: Arc<AtomicBool>,
        tx: Sender<Result<LlmEvent, LlmError>>,
        queued: Instant,
        ticket: Ticket,
    ) -> Task {
        let prompt = prompt_tokens(self.model.tokenizer(), &self.controls, req, true);
        let mut sampling = self.settings.sampling;
        if let Some(t) = req.temperature {
            sampling.temperature = t;
        }
        self.replies += 1;
        let sampler = Sampler::new(sampling, self.settings.seed.wrapping_add(self.replies));
        let owed = Owed::new(&self.life, &tx);
        let mut banned = self.banned.clone();
        // The tools the model may call (tool_choice narrows them; `none` offers them but bans calls).
        let callable: Vec<ToolSpec> = match &req.tool_choice {
            ToolChoice::None => vec![],
            ToolChoice::Function(name) => req.tools.iter().filter(|t| &t.name == name).cloned().collect(),
            ToolChoice::Auto | ToolChoice::Required => req.tools.clone(),
        };
        if callable.is_empty() {
            banned.extend([self.controls.tool_call, self.controls.tool_call_end]);
        }
        // Outside a call, `</tool_call>` cannot come either.
        let ban_text: Vec<u32> = banned.iter().copied().chain([self.controls.tool_call_end]).collect();
        // `required` or a named function: the reply starts with a call.
        let forced =
            if !callable.is_empty() && matches!(req.tool_choice, ToolChoice::Required | ToolChoice::Function(_)) {
                vec![self.controls.tool_call]
            } else {
                vec![]
            };
        let reply = Reply {
            cancel,
            tx,
            logits: None,
            prefill_ms: 0,
            sampler,
            max_tokens: req.max_tokens.unwrap_or(512) as usize,
            stop: self.model.spec().special_tokens.stop.clone(),
            banned,
            ban_text,
            callable,
            forced,
            generated: Vec::new(),
            text: Utf8Stream::default(),
            held: HeldText::default(),
            in_call: None,
            calls: 0,
            _owed: owed,
        };
        Task {
            session,
            progress: Progress::reply(queued),
            prompt,
            fed_to: None,
            fed: 0,
            started: None,
            in_backlog: None,
            reply: Some(Box::new(reply)),
            _ticket: ticket,
        }
    }

    /// One step of `task`: a chunk of its prompt, or a warm-up's end. `None` when the task is over.
    fn step(&mut self, mut task: Task) -> Option<Task> {
        let started = *task.started.get_or_insert_with(Instant::now);
        task.in_backlog = None;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<Option<&'static str>, String> {
            let task = &mut task;
            if task.fed_to.is_none_or(|n| n < task.prompt.len()) {
                let logits = self.prefill_step(task)?;
                if let (Some(logits), Some(reply)) = (logits, task.reply.as_mut()) {
                    reply.prefill_ms = started.elapsed().as_millis() as u64;
                    reply.logits = Some(logits);
                    task.progress.prompt_in = true;
                }
                return Ok(None);
            }
            match task.reply.is_some() {
                // Replies whose prompt is in decode in `decode_all`.
                true => Err("a decoding reply was stepped alone".to_string()),
                false => Ok(Some("warmed")),
            }
        }));
        let err = match r {
            Ok(Ok(None)) => return Some(task),
            Ok(Ok(Some(finish))) => {
                self.finish(task, finish);
                return None;
            }
            Ok(Err(e)) => e,
            Err(_) => {
                // The cache may be half-written: forget it.
                self.sessions.remove(&task.session);
                "the language model panicked".to_string()
            }
        };
        self.fail(task, err);
        None
    }

    /// Bring the session's cache towards the prompt by one chunk; the last position's logits once
    /// the whole prompt is in.
    fn prefill_step(&mut self, task: &mut Task) -> Result<Option<Vec<f32>>, String> {
        let tokens = &task.prompt;
        if tokens.is_empty() {
            return Err("empty prompt".into());
        }
        self.clock += 1;
        let session = task.session;
        let from = match task.fed_to {
            Some(n) => n,
            None => {
                if self.batch.as_ref().is_some_and(|b| b.sessions.contains(&session)) {
                    // The session's last reply ended in the batch: its cache is still there.
                    self.release_batch();
                }
                if !self.sessions.contains_key(&session) {
                    // Start from the longest prefix another session has computed: one in the batch
                    // too (copying the batch back costs far less than computing instructions again).
                    let longest = |caches: &mut dyn Iterator<Item = &[u32]>| {
                        caches.map(|c| common_prefix(c, tokens)).max().unwrap_or(0)
                    };
                    if let Some(b) = &self.batch {
                        let in_batch = longest(&mut (0..b.cache.rows()).map(|r| b.cache.tokens(r)));
                        if in_batch > longest(&mut self.sessions.values().map(|e| e.cache.tokens.as_slice())) {
                            self.release_batch();
                        }
                    }
                    let best = self
                        .sessions
                        .values()
                        .map(|e| (common_prefix(&e.cache.tokens, tokens), e))
                        .max_by_key(|(n, _)| *n);
                    let cache = match best {
                        Some((n, e)) if n > 0 => self.model.clone_prefix(&e.cache, n).map_err(|e| e.to_string())?,
                        _ => self.model.empty_cache().map_err(|e| e.to_string())?,
                    };
                    self.sessions.insert(session, Entry { cache, used: 0 });
                }
                let entry = self.sessions.get_mut(&session).ok_or("the session's cache went away")?;
                // At least one token must be fed to get logits.
                let keep = common_prefix(&entry.cache.tokens, tokens).min(tokens.len() - 1);
                self.model.truncate(&mut entry.cache, keep).map_err(|e| e.to_string())?;
                keep
            }
        };
        let to = (from + PREFILL_CHUNK).min(tokens.len());
        let entry = self.sessions.get_mut(&session).ok_or("the session's cache went away")?;
        entry.used = self.clock;
        let logits = self.model.forward(&mut entry.cache, &tokens[from..to]).map_err(|e| e.to_string())?;
        task.fed_to = Some(to);
        task.fed += to - from;
        self.stats.prompt_tokens.fetch_add((to - from) as u64, Ordering::Relaxed);
        self.evict();
        Ok((to == tokens.len()).then_some(logits))
    }

    /// Drop the least recently used caches beyond the budget (never one a task is computing).
    fn evict(&mut self) {
        let spec = self.model.spec();
        loop {
            let total: usize = self.sessions.values().map(|e| e.cache.bytes(spec)).sum();
            if total <= self.settings.cache_bytes {
                return;
            }
            let busy = |s: &u64| self.tasks.iter().chain(&self.waiting).any(|t| t.session == *s);
            let victim = self.sessions.iter().filter(|(s, _)| !busy(s)).min_by_key(|(_, e)| e.used).map(|(s, _)| *s);
            match victim {
                Some(s) => {
                    self.sessions.remove(&s);
                }
                None => return,
            }
        }
    }

    /// One decoding step of every reply whose prompt is in: each picks its token (`choose`), and
    /// those that go on are fed together in one forward pass.
    fn decode_all(&mut self) {
        let (tasks, rest): (Vec<Task>, Vec<Task>) = std::mem::take(&mut self.tasks).into_iter().partition(decoding);
        self.tasks = rest;
        let mut feeding: Vec<(Task, Vec<u32>)> = Vec::with_capacity(tasks.len());
        for mut task in tasks {
            task.in_backlog = None;
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.choose(&mut task)));
            match r {
                Ok(Ok(Choice::Feed(tokens))) => feeding.push((task, tokens)),
                Ok(Ok(Choice::Finish(reason))) => self.finish(task, reason),
                Ok(Err(e)) => self.fail(task, e),
                Err(_) => self.fail(task, "the language model panicked".to_string()),
            }
        }
        // One token each decodes in the batch; a tool call's closing tokens are fed alone.
        let (one, more): (Vec<_>, Vec<_>) = feeding.into_iter().partition(|(_, feed)| feed.len() == 1);
        let mut one = one;
        if !one.is_empty() {
            if let Err(e) = self.decode_batch(&mut one) {
                // The batch's caches are gone with it: every reply in it fails.
                for (task, _) in one.drain(..) {
                    self.sessions.remove(&task.session);
                    self.fail(task, e.clone());
                }
            }
            self.tasks.extend(one.into_iter().map(|(t, _)| t));
        }
        for (mut task, feed) in more {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.feed_alone(&mut task, &feed)));
            match r {
                Ok(Ok(())) => self.tasks.push(task),
                Ok(Err(e)) => self.fail(task, e),
                Err(_) => {
                    self.sessions.remove(&task.session);
                    self.fail(task, "the language model panicked".to_string());
                }
            }
        }
    }

    /// Feed each row its token in one forward pass, the batch made anew if its rows changed.
    fn decode_batch(&mut self, rows: &mut [(Task, Vec<u32>)]) -> Result<(), String> {
        let wanted: Vec<u64> = rows.iter().map(|(t, _)| t.session).collect();
        let same = self
            .batch
            .as_ref()
            .is_some_and(|b| b.sessions.len() == wanted.len() && wanted.iter().all(|s| b.sessions.contains(s)));
        if !same {
            self.release_batch();
            let mut caches = Vec::with_capacity(wanted.len());
            for s in &wanted {
                caches.push(self.sessions.remove(s).ok_or("the session's cache went away")?.cache);
            }
            let cache = self.model.batch(caches).map_err(|e| e.to_string())?;
            self.batch = Some(Decoding { sessions: wanted, cache });
        }
        let mut batch = self.batch.take().ok_or("no batch")?;
        // The tokens in the batch's row order.
        let tokens: Vec<u32> = batch
            .sessions
            .iter()
            .map(|s| rows.iter().find(|(t, _)| t.session == *s).map_or(0, |(_, f)| f[0]))
            .collect();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.model.forward_batch(&mut batch.cache, &tokens)
        }));
        let logits = match r {
            Ok(Ok(logits)) => logits,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("the language model panicked".to_string()),
        };
        for (s, l) in batch.sessions.iter().zip(logits) {
            if let Some((task, _)) = rows.iter_mut().find(|(t, _)| t.session == *s) {
                if let Some(r) = task.reply.as_mut() {
                    r.logits = Some(l);
                }
            }
        }
        let rows = batch.sessions.len();
        self.stats.passes[rows.min(BATCH_ROWS_COUNTED) - 1].fetch_add(1, Ordering::Relaxed);
        self.stats.tokens.fetch_add(rows as u64, Ordering::Relaxed);
        self.clock += 1;
        self.batch = Some(batch);
        Ok(())
    }

    /// The batch's caches back to their sessions (a reply left or joined, or a session needs its
    /// cache for a new prompt).
    fn release_batch(&mut self) {
        let Some(batch) = self.batch.take() else { return };
        match self.model.unbatch(batch.cache) {
            Ok(caches) => {
                for (session, cache) in batch.sessions.into_iter().zip(caches) {
                    self.sessions.insert(session, Entry { cache, used: self.clock });
                }
            }
            // Only costs time: the sessions compute their prefixes again.
            Err(e) => {
                tracing::warn!(error = %e, "the language model's batch could not be split; its caches are dropped")
            }
        }
        self.evict();
    }

    /// Feed a reply's tokens on its own cache (a tool call's close: several tokens).
    fn feed_alone(&mut self, task: &mut Task, feed: &[u32]) -> Result<(), String> {
        if self.batch.as_ref().is_some_and(|b| b.sessions.contains(&task.session)) {
            self.release_batch();
        }
        self.clock += 1;
        let entry = self.sessions.get_mut(&task.session).ok_or("the session's cache went away")?;
        entry.used = self.clock;
        let logits = self.model.forward(&mut entry.cache, feed).map_err(|e| e.to_string())?;
        if let Some(r) = task.reply.as_mut() {
            r.logits = Some(logits);
        }
        Ok(())
    }

    fn fail(&mut self, task: Task, err: String) {
        tracing::warn!(session = task.session, error = %err, "local language model failed");
        if let Some(reply) = &task.reply {
            let _ = reply.tx.send(Err(LlmError::Model(err)));
        }
    }

    /// A reply's next token: picked from its logits, said (or added to a tool call). What to feed
    /// the model, or the reason the reply is over.
    fn choose(&mut self, task: &mut Task) -> Result<Choice, String> {
        let session = task.session;
        let r = task.reply.as_mut().ok_or("not a reply")?;
        let logits = r.logits.as_mut().ok_or("no logits after the prompt")?;
        if r.generated.len() >= r.max_tokens {
            return Ok(Choice::Finish("length"));
        }
        let mut complete = false;
        let next = if !r.forced.is_empty() {
            r.forced.remove(0)
        } else if let Some(body) = &r.in_call {
            // Inside a call: the model's most likely token that keeps the call valid.
            let grammar = ToolGrammar { tools: r.callable.iter().map(|t| (t.name.as_str(), &t.parameters)).collect() };
            match self.constrained_pick(logits, &r.banned, body, &grammar) {
                Some((id, check)) => {
                    complete = check == Check::Complete;
                    id
                }
                None => {
                    tracing::warn!(session, body = %String::from_utf8_lossy(body), "no token continues the tool call validly; reply ended");
                    return Ok(Choice::Finish("invalid_tool_call"));
                }
            }
        } else {
            r.sampler.pick(logits, &r.ban_text, &r.generated)
        };
        if r.in_call.is_none() && r.stop.contains(&next) {
            return Ok(Choice::Finish(if r.calls > 0 { "tool_calls" } else { "stop" }));
        }
        r.generated.push(next);
        let mut feed = vec![next];
        let tok = self.model.tokenizer();
        if next == self.controls.tool_call {
            r.in_call = Some(Vec::new());
        } else if let Some(body) = &mut r.in_call {
            body.extend_from_slice(tok.token_bytes(next));
            if complete {
                // The call is whole: close it as the chat format does ("}\n</tool_call>").
                let body = r.in_call.take().unwrap_or_default();
                if !body.ends_with(b"\n") {
                    feed.extend(tok.encode("\n"));
                }
                feed.push(self.controls.tool_call_end);
                r.generated.extend_from_slice(&feed[1..]);
                r.calls += 1;
                match parse_tool_call(&body, r.calls) {
                    Ok(call) => {
                        if r.tx.send(Ok(LlmEvent::ToolCall(call))).is_err() {
                            return Ok(Choice::Finish("cancelled"));
                        }
                    }
                    Err(e) => tracing::warn!(session, error = %e, "a constrained tool call did not parse; ignored"),
                }
            }
        } else {
            let delta = r.text.push(tok.token_bytes(next));
            let (say, call) = r.held.push(&delta, !r.callable.is_empty());
            if !say.is_empty() {
                task.progress.sent(&say, Instant::now());
                if r.tx.send(Ok(LlmEvent::Text(say))).is_err() {
                    return Ok(Choice::Finish("cancelled"));
                }
            }
            if let Some(after) = call {
                // The model spelled `<tool_call>` out in text tokens: the same call, constrained from here.
                r.in_call = Some(after.into_bytes());
            }
        }
        // Until it is fed, the reply has no logits (it is not decoding).
        r.logits = None;
        Ok(Choice::Feed(feed))
    }

    /// The task is over: a reply's held-back text and `Done` go out.
    fn finish(&mut self, task: Task, finish: &str) {
        let Some(mut r) = task.reply else {
            tracing::debug!(
                session = task.session,
                tokens = task.prompt.len(),
                fed = task.fed,
                ms = task.started.map_or(0, |s| s.elapsed().as_millis() as u64),
                "language model warmed"
            );
            return;
        };
        let mut rest = r.held.finish();
        rest.push_str(&r.text.finish());
        if !rest.is_empty() {
            let _ = r.tx.send(Ok(LlmEvent::Text(rest)));
        }
        let started = task.started.unwrap_or(task.progress.queued);
        tracing::debug!(
            session = task.session,
            prompt_tokens = task.prompt.len(),
            fed = task.fed,
            queued_ms = started.saturating_duration_since(task.progress.queued).as_millis() as u64,
            prefill_ms = r.prefill_ms,
            generated = r.generated.len(),
            total_ms = started.elapsed().as_millis() as u64,
            finish,
            "local reply"
        );
        let usage = Usage {
            prompt_tokens: task.prompt.len(),
            cached_tokens: task.prompt.len() - task.fed.min(task.prompt.len()),
            completion_tokens: r.generated.len(),
        };
        let _ = r.tx.send(Ok(LlmEvent::Done { finish_reason: finish.to_string(), usage: Some(usage) }));
    }
}

const CALL_TAG: &str = "<tool_call>";

/// Text on its way to the caller, holding back what may be `<tool_call>` written out in ordinary
/// tokens (the model does that too) until it is clearly not: a call is never spoken.
#[derive(Default)]
struct HeldText {
    pending: String,
}

impl HeldText {
    /// What can be said now, and — when the tag is complete — what followed it (the call's start).
    fn push(&mut self, delta: &str, calls_allowed: bool) -> (String, Option<String>) {
        if !calls_allowed {
            return (delta.to_string(), None);
        }
        self.pending.push_str(delta);
        if let Some(p) = self.pending.find(CALL_TAG) {
            let before = self.pending[..p].to_string();
            let after = self.pending[p + CALL_TAG.len()..].to_string();
            self.pending.clear();
            return (before, Some(after));
        }
        let keep = (1..CALL_TAG.len()).rev().find(|&n| self.pending.ends_with(&CALL_TAG[..n])).unwrap_or(0);
        let say: String = self.pending.drain(..self.pending.len() - keep).collect();
        (say, None)
    }

    fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

impl Worker {
    /// Inside a tool call: the highest-scoring token (greedy: a call's arguments are not a place for
    /// variety) whose bytes keep the call a valid prefix of the grammar, and where that leaves it.
    fn constrained_pick(
        &self,
        logits: &mut [f32],
        banned: &[u32],
        body: &[u8],
        grammar: &ToolGrammar,
    ) -> Option<(u32, Check)> {
        let tok = self.model.tokenizer();
        for &b in banned {
            if let Some(l) = logits.get_mut(b as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        let mut candidate = body.to_vec();
        // Most candidates fail on their first byte; bound the search all the same.
        for _ in 0..20_000 {
            let id = argmax(logits);
            if !logits[id as usize].is_finite() {
                return None;
            }
            logits[id as usize] = f32::NEG_INFINITY;
            if tok.is_added(id) {
                continue;
            }
            candidate.truncate(body.len());
            candidate.extend_from_slice(tok.token_bytes(id));
            match grammar.check(&candidate) {
                Check::Invalid => continue,
                c => return Some((id, c)),
            }
        }
        None
    }
}

/// `{"name": …, "arguments": {…}}` between the tool-call tokens.
fn parse_tool_call(body: &[u8], n: usize) -> Result<ToolCall, String> {
    let text = String::from_utf8_lossy(body);
    let v: serde_json::Value = serde_json::from_str(text.trim()).map_err(|e| format!("{e}: {text}"))?;
    let name = v.get("name").and_then(|n| n.as_str()).ok_or_else(|| format!("no name: {text}"))?;
    let args = v.get("arguments").cloned().unwrap_or(serde_json::Value::Object(Default::default()));
    let arguments = match args {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    };
    Ok(ToolCall { id: format!("call_{n}"), name: name.to_string(), arguments })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spelled_out_call_tag_is_never_said() {
        let mut h = HeldText::default();
        assert_eq!(h.push("Sure. <", true), ("Sure. ".to_string(), None));
        assert_eq!(h.push("tool", true), (String::new(), None));
        assert_eq!(h.push("_call>\n{", true), (String::new(), Some("\n{".to_string())));
        assert_eq!(h.push("a <", true), ("a ".to_string(), None), "`<` alone may start the tag");
        assert_eq!(h.push(" b!", true), ("< b!".to_string(), None));
        assert_eq!(h.push("<tool", false), ("<tool".to_string(), None), "no tools: nothing held");
        let mut h = HeldText::default();
        h.push("x <tool", true);
        assert_eq!(h.finish(), "<tool");
    }

    #[test]
    fn tool_call_bodies() {
        let c = parse_tool_call(b"\n{\"name\": \"book\", \"arguments\": {\"day\": \"Monday\"}}\n", 1).unwrap();
        assert_eq!((c.id.as_str(), c.name.as_str(), c.arguments.as_str()), ("call_1", "book", "{\"day\":\"Monday\"}"));
        assert!(parse_tool_call(b"{\"arguments\": {}}", 2).is_err());
        assert!(parse_tool_call(b"not json", 3).is_err());
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4, 5]), 2);
    }
}
