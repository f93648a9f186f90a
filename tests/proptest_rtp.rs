//! Property tests for the media state machines fed with hostile input:
//! RTP parsing, the jitter buffer and the pacer must never panic and must keep
//! their bookkeeping consistent whatever arrives.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use switchboard::media::jitter::sim::{self, Loss, Scenario};
use switchboard::media::jitter::{InsertOutcome, JitterBuffer, JitterConfig, MediaPacket, Playout};
use switchboard::media::pacer::{Pacer, PacerConfig};
use switchboard::media::rtp::{self, RtpHeader};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = rtp::parse(&buf);
        let _ = rtp::looks_like_rtcp(&buf);
    }

    /// Same, but with a version-2 first byte so the CSRC, extension and
    /// padding paths are actually reached.
    #[test]
    fn parse_v2_never_panics_and_payload_is_inside(
        flags in 0u8..64,
        rest in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut buf = vec![0x80 | flags];
        buf.extend_from_slice(&rest);
        if let Ok((_, payload)) = rtp::parse(&buf) {
            // The payload is a sub-slice of the datagram, after the fixed header.
            let start = payload.as_ptr() as usize - buf.as_ptr() as usize;
            prop_assert!(start >= rtp::HEADER_LEN);
            prop_assert!(start + payload.len() <= buf.len());
        }
    }

    #[test]
    fn write_parse_round_trip(
        marker: bool,
        payload_type in 0u8..128,
        sequence: u16,
        timestamp: u32,
        ssrc: u32,
        payload in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let h = RtpHeader { marker, payload_type, sequence, timestamp, ssrc };
        let mut out = Vec::new();
        rtp::write(&h, &payload, &mut out);
        prop_assert_eq!(out.len(), rtp::HEADER_LEN + payload.len());
        let (h2, p2) = rtp::parse(&out).unwrap();
        prop_assert_eq!(h2, h);
        prop_assert_eq!(p2, &payload[..]);
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A packet `seq_step` after the previous one (or arbitrary when `wild`),
    /// arriving `dt_ms` after the previous event.
    Insert {
        wild: bool,
        seq_step: i16,
        ts_jitter: i32,
        rand_seq: u16,
        rand_ts: u32,
        ssrc: u32,
        marker: bool,
        dt_ms: i64,
    },
    /// Pop until `None`, `dt_ms` after the previous event.
    Pop { dt_ms: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    let insert = (
        prop::bool::weighted(0.1),
        -3i16..6,
        -400i32..400,
        any::<u16>(),
        any::<u32>(),
        prop::sample::select(vec![7u32, 7, 7, 7, 7, 7, 7, 8]),
        prop::bool::weighted(0.1),
        -5i64..60,
    )
        .prop_map(|(wild, seq_step, ts_jitter, rand_seq, rand_ts, ssrc, marker, dt_ms)| Op::Insert {
            wild,
            seq_step,
            ts_jitter,
            rand_seq,
            rand_ts,
            ssrc,
            marker,
            dt_ms,
        });
    let pop = (-5i64..80).prop_map(|dt_ms| Op::Pop { dt_ms });
    prop_oneof![3 => insert, 2 => pop]
}

fn config() -> impl Strategy<Value = JitterConfig> {
    (prop::sample::select(vec![0u32, 1, 8000, 16000, 48000]), 0u64..80, 0u64..120, 0u64..700, 1usize..40).prop_map(
        |(clock_rate, min, target, max, max_packets)| JitterConfig {
            clock_rate,
            min_delay: Duration::from_millis(min),
            target_delay: Duration::from_millis(target),
            max_delay: Duration::from_millis(max),
            max_packets,
        },
    )
}

/// What one or more drains handed out.
#[derive(Debug, Default)]
struct Out {
    packets: u64,
    lost: u64,
    lost_samples: u64,
    stretched: u64,
    stretched_samples: u64,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn jitter_buffer_survives_arbitrary_streams(
        cfg in config(),
        ops in proptest::collection::vec(op(), 1..300),
        seq0: u16,
        ts0: u32,
    ) {
        // Start well after "now" so that steps backwards in time stay representable.
        let t0 = Instant::now() + Duration::from_secs(10);
        let max_packets = cfg.max_packets.max(1);
        let clock_rate = cfg.clock_rate.max(1);
        let min_delay = cfg.min_delay;
        let max_delay = cfg.max_delay.max(cfg.min_delay);
        let mut jb = JitterBuffer::new(cfg);
        let (mut seq, mut ts) = (seq0, ts0);
        let mut t_ms: i64 = 0;
        let mut latest_ms: i64 = 0;
        let mut counts = [0u64; 5];
        let mut out = Out::default();

        let check = |jb: &JitterBuffer| -> Result<(), TestCaseError> {
            let s = jb.stats();
            prop_assert!(jb.buffered() <= max_packets);
            prop_assert_eq!(
                s.received,
                s.played + jb.buffered() as u64 + s.late + s.duplicate + s.overflow + s.flushed + s.shrunk
            );
            prop_assert!(jb.target_delay() >= min_delay && jb.target_delay() <= max_delay);
            prop_assert!(s.underruns <= s.concealed);
            Ok(())
        };

        for op in ops {
            match op {
                Op::Insert { wild, seq_step, ts_jitter, rand_seq, rand_ts, ssrc, marker, dt_ms } => {
                    t_ms = (t_ms + dt_ms).max(-5000);
                    latest_ms = latest_ms.max(t_ms);
                    if wild {
                        seq = rand_seq;
                        ts = rand_ts;
                    } else {
                        seq = seq.wrapping_add(seq_step as u16);
                        ts = ts.wrapping_add((i32::from(seq_step) * 160 + ts_jitter) as u32);
                    }
                    let p = MediaPacket {
                        sequence: seq,
                        timestamp: ts,
                        marker,
                        ssrc,
                        payload_type: 0,
                        payload: seq.to_be_bytes().to_vec(),
                    };
                    let now = offset(t0, t_ms);
                    let outcome = jb.insert(p, now);
                    let idx = match outcome {
                        InsertOutcome::Accepted => 0,
                        InsertOutcome::Duplicate => 1,
                        InsertOutcome::Late => 2,
                        InsertOutcome::Resync => 3,
                        InsertOutcome::Overflow => 4,
                    };
                    counts[idx] += 1;
                }
                Op::Pop { dt_ms } => {
                    t_ms = (t_ms + dt_ms).max(-5000);
                    latest_ms = latest_ms.max(t_ms);
                    drain(&mut jb, offset(t0, t_ms), clock_rate, &mut out)?;
                }
            }
            check(&jb)?;
        }

        let s = jb.stats();
        prop_assert_eq!(s.duplicate, counts[1]);
        prop_assert_eq!(s.late, counts[2]);
        prop_assert_eq!(s.resyncs, counts[3]);
        prop_assert_eq!(s.overflow, counts[4]);
        prop_assert_eq!(s.received, counts.iter().sum::<u64>());

        // Everything accepted is eventually due: far in the future the buffer drains.
        drain(&mut jb, offset(t0, latest_ms + 86_400_000), clock_rate, &mut out)?;
        prop_assert_eq!(jb.buffered(), 0);
        let s = jb.stats();
        prop_assert_eq!(out.packets, s.played);
        prop_assert_eq!(out.lost, s.concealed);
        prop_assert_eq!(out.lost_samples, s.concealed_samples);
        prop_assert_eq!(out.stretched, s.stretched);
        check(&jb)?;
        jb.reset();
        check(&jb)?;
    }

    /// A real stream (any packet time, uniform loss up to 30 %, sender drift
    /// up to ±2000 ppm, any bounds, jitter up to what `max_delay` can cover):
    /// the delay stays within the configured bounds, packets come out in
    /// order, and the decoder gets one minute of audio for one minute sent.
    #[test]
    fn adaptive_delay_stays_bounded_for_any_jitter_loss_and_drift(
        ptime_ms in prop::sample::select(vec![10u64, 20, 30, 60]),
        jitter_pct in 0u64..=100,
        loss in 0.0f64..0.3,
        drift_ppm in -2000.0f64..2000.0,
        min_ms in 0u64..60,
        span_ms in 20u64..300,
        initial_ms in 0u64..400,
        seed: u64,
    ) {
        let jitter_ms = (min_ms + span_ms - 10) * jitter_pct / 100;
        let mut s = Scenario::hour("prop", seed, Loss::Uniform(loss), drift_ppm);
        s.duration = Duration::from_secs(60);
        s.ptime = Duration::from_millis(ptime_ms);
        s.jitter = Duration::from_millis(jitter_ms);
        s.ts_jump = None;
        s.ssrc_change = None;
        s.config.min_delay = Duration::from_millis(min_ms);
        s.config.max_delay = Duration::from_millis(min_ms + span_ms);
        s.config.target_delay = Duration::from_millis(initial_ms);
        // An initial delay at max plus a delayed first packet starts above
        // the bounds: shrinking back takes a few seconds.
        s.warmup = Duration::from_secs(10);
        let r = sim::simulate(&s);
        let frame = ptime_ms as f64;
        prop_assert_eq!(r.out_of_order, 0);
        prop_assert_eq!(r.stats.resyncs, 0);
        // Bounded by construction above; below, the window minimum can rise
        // between two slots (a frame at most before the next grow).
        prop_assert!(r.max_current_ms <= (min_ms + span_ms) as f64 + frame, "{:?}", r);
        prop_assert!(r.min_current_ms >= min_ms as f64 - jitter_ms as f64 / 2.0 - 1.0, "{:?}", r);
        let ratio = r.output_samples as f64 / r.sent_samples as f64;
        prop_assert!((0.97..=1.03).contains(&ratio), "output/sent {} {:?}", ratio, r);
        // Adjustments stay rare: at most what the drift and the jitter's
        // arrival (one per frame of target) require, plus a few.
        let needed = (drift_ppm.abs() * 60e-6 * 1000.0 / frame) as u64 + ((min_ms + span_ms) as f64 / frame) as u64 * 2 + 6;
        prop_assert!(r.stats.stretched + r.stats.shrunk <= needed, "{:?}", r);
    }

    #[test]
    fn pacer_survives_arbitrary_wakeups(
        wakeups in proptest::collection::vec((-30i64..200, 0usize..400, prop::bool::weighted(0.1)), 1..200),
        max_catch_up in 0u32..5,
        initial_sequence: u16,
        initial_timestamp: u32,
    ) {
        let t0 = Instant::now() + Duration::from_secs(10);
        let cfg = PacerConfig {
            clock_rate: 8000,
            pcm_rate: 8000,
            ptime: Duration::from_millis(20),
            payload_type: 0,
            ssrc: 1,
            initial_sequence,
            initial_timestamp,
            max_catch_up,
        };
        let mut p = Pacer::new(cfg, t0);
        let cap = max_catch_up.max(1) as usize;
        let mut t_ms = 0i64;
        let mut pushed = 0u64;
        let mut next_seq = initial_sequence;
        let mut last_slot: Option<u32> = None;
        for (dt, push, clear) in wakeups {
            t_ms = (t_ms + dt).max(-1000);
            let before = p.poll_timeout();
            p.push_audio(&vec![1i16; push]);
            pushed += push as u64;
            if clear {
                pushed -= p.clear() as u64;
            }
            let now = offset(t0, t_ms);
            let frames = p.handle_timeout(now);
            prop_assert!(frames.len() <= cap);
            prop_assert!(frames.is_empty() == (now < before));
            for f in &frames {
                prop_assert_eq!(f.pcm.len(), 160);
                prop_assert_eq!(f.header.sequence, next_seq);
                next_seq = next_seq.wrapping_add(1);
                let slot = f.header.timestamp.wrapping_sub(initial_timestamp) / 160;
                prop_assert_eq!(f.header.timestamp.wrapping_sub(initial_timestamp) % 160, 0);
                if let Some(last) = last_slot {
                    prop_assert!(slot > last);
                }
                last_slot = Some(slot);
            }
            prop_assert!(p.poll_timeout() > now);
            let s = p.stats();
            // Every slot before the next deadline was either sent or skipped.
            let slots = (p.poll_timeout() - t0).as_millis() as u64 / 20;
            prop_assert_eq!(s.frames_sent + s.frames_skipped, slots);
            prop_assert_eq!(p.played_speech_samples() + p.queued_samples() as u64, pushed);
        }
    }
}

fn offset(t0: Instant, ms: i64) -> Instant {
    if ms >= 0 {
        t0 + Duration::from_millis(ms as u64)
    } else {
        t0 - Duration::from_millis(ms.unsigned_abs())
    }
}

/// Pop until `None`. Concealment is bounded: per gap between two buffered
/// packets at most `max_delay` worth (in frames of at least 2.5 ms), plus
/// one frame with nothing buffered, plus one stretch.
fn drain(jb: &mut JitterBuffer, now: Instant, clock_rate: u32, out: &mut Out) -> Result<(), TestCaseError> {
    let limit = (jb.buffered() as u64 + 1) * (1 + 700 * 2 / 5) + 3;
    let mut concealed = 0u64;
    let mut last_fec: Option<u16> = None;
    for _ in 0..=limit {
        match jb.pop(now) {
            None => return Ok(()),
            Some(Playout::Packet(p)) => {
                prop_assert_eq!(&p.payload, &p.sequence.to_be_bytes().to_vec());
                // FEC always comes from the packet that plays next.
                if let Some(s) = last_fec.take() {
                    prop_assert_eq!(s, p.sequence);
                }
                out.packets += 1;
            }
            Some(Playout::Lost { samples, fec }) => {
                prop_assert!(samples >= 1 && samples <= clock_rate);
                if let Some(f) = &fec {
                    prop_assert_eq!(&f.payload, &f.sequence.to_be_bytes().to_vec());
                }
                last_fec = fec.map(|f| f.sequence);
                concealed += 1;
                out.lost += 1;
                out.lost_samples += u64::from(samples);
            }
            Some(Playout::Stretch { samples }) => {
                prop_assert!(samples >= 1 && samples <= clock_rate);
                out.stretched += 1;
                out.stretched_samples += u64::from(samples);
            }
        }
    }
    prop_assert!(jb.pop(now).is_none(), "pop did not terminate ({} concealed)", concealed);
    Ok(())
}
