//! Model work off the async runtime: a few threads, each owning its own copy
//! of a model (an ONNX Runtime session runs one request at a time), fed from
//! one bounded queue. A call submits without waiting and polls for the
//! answer from its media loop: a full queue refuses the job (the call counts
//! it and degrades) rather than delaying every other call. Low-priority jobs
//! (partial transcripts) are only accepted while a thread would otherwise be
//! idle, so they never delay real work. A model that errors or panics answers
//! that one job with an error and its thread goes on. A job nobody wants any
//! more (cancelled, or its client dropped: the call ended) is skipped, not
//! computed, when its turn comes.

use super::backlog::{Backlog, Waiting};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

struct Job<I, O> {
    seq: u64,
    input: I,
    low_priority: bool,
    submitted: Instant,
    reply: Sender<Answer<O>>,
    cancelled: Arc<AtomicBool>,
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
    /// Jobs submitted and not yet answered, across clients.
    pending: Arc<AtomicUsize>,
    threads: usize,
    backlog: Arc<Backlog>,
}

impl<I: Send + 'static, O: Send + 'static> Pool<I, O> {
    /// One thread per worker function (each owns its model), sharing a queue of `queue` jobs.
    pub fn spawn<W>(workers: Vec<W>, queue: usize, name: &str) -> Pool<I, O>
    where
        W: FnMut(I) -> Result<O, String> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel::<Job<I, O>>(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let pending = Arc::new(AtomicUsize::new(0));
        let threads = workers.len();
        for (i, work) in workers.into_iter().enumerate() {
            let rx = rx.clone();
            let pending = pending.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || run(work, rx, pending))
                .expect("spawn a model thread");
        }
        Pool { tx, pending, threads, backlog: Backlog::new() }
    }

    pub fn client(&self) -> PoolClient<I, O> {
        let (reply, answers) = mpsc::channel();
        PoolClient { tx: self.tx.clone(), pending: self.pending.clone(), threads: self.threads, reply, answers, next_seq: 0, outstanding: HashMap::new(), backlog: self.backlog.clone() }
    }

    /// The jobs waiting for a thread.
    pub fn backlog(&self) -> &Arc<Backlog> {
        &self.backlog
    }

    /// Jobs waiting or running, across clients.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    pub fn threads(&self) -> usize {
        self.threads
    }
}

fn run<I, O, W: FnMut(I) -> Result<O, String>>(mut work: W, rx: Arc<Mutex<Receiver<Job<I, O>>>>, pending: Arc<AtomicUsize>) {
    loop {
        // The lock is held only while waiting for the next job, never while working.
        let job = match rx.lock() {
            Ok(rx) => match rx.recv() {
                Ok(j) => j,
                Err(_) => return, // every sender is gone: shutting down
            },
            Err(_) => return,
        };
        let Job { seq, input, low_priority, submitted, reply, cancelled, _waiting } = job;
        drop(_waiting);
        if cancelled.load(Ordering::Relaxed) {
            pending.fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(input))) {
            Ok(r) => r,
            Err(_) => Err("the model panicked on this input".to_string()),
        };
        pending.fetch_sub(1, Ordering::Relaxed);
        // A call that has ended dropped its receiver: nothing to do.
        if !cancelled.load(Ordering::Relaxed) {
            let _ = reply.send(Answer { seq, low_priority, result, latency_ms: submitted.elapsed().as_secs_f64() * 1000.0 });
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
    outstanding: HashMap<u64, Arc<AtomicBool>>,
    backlog: Arc<Backlog>,
}

impl<I, O> PoolClient<I, O> {
    /// Queue a job; the number identifies its answer. `None`: refused (queue full, or a
    /// low-priority job while no thread is idle).
    pub fn submit(&mut self, input: I, low_priority: bool) -> Option<u64> {
        if low_priority && self.pending.load(Ordering::Relaxed) >= self.threads {
            return None;
        }
        let seq = self.next_seq;
        let cancelled = Arc::new(AtomicBool::new(false));
        let now = Instant::now();
        let job = Job { seq, input, low_priority, submitted: now, reply: self.reply.clone(), cancelled: cancelled.clone(), _waiting: self.backlog.enter(now) };
        self.pending.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(job) {
            Ok(()) => {
                self.next_seq += 1;
                self.outstanding.insert(seq, cancelled);
                Some(seq)
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                None
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
            flag.store(true, Ordering::Relaxed);
        }
    }
}

impl<I, O> Drop for PoolClient<I, O> {
    /// The client's jobs are nobody's now (its call has ended).
    fn drop(&mut self) {
        for flag in self.outstanding.values() {
            flag.store(true, Ordering::Relaxed);
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
            vec![move |x: u32| {
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

    /// Jobs queued behind a busy thread: a cancelled one and a dropped client's are skipped, the
    /// others computed; a job cancelled while it runs finishes without an answer.
    #[test]
    fn cancelled_and_orphaned_jobs_are_not_computed() {
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let g = gate.clone();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let pool: Pool<u32, u32> = Pool::spawn(
            vec![move |x: u32| {
                s.lock().unwrap().push(x);
                if x == 0 {
                    let _wait = g.lock().unwrap();
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
        assert_eq!(pool.pending(), 0);
    }
}
