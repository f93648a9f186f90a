//! How long the oldest job now waiting for a model has waited: the load signal the appliance's
//! admission reads (`calls.max_queue_wait_ms`) and `switchboard_model_queue_wait_seconds` shows.
//! A queue's length says little (a partial transcript is quick, a long prompt is not); the wait of
//! its oldest job is what the next caller would feel.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Backlog {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    /// Jobs waiting, and since when.
    waiting: BTreeMap<u64, Instant>,
}

impl Backlog {
    pub fn new() -> Arc<Backlog> {
        Arc::new(Backlog::default())
    }

    /// A job waits from `since` until the guard is dropped (the job starts, or is dropped).
    pub fn enter(self: &Arc<Backlog>, since: Instant) -> Waiting {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let id = g.next;
        g.next += 1;
        g.waiting.insert(id, since);
        Waiting { backlog: self.clone(), id }
    }

    /// How long the oldest waiting job has waited at `now` (zero when none waits).
    pub fn oldest_wait(&self, now: Instant) -> Duration {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.waiting.values().min().map_or(Duration::ZERO, |&t| now.saturating_duration_since(t))
    }

    pub fn waiting(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).waiting.len()
    }
}

/// One waiting job; it stops waiting when dropped.
pub struct Waiting {
    backlog: Arc<Backlog>,
    id: u64,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.backlog.inner.lock().unwrap_or_else(|p| p.into_inner()).waiting.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_waiting_job_sets_the_wait() {
        let b = Backlog::new();
        let t0 = Instant::now();
        assert_eq!(b.oldest_wait(t0), Duration::ZERO);
        let first = b.enter(t0);
        let second = b.enter(t0 + Duration::from_millis(300));
        assert_eq!(b.oldest_wait(t0 + Duration::from_millis(500)), Duration::from_millis(500));
        drop(first);
        assert_eq!(b.oldest_wait(t0 + Duration::from_millis(500)), Duration::from_millis(200));
        assert_eq!(b.waiting(), 1);
        drop(second);
        assert_eq!((b.oldest_wait(t0 + Duration::from_secs(9)), b.waiting()), (Duration::ZERO, 0));
    }
}
