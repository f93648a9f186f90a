//! Receive-side jitter buffer: fixed target delay, packet level, driven by
//! RTP timestamps.
//!
//! Each packet's playout instant is derived from its RTP timestamp through one
//! mapping ([`PlayoutClock`]), anchored on the first packet of a stream:
//!
//! ```text
//! playout(ts) = anchor_instant + (ts - anchor_ts) / clock_rate + target_delay
//! ```
//!
//! so the buffer never accumulates arrival jitter and an adaptive buffer can
//! later change the delay in that one place. Sequence numbers and timestamps
//! are unwrapped to 64-bit extended values so wraparound of either is a
//! non-event.
//!
//! Packets are held in sequence-number order, which for one audio stream is
//! also timestamp order. The driver calls [`JitterBuffer::pop`] on its 20 ms
//! tick until it returns `None`; it gets packets whose playout instant has
//! come and [`Playout::Lost`] for sequence numbers that never arrived in time.
//! Nothing here reads the clock; `now` is always passed in.
//!
//! The buffer expects a single payload stream: route RFC 4733 telephone-event
//! packets (whose timestamp stays at the start of the event) elsewhere before
//! inserting, or they look like a timestamp jump backwards.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// More than this many Late packets in a row means the sender restarted or
/// jumped its timestamp backwards: re-anchor on the next one.
const MAX_CONSECUTIVE_LATE: u32 = 4;
/// How many played (sequence, timestamp) pairs are remembered to tell a
/// duplicate from a late packet.
const PLAYED_WINDOW: usize = 128;
/// A forward sequence jump larger than this (RFC 3550 A.1 `MAX_DROPOUT`) is a
/// new stream, not a loss burst: counting thousands of "lost" packets would
/// only poison the statistics.
const MAX_DROPOUT: i64 = 3000;

#[derive(Debug, Clone)]
pub struct JitterConfig {
    /// RTP clock rate of the payload (8000 for G.711).
    pub clock_rate: u32,
    /// Delay between a packet's nominal arrival and its playout.
    pub target_delay: Duration,
    /// A packet due further in the future than this, or overdue by more than
    /// this, is a timestamp discontinuity. Raised to `target_delay` if lower.
    pub max_delay: Duration,
    /// Hard cap on packets held, whatever the peer sends.
    pub max_packets: usize,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            clock_rate: 8000,
            target_delay: Duration::from_millis(60),
            max_delay: Duration::from_millis(500),
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
    /// Its slot was already played or concealed, or it is hopelessly overdue; dropped.
    Late,
    /// Discontinuity (new SSRC, timestamp or sequence jump, run of late
    /// packets): the buffer was flushed and re-anchored on this packet, which is buffered.
    Resync,
    /// The buffer holds `max_packets` already; this (new) packet was dropped.
    Overflow,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    Packet(MediaPacket),
    /// a gap the decoder must conceal: number of samples missing
    Lost {
        samples: u32,
    },
}

/// Counters since construction (not cleared by `reset`).
///
/// Every inserted packet ends up in exactly one bucket, so at any time
/// `received == played + buffered() + late + duplicate + overflow + flushed`.
/// `lost` counts sequence numbers that were concealed, which includes packets
/// that were dropped here as late or overflow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    pub received: u64,
    pub played: u64,
    pub late: u64,
    pub duplicate: u64,
    /// packets
    pub lost: u64,
    pub resyncs: u64,
    pub overflow: u64,
    /// Buffered packets discarded unplayed by a resync or `reset`.
    pub flushed: u64,
}

/// Maps extended RTP timestamps to local playout instants. This is the only
/// place that relates media time to wall-clock time: an adaptive buffer
/// changes `delay` (or re-anchors) here and nothing else moves.
#[derive(Debug, Clone)]
struct PlayoutClock {
    anchor: Instant,
    anchor_ts: i64,
    clock_rate: u32,
    delay: Duration,
}

impl PlayoutClock {
    /// Nanoseconds from `now` until the playout instant of `ext_ts`; negative
    /// when overdue. Signed integer arithmetic rather than `Instant` math, so
    /// any timestamp a peer sends is representable and nothing can panic.
    fn until_due(&self, ext_ts: i64, now: Instant) -> i128 {
        let media = (i128::from(ext_ts) - i128::from(self.anchor_ts)) * 1_000_000_000
            / i128::from(self.clock_rate);
        media + self.delay.as_nanos() as i128 - signed_nanos_since(now, self.anchor)
    }
}

/// `a - b` in nanoseconds, either sign.
fn signed_nanos_since(a: Instant, b: Instant) -> i128 {
    match a.checked_duration_since(b) {
        Some(d) => d.as_nanos() as i128,
        None => -(b.duration_since(a).as_nanos() as i128),
    }
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

/// Per-stream state, created by the first packet and replaced on resync.
#[derive(Debug)]
struct Stream {
    ssrc: u32,
    clock: PlayoutClock,
    /// Unwrap references: highest accepted extended sequence number and its timestamp.
    highest_seq: i64,
    ts_ref: i64,
    /// Next sequence number to play; `None` until the first pop, so packets
    /// reordered ahead of the anchor packet are still played first.
    next_seq: Option<i64>,
    last_played: Option<(i64, i64)>,
    /// Recently played (seq, ts), to tell duplicates from late packets.
    played: VecDeque<(i64, i64)>,
    /// Packet duration learned from consecutive packets, for sizing concealment.
    samples_per_packet: i64,
    consecutive_late: u32,
}

pub struct JitterBuffer {
    cfg: JitterConfig,
    /// Keyed by extended sequence number.
    packets: BTreeMap<i64, Entry>,
    stream: Option<Stream>,
    stats: JitterStats,
}

impl JitterBuffer {
    pub fn new(mut cfg: JitterConfig) -> Self {
        // Config may come from SDP; keep it sane rather than panic.
        cfg.clock_rate = cfg.clock_rate.max(1);
        cfg.max_delay = cfg.max_delay.max(cfg.target_delay);
        cfg.max_packets = cfg.max_packets.max(1);
        Self {
            cfg,
            packets: BTreeMap::new(),
            stream: None,
            stats: JitterStats::default(),
        }
    }

    pub fn insert(&mut self, p: MediaPacket, now: Instant) -> InsertOutcome {
        self.stats.received += 1;
        let Some(st) = self.stream.as_mut() else {
            self.start_stream(p, now);
            return InsertOutcome::Accepted;
        };
        if p.ssrc != st.ssrc {
            return self.resync(p, now);
        }
        let ext_seq = unwrap_seq(st.highest_seq, p.sequence);
        let ext_ts = unwrap_ts(st.ts_ref, p.timestamp);

        // A played packet with the same number but another timestamp is not a
        // copy: it falls through to the late check (a restarted sender).
        let already_played = st.next_seq.is_some_and(|next| ext_seq < next)
            && st.played.contains(&(ext_seq, ext_ts));
        if already_played || self.packets.contains_key(&ext_seq) {
            self.stats.duplicate += 1;
            return InsertOutcome::Duplicate;
        }

        let until_due = st.clock.until_due(ext_ts, now);
        let max_delay = self.cfg.max_delay.as_nanos() as i128;
        if until_due > max_delay || ext_seq - st.highest_seq > MAX_DROPOUT {
            return self.resync(p, now);
        }

        let late = st.next_seq.is_some_and(|next| ext_seq < next)
            || st.last_played.is_some_and(|(_, ts)| ext_ts < ts)
            || -until_due > max_delay;
        if late {
            st.consecutive_late += 1;
            if st.consecutive_late > MAX_CONSECUTIVE_LATE {
                return self.resync(p, now);
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
        self.packets.insert(ext_seq, Entry { ext_ts, packet: p });
        InsertOutcome::Accepted
    }

    /// Next item whose playout time has come (call repeatedly until None at each 20 ms tick).
    pub fn pop(&mut self, now: Instant) -> Option<Playout> {
        let st = self.stream.as_mut()?;
        let head = self.packets.first_entry()?;
        let seq = *head.key();
        if st.clock.until_due(head.get().ext_ts, now) > 0 {
            return None;
        }

        if let (Some(next), Some((_, last_ts))) = (st.next_seq, st.last_played) {
            if seq > next {
                // Sequence numbers next..seq never arrived in time.
                let missing = seq - next;
                let spp = st.samples_per_packet;
                let by_count = missing.saturating_mul(spp);
                let samples = if head.get().packet.marker {
                    // New talk spurt: the timestamp gap is mostly silence
                    // (RFC 3551 §4.1); conceal only the missing packets.
                    by_count
                } else {
                    // Same spurt: conceal exactly up to this packet's timestamp.
                    let gap = head.get().ext_ts - last_ts - spp;
                    if gap > 0 {
                        gap
                    } else {
                        by_count
                    }
                };
                st.next_seq = Some(seq);
                self.stats.lost += missing as u64;
                // Cap at one second: one Lost per gap, never a storm.
                let cap = i64::from(self.cfg.clock_rate);
                return Some(Playout::Lost {
                    samples: samples.clamp(1, cap) as u32,
                });
            }
        }

        let entry = head.remove();
        if let Some((last_seq, last_ts)) = st.last_played {
            let delta = entry.ext_ts - last_ts;
            if last_seq + 1 == seq
                && !entry.packet.marker
                && delta > 0
                && delta <= i64::from(self.cfg.clock_rate)
            {
                st.samples_per_packet = delta;
            }
        }
        st.next_seq = Some(seq + 1);
        st.last_played = Some((seq, entry.ext_ts));
        if st.played.len() == PLAYED_WINDOW {
            st.played.pop_front();
        }
        st.played.push_back((seq, entry.ext_ts));
        self.stats.played += 1;
        Some(Playout::Packet(entry.packet))
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Packets held.
    pub fn buffered(&self) -> usize {
        self.packets.len()
    }

    /// Drop everything buffered and forget the stream; the next packet
    /// anchors afresh (as `Accepted`). Statistics are kept: they describe the call.
    pub fn reset(&mut self) {
        self.stats.flushed += self.packets.len() as u64;
        self.packets.clear();
        self.stream = None;
    }

    fn resync(&mut self, p: MediaPacket, now: Instant) -> InsertOutcome {
        self.stats.resyncs += 1;
        self.stats.flushed += self.packets.len() as u64;
        self.packets.clear();
        self.start_stream(p, now);
        InsertOutcome::Resync
    }

    /// Anchor the playout clock on `p` (arriving at `now`) and buffer it.
    fn start_stream(&mut self, p: MediaPacket, now: Instant) {
        let ext_seq = i64::from(p.sequence);
        let ext_ts = i64::from(p.timestamp);
        self.stream = Some(Stream {
            ssrc: p.ssrc,
            clock: PlayoutClock {
                anchor: now,
                anchor_ts: ext_ts,
                clock_rate: self.cfg.clock_rate,
                delay: self.cfg.target_delay,
            },
            highest_seq: ext_seq,
            ts_ref: ext_ts,
            next_seq: None,
            last_played: None,
            played: VecDeque::with_capacity(PLAYED_WINDOW),
            // 20 ms until learned: the RFC 3551 default packetisation.
            samples_per_packet: i64::from(self.cfg.clock_rate / 50).max(1),
            consecutive_late: 0,
        });
        self.packets.insert(ext_seq, Entry { ext_ts, packet: p });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const SSRC: u32 = 0x1234_5678;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn cfg() -> JitterConfig {
        JitterConfig::default()
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

    fn drain(jb: &mut JitterBuffer, now: Instant) -> Vec<Playout> {
        std::iter::from_fn(|| jb.pop(now)).collect()
    }

    fn seqs(items: &[Playout]) -> Vec<Option<u16>> {
        items
            .iter()
            .map(|p| match p {
                Playout::Packet(p) => Some(p.sequence),
                Playout::Lost { .. } => None,
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

    #[test]
    fn in_order_stream_plays_at_arrival_plus_target() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        let arrivals = (0..50u16)
            .map(|i| (u64::from(i) * 20, pkt(i, u32::from(i) * 160)))
            .collect();
        let out = simulate(&mut jb, t0, arrivals, 1200);
        assert_eq!(out.len(), 50);
        for (i, (t, item)) in out.iter().enumerate() {
            assert_eq!(*t, i as u64 * 20 + 60, "packet {i}");
            assert!(matches!(item, Playout::Packet(p) if p.sequence == i as u16));
        }
        let s = jb.stats();
        assert_eq!(
            (s.received, s.played, s.lost, s.late, s.resyncs),
            (50, 50, 0, 0, 0)
        );
        assert_eq!(jb.buffered(), 0);
    }

    #[test]
    fn nothing_before_playout_time() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        assert_eq!(jb.pop(t0), None);
        assert_eq!(jb.insert(pkt(7, 1000), t0), InsertOutcome::Accepted);
        assert_eq!(jb.pop(t0 + ms(59)), None);
        assert!(matches!(jb.pop(t0 + ms(60)), Some(Playout::Packet(_))));
        assert_eq!(jb.pop(t0 + ms(1000)), None);
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
        let out = simulate(&mut jb, t0, arrivals, 400);
        let got: Vec<_> = out.iter().map(|(_, i)| i.clone()).collect();
        assert_eq!(seqs(&got), (0..10).map(Some).collect::<Vec<_>>());
        for (t, item) in &out {
            let Playout::Packet(p) = item else {
                unreachable!()
            };
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
        assert_eq!(
            jb.insert(pkt(10, 1600), t0 + ms(5)),
            InsertOutcome::Accepted
        );
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
        assert_eq!(
            jb.insert(pkt(1, 160), t0 + ms(82)),
            InsertOutcome::Duplicate
        );
        let s = jb.stats();
        assert_eq!((s.played, s.duplicate, s.late), (2, 3, 0));
        assert_eq!(jb.buffered(), 0);
    }

    #[test]
    fn missing_packet_yields_one_lost() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        let arrivals = (0..10u16)
            .filter(|&s| s != 5)
            .map(|s| (u64::from(s) * 20, pkt(s, u32::from(s) * 160)))
            .collect();
        let out = simulate(&mut jb, t0, arrivals, 400);
        let items: Vec<_> = out.iter().map(|(_, i)| i.clone()).collect();
        assert_eq!(
            seqs(&items),
            [
                Some(0),
                Some(1),
                Some(2),
                Some(3),
                Some(4),
                None,
                Some(6),
                Some(7),
                Some(8),
                Some(9)
            ]
        );
        assert_eq!(items[5], Playout::Lost { samples: 160 });
        // The loss is only declared when packet 6 is due.
        assert_eq!(out[5].0, 6 * 20 + 60);
        assert_eq!(out[6].0, 6 * 20 + 60);
        let s = jb.stats();
        assert_eq!((s.played, s.lost), (9, 1));
    }

    #[test]
    fn burst_loss_conceals_whole_gap() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        let arrivals = (0..10u16)
            .filter(|s| !(3..6).contains(s))
            .map(|s| (u64::from(s) * 20, pkt(s, u32::from(s) * 160)))
            .collect();
        let items: Vec<_> = simulate(&mut jb, t0, arrivals, 400)
            .into_iter()
            .map(|(_, i)| i)
            .collect();
        assert_eq!(items[3], Playout::Lost { samples: 480 });
        assert_eq!(items.len(), 8);
        assert_eq!(jb.stats().lost, 3);
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
        // Packet 3 missing, 4 arrives, loss emitted, then 3 shows up.
        jb.insert(pkt(4, 640), t0 + ms(86));
        let items = drain(&mut jb, t0 + ms(140));
        assert_eq!(seqs(&items), [Some(2), None, Some(4)]);
        assert_eq!(jb.insert(pkt(3, 480), t0 + ms(141)), InsertOutcome::Late);
        assert_eq!(drain(&mut jb, t0 + ms(1000)), []);
        let s = jb.stats();
        assert_eq!((s.late, s.lost, s.played, s.resyncs), (2, 1, 4, 0));
    }

    #[test]
    fn packet_arriving_after_its_time_but_before_its_slot_is_played() {
        // Nothing later has been played, so an overdue packet is still useful.
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        jb.insert(pkt(0, 0), t0);
        assert_eq!(drain(&mut jb, t0 + ms(60)).len(), 1);
        assert_eq!(
            jb.insert(pkt(1, 160), t0 + ms(150)),
            InsertOutcome::Accepted
        );
        assert_eq!(seqs(&drain(&mut jb, t0 + ms(150))), [Some(1)]);
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
            let delay = match i {
                6 => 25,
                _ => 0,
            };
            let p = pkt(seq0.wrapping_add(i), ts0.wrapping_add(u32::from(i) * 160));
            arrivals.push((u64::from(i) * 20 + delay, p));
        }
        let out = simulate(&mut jb, t0, arrivals, 600);
        let items: Vec<_> = out.iter().map(|(_, i)| i.clone()).collect();
        let expected: Vec<Option<u16>> = (0..20u16)
            .map(|i| {
                if i == 8 {
                    None
                } else {
                    Some(seq0.wrapping_add(i))
                }
            })
            .collect();
        assert_eq!(seqs(&items), expected);
        assert_eq!(items[8], Playout::Lost { samples: 160 });
        for (i, (t, _)) in out.iter().enumerate() {
            // The loss is declared when the packet after it is due.
            let slot = if i == 8 { 9 } else { i as u64 };
            assert_eq!(*t, slot * 20 + 60, "item {i}");
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
        // New stream continues normally; the old SSRC is now the stranger.
        assert_eq!(
            jb.insert(
                MediaPacket {
                    ssrc: 0xDEAD,
                    ..pkt(40_001, 3_000_160)
                },
                at + ms(20)
            ),
            InsertOutcome::Accepted
        );
        assert_eq!(seqs(&drain(&mut jb, at + ms(80))), [Some(40_001)]);
        let s = jb.stats();
        assert_eq!((s.resyncs, s.flushed, s.lost, s.played), (1, 2, 0, 5));
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
        assert_eq!(
            jb.insert(pkt(4, 80_000 + 640), at + ms(20)),
            InsertOutcome::Accepted
        );
        let out = simulate_from(&mut jb, at, 200);
        assert_eq!(out.iter().map(|(t, _)| *t).collect::<Vec<_>>(), [60, 80]);
        let s = jb.stats();
        assert_eq!((s.resyncs, s.lost, s.late), (1, 0, 0));
    }

    /// Pop with a 1 ms tick from `start` for `span_ms`, no arrivals.
    fn simulate_from(jb: &mut JitterBuffer, start: Instant, span_ms: u64) -> Vec<(u64, Playout)> {
        (0..=span_ms)
            .flat_map(|t| drain(jb, start + ms(t)).into_iter().map(move |i| (t, i)))
            .collect()
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
        assert_eq!(
            outcomes,
            [Late, Late, Late, Late, Resync, Accepted, Accepted, Accepted]
        );
        // The re-anchored stream plays from the resync packet on, with no loss:
        // packet 14 arrived at 280 ms, so it plays at 340 ms.
        played.extend(
            simulate_from(&mut jb, t0 + ms(340), 200)
                .into_iter()
                .map(|(_, i)| i),
        );
        let expected: Vec<Option<u16>> = (0..10).chain(14..18).map(Some).collect();
        assert_eq!(seqs(&played), expected);
        let s = jb.stats();
        assert_eq!(
            (s.resyncs, s.late, s.lost, s.played, s.flushed),
            (1, 4, 0, 14, 0)
        );
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
            .map(|k| {
                jb.insert(
                    pkt(100 + k, 1_000 + u32::from(k) * 160),
                    t0 + ms(200 + u64::from(k) * 20),
                )
            })
            .collect();
        assert_eq!(outcomes[4], InsertOutcome::Resync);
        assert_eq!(outcomes[5], InsertOutcome::Accepted);
        // Sequence jumping far ahead with a plausible timestamp: also a new stream.
        let at = t0 + ms(400);
        assert_eq!(
            jb.insert(pkt(20_000, 1_000 + 10 * 160), at),
            InsertOutcome::Resync
        );
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn silence_gap_with_marker_is_not_loss() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        let mut arrivals: Vec<_> = (0..5u16)
            .map(|s| (u64::from(s) * 20, pkt(s, u32::from(s) * 160)))
            .collect();
        // 2 s of silence: sequence continues, timestamp jumps by the silence.
        for k in 0..5u16 {
            let mut p = pkt(5 + k, (105 + u32::from(k)) * 160);
            p.marker = k == 0;
            arrivals.push((2100 + u64::from(k) * 20, p));
        }
        let out = simulate(&mut jb, t0, arrivals, 2400);
        assert!(out.iter().all(|(_, i)| matches!(i, Playout::Packet(_))));
        assert_eq!(out.len(), 10);
        assert_eq!(out[5].0, 2100 + 60);
        let s = jb.stats();
        assert_eq!((s.lost, s.resyncs, s.late), (0, 0, 0));
    }

    #[test]
    fn silence_gap_with_marker_and_loss_conceals_only_missing_packets() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        let mut arrivals: Vec<_> = (0..5u16)
            .map(|s| (u64::from(s) * 20, pkt(s, u32::from(s) * 160)))
            .collect();
        // Seq 5 (last packet of the spurt) is lost; seq 6 starts a new spurt 2 s later.
        let mut p = pkt(6, 106 * 160);
        p.marker = true;
        arrivals.push((2120, p));
        let items: Vec<_> = simulate(&mut jb, t0, arrivals, 2400)
            .into_iter()
            .map(|(_, i)| i)
            .collect();
        assert_eq!(items[5], Playout::Lost { samples: 160 });
        assert_eq!(jb.stats().lost, 1);
    }

    #[test]
    fn silence_gap_without_marker_and_no_sequence_gap_is_not_loss() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(cfg());
        let mut arrivals: Vec<_> = (0..5u16)
            .map(|s| (u64::from(s) * 20, pkt(s, u32::from(s) * 160)))
            .collect();
        arrivals.push((1100, pkt(5, 55 * 160)));
        let out = simulate(&mut jb, t0, arrivals, 1300);
        assert_eq!(out.len(), 6);
        assert_eq!(out[5].0, 1160);
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn overflow_drops_the_newcomer() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig {
            max_packets: 4,
            ..cfg()
        });
        let outcomes: Vec<_> = (0..6u16)
            .map(|s| jb.insert(pkt(s, u32::from(s) * 160), t0))
            .collect();
        use InsertOutcome::*;
        assert_eq!(
            outcomes,
            [Accepted, Accepted, Accepted, Accepted, Overflow, Overflow]
        );
        assert_eq!(jb.buffered(), 4);
        assert_eq!(
            seqs(&drain(&mut jb, t0 + ms(200))),
            [Some(0), Some(1), Some(2), Some(3)]
        );
        jb.insert(pkt(6, 960), t0 + ms(201));
        assert_eq!(
            drain(&mut jb, t0 + ms(300)),
            [Playout::Lost { samples: 320 }, Playout::Packet(pkt(6, 960))]
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
        assert_eq!(
            jb.insert(pkt(9000, 7), t0 + ms(1000)),
            InsertOutcome::Accepted
        );
        assert_eq!(seqs(&drain(&mut jb, t0 + ms(1060))), [Some(9000)]);
        let s = jb.stats();
        assert_eq!((s.received, s.flushed, s.played, s.resyncs), (3, 2, 1, 0));
    }

    #[test]
    fn degenerate_config_does_not_panic() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(JitterConfig {
            clock_rate: 0,
            target_delay: ms(100),
            max_delay: ms(0),
            max_packets: 0,
        });
        assert_eq!(jb.insert(pkt(0, 0), t0), InsertOutcome::Accepted);
        assert_eq!(jb.insert(pkt(1, 0), t0), InsertOutcome::Overflow);
        assert!(jb.pop(t0 + ms(100)).is_some());
        jb.insert(pkt(5, u32::MAX), t0 - ms(1));
        drain(&mut jb, t0 + Duration::from_secs(1_000_000));
    }

    #[test]
    fn ten_minutes_with_jitter_and_loss() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(0x5EED);
        let cfg = cfg();
        let mut jb = JitterBuffer::new(cfg.clone());
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
            let jitter_us = if i == 0 {
                0
            } else {
                rng.random_range(0..40_000u64)
            };
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
                assert_eq!(
                    jb.insert(p, t0 + Duration::from_micros(now_us)),
                    InsertOutcome::Accepted
                );
            }
            max_buffered = max_buffered.max(jb.buffered());
            while let Some(item) = jb.pop(now) {
                match item {
                    Playout::Packet(p) => {
                        let i = u32::from(p.sequence.wrapping_sub(seq0));
                        assert!(i >= expect_index, "out of order");
                        // Played at the first tick at or after arrival_nominal + 60 ms.
                        let due_us = u64::from(i) * 20_000 + 60_000;
                        assert!(
                            now_us >= due_us && now_us < due_us + 20_000,
                            "packet {i} at {now_us}"
                        );
                        expect_index = i + 1;
                        played += 1;
                    }
                    Playout::Lost { samples } => {
                        assert_eq!(samples % 160, 0);
                        lost_items += 1;
                    }
                }
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
        assert!(lost_items <= dropped);
        assert_eq!((s.late, s.duplicate, s.resyncs, s.overflow), (0, 0, 0, 0));
        // Never more than (target + max jitter) / ptime + 1 packets held.
        assert!(max_buffered <= 6, "max buffered {max_buffered}");
        assert!(dropped > 200, "loss model exercised: {dropped}");
    }
}
