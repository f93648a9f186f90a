//! Model work off the async runtime: a few threads, each owning its own copy
//! of a model (an ONNX Runtime session runs one request at a time), fed from
//! one bounded queue. A batching pool (`Pool::spawn_batched`) gives a thread
//! the jobs waiting when it is free, up to `max_batch`, to compute in one
//! batched model call: one copy of the model serves several calls at once. A
//! call submits without waiting and polls for the answer from its media loop: a full queue refuses the job (the call counts
//! it and degrades) rather than delaying every other call. Low-priority jobs
//! (partial transcripts) are only accepted while a thread would otherwise be
//! idle, so they never delay real work. A model that errors or panics answers
//! that one job with an error and its thread goes on. A job nobody wants any
//! more (cancelled, or its client dropped: the call ended) is skipped, not
//! computed, when its turn comes; one cancelled while it runs can see it
//! (`Cancel`) and stop early. An urgent job that finds every thread busy
//! preempts a low-priority one running: it is told to stop like a cancelled
//! one, and answered `PREEMPTED`.
//!
//! A model that hangs (neither returns nor panics) is caught by a watchdog
//! (`Pool::watch`): its job is answered with an error at once, its thread is
//! left to itself (it answers nothing more and ends if it ever returns), and a
//! new thread with a fresh copy of the model takes its place.

use super::backlog::{Backlog, Waiting};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Whether the job being computed is still wanted: a model that works in steps (a decoder's
/// tokens) looks between steps and gives up on a job cancelled (or preempted) while it runs.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicU8>);

/// A job's state (`Cancel`): wanted; cancelled by its client (no answer is sent); preempted by the
/// pool for an urgent job (answered with `PREEMPTED`, so its client knows it is over).
const WANTED: u8 = 0;
const CANCELLED: u8 = 1;
const PREEMPTED_STATE: u8 = 2;

/// The error answering a low-priority job given up for an urgent one.
pub const PREEMPTED: &str = "preempted by an urgent job";

impl Cancel {
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed) != WANTED
    }
    fn cancel(&self) {
        self.0.store(CANCELLED, Ordering::Relaxed);
    }
    fn state(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }
}

struct Job<I, O> {
    seq: u64,
    input: I,
    low_priority: bool,
    submitted: Instant,
    reply: Sender<Answer<O>>,
    cancelled: Cancel,
    /// In the pool's backlog until a thread takes the job.
    _waiting: Waiting,
}

/// One job's answer.
#[derive(Debug, Clone)]
pub struct Answer<O> {
    /// The number `submit` returned.
    pub seq: u64,
    pub low_priority: bool,
    pub result: Result<O, String>,
    /// From submit to the answer, queueing included.
    pub latency_ms: f64,
}

pub struct Pool<I, O> {
    tx: SyncSender<Job<I, O>>,
    queue: Queue<I, O>,
    /// Each thread's state, for the watchdog.
    slots: Slots<O>,
    name: String,
    /// The watchdog ends when the pool goes.
    alive: Arc<()>,
}

/// What a thread is doing, shared with the watchdog.
struct Slot<O> {
    /// The jobs of the batch being computed (none while the thread waits).
    busy: Vec<Busy<O>>,
    /// The watchdog answered for this thread's job and replaced it: it answers nothing more and
    /// ends once its model returns.
    retired: bool,
}

/// A job being computed, and how to answer it if the model never returns.
struct Busy<O> {
    seq: u64,
    low_priority: bool,
    submitted: Instant,
    since: Instant,
    reply: Sender<Answer<O>>,
    cancel: Cancel,
}

impl<I: Send + 'static, O: Send + 'static> Pool<I, O> {
    /// One thread per worker function (each owns its model), sharing a queue of `queue` jobs;
    /// each thread computes one job at a time.
    pub fn spawn<W>(workers: Vec<W>, queue: usize, name: &str) -> Pool<I, O>
    where
        W: FnMut(I, &Cancel) -> Result<O, String> + Send + 'static,
    {
        Pool::spawn_batched(workers.into_iter().map(one_at_a_time).collect(), 1, queue, name)
    }

    /// One thread per batch function (each owns its model), sharing a queue of `queue` jobs: a
    /// thread that is free takes every job waiting, up to `max_batch`, and its function answers
    /// them together (one result per job, in order). A job cancelled while its batch runs is
    /// seen through its `Cancel` and may be dropped from the batch.
    pub fn spawn_batched<B>(workers: Vec<B>, max_batch: usize, queue: usize, name: &str) -> Pool<I, O>
    where
        B: FnMut(Vec<(I, Cancel)>) -> Vec<Result<O, String>> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel::<Job<I, O>>(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let pending = Arc::new(AtomicUsize::new(0));
        let threads = workers.len();
        let max_batch = max_batch.max(1);
        let slots = Arc::new(Mutex::new(Vec::new()));
        let queue = Queue { rx, pending, backlog: Backlog::new(), max_batch, threads };
        for work in workers {
            start_thread(work, &queue, &slots, name);
        }
        Pool { tx, queue, slots, name: name.to_string(), alive: Arc::new(()) }
    }

    /// Watch the threads: a job running longer than `limit` is answered with an error, and its
    /// thread replaced by one running what `make` returns (a fresh copy of the model).
    pub fn watch<W, M>(&self, limit: Duration, mut make: M)
    where
        W: FnMut(I, &Cancel) -> Result<O, String> + Send + 'static,
        M: FnMut() -> Result<W, String> + Send + 'static,
    {
        self.watch_batched(limit, move || make().map(one_at_a_time));
    }

    /// `watch` for a batching pool: a batch running longer than `limit` has all its jobs answered
    /// with an error, and its thread is replaced by one running what `make` returns.
    pub fn watch_batched<B, M>(&self, limit: Duration, mut make: M)
    where
        B: FnMut(Vec<(I, Cancel)>) -> Vec<Result<O, String>> + Send + 'static,
        M: FnMut() -> Result<B, String> + Send + 'static,
    {
        let (queue, slots, name) = (self.queue.clone(), self.slots.clone(), self.name.clone());
        let alive: Weak<()> = Arc::downgrade(&self.alive);
        let spawned = crate::models::spawn_watchdog(format!("{}-watchdog", self.name), limit, alive, move || {
            let hung = retire_hung(&slots, &queue.pending, limit);
            for _ in 0..hung {
                tracing::warn!(model = %name, limit_ms = limit.as_millis() as u64, "a model call did not return: its job failed, a new worker takes its place");
                match make() {
                    Ok(work) => start_thread(work, &queue, &slots, &name),
                    Err(e) => {
                        tracing::error!(model = %name, error = %e, "cannot replace a hung model worker: one worker fewer")
                    }
                }
            }
            true
        });
        if let Err(e) = spawned {
            panic!("spawn a watchdog thread: {e}");
        }
    }

    pub fn client(&self) -> PoolClient<I, O> {
        let (reply, answers) = mpsc::channel();
        let q = &self.queue;
        PoolClient {
            tx: self.tx.clone(),
            pending: q.pending.clone(),
            threads: q.threads,
            reply,
            answers,
            next_seq: 0,
            outstanding: HashMap::new(),
            backlog: q.backlog.clone(),
            slots: self.slots.clone(),
        }
    }

    /// The jobs waiting for a thread.
    pub fn backlog(&self) -> &Arc<Backlog> {
        &self.queue.backlog
    }

    /// Jobs waiting or running, across clients.
    pub fn pending(&self) -> usize {
        self.queue.pending.load(Ordering::Relaxed)
    }

    pub fn threads(&self) -> usize {
        self.queue.threads
    }
}

type Slots<O> = Arc<Mutex<Vec<Arc<Mutex<Slot<O>>>>>>;

/// A one-job model as a batch function (batches of one: `spawn` takes one job at a time).
fn one_at_a_time<I, O, W>(mut work: W) -> impl FnMut(Vec<(I, Cancel)>) -> Vec<Result<O, String>>
where
    W: FnMut(I, &Cancel) -> Result<O, String>,
{
    move |jobs: Vec<(I, Cancel)>| jobs.into_iter().map(|(input, cancel)| work(input, &cancel)).collect()
}

/// What a pool's threads share: the queue they take jobs from, and how they take them.
struct Queue<I, O> {
    rx: Arc<Mutex<Receiver<Job<I, O>>>>,
    /// Jobs submitted and not yet answered, across clients.
    pending: Arc<AtomicUsize>,
    /// The jobs no thread has taken yet.
    backlog: Arc<Backlog>,
    /// Jobs a thread takes at once.
    max_batch: usize,
    threads: usize,
}

impl<I, O> Clone for Queue<I, O> {
    fn clone(&self) -> Self {
        Queue {
            rx: self.rx.clone(),
            pending: self.pending.clone(),
            backlog: self.backlog.clone(),
            max_batch: self.max_batch,
            threads: self.threads,
        }
    }
}

fn start_thread<I, O, B>(work: B, queue: &Queue<I, O>, slots: &Slots<O>, name: &str)
where
    I: Send + 'static,
    O: Send + 'static,
    B: FnMut(Vec<(I, Cancel)>) -> Vec<Result<O, String>> + Send + 'static,
{
    let slot = Arc::new(Mutex::new(Slot { busy: Vec::new(), retired: false }));
    let mut all = slots.lock().unwrap_or_else(|p| p.into_inner());
    let n = all.len();
    all.push(slot.clone());
    let queue = queue.clone();
    std::thread::Builder::new()
        .name(format!("{name}-{n}"))
        .spawn(move || run(work, queue, slot))
        .expect("spawn a model thread");
}

/// Answer the jobs of batches running longer than `limit` with an error and retire their
/// threads; how many threads.
fn retire_hung<O>(slots: &Slots<O>, pending: &AtomicUsize, limit: Duration) -> usize {
    let mut hung = 0;
    for slot in slots.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
        if s.retired || s.busy.first().is_none_or(|b| b.since.elapsed() <= limit) {
            continue;
        }
        for b in &s.busy {
            let result = Err(format!("the model did not answer within {} ms", limit.as_millis()));
            let _ = b.reply.send(Answer {
                seq: b.seq,
                low_priority: b.low_priority,
                result,
                latency_ms: b.submitted.elapsed().as_secs_f64() * 1000.0,
            });
            pending.fetch_sub(1, Ordering::Relaxed);
        }
        s.retired = true;
        hung += 1;
    }
    hung
}

/// The next batch: the first job waited for, then jobs already queued, up to `max` of them still
/// wanted, and no more than this thread's share of the jobs waiting (their number over the
/// threads, rounded up), so that the other threads get theirs as they come free: on a CPU a
/// batch costs about what its jobs cost one after another, and one thread taking every job
/// while another sat idle made the last of four turns wait 1.5× longer (measured with
/// `cargo bench --bench voice_to_voice -- --callers 4`). `None`: the pool is gone.
fn next_batch<I, O>(queue: &Queue<I, O>) -> Option<Vec<Job<I, O>>> {
    let Queue { rx, pending, backlog, max_batch, threads } = queue;
    // The lock is held only while waiting for jobs, never while working.
    let rx = rx.lock().ok()?;
    let mut jobs = Vec::new();
    while jobs.is_empty() {
        jobs.extend(wanted(rx.recv().ok()?, pending)); // every sender gone: shutting down
    }
    let max = (*max_batch).min(backlog.waiting().div_ceil((*threads).max(1)).max(1));
    while jobs.len() < max {
        match rx.try_recv() {
            Ok(j) => jobs.extend(wanted(j, pending)),
            Err(_) => break,
        }
    }
    Some(jobs)
}

/// The job, unless nobody wants it any more: then it is skipped, not computed (a preempted one is
/// answered `PREEMPTED`, so its client knows it is over).
fn wanted<I, O>(job: Job<I, O>, pending: &AtomicUsize) -> Option<Job<I, O>> {
    if !job.cancelled.is_cancelled() {
        return Some(job);
    }
    pending.fetch_sub(1, Ordering::Relaxed);
    if job.cancelled.state() == PREEMPTED_STATE {
        let _ = job.reply.send(Answer {
            seq: job.seq,
            low_priority: job.low_priority,
            result: Err(PREEMPTED.into()),
            latency_ms: job.submitted.elapsed().as_secs_f64() * 1000.0,
        });
    }
    None
}

fn run<I, O, B>(mut work: B, queue: Queue<I, O>, slot: Arc<Mutex<Slot<O>>>)
where
    B: FnMut(Vec<(I, Cancel)>) -> Vec<Result<O, String>>,
{
    let pending = &queue.pending;
    while let Some(jobs) = next_batch(&queue) {
        let mut inputs = Vec::with_capacity(jobs.len());
        let mut busy = Vec::with_capacity(jobs.len());
        let since = Instant::now();
        for Job { seq, input, low_priority, submitted, reply, cancelled, _waiting } in jobs {
            drop(_waiting);
            inputs.push((input, cancelled.clone()));
            busy.push(Busy { seq, low_priority, submitted, since, reply, cancel: cancelled });
        }
        let n = inputs.len();
        slot.lock().unwrap_or_else(|p| p.into_inner()).busy = busy;
        let results = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(inputs))) {
            Ok(r) if r.len() == n => r,
            Ok(r) => (0..n).map(|_| Err(format!("the model answered {} of {n} jobs", r.len()))).collect(),
            Err(_) => (0..n).map(|_| Err("the model panicked on this input".to_string())).collect(),
        };
        let busy = {
            let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
            if s.retired {
                // The watchdog answered for this batch and put another thread in our place.
                return;
            }
            std::mem::take(&mut s.busy)
        };
        for (b, result) in busy.into_iter().zip(results) {
            pending.fetch_sub(1, Ordering::Relaxed);
            // A call that has ended dropped its receiver: nothing to do.
            let result = match b.cancel.state() {
                WANTED => result,
                PREEMPTED_STATE => Err(PREEMPTED.into()),
                _ => continue,
            };
            let _ = b.reply.send(Answer {
                seq: b.seq,
                low_priority: b.low_priority,
                result,
                latency_ms: b.submitted.elapsed().as_secs_f64() * 1000.0,
            });
        }
    }
}

/// One caller's handle on a pool.
pub struct PoolClient<I, O> {
    tx: SyncSender<Job<I, O>>,
    pending: Arc<AtomicUsize>,
    threads: usize,
    reply: Sender<Answer<O>>,
    answers: Receiver<Answer<O>>,
    next_seq: u64,
    /// Jobs not yet answered, with their cancel flags.
    outstanding: HashMap<u64, Cancel>,
    backlog: Arc<Backlog>,
    /// The threads' states: an urgent job that has to wait preempts a low-priority one running.
    slots: Slots<O>,
}

impl<I, O> PoolClient<I, O> {
    /// Queue a job; the number identifies its answer. `None`: refused (queue full, or a
    /// low-priority job while no thread is idle).
    pub fn submit(&mut self, input: I, low_priority: bool) -> Option<u64> {
        if low_priority && self.pending.load(Ordering::Relaxed) >= self.threads {
            return None;
        }
        let seq = self.next_seq;
        let cancelled = Cancel::default();
        let now = Instant::now();
        let job = Job {
            seq,
            input,
            low_priority,
            submitted: now,
            reply: self.reply.clone(),
            cancelled: cancelled.clone(),
            _waiting: self.backlog.enter(now),
        };
        self.pending.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(job) {
            Ok(()) => {
                self.next_seq += 1;
                self.outstanding.insert(seq, cancelled);
                if !low_priority && self.pending.load(Ordering::Relaxed) > self.threads {
                    self.preempt_one();
                }
                Some(seq)
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// An urgent job waits for a thread: give it one a low-priority job holds (a partial
    /// transcript, whose model stops at its next step and answers `PREEMPTED`).
    fn preempt_one(&self) {
        for slot in self.slots.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let s = slot.lock().unwrap_or_else(|p| p.into_inner());
            for b in s.busy.iter().filter(|b| b.low_priority) {
                if b.cancel.0.compare_exchange(WANTED, PREEMPTED_STATE, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                    return;
                }
            }
        }
    }

    /// The next answer, if one has arrived.
    pub fn poll(&mut self) -> Option<Answer<O>> {
        let a = self.answers.try_recv().ok()?;
        self.outstanding.remove(&a.seq);
        Some(a)
    }

    /// Wait for the next answer (tests and offline tools, not the media loop).
    pub fn wait(&mut self, timeout: std::time::Duration) -> Option<Answer<O>> {
        let a = self.answers.recv_timeout(timeout).ok()?;
        self.outstanding.remove(&a.seq);
        Some(a)
    }

    /// The answer to job `seq` is not wanted: a job still queued is skipped (one running
    /// finishes, and its answer is not sent).
    pub fn cancel(&mut self, seq: u64) {
        if let Some(flag) = self.outstanding.remove(&seq) {
            flag.cancel();
        }
    }
}

impl<I, O> Drop for PoolClient<I, O> {
    /// The client's jobs are nobody's now (its call has ended).
    fn drop(&mut self) {
        for flag in self.outstanding.values() {
            flag.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn answers_refusals_and_panics() {
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let g = gate.clone();
        let pool: Pool<u32, u32> = Pool::spawn(
            vec![move |x: u32, _: &Cancel| {
                // A panic below poisons the gate: later jobs still pass it.
                let _wait = g.lock().unwrap_or_else(|p| p.into_inner());
                if x == 13 {
                    panic!("unlucky");
                }
                Ok(x * 2)
            }],
            1,
            "test",
        );
        let mut c = pool.client();
        assert_eq!(c.submit(1, false), Some(0));
        assert_eq!(c.submit(2, true), None, "no idle thread: low priority refused");
        // The thread holds job 0 (blocked on the gate) or it still waits in the queue of 1:
        // either way, at most one more fits.
        let more: Vec<u64> = (0..3).filter_map(|_| c.submit(13, false)).collect();
        assert!(more.len() <= 1, "{more:?}");
        drop(held);
        let a = c.wait(Duration::from_secs(5)).unwrap();
        assert_eq!((a.seq, a.result.clone()), (0, Ok(2)));
        for _ in &more {
            let a = c.wait(Duration::from_secs(5)).unwrap();
            assert_eq!(a.result, Err("the model panicked on this input".to_string()));
        }
        // The thread survived its panic.
        let s = c.submit(21, false).unwrap();
        let a = c.wait(Duration::from_secs(5)).unwrap();
        assert_eq!((a.seq, a.result), (s, Ok(42)));
        assert_eq!(pool.pending(), 0);
    }

    /// A model call that never returns: its job is answered with an error once the limit passes,
    /// and a fresh worker takes the jobs queued behind it.
    #[test]
    fn a_hung_model_is_answered_with_an_error_and_replaced() {
        let hangs = |x: u32, _: &Cancel| -> Result<u32, String> {
            if x == 13 {
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            Ok(x * 2)
        };
        let pool: Pool<u32, u32> = Pool::spawn(vec![hangs], 4, "hang");
        let made = Arc::new(AtomicUsize::new(0));
        let m = made.clone();
        pool.watch(Duration::from_millis(200), move || {
            m.fetch_add(1, Ordering::SeqCst);
            Ok(|x: u32, _: &Cancel| -> Result<u32, String> { Ok(x * 3) })
        });
        let mut c = pool.client();
        let hung = c.submit(13, false).unwrap();
        let queued = c.submit(5, false).unwrap();
        let a = c.wait(Duration::from_secs(5)).expect("the hung job is answered");
        assert_eq!(a.seq, hung);
        assert_eq!(a.result, Err("the model did not answer within 200 ms".to_string()));
        assert!(a.latency_ms >= 200.0, "{}", a.latency_ms);
        let b = c.wait(Duration::from_secs(5)).expect("the job behind it is answered");
        assert_eq!((b.seq, b.result), (queued, Ok(15)), "by the new worker");
        assert_eq!((made.load(Ordering::SeqCst), pool.pending()), (1, 0));
    }

    /// An urgent job that finds the one thread busy with a low-priority job preempts it: the
    /// running job is told, stops, and is answered `PREEMPTED`; the urgent one is computed next.
    /// An urgent job behind an urgent one preempts nothing.
    #[test]
    fn an_urgent_job_preempts_a_low_priority_one_running() {
        let pool: Pool<u32, u32> = Pool::spawn(
            vec![move |x: u32, cancel: &Cancel| {
                if x == 0 {
                    let t0 = Instant::now();
                    while !cancel.is_cancelled() {
                        assert!(t0.elapsed() < Duration::from_secs(5), "never preempted");
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    return Ok(99);
                }
                std::thread::sleep(Duration::from_millis(50));
                Ok(x)
            }],
            8,
            "test",
        );
        let mut c = pool.client();
        let partial = c.submit(0, true).unwrap();
        while pool.pending() == 0 || pool.slots.lock().unwrap()[0].lock().unwrap().busy.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(c.submit(5, true), None, "no idle thread: a second partial is refused");
        let urgent = c.submit(7, false).unwrap();
        let a = c.wait(Duration::from_secs(5)).unwrap();
        assert_eq!((a.seq, a.result), (partial, Err(PREEMPTED.to_string())));
        let b = c.wait(Duration::from_secs(5)).unwrap();
        assert_eq!((b.seq, b.result), (urgent, Ok(7)));
        // Two urgent jobs: the second waits, nothing is preempted.
        let (x, y) = (c.submit(1, false).unwrap(), c.submit(2, false).unwrap());
        let got: Vec<_> = (0..2).map(|_| c.wait(Duration::from_secs(5)).unwrap()).map(|a| (a.seq, a.result)).collect();
        assert_eq!(got, vec![(x, Ok(1)), (y, Ok(2))]);
    }

    /// Jobs queued behind a busy thread: a cancelled one and a dropped client's are skipped, the
    /// others computed; a job cancelled while it runs is told so, and sends no answer.
    #[test]
    fn cancelled_and_orphaned_jobs_are_not_computed() {
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let g = gate.clone();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let told = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let t = told.clone();
        let pool: Pool<u32, u32> = Pool::spawn(
            vec![move |x: u32, cancel: &Cancel| {
                s.lock().unwrap().push(x);
                if x == 0 {
                    assert!(!cancel.is_cancelled());
                    let _wait = g.lock().unwrap();
                    t.store(cancel.is_cancelled(), Ordering::SeqCst);
                }
                Ok(x)
            }],
            8,
            "test",
        );
        let (mut a, mut b) = (pool.client(), pool.client());
        let running = a.submit(0, false).unwrap();
        while seen.lock().unwrap().is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let cancelled = a.submit(1, false).unwrap();
        let kept = a.submit(2, false).unwrap();
        b.submit(3, false).unwrap();
        a.cancel(cancelled);
        a.cancel(running);
        drop(b);
        drop(held);
        let answer = a.wait(Duration::from_secs(5)).unwrap();
        assert_eq!((answer.seq, answer.result), (kept, Ok(2)), "the running job, cancelled, sent no answer");
        assert!(a.wait(Duration::from_millis(100)).is_none());
        assert_eq!(*seen.lock().unwrap(), vec![0, 2]);
        assert!(told.load(Ordering::SeqCst), "the running job saw its cancellation");
        assert_eq!(pool.pending(), 0);
    }

    /// A batching thread takes every job queued while it was busy, up to its `max_batch`, in one
    /// call, in order; cancelled jobs are left out of the batch; a hung batch has every job
    /// answered with an error, and the new thread batches too.
    #[test]
    fn jobs_queued_behind_a_batch_are_computed_together() {
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let g = gate.clone();
        let batches = Arc::new(Mutex::new(Vec::new()));
        let b = batches.clone();
        let pool: Pool<u32, u32> = Pool::spawn_batched(
            vec![move |jobs: Vec<(u32, Cancel)>| {
                let xs: Vec<u32> = jobs.iter().map(|j| j.0).collect();
                b.lock().unwrap().push(xs.clone());
                if xs == [0] {
                    let _wait = g.lock().unwrap();
                }
                if xs.contains(&13) {
                    loop {
                        std::thread::sleep(Duration::from_secs(3600));
                    }
                }
                xs.iter().map(|x| Ok(x * 2)).collect()
            }],
            3,
            16,
            "batch",
        );
        pool.watch_batched(Duration::from_millis(200), || {
            Ok(|jobs: Vec<(u32, Cancel)>| jobs.iter().map(|j| Ok(j.0 * 3)).collect())
        });
        let mut c = pool.client();
        let first = c.submit(0, false).unwrap();
        while batches.lock().unwrap().is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let queued: Vec<u64> = (1..=5).map(|x| c.submit(x, false).unwrap()).collect();
        c.cancel(queued[1]);
        drop(held);
        let got: Vec<_> = (0..5).map(|_| c.wait(Duration::from_secs(5)).unwrap()).map(|a| (a.seq, a.result)).collect();
        assert_eq!(
            got,
            vec![(first, Ok(0)), (queued[0], Ok(2)), (queued[2], Ok(6)), (queued[3], Ok(8)), (queued[4], Ok(10))]
        );
        assert_eq!(
            *batches.lock().unwrap(),
            vec![vec![0], vec![1, 3, 4], vec![5]],
            "the cancelled job 2 left out of the batch of three"
        );
        // A batch that hangs: both its jobs fail at the limit; the new thread answers the next.
        // The thread is held on a job 0 while both are queued, so they are one batch.
        let held = gate.lock().unwrap();
        let zero = c.submit(0, false).unwrap();
        while batches.lock().unwrap().len() < 4 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let hung = [c.submit(13, false).unwrap(), c.submit(14, false).unwrap()];
        drop(held);
        let a = c.wait(Duration::from_secs(5)).unwrap();
        assert_eq!((a.seq, a.result), (zero, Ok(0)));
        let mut answers: Vec<_> =
            (0..2).map(|_| c.wait(Duration::from_secs(5)).expect("the hung batch is answered")).collect();
        answers.sort_by_key(|a| a.seq);
        for (a, seq) in answers.iter().zip(hung) {
            assert_eq!((a.seq, a.result.clone()), (seq, Err("the model did not answer within 200 ms".to_string())));
        }
        let next = c.submit(7, false).unwrap();
        let a = c.wait(Duration::from_secs(5)).unwrap();
        assert_eq!((a.seq, a.result), (next, Ok(21)), "by the new thread");
        assert_eq!(batches.lock().unwrap()[4], vec![13, 14], "the hung batch held both");
        assert_eq!(pool.pending(), 0);
    }
}
