//! Per-source rate limits and temporary blocks (sans-IO: every call is given `now`).
//!
//! Each untrusted source address has a token bucket for its SIP messages and a counter of
//! failed authentications. Going over either, or being caught as a scanner, blocks the address
//! for a while: its datagrams are then dropped before they are parsed, so a flood costs a hash
//! lookup each. The table is bounded: under a spoofed-source flood, once it is full, new
//! addresses go untracked (and are still subject to the ACL, the call limits and the
//! transaction cap) rather than growing memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub struct LimitConfig {
    /// Sustained messages per second per source; 0 turns the rate limit off.
    pub requests_per_s: f64,
    pub burst: f64,
    /// How long a source over the rate is ignored.
    pub rate_block: Duration,
    /// This many failed authentications within `auth_window` block the source for `auth_block`.
    pub max_failed_auth: u32,
    pub auth_window: Duration,
    pub auth_block: Duration,
    /// How long a scanner (by its User-Agent) is ignored.
    pub scanner_block: Duration,
    /// Most addresses tracked at once.
    pub max_sources: usize,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            requests_per_s: 20.0,
            burst: 50.0,
            rate_block: Duration::from_secs(60),
            max_failed_auth: 5,
            auth_window: Duration::from_secs(60),
            auth_block: Duration::from_secs(600),
            scanner_block: Duration::from_secs(3600),
            max_sources: 65_536,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockReason {
    Rate,
    FailedAuth,
    Scanner,
}

impl BlockReason {
    pub fn label(self) -> &'static str {
        match self {
            BlockReason::Rate => "rate",
            BlockReason::FailedAuth => "failed_auth",
            BlockReason::Scanner => "scanner",
        }
    }
}

/// What became of one message from an untrusted source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Pass,
    /// Dropped: the source is serving a block.
    Blocked,
    /// Dropped: this message put the source over its rate, and it is blocked from now.
    NewlyBlocked,
}

#[derive(Debug, Clone)]
struct SourceState {
    tokens: f64,
    refilled: Instant,
    failed_auth: u32,
    failed_since: Instant,
    blocked_until: Option<Instant>,
}

#[derive(Debug)]
pub struct Limiter {
    cfg: LimitConfig,
    sources: HashMap<IpAddr, SourceState>,
    last_sweep: Option<Instant>,
    /// Messages let through untracked because the table was full.
    pub untracked: u64,
}

impl Limiter {
    pub fn new(cfg: LimitConfig) -> Limiter {
        Limiter { cfg, sources: HashMap::new(), last_sweep: None, untracked: 0 }
    }

    pub fn config(&self) -> &LimitConfig {
        &self.cfg
    }

    /// Count one message from `ip`.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Admit {
        if let Some(s) = self.sources.get_mut(&ip) {
            if let Some(until) = s.blocked_until {
                if now < until {
                    return Admit::Blocked;
                }
                s.blocked_until = None;
                s.tokens = self.cfg.burst;
                s.refilled = now;
            }
        }
        if self.cfg.requests_per_s <= 0.0 {
            return Admit::Pass;
        }
        let (rate, burst, block) = (self.cfg.requests_per_s, self.cfg.burst.max(1.0), self.cfg.rate_block);
        let Some(s) = self.state(ip, now) else { return Admit::Pass };
        let elapsed = now.saturating_duration_since(s.refilled).as_secs_f64();
        s.tokens = (s.tokens + elapsed * rate).min(burst);
        s.refilled = now;
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            Admit::Pass
        } else {
            s.blocked_until = Some(now + block);
            Admit::NewlyBlocked
        }
    }

    /// Count a failed authentication; true when it blocks the source from now.
    pub fn failed_auth(&mut self, ip: IpAddr, now: Instant) -> bool {
        let (max, window, block) = (self.cfg.max_failed_auth, self.cfg.auth_window, self.cfg.auth_block);
        let Some(s) = self.state(ip, now) else { return false };
        if now.saturating_duration_since(s.failed_since) > window {
            s.failed_auth = 0;
            s.failed_since = now;
        }
        s.failed_auth += 1;
        if max > 0 && s.failed_auth >= max {
            s.failed_auth = 0;
            s.blocked_until = Some(now + block);
            return true;
        }
        false
    }

    pub fn block(&mut self, ip: IpAddr, reason: BlockReason, now: Instant) {
        let d = match reason {
            BlockReason::Rate => self.cfg.rate_block,
            BlockReason::FailedAuth => self.cfg.auth_block,
            BlockReason::Scanner => self.cfg.scanner_block,
        };
        if let Some(s) = self.state(ip, now) {
            s.blocked_until = Some(now + d);
        }
    }

    pub fn is_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.sources.get(&ip).and_then(|s| s.blocked_until).is_some_and(|u| now < u)
    }

    pub fn blocked_sources(&self, now: Instant) -> usize {
        self.sources.values().filter(|s| s.blocked_until.is_some_and(|u| now < u)).count()
    }

    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    /// The source's entry, made if there is room. A full table is swept of idle entries
    /// (full bucket, no failures, no block) at most once a second.
    fn state(&mut self, ip: IpAddr, now: Instant) -> Option<&mut SourceState> {
        if !self.sources.contains_key(&ip) {
            if self.sources.len() >= self.cfg.max_sources {
                if self.last_sweep.is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1)) {
                    self.last_sweep = Some(now);
                    let (rate, burst, window) = (self.cfg.requests_per_s, self.cfg.burst, self.cfg.auth_window);
                    self.sources.retain(|_, s| {
                        let refilled =
                            (s.tokens + now.saturating_duration_since(s.refilled).as_secs_f64() * rate) >= burst;
                        let idle = s.blocked_until.is_none_or(|u| now >= u)
                            && (s.failed_auth == 0 || now.saturating_duration_since(s.failed_since) > window)
                            && (rate <= 0.0 || refilled);
                        !idle
                    });
                }
                if self.sources.len() >= self.cfg.max_sources {
                    self.untracked += 1;
                    return None;
                }
            }
            self.sources.insert(
                ip,
                SourceState {
                    tokens: self.cfg.burst.max(1.0),
                    refilled: now,
                    failed_auth: 0,
                    failed_since: now,
                    blocked_until: None,
                },
            );
        }
        self.sources.get_mut(&ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0xc000_0200 + n))
    }

    #[test]
    fn a_source_over_its_rate_is_blocked_for_the_block_time_then_let_back() {
        let cfg = LimitConfig {
            requests_per_s: 10.0,
            burst: 5.0,
            rate_block: Duration::from_secs(60),
            ..LimitConfig::default()
        };
        let mut l = Limiter::new(cfg);
        let t0 = Instant::now();
        // The burst passes at once, the next message blocks.
        for _ in 0..5 {
            assert_eq!(l.admit(ip(1), t0), Admit::Pass);
        }
        assert_eq!(l.admit(ip(1), t0), Admit::NewlyBlocked);
        assert_eq!(l.admit(ip(1), t0 + Duration::from_secs(59)), Admit::Blocked);
        // Another source is not affected.
        assert_eq!(l.admit(ip(2), t0), Admit::Pass);
        assert_eq!(l.blocked_sources(t0), 1);
        // After the block, a full bucket again.
        let t1 = t0 + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(l.admit(ip(1), t1), Admit::Pass);
        }
        assert_eq!(l.blocked_sources(t1), 0);
    }

    #[test]
    fn a_steady_source_at_its_rate_is_never_blocked() {
        let cfg = LimitConfig { requests_per_s: 10.0, burst: 2.0, ..LimitConfig::default() };
        let mut l = Limiter::new(cfg);
        let t0 = Instant::now();
        for i in 0..1000u64 {
            assert_eq!(l.admit(ip(1), t0 + Duration::from_millis(i * 100)), Admit::Pass, "message {i}");
        }
    }

    #[test]
    fn failed_authentications_block_only_within_the_window() {
        let cfg = LimitConfig {
            max_failed_auth: 3,
            auth_window: Duration::from_secs(60),
            auth_block: Duration::from_secs(600),
            ..LimitConfig::default()
        };
        let mut l = Limiter::new(cfg);
        let t0 = Instant::now();
        // Two failures, then a pause longer than the window: the count starts again.
        assert!(!l.failed_auth(ip(1), t0));
        assert!(!l.failed_auth(ip(1), t0 + Duration::from_secs(1)));
        assert!(!l.failed_auth(ip(1), t0 + Duration::from_secs(120)));
        assert!(!l.failed_auth(ip(1), t0 + Duration::from_secs(121)));
        assert!(l.failed_auth(ip(1), t0 + Duration::from_secs(122)));
        assert!(l.is_blocked(ip(1), t0 + Duration::from_secs(700)));
        assert!(!l.is_blocked(ip(1), t0 + Duration::from_secs(723)));
    }

    #[test]
    fn the_table_is_bounded_and_keeps_its_blocks_under_a_spoofed_flood() {
        let cfg = LimitConfig { requests_per_s: 10.0, burst: 1.0, max_sources: 100, ..LimitConfig::default() };
        let mut l = Limiter::new(cfg);
        let t0 = Instant::now();
        l.block(ip(0), BlockReason::Scanner, t0);
        for n in 1..100_000 {
            l.admit(ip(n), t0 + Duration::from_micros(n as u64));
            assert!(l.tracked() <= 100);
        }
        assert!(l.untracked > 0);
        assert!(l.is_blocked(ip(0), t0 + Duration::from_secs(1)), "a block survives the sweep");
        // Later, idle entries are swept and new sources are tracked again.
        let later = t0 + Duration::from_secs(10);
        l.admit(ip(200_000), later);
        assert!(l.sources.contains_key(&ip(200_000)));
        assert!(l.is_blocked(ip(0), later));
    }

    #[test]
    fn a_zero_rate_turns_the_limit_off_but_keeps_blocks() {
        let mut l = Limiter::new(LimitConfig { requests_per_s: 0.0, ..LimitConfig::default() });
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(l.admit(ip(1), t0), Admit::Pass);
        }
        assert_eq!(l.tracked(), 0, "nothing is tracked without a limit");
        l.block(ip(1), BlockReason::Scanner, t0);
        assert_eq!(l.admit(ip(1), t0), Admit::Blocked);
    }
}
