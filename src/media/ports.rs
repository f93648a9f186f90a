//! RTP port allocation.
//!
//! RTP uses even ports with RTCP on port + 1 (RFC 3550 §11), so the pool hands
//! out even ports `p` with `low <= p` and `p + 1 <= high`: both ports of the
//! pair lie inside the configured (firewalled) range. Port 0 is never handed
//! out.
//!
//! Free ports form a FIFO queue: acquire takes the front, release appends to
//! the back. That is round-robin over the range and means a just-released
//! port is the last to be reused, so stray packets for a finished call (late
//! RTP, a peer that has not seen the BYE yet) are unlikely to land in a new
//! call.

use std::collections::VecDeque;

pub struct PortPool {
    low: u16,
    /// Ports not in use, least recently released first.
    free: VecDeque<u16>,
    /// Indexed by `(port - low) / 2`: whether the port is handed out, so a
    /// double or foreign release cannot corrupt the queue.
    in_use: Vec<bool>,
    in_use_count: usize,
}

impl PortPool {
    /// Pool of the even ports in `[low, high]` whose RTCP port also fits. An
    /// empty or inverted range gives an empty pool (acquire returns `None`).
    pub fn new(low: u16, high: u16) -> Self {
        // First even port >= max(low, 2); u32 so that the +1 steps cannot overflow.
        let first = u32::from(low.max(2)).next_multiple_of(2);
        let free: VecDeque<u16> = (first..u32::from(high))
            .step_by(2)
            .map(|p| p as u16) // p < high <= u16::MAX
            .collect();
        let low = free.front().copied().unwrap_or(0);
        let in_use = vec![false; free.len()];
        Self { low, free, in_use, in_use_count: 0 }
    }

    /// Next free port in round-robin order, or `None` when all are in use.
    pub fn acquire(&mut self) -> Option<u16> {
        let port = self.free.pop_front()?;
        if let Some(slot) = self.slot(port) {
            self.in_use[slot] = true;
        }
        self.in_use_count += 1;
        Some(port)
    }

    /// Return a port to the back of the queue. Ports that are not currently
    /// handed out (double release, foreign port) are ignored.
    pub fn release(&mut self, port: u16) {
        let Some(slot) = self.slot(port) else { return };
        if !self.in_use[slot] {
            return;
        }
        self.in_use[slot] = false;
        self.in_use_count -= 1;
        self.free.push_back(port);
    }

    pub fn in_use(&self) -> usize {
        self.in_use_count
    }

    pub fn capacity(&self) -> usize {
        self.in_use.len()
    }

    fn slot(&self, port: u16) -> Option<usize> {
        if port < self.low || port % 2 != 0 {
            return None;
        }
        let slot = usize::from((port - self.low) / 2);
        (slot < self.in_use.len()).then_some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_even_ports_with_rtcp_in_range() {
        let mut pool = PortPool::new(10_001, 10_010);
        assert_eq!(pool.capacity(), 4); // 10002, 10004, 10006, 10008 (10010's RTCP would be 10011)
        let got: Vec<u16> = std::iter::from_fn(|| pool.acquire()).collect();
        assert_eq!(got, [10_002, 10_004, 10_006, 10_008]);
        assert_eq!(pool.in_use(), 4);
        assert_eq!(pool.acquire(), None);
    }

    #[test]
    fn inclusive_high_bound() {
        let mut pool = PortPool::new(10_000, 10_003);
        assert_eq!(pool.capacity(), 2);
        assert_eq!(pool.acquire(), Some(10_000));
        assert_eq!(pool.acquire(), Some(10_002));
        let pool = PortPool::new(65_530, 65_535);
        assert_eq!(pool.capacity(), 3); // 65530, 65532, 65534
    }

    #[test]
    fn round_robin_does_not_reuse_just_released() {
        let mut pool = PortPool::new(20_000, 20_007); // 20000, 20002, 20004, 20006
        let a = pool.acquire().unwrap();
        pool.release(a);
        assert_eq!(pool.acquire(), Some(20_002));
        assert_eq!(pool.acquire(), Some(20_004));
        assert_eq!(pool.acquire(), Some(20_006));
        assert_eq!(pool.acquire(), Some(20_000)); // only now comes back
        assert_eq!(pool.acquire(), None);
        assert_eq!(pool.in_use(), 4);
    }

    #[test]
    fn bad_releases_are_ignored() {
        let mut pool = PortPool::new(30_000, 30_004); // 30000, 30002
        let a = pool.acquire().unwrap();
        pool.release(a);
        pool.release(a); // double release
        pool.release(30_001); // odd
        pool.release(29_998); // below range
        pool.release(30_004); // above range (its RTCP port would be outside)
        pool.release(30_002); // in range but never acquired
        assert_eq!(pool.in_use(), 0);
        assert_eq!(pool.capacity(), 2);
        assert_eq!(pool.acquire(), Some(30_002));
        assert_eq!(pool.acquire(), Some(30_000));
        assert_eq!(pool.acquire(), None);
    }

    #[test]
    fn degenerate_ranges() {
        for (lo, hi) in [(10, 5), (10, 10), (0, 0), (0, 1), (u16::MAX, u16::MAX)] {
            let mut pool = PortPool::new(lo, hi);
            assert_eq!(pool.capacity(), 0, "{lo}..{hi}");
            assert_eq!(pool.acquire(), None);
            pool.release(lo);
        }
        // Port 0 is skipped: 0..=5 yields 2 and 4.
        let mut pool = PortPool::new(0, 5);
        assert_eq!(pool.acquire(), Some(2));
        assert_eq!(pool.acquire(), Some(4));
        assert_eq!(pool.acquire(), None);
        // Full range.
        assert_eq!(PortPool::new(0, u16::MAX).capacity(), 32_767);
    }

    #[test]
    fn bind_failure_pattern() {
        // Driver: acquire, bind fails, acquire the next, release the failed one.
        let mut pool = PortPool::new(40_000, 40_005);
        let failed = pool.acquire().unwrap();
        let ok = pool.acquire().unwrap();
        pool.release(failed);
        assert_ne!(failed, ok);
        assert_eq!(pool.in_use(), 1);
        pool.release(ok);
        assert_eq!(pool.in_use(), 0);
    }
}
