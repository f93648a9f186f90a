//! What the embedded model's watchdog sees of a worker thread (`local::LocalLlm::watch`).
//!
//! A worker is one `Generation`: it says when its current step began (a prompt chunk or one batched
//! decoding pass, each well under a second), and holds the jobs it took off the queue (`Ticket`)
//! and the replies it owes (`Owed`). A step that has not returned within the limit has hung: the
//! watchdog retires the generation — every reply it owes is answered with an error at once (the
//! callers hear the apology), its jobs stop counting for `is_idle` — and starts a new worker with a
//! fresh copy of the model on the same queue. The hung thread is left to itself: it holds no lock
//! while it computes, and if its step ever returns it sees it was retired and ends without a word.

use super::{LlmError, LlmEvent};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub(super) type ReplyTx = Sender<Result<LlmEvent, LlmError>>;

/// One worker thread's life, shared with the watchdog.
pub(super) struct Generation {
    epoch: Instant,
    /// When the step now running began (ms since `epoch`, plus one); 0 while the worker waits for jobs.
    busy_since: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    retired: bool,
    /// Jobs this worker took off the queue and still holds (each counts in the handle's `jobs`).
    tickets: usize,
    next: u64,
    /// The replies it owes an answer to, by registration number.
    owed: HashMap<u64, ReplyTx>,
}

impl Generation {
    pub fn new() -> Arc<Generation> {
        Arc::new(Generation { epoch: Instant::now(), busy_since: AtomicU64::new(0), state: Mutex::default() })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A step begins now.
    pub fn busy(&self) {
        self.busy_since.store(self.epoch.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
    }

    /// The worker waits for jobs.
    pub fn idle(&self) {
        self.busy_since.store(0, Ordering::Relaxed);
    }

    /// How long the step now running has run (`None` while idle).
    pub fn stuck_for(&self) -> Option<Duration> {
        let since = self.busy_since.load(Ordering::Relaxed).checked_sub(1)?;
        Some(self.epoch.elapsed().saturating_sub(Duration::from_millis(since)))
    }

    pub fn is_retired(&self) -> bool {
        self.state().retired
    }

    /// The watchdog gives up on this worker: what it owes is answered with `why`, and its jobs no
    /// longer count in `jobs`. How many replies were answered.
    pub fn retire(&self, jobs: &AtomicUsize, why: &'static str) -> usize {
        let owed = {
            let mut s = self.state();
            s.retired = true;
            jobs.fetch_sub(std::mem::take(&mut s.tickets), Ordering::SeqCst);
            std::mem::take(&mut s.owed)
        };
        for tx in owed.values() {
            let _ = tx.send(Err(LlmError::Timeout(why)));
        }
        owed.len()
    }
}

/// One job taken off the queue, counted in the handle's `jobs` until dropped (or its worker retired).
pub(super) struct Ticket {
    jobs: Arc<AtomicUsize>,
    life: Arc<Generation>,
}

impl Ticket {
    pub fn new(jobs: &Arc<AtomicUsize>, life: &Arc<Generation>) -> Ticket {
        life.state().tickets += 1;
        Ticket { jobs: jobs.clone(), life: life.clone() }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = self.life.state();
        // A retired worker's jobs were taken off the count when it was retired.
        if !s.retired {
            s.tickets -= 1;
            self.jobs.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A reply the worker owes: the watchdog can answer it while the worker hangs. Dropped with the reply.
pub(super) struct Owed {
    id: u64,
    life: Arc<Generation>,
}

impl Owed {
    pub fn new(life: &Arc<Generation>, tx: &ReplyTx) -> Owed {
        let mut s = life.state();
        s.next += 1;
        let id = s.next;
        s.owed.insert(id, tx.clone());
        Owed { id, life: life.clone() }
    }
}

impl Drop for Owed {
    fn drop(&mut self) {
        self.life.state().owed.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retiring_answers_what_is_owed_and_uncounts_the_jobs() {
        let jobs = Arc::new(AtomicUsize::new(3));
        let life = Generation::new();
        let (t1, t2) = (Ticket::new(&jobs, &life), Ticket::new(&jobs, &life));
        let (tx, rx) = std::sync::mpsc::channel();
        let (tx2, rx2) = std::sync::mpsc::channel();
        let owed = Owed::new(&life, &tx);
        drop(Owed::new(&life, &tx2)); // answered already: no longer owed
        drop(t1);
        assert_eq!(jobs.load(Ordering::SeqCst), 2, "a finished job leaves the count");
        assert_eq!(life.stuck_for(), None);
        life.busy();
        assert!(life.stuck_for().is_some());
        assert_eq!(life.retire(&jobs, "hung"), 1);
        assert_eq!(jobs.load(Ordering::SeqCst), 1, "the retired worker's job is uncounted (the third was never taken)");
        assert!(matches!(rx.try_recv(), Ok(Err(LlmError::Timeout("hung")))));
        assert!(rx2.try_recv().is_err());
        // The hung thread's leftovers, if it ever returns, change nothing.
        drop(t2);
        drop(owed);
        assert_eq!(jobs.load(Ordering::SeqCst), 1);
        assert!(life.is_retired());
    }
}
