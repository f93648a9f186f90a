//! Receive-side adaptive jitter buffer: packet level, driven by RTP
//! timestamps, sans-IO (nothing here reads the clock; `now` is passed in).
//!
//! # Playout mapping
//!
//! Each stream (SSRC) is anchored on its first packet. A packet's playout
//! instant comes from its RTP timestamp through one mapping:
//!
//! ```text
//! due(ts) = anchor_instant + (ts - anchor_ts) / clock_rate + offset
//! ```
//!
//! so arrival jitter never accumulates. Adapting the delay means changing
//! `offset`, and nothing else moves. Sequence numbers and timestamps are
//! unwrapped to 64-bit values, so wraparound of either is a non-event. The
//! packet time is learned from consecutive timestamps (2.5–120 ms; 20 ms
//! until known), so nothing assumes 20 ms or 8 kHz.
//!
//! # Slots
//!
//! The buffer keeps a media position `play_ts` (the timestamp of the next
//! sample to hand out). The driver calls [`JitterBuffer::pop`] on its tick
//! until `None`; each time `due(play_ts)` has come it gets exactly one of:
//!
//! * [`Playout::Packet`]: the packet at `play_ts`;
//! * [`Playout::Lost`]: one frame the decoder must conceal — a packet that did
//!   not arrive in time. `fec` carries the next packet when it is already
//!   buffered and directly follows the lost frame (Opus in-band FEC);
//! * [`Playout::Stretch`]: one extra concealment frame inserted to grow the
//!   delay (the decoder produces it like a loss; it is not one).
//!
//! A lost frame is declared at its own slot, not when a later packet comes
//! due, so the decoder's output stays in real time: with a 20 ms driver tick
//! there is one item per tick. When a later packet is buffered the gap is
//! known ("bracketed") and concealed frame by frame, up to `max_delay` of it
//! (a marker bit on the packet after the gap limits it to the missing
//! packets; the rest of the gap is silence). When nothing at all is buffered
//! the buffer cannot tell loss from silence: it conceals the slot anyway
//! ("underrun"), one slot per packet time at most (no catch-up burst), for up
//! to `max_delay` for a sender that has never paused (G.711 senders often
//! never do), or [`MAX_BLIND`] frames once the sender has shown silence
//! suppression, then goes idle (`None`) until packets come back. No
//! concealment is ever emitted for a silence gap, a resync or a timestamp
//! jump.
//!
//! # Adaptation
//!
//! *Measure.* For every packet (late ones included: they are the signal),
//! its relative transit `r = arrival - (anchor + (ts - anchor_ts) /
//! clock_rate)` goes into a window of the last ~2 s of packets (by count, so
//! silence does not empty it). The jitter estimate is the 95th percentile of
//! `r` minus its minimum: a windowed percentile rather than the RFC 3550 A.8
//! running mean, because it reacts to a burst within a few packets and
//! ignores the rare outlier, which would otherwise cost a frame of delay.
//!
//! *Target.* `target_up = clamp(jitter + 5 ms, min_delay, max_delay)` is what
//! the network needs now; the held target follows it up at once and decays
//! towards it by 2 ms per second (increase quickly, decrease slowly).
//!
//! *Current delay.* `current = offset - min(r)`: how long a packet with the
//! window's best transit waits before playout.
//!
//! *Adjust.* During continuous speech the delay moves by one frame at a time:
//! to grow (current < target_up) one [`Playout::Stretch`] is emitted and the
//! mapping moves one frame later, at most once per 200 ms; to shrink (current
//! minus a frame still ≥ held target + 5 ms) the packet due now is dropped
//! and the next one, which must already be buffered, plays in its slot, at
//! most once per second and never right after a concealment. The band
//! `[target_up, held target + frame + 5 ms)` in between is left alone, so the
//! estimate's noise costs nothing. In these rules `target_up` and the held
//! target + 5 ms are cut at a ceiling, `max_delay - 5 ms` (not below
//! `min_delay`): the delay also creeps up between adjustments while a shrink
//! waits, and the margin keeps it within `max_delay` plus a frame. Which
//! frame is dropped is not chosen by energy: packets carry no level
//! indication readable at packet level, so the frame due when the shrink is
//! allowed goes. At a talk-spurt start (a
//! marker bit, or any gap the sender did not fill) a delay outside its band
//! is instead re-anchored to the held target plus half a frame, without a
//! stretch or a drop, because the change falls into silence (shortening it
//! by at most its length). Before the first packet plays, the delay is also
//! lowered if the anchor packet itself was delayed. Sender clock drift
//! (±100 ppm is ±0.1 ms per second) moves `min(r)` and is absorbed by the
//! same one-frame adjustments: about one every 200 s.
//!
//! # Discontinuities
//!
//! A new SSRC, a timestamp jump (a packet due more than
//! `max(2 * max_delay, 1 s) + frame` ahead), a sequence jump beyond 3000, or a
//! run of more than four late packets whose sequence number and timestamp
//! disagree with the stream's numbering (a sender that restarted or stepped
//! its timestamp back; packets the network merely delayed or reordered never
//! count) re-synchronise: the buffer is flushed and re-anchored on the packet
//! at the configured initial delay, with no concealment for the gap.
//! Straggling packets of the SSRC just replaced are dropped as late (after
//! four in a row the stream switches back to it).
//!
//! The buffer expects a single payload stream: route RFC 4733
//! telephone-event packets elsewhere before inserting.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// More than this many implausible Late packets in a row means the sender
/// restarted or jumped its timestamp backwards: re-anchor on the next one.
const MAX_CONSECUTIVE_LATE: u32 = 4;
/// How many played (sequence, timestamp) pairs are remembered to tell a
/// duplicate from a late packet.
const PLAYED_WINDOW: usize = 128;
/// A forward sequence jump larger than this (RFC 3550 A.1 `MAX_DROPOUT`) is a
/// new stream, not a loss burst.
const MAX_DROPOUT: i64 = 3000;
/// Empty-buffer slots concealed in a row once the sender has shown silence
/// suppression (60 ms: G.711 Appendix I PLC has faded to silence by then).
pub const MAX_BLIND: u32 = 3;
/// Span of the transit window, in packet time (2 s at 20 ms = 100 packets).
const WINDOW_NS: i64 = 2_000_000_000;
const MIN_WINDOW: usize = 16;
const MAX_WINDOW: usize = 400;
/// Percentile of the relative transit that the delay must cover.
const PERCENTILE: usize = 95;
/// Added above the measured jitter, for the 5 % beyond the percentile.
const MARGIN_NS: i64 = 5_000_000;
/// A shrink must leave the delay this far above the held target.
const SHRINK_HYSTERESIS_NS: i64 = 5_000_000;
/// Room below `max_delay` for the delay to creep while a shrink waits (see
/// `Limits::ceiling`): 2.5 s of a sender clock 2000 ppm fast.
const CEILING_MARGIN_NS: i64 = 5_000_000;
const GROW_INTERVAL_NS: i64 = 200_000_000;
const SHRINK_INTERVAL_NS: i64 = 1_000_000_000;
/// The held target decays towards the measured need by this much per second.
const HOLD_DECAY_NS_PER_S: i64 = 2_000_000;
/// A late packet numbered consistently with the stream but overdue by more
/// than this is not jitter any more (a sender replaying old audio).
const PLAUSIBLE_OVERDUE_NS: i64 = 1_000_000_000;
/// Packets in the window before the delay is adjusted at all.
const MIN_ADAPT_SAMPLES: usize = 8;
const NS_PER_S: i128 = 1_000_000_000;

#[derive(Debug, Clone)]
pub struct JitterConfig {
    /// RTP clock rate of the payload (8000 for G.711, 48000 for Opus).
    pub clock_rate: u32,
    /// The adaptive delay never goes below this.
    pub min_delay: Duration,
    /// Initial delay of every stream (clamped into `min_delay..=max_delay`);
    /// from there it follows the measured jitter.
    pub target_delay: Duration,
    /// The adaptive delay never targets more than this, nor conceals a gap
    /// longer than this. A packet overdue by more than this is late; one due
    /// more than `max(2 * max_delay, 1 s) + frame` ahead is a timestamp jump
    /// (resync). Raised to `min_delay` if lower.
    pub max_delay: Duration,
    /// Hard cap on packets held, whatever the peer sends.
    pub max_packets: usize,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            clock_rate: 8000,
            min_delay: Duration::from_millis(20),
            target_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            max_packets: 256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPacket {
    pub sequence: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub ssrc: u32,
    pub payload_type: u8,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Buffered for playout.
    Accepted,
    /// Same sequence number as a buffered or recently played packet; dropped.
    Duplicate,
    /// Its slot was already played or concealed, it is hopelessly overdue, or
    /// it belongs to the SSRC that was just replaced; dropped.
    Late,
    /// Discontinuity (new SSRC, timestamp or sequence jump, run of late
    /// packets): the buffer was flushed and re-anchored on this packet, which is buffered.
    Resync,
    /// The buffer holds `max_packets` already; this (new) packet was dropped.
    Overflow,
}

/// What the decoder must produce for one slot. `samples` are in RTP clock
/// units (160 per 20 ms at 8 kHz, 960 at 48 kHz).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    Packet(MediaPacket),
    /// A frame that did not arrive in time: conceal `samples`. When the packet
    /// that follows the lost frame is already buffered, `fec` is a copy of it
    /// (Opus can decode the lost frame from its in-band FEC); the packet is
    /// still played normally in the next slot.
    Lost {
        samples: u32,
        fec: Option<MediaPacket>,
    },
    /// The delay grows by one frame: produce `samples` of concealment (PLC or
    /// comfort noise) although nothing is missing.
    Stretch {
        samples: u32,
    },
}

/// Counters since construction (not cleared by `reset`).
///
/// Every inserted packet ends up in exactly one bucket, so at any time
/// `received == played + buffered() + late + duplicate + overflow + flushed + shrunk`.
/// `lost` counts sequence numbers skipped at playout, which includes packets
/// that were dropped here as late or overflow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    pub received: u64,
    pub played: u64,
    pub late: u64,
    pub duplicate: u64,
    /// packets
    pub lost: u64,
    /// `Playout::Lost` slots handed out (loss and underrun).
    pub concealed: u64,
    /// Samples (RTP clock units) of those slots.
    pub concealed_samples: u64,
    /// Of `concealed`, the slots concealed with nothing buffered at all.
    pub underruns: u64,
    /// `Playout::Stretch` slots: the delay grew by one frame.
    pub stretched: u64,
    /// Packets dropped to shrink the delay by one frame.
    pub shrunk: u64,
    /// Talk-spurt starts at which the playout mapping was moved to the target.
    pub realigned: u64,
    pub resyncs: u64,
    pub overflow: u64,
    /// Buffered packets discarded unplayed by a resync or `reset`.
    pub flushed: u64,
    /// Sum over played packets of [`JitterBuffer::current_delay`] at their
    /// playout, in microseconds; see [`JitterStats::mean_delay`].
    pub delay_us_total: u64,
}

impl JitterStats {
    /// Mean delay the buffer added to the packets it played.
    pub fn mean_delay(&self) -> Duration {
        Duration::from_micros(self.delay_us_total.checked_div(self.played).unwrap_or(0))
    }
}

/// The configuration in signed nanoseconds and clock units.
#[derive(Debug, Clone, Copy)]
struct Limits {
    rate: i64,
    min: i64,
    initial: i64,
    max: i64,
    frame_default: i64,
    frame_min: i64,
    frame_max: i64,
}

impl Limits {
    fn new(cfg: &JitterConfig) -> Limits {
        let rate = i64::from(cfg.clock_rate.max(1));
        let ns = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX / 8).min(i64::MAX / 8);
        // Opus frames run from 2.5 ms to 120 ms; the default is RFC 3551's 20 ms.
        let frame_min = (rate / 400).max(1);
        let frame_max = (rate * 3 / 25).max(frame_min);
        Limits {
            rate,
            min: ns(cfg.min_delay),
            initial: ns(cfg.target_delay),
            max: ns(cfg.max_delay),
            frame_default: (rate / 50).clamp(frame_min, frame_max),
            frame_min,
            frame_max,
        }
    }

    /// Duration of `samples` in nanoseconds.
    fn ns(&self, samples: i64) -> i64 {
        clamp_i64(i128::from(samples) * NS_PER_S / i128::from(self.rate))
    }

    /// A packet due further ahead than this is a timestamp jump (at least
    /// 1 s: the anchor packet itself may have been delayed by the jitter).
    fn early(&self, frame: i64) -> i64 {
        self.max.saturating_mul(2).max(1_000_000_000).saturating_add(self.ns(frame))
    }

    /// Highest delay the adjustments steer to (a grow or a shrink leaves the
    /// delay below this plus a frame): `max_delay` less a margin, because
    /// between adjustments the delay creeps up on its own (a fast sender
    /// clock, a new best transit) while a shrink may have to wait a second
    /// after the last adjustment, for the next packet to be buffered, or past
    /// a concealment. Never below `min_delay`.
    fn ceiling(&self) -> i64 {
        self.max.saturating_sub(CEILING_MARGIN_NS).max(self.min)
    }

    /// Most frames concealed for one gap, or in a row with nothing buffered.
    fn gap_cap_frames(&self, frame: i64) -> i64 {
        (self.max / self.ns(frame).max(1)).max(i64::from(MAX_BLIND))
    }
}

fn clamp_i64(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// `a - b` in nanoseconds, either sign, saturating.
fn signed_nanos(a: Instant, b: Instant) -> i64 {
    match a.checked_duration_since(b) {
        Some(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        None => i64::try_from(b.duration_since(a).as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

fn duration_from_ns(ns: i64) -> Duration {
    Duration::from_nanos(ns.max(0) as u64)
}

/// Extend a 16-bit sequence number to the value closest to `reference`.
fn unwrap_seq(reference: i64, seq: u16) -> i64 {
    reference.wrapping_add(i64::from(seq.wrapping_sub(reference as u16) as i16))
}

/// Extend a 32-bit timestamp to the value closest to `reference`.
fn unwrap_ts(reference: i64, ts: u32) -> i64 {
    reference.wrapping_add(i64::from(ts.wrapping_sub(reference as u32) as i32))
}

#[derive(Debug)]
struct Entry {
    ext_ts: i64,
    packet: MediaPacket,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Adjust {
    None,
    Grow,
    Shrink,
}

/// Per-stream state, created by the first packet and replaced on resync.
#[derive(Debug)]
struct Stream {
    ssrc: u32,
    anchor: Instant,
    anchor_ts: i64,
    /// Playout mapping offset (ns): `due(ts) = anchor + media(ts) + offset`.
    offset: i64,
    /// Unwrap references: highest accepted extended sequence number and its timestamp.
    highest_seq: i64,
    ts_ref: i64,
    /// Media position of the next slot; `None` until the first packet plays,
    /// so packets reordered ahead of the anchor packet are still played first.
    play_ts: Option<i64>,
    /// Last packet consumed (played or dropped to shrink): sequence, timestamp
    /// and the timestamp where it ended. Meaningful once `play_ts` is set.
    last_seq: i64,
    last_ts: i64,
    last_end: i64,
    /// The previous slot was a played packet (not a concealment or stretch).
    prev_played: bool,
    /// Recently consumed (seq, ts), to tell duplicates from late packets.
    played: VecDeque<(i64, i64)>,
    /// Packet duration, learned from consecutive packets (20 ms until then).
    frame: i64,
    frame_learned: bool,
    consecutive_late: u32,
    /// Packets in a row from the SSRC this stream replaced.
    retired_run: u32,
    /// Slots concealed in a row with nothing buffered, and when the last was.
    blind: u32,
    last_blind: Option<Instant>,
    /// No silence gap seen yet: the sender transmits continuously.
    continuous: bool,
    /// Relative transit of recent packets (ns), oldest first, and the same
    /// values sorted (kept incrementally: the percentile is one index).
    transit: VecDeque<i64>,
    sorted: Vec<i64>,
    /// Window minimum of `transit`.
    r_base: i64,
    /// Delay the network needs now, and the slowly decaying target.
    target_up: i64,
    target_hold: i64,
    hold_at: Instant,
    last_adjust: Instant,
}

impl Stream {
    fn new(p: &MediaPacket, now: Instant, lim: &Limits) -> Stream {
        let initial = lim.initial.clamp(lim.min, lim.max);
        let mut transit = VecDeque::with_capacity(MIN_WINDOW);
        transit.push_back(0);
        Stream {
            ssrc: p.ssrc,
            anchor: now,
            anchor_ts: i64::from(p.timestamp),
            offset: initial,
            highest_seq: i64::from(p.sequence),
            ts_ref: i64::from(p.timestamp),
            play_ts: None,
            last_seq: 0,
            last_ts: 0,
            last_end: 0,
            prev_played: false,
            played: VecDeque::with_capacity(PLAYED_WINDOW),
            frame: lim.frame_default,
            frame_learned: false,
            consecutive_late: 0,
            retired_run: 0,
            blind: 0,
            last_blind: None,
            continuous: true,
            transit,
            sorted: vec![0],
            r_base: 0,
            target_up: initial,
            target_hold: initial,
            hold_at: now,
            last_adjust: now,
        }
    }

    /// Media time of `ext_ts` since the anchor, in nanoseconds.
    fn media_ns(&self, ext_ts: i64, lim: &Limits) -> i64 {
        clamp_i64((i128::from(ext_ts) - i128::from(self.anchor_ts)) * NS_PER_S / i128::from(lim.rate))
    }

    /// Relative transit of a packet with `ext_ts` arriving at `now`.
    fn transit_of(&self, ext_ts: i64, now: Instant, lim: &Limits) -> i64 {
        signed_nanos(now, self.anchor).saturating_sub(self.media_ns(ext_ts, lim))
    }

    /// Nanoseconds from `now` until the playout instant of `ext_ts`; negative when overdue.
    fn until_due(&self, ext_ts: i64, now: Instant, lim: &Limits) -> i64 {
        self.offset.saturating_sub(self.transit_of(ext_ts, now, lim))
    }

    fn current(&self) -> i64 {
        self.offset.saturating_sub(self.r_base)
    }

    fn window_len(&self, lim: &Limits) -> usize {
        let n = WINDOW_NS / lim.ns(self.frame).max(1);
        (n.max(0) as usize).clamp(MIN_WINDOW, MAX_WINDOW)
    }

    /// Add one transit sample and recompute the jitter estimate and targets.
    fn observe(&mut self, r: i64, now: Instant, lim: &Limits) {
        self.transit.push_back(r);
        let at = self.sorted.partition_point(|&v| v < r);
        self.sorted.insert(at, r);
        let n = self.window_len(lim);
        while self.transit.len() > n {
            if let Some(old) = self.transit.pop_front() {
                let at = self.sorted.partition_point(|&v| v < old);
                self.sorted.remove(at);
            }
        }
        let k = (self.sorted.len() - 1) * PERCENTILE / 100;
        let (low, high) = (self.sorted[0], self.sorted[k]);
        self.r_base = low;
        let jitter = high.saturating_sub(low);
        self.target_up = jitter.saturating_add(MARGIN_NS).clamp(lim.min, lim.max);
        let dt = signed_nanos(now, self.hold_at);
        let decay = if dt > 0 {
            self.hold_at = now;
            clamp_i64(i128::from(dt) * i128::from(HOLD_DECAY_NS_PER_S) / NS_PER_S)
        } else {
            0
        };
        self.target_hold = self.target_hold.saturating_sub(decay).max(self.target_up).min(lim.max);
    }

    /// The delay needs neither a grow nor a shrink.
    fn in_band(&self, lim: &Limits) -> bool {
        let current = self.current();
        current >= self.grow_below(lim) && current.saturating_sub(lim.ns(self.frame)) < self.shrink_floor(lim)
    }

    /// A delay below this grows: the measured need, but at most the ceiling,
    /// so that a grow too leaves the margin for the creep (uncut, a grow from
    /// just under `max_delay` landed just under `max_delay` plus a frame).
    fn grow_below(&self, lim: &Limits) -> i64 {
        self.target_up.min(lim.ceiling())
    }

    /// Lowest delay a shrink may leave. The hysteresis above the held target
    /// is cut at the ceiling: uncut, a held target near `max_delay` put the
    /// shrink threshold up to 5 ms above `max_delay` plus a frame, and a fast
    /// sender's clock carried the delay there. Cutting it cannot start a
    /// grow/shrink cycle: no grow is asked above the ceiling either.
    fn shrink_floor(&self, lim: &Limits) -> i64 {
        self.target_hold.saturating_add(SHRINK_HYSTERESIS_NS).min(lim.ceiling())
    }

    /// Mapping offset that puts the delay half a frame above the held
    /// target: the next fluctuation of the estimate must not cost a stretch.
    /// Capped like the band, so a realignment does not land where a shrink
    /// is due at once.
    fn mid_band(&self, lim: &Limits) -> i64 {
        self.r_base.saturating_add(self.target_hold.min(lim.ceiling())).saturating_add(lim.ns(self.frame) / 2)
    }

    fn adjustment(&self, now: Instant, lim: &Limits) -> Adjust {
        if self.transit.len() < MIN_ADAPT_SAMPLES {
            return Adjust::None;
        }
        let since = signed_nanos(now, self.last_adjust);
        let current = self.current();
        if current < self.grow_below(lim) && since >= GROW_INTERVAL_NS {
            return Adjust::Grow;
        }
        let after_shrink = current.saturating_sub(lim.ns(self.frame));
        if after_shrink >= self.shrink_floor(lim) && since >= SHRINK_INTERVAL_NS && self.prev_played {
            return Adjust::Shrink;
        }
        Adjust::None
    }
}

pub struct JitterBuffer {
    cfg: JitterConfig,
    lim: Limits,
    /// Keyed by extended sequence number.
    packets: BTreeMap<i64, Entry>,
    stream: Option<Stream>,
    /// The SSRC the current stream replaced: its stragglers are late, not a new stream.
    retired_ssrc: Option<u32>,
    stats: JitterStats,
}

impl JitterBuffer {
    pub fn new(mut cfg: JitterConfig) -> Self {
        // Config may come from SDP or a file; keep it sane rather than panic.
        cfg.clock_rate = cfg.clock_rate.max(1);
        cfg.max_delay = cfg.max_delay.max(cfg.min_delay);
        cfg.target_delay = cfg.target_delay.clamp(cfg.min_delay, cfg.max_delay);
        cfg.max_packets = cfg.max_packets.max(1);
        Self {
            lim: Limits::new(&cfg),
            cfg,
            packets: BTreeMap::new(),
            stream: None,
            retired_ssrc: None,
            stats: JitterStats::default(),
        }
    }

    pub fn insert(&mut self, p: MediaPacket, now: Instant) -> InsertOutcome {
        self.stats.received += 1;
        let lim = self.lim;
        let Some(st) = self.stream.as_mut() else {
            self.start_stream(p, now);
            return InsertOutcome::Accepted;
        };
        if p.ssrc != st.ssrc {
            if self.retired_ssrc == Some(p.ssrc) && st.retired_run < MAX_CONSECUTIVE_LATE {
                st.retired_run += 1;
                self.stats.late += 1;
                return InsertOutcome::Late;
            }
            self.retired_ssrc = Some(st.ssrc);
            return self.resync(p, now);
        }
        st.retired_run = 0;
        let ext_seq = unwrap_seq(st.highest_seq, p.sequence);
        let ext_ts = unwrap_ts(st.ts_ref, p.timestamp);

        // A consumed packet with the same number but another timestamp is not
        // a copy: it falls through to the late check (a restarted sender).
        let consumed = st.play_ts.is_some() && ext_seq <= st.last_seq;
        if (consumed && st.played.contains(&(ext_seq, ext_ts))) || self.packets.contains_key(&ext_seq) {
            self.stats.duplicate += 1;
            return InsertOutcome::Duplicate;
        }

        let r = st.transit_of(ext_ts, now, &lim);
        let until_due = st.offset.saturating_sub(r);
        if until_due > lim.early(st.frame) || ext_seq - st.highest_seq > MAX_DROPOUT {
            return self.resync(p, now);
        }
        let overdue = until_due.saturating_neg();
        let hopeless = overdue > lim.max;
        // Plausible: numbered like the stream (sequence and timestamp agree
        // with the last packet played) and at most a second overdue — a
        // packet the network merely delayed. A sender that restarted or
        // stepped its timestamp back is not plausible, and only such late
        // packets count towards a resync.
        let (late, plausible) = match st.play_ts {
            None => (hopeless, !hopeless),
            Some(play_ts) => {
                let (dseq, dts) = (ext_seq - st.last_seq, ext_ts - st.last_ts);
                let consistent = if st.frame_learned {
                    (dts - dseq.saturating_mul(st.frame)).abs() <= st.frame / 2
                } else {
                    // Packet time unknown yet: any plausible one will do.
                    dseq.signum() == dts.signum()
                        && dts.abs() >= dseq.abs().saturating_mul(lim.frame_min)
                        && dts.abs() <= dseq.abs().saturating_mul(lim.frame_max)
                };
                let late = hopeless || ext_seq <= st.last_seq || ext_ts < play_ts - st.frame / 2;
                (late, consistent && overdue <= PLAUSIBLE_OVERDUE_NS)
            }
        };
        if plausible {
            // Late packets are the jitter estimate's most important input.
            st.observe(r, now, &lim);
        }
        if late {
            if !plausible {
                st.consecutive_late += 1;
                if st.consecutive_late > MAX_CONSECUTIVE_LATE {
                    return self.resync(p, now);
                }
            }
            self.stats.late += 1;
            return InsertOutcome::Late;
        }
        st.consecutive_late = 0;

        // Drop the newcomer rather than the oldest: a full buffer means a
        // stalled consumer or a hostile peer, and either way the point is to
        // bound memory without disturbing what is already queued.
        if self.packets.len() >= self.cfg.max_packets {
            self.stats.overflow += 1;
            return InsertOutcome::Overflow;
        }
        if ext_seq > st.highest_seq {
            st.highest_seq = ext_seq;
            st.ts_ref = ext_ts;
        }
        // Learn the packet time from a buffered neighbour (playout learns it
        // too, but a stream's first packets arrive before any is played).
        let before = self.packets.get(&(ext_seq - 1)).filter(|_| !p.marker).map(|e| ext_ts - e.ext_ts);
        let after = self.packets.get(&(ext_seq + 1)).filter(|e| !e.packet.marker).map(|e| e.ext_ts - ext_ts);
        if let Some(delta) = before.or(after).filter(|d| (lim.frame_min..=lim.frame_max).contains(d)) {
            st.frame = delta;
            st.frame_learned = true;
        }
        self.packets.insert(ext_seq, Entry { ext_ts, packet: p });
        InsertOutcome::Accepted
    }

    /// What the decoder must produce next, if its time has come. Call
    /// repeatedly at each packet-time tick until `None`.
    pub fn pop(&mut self, now: Instant) -> Option<Playout> {
        let lim = self.lim;
        // Each pass either returns or moves `play_ts` onto the head packet
        // (silence) or drops the head (shrink); a few passes always suffice.
        for _ in 0..4 {
            let st = self.stream.as_mut()?;
            let Some(play_ts) = st.play_ts else {
                let head = self.packets.first_key_value()?.1;
                // Nothing played yet, so the mapping may still move for free:
                // if the anchor packet was itself delayed, the delay is
                // higher than meant by that much. Take it back (never add:
                // the few packets seen so far can only under-estimate that).
                let desired = st.mid_band(&lim);
                if desired < st.offset && st.transit.len() >= 2 {
                    st.offset = desired;
                }
                if st.until_due(head.ext_ts, now, &lim) > 0 {
                    return None;
                }
                return Some(self.consume_head(false));
            };
            if st.until_due(play_ts, now, &lim) > 0 {
                return None;
            }
            let adjust = st.adjustment(now, &lim);
            let half = (st.frame / 2).max(1);
            let Some((&seq, head)) = self.packets.first_key_value() else {
                // Underrun: loss, a late packet, or the sender fell silent.
                let limit = if st.continuous { lim.gap_cap_frames(st.frame) } else { i64::from(MAX_BLIND) };
                // Real time only: one blind slot per packet time, however
                // late the driver calls (no catch-up burst of guesses).
                let too_soon = st.last_blind.is_some_and(|t| signed_nanos(now, t) < lim.ns(st.frame) / 2);
                if i64::from(st.blind) >= limit || too_soon {
                    return None;
                }
                st.blind += 1;
                st.last_blind = Some(now);
                if adjust == Adjust::Grow {
                    return Some(self.stretch(now));
                }
                let samples = st.frame;
                st.play_ts = Some(play_ts + samples);
                st.prev_played = false;
                self.stats.underruns += 1;
                return Some(self.conceal(samples, None));
            };
            let gap = head.ext_ts - play_ts;
            if gap < half {
                match adjust {
                    Adjust::Grow => return Some(self.stretch(now)),
                    Adjust::Shrink if self.packets.contains_key(&(seq + 1)) => {
                        self.consume_head(true);
                        let st = self.stream.as_mut()?;
                        st.offset = st.offset.saturating_sub(lim.ns(st.frame));
                        st.last_adjust = now;
                        continue;
                    }
                    _ => return Some(self.consume_head(false)),
                }
            }
            // A gap before the head packet: conceal the missing packets' share
            // of it, in real time, one frame per slot; the rest is silence.
            let missing = (seq - st.last_seq - 1).max(0);
            let cap = lim.gap_cap_frames(st.frame);
            let budget = missing.min(cap).saturating_mul(st.frame);
            let conceal_end = head.ext_ts.min(st.last_end.saturating_add(budget));
            if conceal_end - play_ts >= half {
                if adjust == Adjust::Grow {
                    return Some(self.stretch(now));
                }
                let samples = (conceal_end - play_ts).min(st.frame);
                let fec = (play_ts + samples >= head.ext_ts).then(|| head.packet.clone());
                st.play_ts = Some(play_ts + samples);
                st.prev_played = false;
                return Some(self.conceal(samples, fec));
            }
            // Talk-spurt start: the sender paused. Move the mapping to the
            // target now, where the change falls into silence.
            if missing == 0 {
                st.continuous = false;
            }
            let head_ts = head.ext_ts;
            if st.transit.len() >= MIN_ADAPT_SAMPLES && !st.in_band(&lim) {
                let silence = st.media_ns(head_ts, &lim).saturating_sub(st.media_ns(play_ts, &lim));
                let delta = st.mid_band(&lim).saturating_sub(st.offset).max(-silence);
                if delta != 0 {
                    st.offset = st.offset.saturating_add(delta);
                    self.stats.realigned += 1;
                }
            }
            st.play_ts = Some(head_ts);
            st.blind = 0;
        }
        None
    }

    /// For a consumer that plays one frame per packet time and found nothing due at this
    /// tick: the next frame, if its packet is already here (no gap before it) and falls due
    /// within `within`. Without this, a stream whose playout times fall within the
    /// consumer's wake-up jitter of its ticks alternates between empty ticks and double
    /// ones, and every empty tick puts a frame of silence into the caller's audio (a
    /// virtual-time run: 40 such frames in one 3.5 s sentence, depending only on its
    /// phase). A missing packet is not concealed early: its time may yet come.
    pub fn pop_early(&mut self, now: Instant, within: Duration) -> Option<Playout> {
        let st = self.stream.as_ref()?;
        st.play_ts?;
        let (&seq, _) = self.packets.first_key_value()?;
        if seq != st.last_seq + 1 {
            return None;
        }
        self.pop(now + within)
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Packets held.
    pub fn buffered(&self) -> usize {
        self.packets.len()
    }

    /// Delay currently added to a packet with the best recent transit
    /// (zero before the first packet).
    pub fn current_delay(&self) -> Duration {
        self.stream.as_ref().map_or(Duration::ZERO, |s| duration_from_ns(s.current()))
    }

    /// Delay the buffer is steering towards, within `min_delay..=max_delay`.
    pub fn target_delay(&self) -> Duration {
        self.stream.as_ref().map_or(self.cfg.target_delay, |s| duration_from_ns(s.target_hold))
    }

    /// Packet duration in RTP clock units, as learned from the stream
    /// (20 ms until two consecutive packets have been seen).
    pub fn frame_samples(&self) -> u32 {
        let f = self.stream.as_ref().map_or(self.lim.frame_default, |s| s.frame);
        u32::try_from(f).unwrap_or(u32::MAX)
    }

    /// Drop everything buffered and forget the stream; the next packet
    /// anchors afresh (as `Accepted`) at the configured initial delay.
    /// Statistics are kept: they describe the call.
    pub fn reset(&mut self) {
        self.stats.flushed += self.packets.len() as u64;
        self.packets.clear();
        self.stream = None;
        self.retired_ssrc = None;
    }

    fn conceal(&mut self, samples: i64, fec: Option<MediaPacket>) -> Playout {
        let samples = u32::try_from(samples.max(1)).unwrap_or(u32::MAX);
        self.stats.concealed += 1;
        self.stats.concealed_samples += u64::from(samples);
        Playout::Lost { samples, fec }
    }

    fn stretch(&mut self, now: Instant) -> Playout {
        let lim = self.lim;
        let st = self.stream.as_mut().expect("stretch needs a stream");
        st.offset = st.offset.saturating_add(lim.ns(st.frame));
        st.last_adjust = now;
        st.prev_played = false;
        self.stats.stretched += 1;
        Playout::Stretch { samples: u32::try_from(st.frame).unwrap_or(u32::MAX) }
    }

    /// Take the head packet: play it, or drop it to shrink the delay.
    fn consume_head(&mut self, shrink: bool) -> Playout {
        let lim = self.lim;
        let st = self.stream.as_mut().expect("consume needs a stream");
        let (seq, entry) = self.packets.pop_first().expect("consume needs a packet");
        if st.play_ts.is_some() {
            if seq > st.last_seq + 1 {
                self.stats.lost += (seq - st.last_seq - 1) as u64;
            }
            let delta = entry.ext_ts - st.last_ts;
            if seq == st.last_seq + 1 && !entry.packet.marker && (lim.frame_min..=lim.frame_max).contains(&delta) {
                st.frame = delta;
                st.frame_learned = true;
            }
        }
        st.last_seq = seq;
        st.last_ts = entry.ext_ts;
        st.last_end = entry.ext_ts + st.frame;
        st.play_ts = Some(st.play_ts.map_or(st.last_end, |p| p.max(st.last_end)));
        st.blind = 0;
        st.prev_played = !shrink;
        if st.played.len() == PLAYED_WINDOW {
            st.played.pop_front();
        }
        st.played.push_back((seq, entry.ext_ts));
        if shrink {
            self.stats.shrunk += 1;
        } else {
            self.stats.played += 1;
            self.stats.delay_us_total += (st.current().max(0) / 1000) as u64;
        }
        Playout::Packet(entry.packet)
    }

    fn resync(&mut self, p: MediaPacket, now: Instant) -> InsertOutcome {
        self.stats.resyncs += 1;
        self.stats.flushed += self.packets.len() as u64;
        self.packets.clear();
        self.start_stream(p, now);
        InsertOutcome::Resync
    }

    /// Anchor the playout mapping on `p` (arriving at `now`) and buffer it.
    fn start_stream(&mut self, p: MediaPacket, now: Instant) {
        let st = Stream::new(&p, now, &self.lim);
        let key = st.highest_seq;
        let ext_ts = st.anchor_ts;
        self.stream = Some(st);
        self.packets.insert(key, Entry { ext_ts, packet: p });
    }
}

/// Virtual-time simulation of a call's inbound stream through the jitter buffer (tests and
/// examples; not part of the appliance).
#[doc(hidden)]
pub mod sim;

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const SSRC: u32 = 0x1234_5678;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A fixed 60 ms delay: the adaptive target never leaves 60 ms unless
    /// the jitter exceeds 55 ms, so timing can be asserted exactly.
    fn cfg() -> JitterConfig {
        JitterConfig { clock_rate: 8000, min_delay: ms(60), target_delay: ms(60), max_delay: ms(500), max_packets: 256 }
    }

    /// The adaptive default: 20..200 ms, starting at 40 ms.
    /// 20–200 ms starting at 40 ms: the tests reason from a start above the
    /// minimum, independent of the shipped default (which starts at 20 ms).
    fn adaptive() -> JitterConfig {
        JitterConfig { target_delay: Duration::from_millis(40), ..JitterConfig::default() }
    }

    fn pkt(seq: u16, ts: u32) -> MediaPacket {
        MediaPacket {
            sequence: seq,
            timestamp: ts,
            marker: false,
            ssrc: SSRC,
            payload_type: 0,
            payload: vec![seq as u8; 160],
        }
    }

    fn lost(samples: u32) -> Playout {
        Playout::Lost { samples, fec: None }
    }

    /// Items up to the last packet: what follows is the bounded concealment
    /// of a stream that simply stopped.
    fn until_last_packet<T: Clone>(items: &[(T, Playout)]) -> Vec<(T, Playout)> {
        let end = items.iter().rposition(|(_, i)| matches!(i, Playout::Packet(_))).map_or(0, |p| p + 1);
        items[..end].to_vec()
    }

    fn drain(jb: &mut JitterBuffer, now: Instant) -> Vec<Playout> {
        std::iter::from_fn(|| jb.pop(now)).take(10_000).collect()
    }

    /// Packet sequence numbers, `None` for a concealed slot and `Some(u16::MAX)`
    /// (never a real packet in these tests) for a stretch.
    fn seqs(items: &[Playout]) -> Vec<Option<u16>> {
        items
            .iter()
            .map(|p| match p {
                Playout::Packet(p) => Some(p.sequence),
                Playout::Lost { .. } => None,
                Playout::Stretch { .. } => Some(u16::MAX),
            })
            .collect()
    }

    /// Run a schedule of (arrival ms, packet) through the buffer with a 1 ms
    /// tick, returning (tick ms, item) for everything popped.
    fn simulate(
        jb: &mut JitterBuffer,
        t0: Instant,
        mut arrivals: Vec<(u64, MediaPacket)>,
        end_ms: u64,
    ) -> Vec<(u64, Playout)> {
        arrivals.sort_by_key(|a| a.0);
        let mut arrivals = arrivals.into_iter().peekable();
        let mut out = Vec::new();
        for t in 0..=end_ms {
            let now = t0 + ms(t);
            while let Some((_, p)) = arrivals.next_if(|a| a.0 <= t) {
                jb.insert(p, now);
            }
            out.extend(drain(jb, now).into_iter().map(|item| (t, item)));
        }
        out
    }

    /// Pop with a 1 ms tick from `start` for `span_ms`, no arrivals.
    fn simulate_from(jb: &mut JitterBuffer, start: Instant, span_ms: u64) -> Vec<(u64, Playout)> {
        (0..=span_ms).flat_map(|t| drain(jb, start + ms(t)).into_iter().map(move |i| (t, i))).collect()
    }

    /// What a driver with a 20 ms tick sees: per tick, the items popped.
    struct Ticked {
        t0: Instant,
        tick_us: u64,
        offset_us: u64,
    }

    impl Ticked {
        /// Feed (arrival µs, packet) and tick until `end_us`; returns (tick µs, item).
        fn run(
            &self,
            jb: &mut JitterBuffer,
            mut arrivals: Vec<(u64, MediaPacket)>,
            end_us: u64,
        ) -> Vec<(u64, Playout)> {
            arrivals.sort_by_key(|a| a.0);
            let mut arrivals = arrivals.into_iter().peekable();
            let mut out = Vec::new();
            let mut t = self.offset_us;
            while t <= end_us {
                while let Some((at, p)) = arrivals.next_if(|a| a.0 <= t) {
                    jb.insert(p, self.t0 + Duration::from_micros(at));
                }
                let now = self.t0 + Duration::from_micros(t);
                out.extend(drain(jb, now).into_iter().map(|i| (t, i)));
                t += self.tick_us;
            }
            out
        }
    }

    fn ticked(t0: Instant) -> Ticked {
        Ticked { t0, tick_us: 20_000, offset_us: 7_000 }
    }

    // ---- fixed-delay behaviour (kept from the first buffer) ----

    #[test]
    fn in_order_stream_plays_at_arrival_plus_target() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        let arrivals = (0..50u16).map(|i| (u64::from(i) * 20, pkt(i, u32::from(i) * 160))).collect();
        let out = simulate(&mut jb, t0, arrivals, 1200);
        let packets: Vec<_> = out.iter().filter(|(_, i)| matches!(i, Playout::Packet(_))).collect();
        assert_eq!(packets.len(), 50);
        for (i, (t, item)) in packets.iter().enumerate() {
            assert_eq!(*t, i as u64 * 20 + 60, "packet {i}");
            assert!(matches!(item, Playout::Packet(p) if p.sequence == i as u16));
        }
        // After the last packet the sender stopped: a few slots are concealed
        // (the buffer cannot tell that from loss), then the buffer goes idle.
        let s = jb.stats();
        assert_eq!((s.received, s.played, s.lost, s.late, s.resyncs, s.stretched, s.shrunk), (50, 50, 0, 0, 0, 0, 0));
        assert!(s.underruns <= u64::from(jb.lim.gap_cap_frames(160) as u32));
        assert_eq!(jb.buffered(), 0);
        assert_eq!(jb.current_delay(), ms(60));
        assert_eq!(jb.stats().mean_delay(), ms(60));
    }

    #[test]
    fn nothing_before_playout_time() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        assert_eq!(jb.pop(t0), None);
        assert_eq!(jb.insert(pkt(7, 1000), t0), InsertOutcome::Accepted);
        assert_eq!(jb.pop(t0 + ms(59)), None);
        assert!(matches!(jb.pop(t0 + ms(60)), Some(Playout::Packet(_))));
        assert_eq!(jb.pop(t0 + ms(79)), None);
    }

    #[test]
    fn reorder_within_window_is_corrected() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        // Pairs swapped, the second of each pair arriving 30 ms late.
        let order = [0u16, 2, 1, 4, 3, 6, 5, 8, 7, 9];
        let arrivals = order
            .iter()
            .map(|&s| {
                let delay = if s % 2 == 1 && s != 9 { 30 } else { 0 };
                (u64::from(s) * 20 + delay, pkt(s, u32::from(s) * 160))
            })
            .collect();
        let out = simulate(&mut jb, t0, arrivals, 250);
        let got: Vec<_> = out.iter().map(|(_, i)| i.clone()).collect();
        assert_eq!(seqs(&got), (0..10).map(Some).collect::<Vec<_>>());
        for (t, item) in &out {
            let Playout::Packet(p) = item else { unreachable!() };
            assert_eq!(*t, u64::from(p.sequence) * 20 + 60);
        }
        assert_eq!(jb.stats().late, 0);
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn packet_reordered_before_anchor_still_plays_first() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        assert_eq!(jb.insert(pkt(11, 1760), t0), InsertOutcome::Accepted);
        assert_eq!(jb.insert(pkt(10, 1600), t0 + ms(5)), InsertOutcome::Accepted);
        // Packet 10 is due 20 ms before the anchor packet.
        assert_eq!(seqs(&drain(&mut jb, t0 + ms(40))), [Some(10)]);
        assert_eq!(seqs(&drain(&mut jb, t0 + ms(60))), [Some(11)]);
    }

    #[test]
    fn duplicates_dropped_and_counted() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        assert_eq!(jb.insert(pkt(0, 0), t0), InsertOutcome::Accepted);
        assert_eq!(jb.insert(pkt(0, 0), t0 + ms(1)), InsertOutcome::Duplicate); // while buffered
        assert_eq!(jb.insert(pkt(1, 160), t0 + ms(20)), InsertOutcome::Accepted);
        assert_eq!(seqs(&drain(&mut jb, t0 + ms(80))), [Some(0), Some(1)]);
        assert_eq!(jb.insert(pkt(0, 0), t0 + ms(81)), InsertOutcome::Duplicate); // after playout
        assert_eq!(jb.insert(pkt(1, 160), t0 + ms(82)), InsertOutcome::Duplicate);
        let s = jb.stats();
        assert_eq!((s.played, s.duplicate, s.late), (2, 3, 0));
        assert_eq!(jb.buffered(), 0);
    }

    #[test]
    fn missing_packet_is_concealed_in_its_own_slot_with_the_next_as_fec() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        let arrivals =
            (0..10u16).filter(|&s| s != 5).map(|s| (u64::from(s) * 20, pkt(s, u32::from(s) * 160))).collect();
        let out = simulate(&mut jb, t0, arrivals, 240);
        let items: Vec<_> = out.iter().map(|(_, i)| i.clone()).collect();
        let mut expected: Vec<_> = (0..10).map(Some).collect();
        expected[5] = None;
        assert_eq!(seqs(&items), expected);
        assert_eq!(items[5], Playout::Lost { samples: 160, fec: Some(pkt(6, 960)) });
        // Every slot, the concealed one included, comes out on time.
        for (i, (t, _)) in out.iter().enumerate() {
            assert_eq!(*t, i as u64 * 20 + 60, "slot {i}");
        }
        let s = jb.stats();
        assert_eq!((s.played, s.lost, s.concealed, s.concealed_samples, s.underruns), (9, 1, 1, 160, 0));
    }

    #[test]
    fn burst_loss_conceals_each_slot_and_only_the_last_gets_fec() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        let arrivals = (0..10u16)
            .filter(|s| !(3..6).contains(s))
            .map(|s| (u64::from(s) * 20, pkt(s, u32::from(s) * 160)))
            .collect();
        let out = simulate(&mut jb, t0, arrivals, 240);
        let items: Vec<_> = out.iter().map(|(_, i)| i.clone()).collect();
        assert_eq!(items.len(), 10);
        // Packet 6 arrives at 120 ms, when slot 3 is due: the gap is known.
        assert_eq!(items[3], lost(160));
        assert_eq!(items[4], lost(160));
        assert_eq!(items[5], Playout::Lost { samples: 160, fec: Some(pkt(6, 960)) });
        assert_eq!(out[3].0, 120);
        assert_eq!(out[5].0, 160);
        let s = jb.stats();
        assert_eq!((s.lost, s.concealed, s.underruns), (3, 3, 0));
    }

    #[test]
    fn late_packet_dropped() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        for s in [0u16, 1, 2] {
            jb.insert(pkt(s, u32::from(s) * 160), t0 + ms(u64::from(s) * 20));
        }
        // Packet 1 played at 80 ms; a copy of packet 0 with another timestamp
        // is not a duplicate, it is late.
        assert_eq!(seqs(&drain(&mut jb, t0 + ms(80))), [Some(0), Some(1)]);
        let mut stale = pkt(0, 0);
        stale.timestamp = 80;
        assert_eq!(jb.insert(stale, t0 + ms(85)), InsertOutcome::Late);
        // Packet 3 missing, 4 arrives, loss emitted in slot 3, then 3 shows up.
        jb.insert(pkt(4, 640), t0 + ms(86));
        let items = drain(&mut jb, t0 + ms(140));
        assert_eq!(seqs(&items), [Some(2), None, Some(4)]);
        assert_eq!(jb.insert(pkt(3, 480), t0 + ms(141)), InsertOutcome::Late);
        let s = jb.stats();
        assert_eq!((s.late, s.lost, s.played, s.resyncs), (2, 1, 4, 0));
    }

    #[test]
    fn packet_arriving_after_its_time_but_before_its_slot_is_played() {
        // Nothing popped since it was due, so an overdue packet is still useful.
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        jb.insert(pkt(0, 0), t0);
        assert_eq!(drain(&mut jb, t0 + ms(60)).len(), 1);
        assert_eq!(jb.insert(pkt(1, 160), t0 + ms(150)), InsertOutcome::Accepted);
        // Then the slot after it, whose packet is missing, is concealed once
        // (blind concealment is real time: no burst for the slots missed).
        assert_eq!(seqs(&drain(&mut jb, t0 + ms(150))), [Some(1), None]);
        assert_eq!(seqs(&drain(&mut jb, t0 + ms(160))), [None]);
    }

    #[test]
    fn sequence_and_timestamp_wraparound() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        let seq0 = 65_530u16;
        let ts0 = u32::MAX - 4 * 160 + 1;
        // 20 packets across both wraps; packet index 8 (seq 2) is lost and
        // indices 6/7 (seq 0/1) are swapped.
        let mut arrivals = Vec::new();
        for i in 0..20u16 {
            if i == 8 {
                continue;
            }
            let delay = if i == 6 { 25 } else { 0 };
            let p = pkt(seq0.wrapping_add(i), ts0.wrapping_add(u32::from(i) * 160));
            arrivals.push((u64::from(i) * 20 + delay, p));
        }
        let out = simulate(&mut jb, t0, arrivals, 440);
        let items: Vec<_> = out.iter().map(|(_, i)| i.clone()).collect();
        let expected: Vec<Option<u16>> =
            (0..20u16).map(|i| if i == 8 { None } else { Some(seq0.wrapping_add(i)) }).collect();
        assert_eq!(seqs(&items), expected);
        assert!(matches!(items[8], Playout::Lost { samples: 160, fec: Some(_) }));
        for (i, (t, _)) in out.iter().enumerate() {
            assert_eq!(*t, i as u64 * 20 + 60, "item {i}");
        }
        let s = jb.stats();
        assert_eq!((s.played, s.lost, s.late, s.resyncs), (19, 1, 0, 0));
    }

    #[test]
    fn ssrc_change_resyncs_without_garbage() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        for s in 0..5u16 {
            jb.insert(pkt(s, u32::from(s) * 160), t0 + ms(u64::from(s) * 20));
        }
        assert_eq!(drain(&mut jb, t0 + ms(100)).len(), 3); // 0, 1, 2 played; 3, 4 buffered
        let mut b = pkt(40_000, 3_000_000);
        b.ssrc = 0xDEAD;
        let at = t0 + ms(101);
        assert_eq!(jb.insert(b.clone(), at), InsertOutcome::Resync);
        assert_eq!(jb.buffered(), 1);
        assert_eq!(jb.pop(at + ms(59)), None);
        let items = drain(&mut jb, at + ms(60));
        assert_eq!(items, [Playout::Packet(b)]);
        let next = MediaPacket { ssrc: 0xDEAD, ..pkt(40_001, 3_000_160) };
        assert_eq!(jb.insert(next, at + ms(20)), InsertOutcome::Accepted);
        assert_eq!(seqs(&drain(&mut jb, at + ms(80))), [Some(40_001)]);
        let s = jb.stats();
        assert_eq!((s.resyncs, s.flushed, s.lost, s.played, s.concealed), (1, 2, 0, 5, 0));
    }

    #[test]
    fn stragglers_of_the_replaced_ssrc_do_not_resync_again() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        for s in 0..5u16 {
            jb.insert(pkt(s, u32::from(s) * 160), t0 + ms(u64::from(s) * 20));
        }
        let new = |k: u16| MediaPacket { ssrc: 0xBEEF, ..pkt(9000 + k, 777 + u32::from(k) * 160) };
        use InsertOutcome::*;
        // Old packet 5 arrives after the new stream's first packet (reordering).
        assert_eq!(jb.insert(new(0), t0 + ms(100)), Resync);
        assert_eq!(jb.insert(pkt(5, 800), t0 + ms(101)), Late);
        assert_eq!(jb.insert(new(1), t0 + ms(120)), Accepted);
        assert_eq!(jb.stats().resyncs, 1);
        // If the old SSRC really comes back, it takes over after a few packets.
        let outcomes: Vec<_> =
            (6..11u16).map(|s| jb.insert(pkt(s, u32::from(s) * 160), t0 + ms(130 + u64::from(s)))).collect();
        assert_eq!(outcomes, [Late, Late, Late, Late, Resync]);
    }

    #[test]
    fn timestamp_jump_forward_resyncs() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        for s in 0..3u16 {
            jb.insert(pkt(s, u32::from(s) * 160), t0 + ms(u64::from(s) * 20));
        }
        assert_eq!(drain(&mut jb, t0 + ms(100)).len(), 3);
        // Sequence continues but the timestamp leaps 10 s ahead.
        let at = t0 + ms(110);
        assert_eq!(jb.insert(pkt(3, 80_000 + 480), at), InsertOutcome::Resync);
        assert_eq!(jb.insert(pkt(4, 80_000 + 640), at + ms(20)), InsertOutcome::Accepted);
        let out = simulate_from(&mut jb, at, 200);
        let packets: Vec<_> = out.iter().filter(|(_, i)| matches!(i, Playout::Packet(_))).map(|(t, _)| *t).collect();
        assert_eq!(packets, [60, 80]);
        // No concealment for the jump, before or after the resync.
        assert!(out.iter().take(2).all(|(_, i)| matches!(i, Playout::Packet(_))));
        let s = jb.stats();
        assert_eq!((s.resyncs, s.lost, s.late), (1, 0, 0));
    }

    #[test]
    fn small_timestamp_jump_is_a_silence_not_a_resync() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(adaptive());
        let mut arrivals: Vec<_> = (0..20u16).map(|s| (u64::from(s) * 20, pkt(s, u32::from(s) * 160))).collect();
        // The sender skips 300 ms of timestamps, sequence continues.
        arrivals.extend((20..30u16).map(|s| (u64::from(s) * 20, pkt(s, u32::from(s) * 160 + 2400))));
        let out = simulate(&mut jb, t0, arrivals, 1200);
        let s = jb.stats();
        assert_eq!((s.resyncs, s.lost, s.late, s.played), (0, 0, 0, 30));
        assert!(s.underruns <= u64::from(MAX_BLIND) * 4, "{s:?}");
        assert!(out.len() < 30 + 16);
    }

    #[test]
    fn timestamp_jump_backward_resyncs_after_a_few_late() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        let base = 800_000u32;
        let mut played = Vec::new();
        for s in 0..10u16 {
            let at = t0 + ms(u64::from(s) * 20);
            jb.insert(pkt(s, base + u32::from(s) * 160), at);
            played.extend(drain(&mut jb, at));
        }
        // Sender restarts its timestamp 100 s back, sequence continues.
        let mut outcomes = Vec::new();
        for k in 0..8u16 {
            let at = t0 + ms(200 + u64::from(k) * 20);
            played.extend(drain(&mut jb, at));
            outcomes.push(jb.insert(pkt(10 + k, u32::from(k) * 160), at));
        }
        use InsertOutcome::*;
        assert_eq!(outcomes, [Late, Late, Late, Late, Resync, Accepted, Accepted, Accepted]);
        // The re-anchored stream plays from the resync packet on, with no loss:
        // packet 14 arrived at 280 ms, so it plays at 340 ms.
        played.extend(simulate_from(&mut jb, t0 + ms(340), 60).into_iter().map(|(_, i)| i));
        let packets: Vec<_> = seqs(&played).into_iter().flatten().collect();
        let expected: Vec<u16> = (0..10).chain(14..18).collect();
        assert_eq!(packets, expected);
        let s = jb.stats();
        assert_eq!((s.resyncs, s.late, s.lost, s.played, s.flushed), (1, 4, 0, 14, 0));
    }

    #[test]
    fn timestamp_step_back_beyond_target_also_resyncs() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        let base = 100_000u32;
        for s in 0..10u16 {
            let at = t0 + ms(u64::from(s) * 20);
            jb.insert(pkt(s, base + u32::from(s) * 160), at);
            drain(&mut jb, at);
        }
        // Timestamp steps back 400 ms (within max_delay): the packets land
        // behind audio already played, so they are late until the resync.
        let outcomes: Vec<_> = (0..6u16)
            .map(|k| {
                let at = t0 + ms(200 + u64::from(k) * 20);
                drain(&mut jb, at);
                jb.insert(pkt(10 + k, base + (10 + u32::from(k)) * 160 - 3200), at)
            })
            .collect();
        use InsertOutcome::*;
        assert_eq!(outcomes, [Late, Late, Late, Late, Resync, Accepted]);
        // The resync starts again from the configured delay, whatever the
        // stepped-back packets looked like.
        assert_eq!(jb.target_delay(), ms(60));
    }

    #[test]
    fn sender_restart_with_random_sequence_recovers() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        for s in 0..10u16 {
            let at = t0 + ms(u64::from(s) * 20);
            jb.insert(pkt(30_000 + s, 500_000 + u32::from(s) * 160), at);
            drain(&mut jb, at);
        }
        // Same SSRC, sequence restarts far behind, timestamp restarts far behind.
        let outcomes: Vec<_> = (0..6u16)
            .map(|k| jb.insert(pkt(100 + k, 1_000 + u32::from(k) * 160), t0 + ms(200 + u64::from(k) * 20)))
            .collect();
        assert_eq!(outcomes[4], InsertOutcome::Resync);
        assert_eq!(outcomes[5], InsertOutcome::Accepted);
        // Sequence jumping far ahead with a plausible timestamp: also a new stream.
        let at = t0 + ms(400);
        assert_eq!(jb.insert(pkt(20_000, 1_000 + 10 * 160), at), InsertOutcome::Resync);
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn silence_gap_with_marker_is_not_loss() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        let mut arrivals: Vec<_> = (0..5u16).map(|s| (u64::from(s) * 20, pkt(s, u32::from(s) * 160))).collect();
        // 2 s of silence: sequence continues, timestamp jumps by the silence.
        for k in 0..5u16 {
            let mut p = pkt(5 + k, (105 + u32::from(k)) * 160);
            p.marker = k == 0;
            arrivals.push((2100 + u64::from(k) * 20, p));
        }
        let out = until_last_packet(&simulate(&mut jb, t0, arrivals, 2400));
        let items: Vec<_> = out.iter().map(|(_, i)| i.clone()).collect();
        // The end of the first spurt looks like an underrun: concealed while
        // the buffer waits, bounded; nothing at all when speech resumes.
        let blind = items.iter().filter(|i| matches!(i, Playout::Lost { .. })).count();
        assert_eq!(blind, jb.lim.gap_cap_frames(160) as usize);
        assert!(items[..5].iter().all(|i| matches!(i, Playout::Packet(_))));
        assert!(items[5 + blind..].iter().all(|i| matches!(i, Playout::Packet(_))));
        assert_eq!(items.len(), 10 + blind);
        assert_eq!(out[5 + blind].0, 2100 + 60);
        let s = jb.stats();
        assert_eq!((s.lost, s.resyncs, s.late), (0, 0, 0));
    }

    #[test]
    fn a_sender_that_paused_once_gets_only_a_short_concealment_at_the_next_pause() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        let mut arrivals = Vec::new();
        // Three talk spurts of 10 packets, 1 s apart, marker on each start.
        for spurt in 0..3u16 {
            for k in 0..10u16 {
                let i = spurt * 60 + k;
                let mut p = pkt(spurt * 10 + k, u32::from(i) * 160);
                p.marker = k == 0 && spurt > 0;
                arrivals.push((u64::from(i) * 20, p));
            }
        }
        let out = simulate(&mut jb, t0, arrivals, 3600);
        let s = jb.stats();
        assert_eq!((s.played, s.lost, s.late, s.resyncs), (30, 0, 0, 0));
        assert_eq!(s.realigned, 0); // nothing to change: no jitter, 60 ms fixed
                                    // First pause: up to max_delay of concealment (the sender had never
                                    // paused); second and third: MAX_BLIND each.
        let cap = jb.lim.gap_cap_frames(160) as u64;
        assert_eq!(s.underruns, cap + 2 * u64::from(MAX_BLIND));
        assert_eq!(out.len() as u64, 30 + s.underruns);
    }

    #[test]
    fn silence_gap_with_marker_and_loss_conceals_only_missing_packets() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        let mut arrivals: Vec<_> = (0..5u16).map(|s| (u64::from(s) * 20, pkt(s, u32::from(s) * 160))).collect();
        // Seq 5 (last packet of the spurt) is lost; seq 6 starts a new spurt 2 s later.
        let mut p = pkt(6, 106 * 160);
        p.marker = true;
        arrivals.push((2120, p.clone()));
        let out = until_last_packet(&simulate(&mut jb, t0, arrivals, 2400));
        let items: Vec<_> = out.into_iter().map(|(_, i)| i).collect();
        // Slot 5 is concealed blind (nothing buffered); when packet 6 shows
        // that one packet was missing, that concealment already covered it.
        assert_eq!(items[5], lost(160));
        assert_eq!(items.last(), Some(&Playout::Packet(p)));
        assert_eq!(jb.stats().lost, 1);
    }

    #[test]
    fn marker_after_loss_with_buffered_successor_conceals_the_missing_packet_only() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        for s in 0..5u16 {
            jb.insert(pkt(s, u32::from(s) * 160), t0 + ms(u64::from(s) * 20));
        }
        assert_eq!(drain(&mut jb, t0 + ms(140)).len(), 5);
        // Seq 5 lost, seq 6 opens a talk spurt 400 ms of media later but
        // arrives right away (a sender that squeezes silence): one frame
        // concealed, then silence, then the packet at its own time.
        let mut p = pkt(6, 6 * 160 + 3200);
        p.marker = true;
        assert_eq!(jb.insert(p.clone(), t0 + ms(150)), InsertOutcome::Accepted);
        let out = until_last_packet(&simulate_from(&mut jb, t0 + ms(150), 1200));
        let items: Vec<_> = out.iter().map(|(_, i)| i.clone()).collect();
        assert_eq!(items, [lost(160), Playout::Packet(p)]);
        assert_eq!(out[0].0 + 150, 160);
        assert_eq!(out[1].0 + 150, 6 * 20 + 400 + 60);
    }

    #[test]
    fn silence_gap_without_marker_and_no_sequence_gap_is_not_loss() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        let mut arrivals: Vec<_> = (0..5u16).map(|s| (u64::from(s) * 20, pkt(s, u32::from(s) * 160))).collect();
        arrivals.push((1100, pkt(5, 55 * 160)));
        let out = until_last_packet(&simulate(&mut jb, t0, arrivals, 1300));
        let last = out.last().unwrap();
        assert_eq!(last.0, 1160);
        assert!(matches!(&last.1, Playout::Packet(p) if p.sequence == 5));
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn overflow_drops_the_newcomer() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig { max_packets: 4, ..cfg() });
        // A consumer that does not pop: 0..3 are held when 4 and 5 arrive.
        let outcomes: Vec<_> =
            (0..6u16).map(|s| jb.insert(pkt(s, u32::from(s) * 160), t0 + ms(u64::from(s) * 20))).collect();
        use InsertOutcome::*;
        assert_eq!(outcomes, [Accepted, Accepted, Accepted, Accepted, Overflow, Overflow]);
        assert_eq!(jb.buffered(), 4);
        assert_eq!(seqs(&drain(&mut jb, t0 + ms(120))), [Some(0), Some(1), Some(2), Some(3)]);
        jb.insert(pkt(6, 960), t0 + ms(121));
        assert_eq!(
            drain(&mut jb, t0 + ms(180)),
            [lost(160), Playout::Lost { samples: 160, fec: Some(pkt(6, 960)) }, Playout::Packet(pkt(6, 960))]
        );
        let s = jb.stats();
        assert_eq!((s.overflow, s.lost, s.played), (2, 2, 5));
    }

    #[test]
    fn reset_forgets_stream_keeps_stats() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        jb.insert(pkt(0, 0), t0);
        jb.insert(pkt(1, 160), t0);
        jb.reset();
        assert_eq!(jb.buffered(), 0);
        assert_eq!(jb.pop(t0 + ms(1000)), None);
        assert_eq!(jb.insert(pkt(9000, 7), t0 + ms(1000)), InsertOutcome::Accepted);
        assert_eq!(seqs(&drain(&mut jb, t0 + ms(1060))), [Some(9000)]);
        let s = jb.stats();
        assert_eq!((s.received, s.flushed, s.played, s.resyncs), (3, 2, 1, 0));
    }

    #[test]
    fn degenerate_config_does_not_panic() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig {
            clock_rate: 0,
            min_delay: ms(100),
            target_delay: ms(1000),
            max_delay: ms(0),
            max_packets: 0,
        });
        // max raised to min, target clamped into them.
        assert_eq!(jb.target_delay(), ms(100));
        assert_eq!(jb.insert(pkt(0, 0), t0), InsertOutcome::Accepted);
        assert_eq!(jb.insert(pkt(1, 0), t0), InsertOutcome::Overflow);
        assert!(jb.pop(t0 + ms(100)).is_some());
        jb.insert(pkt(5, u32::MAX), t0 - ms(1));
        drain(&mut jb, t0 + Duration::from_secs(1_000_000));
        for rate in [1, 8000, 48_000, u32::MAX] {
            let mut jb = JitterBuffer::new(JitterConfig {
                clock_rate: rate,
                min_delay: Duration::ZERO,
                target_delay: Duration::MAX,
                max_delay: Duration::MAX,
                max_packets: 3,
            });
            for s in 0..10u16 {
                jb.insert(pkt(s * 3, u32::from(s).wrapping_mul(0x7000_0000)), t0 + ms(u64::from(s)));
                drain(&mut jb, t0 + Duration::from_secs(u64::from(s) * 1000));
            }
        }
    }

    #[test]
    fn ten_minutes_with_jitter_and_loss() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(0x5EED);
        let mut jb = JitterBuffer::new(cfg());
        let total: u32 = 10 * 60 * 50;
        let seq0 = 60_000u16; // wraps during the run
        let ts0 = u32::MAX - 1_000_000; // wraps too
        let mut arrivals = Vec::new();
        let mut dropped = 0u64;
        for i in 0..total {
            // Never lose the first or last packet: a trailing loss cannot be
            // detected, and the first one anchors the expected timeline below.
            if i != 0 && i != total - 1 && rng.random_bool(0.01) {
                dropped += 1;
                continue;
            }
            let jitter_us = if i == 0 { 0 } else { rng.random_range(0..40_000u64) };
            let p = pkt(seq0.wrapping_add(i as u16), ts0.wrapping_add(i * 160));
            arrivals.push((u64::from(i) * 20_000 + jitter_us, i, p));
        }
        arrivals.sort_by_key(|a| a.0);
        let sent = arrivals.len() as u64;

        let mut next = arrivals.into_iter().peekable();
        let (mut played, mut lost_items, mut expect_index) = (0u64, 0u64, 0u32);
        let mut max_buffered = 0;
        // Driver ticks every 20 ms, offset 7 ms from the sender's grid.
        let mut tick = 0u64;
        loop {
            let now_us = tick * 20_000 + 7_000;
            let now = t0 + Duration::from_micros(now_us);
            while let Some((_, _, p)) = next.next_if(|a| a.0 <= now_us) {
                assert_eq!(jb.insert(p, now), InsertOutcome::Accepted);
            }
            max_buffered = max_buffered.max(jb.buffered());
            let mut slots = 0;
            while let Some(item) = jb.pop(now) {
                slots += 1;
                match item {
                    Playout::Packet(p) => {
                        let i = u32::from(p.sequence.wrapping_sub(seq0));
                        assert!(i >= expect_index, "out of order");
                        // Played at the first tick at or after arrival_nominal + 60 ms.
                        let due_us = u64::from(i) * 20_000 + 60_000;
                        assert!(now_us >= due_us && now_us < due_us + 20_000, "packet {i} at {now_us}");
                        expect_index = i + 1;
                        played += 1;
                    }
                    Playout::Lost { samples, .. } => {
                        assert_eq!(samples, 160);
                        lost_items += 1;
                    }
                    Playout::Stretch { .. } => panic!("fixed delay"),
                }
            }
            // One slot per tick, always: the decoder's output is real time.
            if played > 0 && expect_index < total {
                assert_eq!(slots, 1, "tick {tick}");
            }
            if next.peek().is_none() && jb.buffered() == 0 {
                break;
            }
            tick += 1;
        }
        let s = jb.stats();
        assert_eq!(played, sent);
        assert_eq!(s.played + s.lost, u64::from(total));
        assert_eq!(s.lost, dropped);
        assert_eq!(lost_items, dropped);
        assert_eq!(s.concealed, dropped);
        assert_eq!((s.late, s.duplicate, s.resyncs, s.overflow), (0, 0, 0, 0));
        // Only when two packets in a row are lost is nothing buffered at the
        // first one's slot.
        assert!(s.underruns <= 5, "{s:?}");
        // Never more than (target + max jitter) / ptime + 1 packets held.
        assert!(max_buffered <= 6, "max buffered {max_buffered}");
        assert!(dropped > 200, "loss model exercised: {dropped}");
    }

    // ---- adaptation ----

    /// `n` packets of 20 ms from `first`, arrival = nominal + jitter(i) ms.
    fn stream(first: u16, n: u16, start_ms: u64, jitter: impl Fn(u16) -> u64) -> Vec<(u64, MediaPacket)> {
        (0..n)
            .map(|k| {
                let s = first + k;
                ((start_ms + u64::from(k) * 20 + jitter(k)) * 1000, pkt(s, u32::from(s) * 160))
            })
            .collect()
    }

    #[test]
    fn starts_at_the_initial_target_and_stays_low_without_jitter() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(adaptive());
        let out = ticked(t0).run(&mut jb, stream(0, 500, 0, |_| 0), 10_100_000);
        let s = jb.stats();
        assert_eq!((s.played, s.concealed - s.underruns, s.stretched, s.shrunk, s.late), (500, 0, 0, 0, 0));
        // No jitter: the need is min_delay; 40 ms is within a frame of it, so
        // nothing moves (one frame of hysteresis against churn).
        assert_eq!(jb.current_delay(), ms(40));
        assert!(jb.target_delay() >= ms(20) && jb.target_delay() < ms(21));
        assert!(out
            .iter()
            .all(|(t, i)| !matches!(i, Playout::Packet(p) if *t != u64::from(p.sequence) * 20_000 + 47_000)));
    }

    #[test]
    fn delay_grows_quickly_with_jitter_by_stretching_one_frame_at_a_time() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(adaptive());
        // 4 s calm, then 90 ms of jitter (a deterministic saw, so the window's
        // percentile is exact).
        let arrivals = stream(0, 500, 0, |k| if k < 200 { 0 } else { u64::from(k % 10) * 10 });
        let out = ticked(t0).run(&mut jb, arrivals, 10_600_000);
        let stretch_ticks: Vec<u64> =
            out.iter().filter(|(_, i)| matches!(i, Playout::Stretch { samples: 160 })).map(|(t, _)| *t).collect();
        let s = jb.stats();
        // Need: 90 ms (p95 of 0..90) + 5 ms margin = 95 ms, from 40 ms: three
        // stretches, at least 200 ms apart, all within the first second.
        assert_eq!(stretch_ticks.len(), 3, "{s:?}");
        assert!(stretch_ticks.windows(2).all(|w| w[1] - w[0] >= 200_000));
        assert!(stretch_ticks[2] < 5_000_000, "{stretch_ticks:?}");
        assert_eq!(jb.target_delay(), ms(95));
        assert!(jb.current_delay() >= ms(95) && jb.current_delay() < ms(95 + 20 + 2));
        // Growth costs only what arrived late while it happened.
        assert!(s.late <= 10, "{s:?}");
        assert_eq!(s.played + s.late, 500);
        assert_eq!(s.shrunk, 0);
    }

    #[test]
    fn delay_shrinks_slowly_when_jitter_subsides_dropping_single_frames() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(adaptive());
        // 3 s of 90 ms jitter, then 60 s calm.
        let arrivals = stream(0, 3150, 0, |k| if k < 150 { u64::from(k % 10) * 10 } else { 0 });
        let out = ticked(t0).run(&mut jb, arrivals, 63_500_000);
        let shrinks = jb.stats().shrunk;
        let s = jb.stats();
        assert!(s.stretched >= 3, "{s:?}");
        // Back from ~100 ms to within a frame of the 20 ms floor, one frame at
        // a time, never two within a second.
        assert!(jb.current_delay() <= ms(20 + 20 + 2), "{:?}", jb.current_delay());
        assert!(shrinks >= 3, "{s:?}");
        // A shrink shows as one sequence number missing between two played packets.
        let played: Vec<(u64, u16)> = out
            .iter()
            .filter_map(|(t, i)| match i {
                Playout::Packet(p) => Some((*t, p.sequence)),
                _ => None,
            })
            .collect();
        let skips: Vec<u64> =
            played.windows(2).filter(|w| w[0].0 > 3_500_000 && w[1].1 != w[0].1 + 1).map(|w| w[1].0).collect();
        assert_eq!(skips.len() as u64, shrinks);
        assert!(skips.windows(2).all(|w| w[1] - w[0] >= 1_000_000));
        // Decrease slowly: the held target takes ~10 s per 20 ms.
        assert!(skips[0] > 3_000_000 + 5_000_000, "{skips:?}");
        // Nothing lost but what arrived too late while the delay grew.
        assert_eq!(s.lost, s.late);
    }

    #[test]
    fn target_is_bounded_by_max_delay() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig { max_delay: ms(100), ..adaptive() });
        // 400 ms of jitter, far beyond max_delay.
        let arrivals = stream(0, 1000, 0, |k| u64::from(k % 20) * 20);
        ticked(t0).run(&mut jb, arrivals, 20_500_000);
        assert_eq!(jb.target_delay(), ms(100));
        assert!(jb.current_delay() <= ms(120));
    }

    #[test]
    fn talk_spurt_start_realigns_without_stretch_or_drop() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(adaptive());
        // Spurt 1 with 90 ms of jitter (the delay grows), 2 s of silence, then
        // spurt 2 with the same jitter: it starts at the held target directly.
        let mut arrivals = stream(0, 100, 0, |k| u64::from(k % 10) * 10);
        let mut spurt2 = stream(200, 100, 4000, |k| u64::from(k % 10) * 10);
        spurt2[0].1.marker = true;
        arrivals.extend(spurt2);
        let out = ticked(t0).run(&mut jb, arrivals, 7_000_000);
        let s = jb.stats();
        let stretched_in_spurt2 =
            out.iter().filter(|(t, i)| *t > 4_000_000 && matches!(i, Playout::Stretch { .. })).count();
        assert_eq!(stretched_in_spurt2, 0, "{s:?}");
        assert_eq!(s.shrunk, 0);
        assert!(s.realigned <= 1, "{s:?}");
        assert_eq!(s.played + s.late, 200);
        // Nothing is concealed when spurt 2 starts.
        let first2 = out.iter().position(|(_, i)| matches!(i, Playout::Packet(p) if p.sequence == 200)).unwrap();
        assert!(out[first2..].iter().take(50).all(|(_, i)| matches!(i, Playout::Packet(_))));
    }

    #[test]
    fn realignment_at_a_talk_spurt_moves_the_delay_down_to_the_target() {
        let t0 = Instant::now();
        // Starts at 120 ms; the jitter is nil, so the target is the 20 ms floor.
        let mut jb = JitterBuffer::new(JitterConfig { target_delay: ms(120), ..adaptive() });
        let mut arrivals = stream(0, 50, 0, |_| 0);
        let mut spurt2 = stream(1000, 50, 20_000, |_| 0);
        spurt2[0].1.marker = true;
        arrivals.extend(spurt2);
        let out = ticked(t0).run(&mut jb, arrivals, 22_000_000);
        let s = jb.stats();
        // Silent for 19 s: the held target has decayed from 120 ms by 2 ms/s
        // to ~80 ms, so spurt 2 starts lower, without a drop.
        assert_eq!((s.realigned, s.shrunk, s.stretched), (1, 0, 0), "{s:?}");
        let t = jb.target_delay();
        assert!(t >= ms(78) && t <= ms(84), "{t:?}");
        // Half a frame above the target of the moment (which decays on).
        let c = jb.current_delay();
        assert!(c >= t + ms(9) && c <= t + ms(15), "{c:?} {t:?}");
        let first2 = out.iter().find(|(_, i)| matches!(i, Playout::Packet(p) if p.sequence == 1000)).unwrap();
        assert!(first2.0 >= 20_000_000 + c.as_micros() as u64);
        assert!(first2.0 < 20_000_000 + c.as_micros() as u64 + 20_000);
    }

    fn drift_run(ppm: f64, minutes: u64) -> (JitterBuffer, Vec<(u64, Playout)>) {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(adaptive());
        let n = (minutes * 60 * 50) as u32;
        let period_us = 20_000.0 / (1.0 + ppm * 1e-6);
        let arrivals =
            (0..n).map(|i| ((f64::from(i) * period_us) as u64 + 5_000, pkt(i as u16, i.wrapping_mul(160)))).collect();
        let end = (f64::from(n) * period_us) as u64 + 500_000;
        let out = ticked(t0).run(&mut jb, arrivals, end);
        (jb, out)
    }

    #[test]
    fn fast_sender_clock_is_absorbed_by_rare_single_frame_drops() {
        // +1000 ppm for 5 minutes: 300 ms of slide (what ±100 ppm does in 50 min).
        let (jb, out) = drift_run(1000.0, 5);
        let s = jb.stats();
        assert!(s.shrunk >= 13 && s.shrunk <= 16, "{s:?}");
        assert_eq!((s.stretched, s.late, s.lost), (0, 0, 0));
        assert!(jb.current_delay() >= ms(20) && jb.current_delay() <= ms(62));
        assert_eq!(s.concealed, s.underruns);
        assert!(until_last_packet(&out).iter().all(|(_, i)| !matches!(i, Playout::Lost { .. })));
    }

    #[test]
    fn slow_sender_clock_is_absorbed_by_rare_single_frame_stretches() {
        let (jb, out) = drift_run(-1000.0, 5);
        let s = jb.stats();
        assert!(s.stretched >= 13 && s.stretched <= 16, "{s:?}");
        assert_eq!((s.shrunk, s.late, s.lost), (0, 0, 0));
        assert!(jb.current_delay() >= ms(20) && jb.current_delay() <= ms(62));
        // No underrun-then-rebuffer cycle: nothing concealed mid-stream.
        let last_packet = out.iter().rposition(|(_, i)| matches!(i, Playout::Packet(_))).unwrap();
        assert!(out[..last_packet].iter().all(|(_, i)| !matches!(i, Playout::Lost { .. })));
    }

    /// A sender clock 1000-2000 ppm fast raises the delay steadily between
    /// shrinks. It used to pass `max_delay` plus a frame: the shrink
    /// threshold (held target + 5 ms + a frame) sat above it whenever the
    /// held target was within 5 ms of `max_delay` (the first case, found by
    /// tests/proptest_rtp.rs), and with no margin the creep while a shrink
    /// waited took it over (after a grow to just under the bound; past a
    /// concealment).
    #[test]
    fn fast_sender_clock_keeps_the_delay_within_max_delay_plus_a_frame() {
        // ptime, jitter, loss, drift (ppm), min, max, initial delay, seed.
        type Case = (u64, u64, f64, f64, u64, u64, u64, u64);
        let cases: [Case; 3] = [
            (10, 10, 0.0, 1426.7057436132454, 0, 20, 0, 0),
            (60, 15, 0.0, 1082.9, 0, 33, 6, 13388622298785324769),
            (10, 25, 0.064, 1904.9, 3, 36, 297, 6552102148902900074),
        ];
        for (ptime, jitter, loss, drift, min, max, initial, seed) in cases {
            let mut s = sim::Scenario::hour("drift", seed, sim::Loss::Uniform(loss), drift);
            s.duration = Duration::from_secs(60);
            s.ptime = ms(ptime);
            s.jitter = ms(jitter);
            s.ts_jump = None;
            s.ssrc_change = None;
            s.warmup = Duration::from_secs(10);
            s.config.min_delay = ms(min);
            s.config.max_delay = ms(max);
            s.config.target_delay = ms(initial);
            let r = sim::simulate(&s);
            assert_eq!(r.out_of_order, 0);
            assert!(r.max_current_ms <= (max + ptime) as f64, "{r:?}");
        }
    }

    #[test]
    fn packet_time_is_learned_from_timestamps() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig { clock_rate: 48_000, ..cfg() });
        // 30 ms Opus packets (1440 samples at 48 kHz); seq 5 lost.
        let arrivals: Vec<_> = (0..10u16)
            .filter(|&s| s != 5)
            .map(|s| (u64::from(s) * 30, MediaPacket { payload_type: 111, ..pkt(s, u32::from(s) * 1440) }))
            .collect();
        let out = simulate(&mut jb, t0, arrivals, 400);
        assert_eq!(jb.frame_samples(), 1440);
        let (t, item) = &out[5];
        assert!(matches!(item, Playout::Lost { samples: 1440, fec: Some(p) } if p.sequence == 6));
        assert_eq!(*t, 5 * 30 + 60);
        // After the last packet, underrun slots are 30 ms too.
        assert!(out[10..].iter().all(|(_, i)| *i == lost(1440)));
    }

    #[test]
    fn no_lost_storm_after_a_long_outage() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(adaptive());
        // 1 s of packets, a 10 s outage (seq and ts keep counting), 1 s more.
        let mut arrivals = stream(0, 50, 0, |_| 0);
        arrivals.extend(stream(550, 50, 11_000, |_| 0));
        let out = ticked(t0).run(&mut jb, arrivals, 13_000_000);
        let s = jb.stats();
        assert_eq!((s.played, s.resyncs), (100, 0));
        // Concealment is real time and bounded by max_delay: 10 slots of 20 ms.
        let cap = jb.lim.gap_cap_frames(160) as u64;
        assert_eq!(cap, 10);
        assert!(s.concealed <= cap + 10, "{s:?}");
        let mut per_tick = std::collections::BTreeMap::new();
        for (t, _) in &out {
            *per_tick.entry(*t).or_insert(0) += 1;
        }
        assert!(per_tick.values().all(|&n| n <= 2), "burst of items in one tick");
    }

    #[test]
    fn underrun_during_continuous_speech_is_concealed_in_real_time() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        // Packets 10..13 lost and nothing buffered behind them (60 ms delay,
        // 20 ms packets: packet 14 arrives after slot 10 is due).
        let arrivals = stream(0, 30, 0, |_| 0).into_iter().filter(|(_, p)| !(10..14).contains(&p.sequence)).collect();
        let out = until_last_packet(&ticked(t0).run(&mut jb, arrivals, 2_000_000));
        let mut ticks = out.iter().map(|(t, _)| *t).collect::<Vec<_>>();
        ticks.dedup();
        assert_eq!(ticks.len(), out.len(), "one item per tick");
        let items: Vec<_> = out.iter().map(|(_, i)| i.clone()).collect();
        // Slot 10 (due at 260 ms, tick at 267 ms): nothing buffered.
        assert_eq!(items[10], lost(160));
        // By slot 11 packet 14 (sent at 280 ms) is buffered: the loss is
        // bracketed now, and the last missing frame gets its FEC.
        assert_eq!(items[11], lost(160));
        assert_eq!(items[12], lost(160));
        assert!(matches!(&items[13], Playout::Lost { fec: Some(p), .. } if p.sequence == 14));
        let s = jb.stats();
        assert_eq!(s.lost, 4);
        // The rest is the stream's end: concealment bounded by max_delay.
        assert_eq!(s.underruns, 1 + jb.lim.gap_cap_frames(160) as u64);
        assert_eq!(out.iter().filter(|(_, i)| matches!(i, Playout::Lost { .. })).count(), 4);
    }

    #[test]
    fn packet_late_for_a_concealed_slot_is_dropped_without_resync() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        // Packets 10..16 delayed by 150 ms (a spike): their slots are
        // concealed; they arrive late but do not look like a restart.
        let arrivals = stream(0, 40, 0, |k| if (10..17).contains(&k) { 150 } else { 0 });
        ticked(t0).run(&mut jb, arrivals, 1_000_000);
        let s = jb.stats();
        assert_eq!(s.resyncs, 0, "{s:?}");
        assert!(s.late >= 5, "{s:?}");
        assert_eq!(s.played + s.late, 40);
    }

    #[test]
    fn accessors_before_any_packet() {
        let jb = JitterBuffer::new(adaptive());
        assert_eq!(jb.current_delay(), Duration::ZERO);
        assert_eq!(jb.target_delay(), ms(40));
        assert_eq!(jb.frame_samples(), 160);
        assert_eq!(jb.stats().mean_delay(), Duration::ZERO);
    }

    #[test]
    fn simulator_smoke() {
        let mut s = sim::Scenario::hour("smoke", 7, sim::Loss::Bursty { rate: 0.2, mean_burst: 3.0 }, 100.0);
        s.duration = Duration::from_secs(60);
        let r = sim::simulate(&s);
        assert_eq!(r.out_of_order, 0);
        assert!(r.stats.resyncs <= r.events);
        let ratio = r.output_samples as f64 / r.sent_samples as f64;
        assert!((0.97..1.03).contains(&ratio), "{r:?}");
    }
}

#[cfg(test)]
mod consumer_tests {
    use super::*;

    /// A sender that replays the same 3.5 s of audio five times with the same numbering (as
    /// SIPp's `play_pcap_audio` does), a second apart, each restart re-rolling where the playout
    /// times fall against the consumer's ticks; arrivals jitter by up to 3 ms and the consumer
    /// wakes up to 4 ms late, as a tokio timer does. Consumed as `call::media` does (everything
    /// due, else the next frame early), every tick of a talk spurt yields a frame: no silence is
    /// put into the caller's audio. With `pop` alone, 40 of a spurt's 175 ticks came out empty
    /// (each followed later by a double one) in some runs.
    #[test]
    fn a_consumer_with_jittery_ticks_gets_one_frame_per_tick() {
        let mut x: u64 = 0x5EED;
        let mut rnd = move |n: u64| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        let mut worst = 0;
        for _trial in 0..200 {
            let mut jb = JitterBuffer::new(JitterConfig::default());
            let t0 = Instant::now();
            // (arrival µs, seq, ts, spurt)
            let mut arrivals = Vec::new();
            let mut start = 1_000_000 + rnd(20_000);
            for k in 0..5u64 {
                for i in 0..175u64 {
                    arrivals.push((
                        start + i * 20_000 + rnd(3000),
                        4242u16 + i as u16,
                        1_000_000u32 + i as u32 * 160,
                        k,
                    ));
                }
                start += 175 * 20_000 + 1_000_000 + rnd(30_000);
            }
            arrivals.sort();
            let mut next = 0;
            let mut empty = [0u32; 5];
            let mut tick = 0u64;
            while tick < start + 1_000_000 {
                let wake = tick + rnd(4000);
                while next < arrivals.len() && arrivals[next].0 <= wake {
                    let (t, seq, ts, _) = arrivals[next];
                    let p = MediaPacket {
                        sequence: seq,
                        timestamp: ts,
                        marker: false,
                        ssrc: 7,
                        payload_type: 0,
                        payload: vec![0; 160],
                    };
                    jb.insert(p, t0 + Duration::from_micros(t));
                    next += 1;
                }
                let now = t0 + Duration::from_micros(wake);
                let mut frames = 0;
                while jb.pop(now).is_some() {
                    frames += 1;
                }
                if frames == 0 && jb.pop_early(now, Duration::from_millis(20)).is_some() {
                    frames += 1;
                }
                // Inside a spurt (its packets still coming): an empty tick puts silence in.
                let in_spurt = next > 0 && next < arrivals.len() && arrivals[next].3 == arrivals[next - 1].3;
                if frames == 0 && in_spurt && jb.buffered() > 0 {
                    empty[arrivals[next].3 as usize] += 1;
                }
                tick += 20_000;
            }
            worst = worst.max(*empty.iter().max().unwrap());
        }
        // The first packet of a spurt waits out the buffer's delay: one or two empty ticks.
        assert!(worst <= 3, "{worst} empty ticks in one talk spurt");
    }
}
