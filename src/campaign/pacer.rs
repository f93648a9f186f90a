//! How fast the dialer may start calls. Sans-IO: time is passed in.
//!
//! Two limits: calls in progress (`max_concurrent`) and the start rate
//! (`calls_per_second`). The rate is a token bucket of capacity one: after a
//! start, the next may come one interval (1 / rate) later, never earlier,
//! and an idle pacer saves up no more than one start. So calls are spaced
//! evenly and never burst — a trunk's CPS limit counts starts per second,
//! and carriers flag bursts as robocalling. A late wake-up loses time rather
//! than catching up, so the real rate is at most the configured one.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct DialPacer {
    max_concurrent: usize,
    interval: Duration,
    /// The earliest instant the next start is allowed; `None` before the first.
    next_start: Option<Instant>,
}

impl DialPacer {
    /// `calls_per_second` must be positive and finite (the campaign file is
    /// validated); anything else is clamped to one call per 1000 s … 1000 per second.
    pub fn new(max_concurrent: usize, calls_per_second: f64) -> DialPacer {
        let rate = if calls_per_second.is_finite() { calls_per_second.clamp(0.001, 1000.0) } else { 1.0 };
        // Rounded up to the nanosecond so the spacing is never below 1 / rate.
        let interval = Duration::from_nanos((1e9 / rate).ceil() as u64);
        DialPacer { max_concurrent: max_concurrent.max(1), interval, next_start: None }
    }

    /// The spacing between starts.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// How many calls may start now, with `active` calls in progress (0 or 1:
    /// the bucket holds one start). Call `started` for each one started.
    pub fn allowance(&mut self, now: Instant, active: usize) -> usize {
        let free = self.max_concurrent.saturating_sub(active);
        let rate_ok = self.next_start.is_none_or(|t| now >= t);
        if rate_ok {
            free.min(1)
        } else {
            0
        }
    }

    /// A call was started at `now`.
    pub fn started(&mut self, now: Instant) {
        // From the actual start, not the scheduled one: a late start delays the next.
        self.next_start = Some(now + self.interval);
    }

    /// When the rate next allows a start, if it does not now. `None`: the rate
    /// allows one now, so only a free slot (a call ending) or a contact
    /// becoming due can be waited for.
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        self.next_start.filter(|&t| t > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spaces_starts_by_the_interval() {
        let t0 = Instant::now();
        let mut p = DialPacer::new(10, 2.0);
        assert_eq!(p.interval(), Duration::from_millis(500));
        assert_eq!(p.allowance(t0, 0), 1);
        p.started(t0);
        assert_eq!(p.allowance(t0, 1), 0);
        assert_eq!(p.next_wake(t0), Some(t0 + Duration::from_millis(500)));
        assert_eq!(p.allowance(t0 + Duration::from_millis(499), 1), 0);
        assert_eq!(p.allowance(t0 + Duration::from_millis(500), 1), 1);
        assert_eq!(p.next_wake(t0 + Duration::from_millis(500)), None);
    }

    #[test]
    fn idle_time_saves_up_only_one_start() {
        let t0 = Instant::now();
        let mut p = DialPacer::new(10, 1.0);
        p.started(t0);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(p.allowance(later, 0), 1);
        p.started(later);
        assert_eq!(p.allowance(later, 1), 0);
    }

    #[test]
    fn concurrency_caps_even_when_the_rate_allows() {
        let t0 = Instant::now();
        let mut p = DialPacer::new(2, 100.0);
        assert_eq!(p.allowance(t0, 2), 0);
        assert_eq!(p.allowance(t0, 5), 0);
        assert_eq!(p.allowance(t0, 1), 1);
        assert_eq!(p.next_wake(t0), None);
    }

    #[test]
    fn fractional_rates_and_bad_values() {
        assert_eq!(DialPacer::new(1, 0.5).interval(), Duration::from_secs(2));
        assert_eq!(DialPacer::new(1, 3.0).interval(), Duration::from_nanos(333_333_334));
        assert_eq!(DialPacer::new(1, f64::NAN).interval(), Duration::from_secs(1));
        assert_eq!(DialPacer::new(1, 0.0).interval(), Duration::from_secs(1000));
        assert_eq!(DialPacer::new(0, 1.0).max_concurrent(), 1);
    }

    /// A dialer in virtual time: wake at the pacer's time or when a call ends,
    /// start what the pacer allows, each call lasting a random duration.
    fn simulate(max_concurrent: usize, rate: f64, durations_ms: &[u64], horizon: Duration) -> (Vec<Duration>, usize) {
        let t0 = Instant::now();
        let mut p = DialPacer::new(max_concurrent, rate);
        let mut ends: Vec<Instant> = Vec::new();
        let mut starts = Vec::new();
        let mut peak = 0;
        let mut now = t0;
        let mut next_duration = durations_ms.iter().cycle();
        while now - t0 < horizon {
            ends.retain(|&e| e > now);
            let n = p.allowance(now, ends.len());
            for _ in 0..n {
                p.started(now);
                starts.push(now - t0);
                ends.push(now + Duration::from_millis(*next_duration.next().unwrap_or(&1000)));
            }
            peak = peak.max(ends.len());
            // Sleep until the pacer or the first call end, whichever is first.
            let wake = [p.next_wake(now), ends.iter().min().copied()].into_iter().flatten().min();
            now = match wake {
                Some(w) if w > now => w,
                _ => now + Duration::from_millis(1),
            };
        }
        (starts, peak)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn never_exceeds_either_limit(
            max_concurrent in 1usize..20,
            rate in 0.05f64..20.0,
            durations in proptest::collection::vec(0u64..20_000, 1..50),
        ) {
            let (starts, peak) = simulate(max_concurrent, rate, &durations, Duration::from_secs(40));
            prop_assert!(peak <= max_concurrent, "peak {peak} > {max_concurrent}");
            prop_assert!(!starts.is_empty());
            // In every interval [starts[i], starts[j]] of length t, at most ceil(rate·t) + 1 starts.
            for i in 0..starts.len() {
                for j in i..starts.len() {
                    let t = (starts[j] - starts[i]).as_secs_f64();
                    let n = (j - i + 1) as f64;
                    prop_assert!(n <= (rate * t).ceil() + 1.0, "{n} starts in {t} s at {rate}/s");
                }
            }
        }
    }

    #[test]
    fn a_long_run_reaches_the_configured_rate_when_calls_are_short() {
        // 2/s with 50 ms calls for 60 s: 120 starts (the first at t = 0).
        let (starts, peak) = simulate(5, 2.0, &[50], Duration::from_secs(60));
        assert_eq!(starts.len(), 120);
        assert_eq!(peak, 1);
    }

    #[test]
    fn long_calls_are_held_to_max_concurrent() {
        // 10/s but calls of 10 s and 3 slots: 3 starts per 10 s.
        let (starts, peak) = simulate(3, 10.0, &[10_000], Duration::from_secs(30));
        assert_eq!(peak, 3);
        assert_eq!(starts.len(), 9);
    }
}
