//! Virtual-time simulation of a call's inbound stream through the jitter
//! buffer, shared by `tests/jitter_hour.rs` and `examples/jitter_report.rs`.
//! Not part of the appliance.

use super::{JitterBuffer, JitterConfig, JitterStats, MediaPacket, Playout};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    None,
    /// Each packet lost independently with this probability.
    Uniform(f64),
    /// Gilbert–Elliott: every packet is lost in the bad state, none in the
    /// good one; `rate` is the stationary loss rate, bursts are
    /// geometric with mean `mean_burst` packets.
    Bursty {
        rate: f64,
        mean_burst: f64,
    },
}

impl Loss {
    pub fn rate(self) -> f64 {
        match self {
            Loss::None => 0.0,
            Loss::Uniform(p) | Loss::Bursty { rate: p, .. } => p,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub seed: u64,
    pub duration: Duration,
    /// Sender packet time (in the sender's clock).
    pub ptime: Duration,
    pub clock_rate: u32,
    pub loss: Loss,
    /// One-way network delay every packet has.
    pub base_delay: Duration,
    /// Extra delay per packet, uniform in `0..jitter`, independent per
    /// packet (so packets reorder whenever two draws differ by more than
    /// the packet time).
    pub jitter: Duration,
    /// Probability that a packet is also held back behind its successor.
    pub swap_prob: f64,
    /// Probability that a packet arrives twice (the copy up to 40 ms later).
    pub duplicate_prob: f64,
    /// Sender clock error: +100 means the sender's clock runs 100 ppm fast.
    pub drift_ppm: f64,
    /// At this fraction of the call the timestamp jumps forward by this
    /// many samples (the sequence number continues).
    pub ts_jump: Option<(f64, u32)>,
    /// At this fraction of the call the sender restarts with a new SSRC,
    /// sequence number and timestamp.
    pub ssrc_change: Option<f64>,
    /// Phase of the receiver's 20 ms tick relative to the sender's grid.
    pub tick_offset: Duration,
    /// Delay bounds are checked from this point of the call on.
    pub warmup: Duration,
    pub config: JitterConfig,
}

impl Scenario {
    /// One hour of 20 ms G.711 with 30 ms of jitter, explicit swaps (0.5 %),
    /// duplicates (1 %), a +10 s timestamp jump at 30 min and an SSRC
    /// change at 45 min, with the given loss and drift.
    pub fn hour(name: &str, seed: u64, loss: Loss, drift_ppm: f64) -> Scenario {
        Scenario {
            name: name.to_string(),
            seed,
            duration: Duration::from_secs(3600),
            ptime: Duration::from_millis(20),
            clock_rate: 8000,
            loss,
            base_delay: Duration::from_millis(40),
            jitter: Duration::from_millis(30),
            swap_prob: 0.005,
            duplicate_prob: 0.01,
            drift_ppm,
            ts_jump: Some((0.5, 80_000)),
            ssrc_change: Some(0.75),
            tick_offset: Duration::from_millis(7),
            warmup: Duration::from_secs(5),
            config: JitterConfig::default(),
        }
    }

    /// Resync-causing events injected.
    pub fn events(&self) -> u64 {
        u64::from(self.ts_jump.is_some()) + u64::from(self.ssrc_change.is_some())
    }
}

/// The scenarios of the report: every loss pattern at 0 and ±100 ppm.
pub fn standard() -> Vec<Scenario> {
    let losses = [
        ("no loss", Loss::None),
        ("uniform 5 %", Loss::Uniform(0.05)),
        ("uniform 20 %", Loss::Uniform(0.20)),
        ("bursty 5 %", Loss::Bursty { rate: 0.05, mean_burst: 3.0 }),
        ("bursty 20 %", Loss::Bursty { rate: 0.20, mean_burst: 3.0 }),
    ];
    let mut out = Vec::new();
    for (i, (lname, loss)) in losses.into_iter().enumerate() {
        for (j, drift) in [0.0, 100.0, -100.0].into_iter().enumerate() {
            let name = format!("{lname}, {drift:+} ppm");
            out.push(Scenario::hour(&name, 1000 + (i * 3 + j) as u64, loss, drift));
        }
    }
    out
}

#[derive(Debug, Clone, Default)]
pub struct SimReport {
    pub name: String,
    /// Packets the sender emitted, and of those dropped by the network.
    pub sent: u64,
    pub wire_lost: u64,
    /// Resync-causing events injected.
    pub events: u64,
    /// Slots handed out by the buffer, by kind.
    pub played: u64,
    pub concealed: u64,
    pub stretched: u64,
    /// Samples handed to the decoder (played + concealed + stretched)
    /// against samples the sender produced.
    pub output_samples: u64,
    pub sent_samples: u64,
    /// Packets played out of sending order (must be 0).
    pub out_of_order: u64,
    /// Added delay of played packets: tick at which the packet was
    /// popped minus (send time + base network delay). Includes the
    /// driver's tick quantisation (0..20 ms, 10 ms on average).
    pub mean_delay_ms: f64,
    pub p95_delay_ms: f64,
    pub max_delay_ms: f64,
    /// Extremes of `current_delay()` sampled at every tick after warm-up.
    pub min_current_ms: f64,
    pub max_current_ms: f64,
    /// Ticks at which the buffer handed out nothing although the sender
    /// was mid-stream (after warm-up).
    pub empty_ticks: u64,
    pub stats: JitterStats,
}

impl SimReport {
    pub fn slots(&self) -> u64 {
        self.played + self.concealed + self.stretched
    }

    /// Concealed slots (loss and underrun, not stretches) over all slots.
    pub fn concealment_ratio(&self) -> f64 {
        self.concealed as f64 / self.slots().max(1) as f64
    }

    /// Packets the network lost, as a fraction of those sent.
    pub fn wire_loss_ratio(&self) -> f64 {
        self.wire_lost as f64 / self.sent.max(1) as f64
    }
}

const BIN_NS: u64 = 100_000; // delay histogram: 0.1 ms bins
const BINS: usize = 50_000; // up to 5 s

pub fn simulate(s: &Scenario) -> SimReport {
    let mut rng = StdRng::seed_from_u64(s.seed);
    let ptime_ns = s.ptime.as_nanos().max(1) as u64;
    let n = (s.duration.as_nanos() as u64 / ptime_ns).max(1);
    // The sender's packet time measured with our clock.
    let period = ptime_ns as f64 / (1.0 + s.drift_ppm * 1e-6);
    let send_ns = |i: u64| (i as f64 * period) as u64;
    let spp = (u64::from(s.clock_rate) * ptime_ns / 1_000_000_000) as u32;
    let base = s.base_delay.as_nanos() as u64;
    let jitter = (s.jitter.as_nanos() as u64).max(1);
    let jump = s.ts_jump.map(|(f, samples)| ((n as f64 * f) as u64, samples));
    let change = s.ssrc_change.map(|f| (n as f64 * f) as u64);
    let (seq_a, ts_a) = (65_000u16, u32::MAX - 100_000);
    let (seq_b, ts_b): (u16, u32) = (rng.random(), rng.random());

    // Network: loss, jitter, swaps, duplicates. Two 64-bit draws per
    // packet (ChaCha is the cost of this simulation in debug builds):
    // 32-bit fractions are plenty for these probabilities.
    let frac = |x: u64| (x & 0xFFFF_FFFF) as f64 / 4_294_967_296.0;
    let (p_gb, p_bg) = match s.loss {
        Loss::Bursty { rate, mean_burst } => {
            let p_bg = 1.0 / mean_burst.max(1.0);
            (rate * p_bg / (1.0 - rate).max(1e-9), p_bg)
        }
        _ => (0.0, 1.0),
    };
    let mut bad = false;
    let mut wire_lost = 0;
    // (arrival µs << 24 | packet index): one u64 sorts fast.
    let key = |arrival_ns: u64, i: u64| ((arrival_ns / 1000) << 24) | i;
    assert!(n < 1 << 24, "simulation too long");
    let mut arrivals: Vec<u64> = Vec::with_capacity(n as usize + n as usize / 50);
    // Where the previous packet (not its duplicate) sits, if it is to be
    // held back behind this one.
    let mut swap_prev: Option<usize> = None;
    for i in 0..n {
        let (a, b) = (rng.next_u64(), rng.next_u64());
        let lost = match s.loss {
            Loss::None => false,
            Loss::Uniform(p) => frac(a) < p,
            Loss::Bursty { .. } => {
                bad = if bad { frac(a) >= p_bg } else { frac(a) < p_gb };
                bad
            }
        };
        let t = send_ns(i) + base + (((a >> 32) * jitter) >> 32);
        if lost {
            wire_lost += 1;
            swap_prev = None;
            continue;
        }
        if let Some(k) = swap_prev.take() {
            let prev = arrivals[k];
            if prev & 0xFF_FFFF == i - 1 {
                arrivals[k] = key(((prev >> 24) * 1000).max(t + 1_000_000), i - 1);
            }
        }
        if frac(b) < s.swap_prob {
            swap_prev = Some(arrivals.len());
        }
        arrivals.push(key(t, i));
        if frac(b >> 32) < s.duplicate_prob {
            arrivals.push(key(t + rng.random_range(0..40_000_000), i));
        }
    }
    arrivals.sort_unstable();

    let packet = |i: u64| {
        let (ssrc, seq0, ts0, k) = match change {
            Some(c) if i >= c => (0xB0B0_B0B0, seq_b, ts_b, i - c),
            _ => (0xA11C_E000, seq_a, ts_a, i),
        };
        let mut ts = ts0.wrapping_add((k as u32).wrapping_mul(spp));
        if let Some((at, samples)) = jump {
            if i >= at && change.is_none_or(|c| i < c || at >= c) {
                ts = ts.wrapping_add(samples);
            }
        }
        MediaPacket {
            sequence: seq0.wrapping_add(k as u16),
            timestamp: ts,
            marker: k == 0,
            ssrc,
            payload_type: 0,
            payload: (i as u32).to_le_bytes().to_vec(),
        }
    };

    let mut jb = JitterBuffer::new(s.config.clone());
    let t0 = Instant::now();
    let at = |ns: u64| t0 + Duration::from_nanos(ns);
    let mut r = SimReport {
        name: s.name.clone(),
        sent: n,
        wire_lost,
        events: s.events(),
        sent_samples: n * u64::from(spp),
        min_current_ms: f64::INFINITY,
        ..SimReport::default()
    };
    let mut hist = vec![0u32; BINS];
    let mut delay_sum = 0f64;
    let mut last_index: Option<u32> = None;
    let warmup = s.warmup.as_nanos() as u64;
    let last_send = send_ns(n - 1) + base;
    let end = arrivals.last().map_or(0, |a| (a >> 24) * 1000) + 2_000_000_000;
    let mut next = 0;
    let mut tick = s.tick_offset.as_nanos() as u64;
    while tick <= end {
        while let Some(&k) = arrivals.get(next).filter(|&&k| (k >> 24) * 1000 <= tick) {
            jb.insert(packet(k & 0xFF_FFFF), at((k >> 24) * 1000));
            next += 1;
        }
        let now = at(tick);
        let mut any = false;
        // As `call::media` consumes: everything due, else the next frame if it is here
        // and due before the next tick.
        while let Some(item) = jb.pop(now).or_else(|| if any { None } else { jb.pop_early(now, s.ptime) }) {
            any = true;
            match item {
                Playout::Packet(p) => {
                    let i = u32::from_le_bytes(p.payload[..4].try_into().expect("4-byte payload"));
                    if last_index.is_some_and(|l| i <= l) {
                        r.out_of_order += 1;
                    }
                    last_index = Some(i);
                    let d = tick.saturating_sub(send_ns(u64::from(i)) + base);
                    delay_sum += d as f64;
                    hist[((d / BIN_NS) as usize).min(BINS - 1)] += 1;
                    r.max_delay_ms = r.max_delay_ms.max(d as f64 / 1e6);
                    r.played += 1;
                    r.output_samples += u64::from(spp);
                }
                Playout::Lost { samples, .. } => {
                    r.concealed += 1;
                    r.output_samples += u64::from(samples);
                }
                Playout::Stretch { samples } => {
                    r.stretched += 1;
                    r.output_samples += u64::from(samples);
                }
            }
        }
        if tick >= warmup && tick <= last_send {
            let c = jb.current_delay().as_secs_f64() * 1e3;
            r.min_current_ms = r.min_current_ms.min(c);
            r.max_current_ms = r.max_current_ms.max(c);
            r.empty_ticks += u64::from(!any);
        }
        tick += ptime_ns;
    }
    r.stats = jb.stats();
    if r.played > 0 {
        r.mean_delay_ms = delay_sum / r.played as f64 / 1e6;
        let want = (r.played * 95).div_ceil(100);
        let mut seen = 0u64;
        for (b, &c) in hist.iter().enumerate() {
            seen += u64::from(c);
            if seen >= want {
                r.p95_delay_ms = (b as f64 + 1.0) * BIN_NS as f64 / 1e6;
                break;
            }
        }
    }
    r
}
