//! Property tests for DTMF: the RFC 4733 receiver fed with hostile packet
//! streams must never panic and never invent digits, and what the sender
//! plays must come back out of the receiver across packet loss.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use switchboard::media::dtmf::{
    digit_to_event, event_to_digit, parse_sip_info, DtmfEvent, EventPayload, Rfc4733Receiver, Rfc4733Sender,
};

/// One arriving packet: RTP fields, payload, and how long after the previous
/// packet it arrives.
#[derive(Debug, Clone)]
struct Arrival {
    sequence: u16,
    timestamp: u32,
    marker: bool,
    payload: Vec<u8>,
    step_ms: u64,
}

/// Payloads: sometimes raw bytes (short, long, anything), mostly well-formed
/// blocks with events around the DTMF range so the state machine is reached.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..12),
        4 => (0u8..20, any::<bool>(), 0u8..64, any::<u16>()).prop_map(|(event, end, volume, duration)| {
            let mut v = Vec::new();
            EventPayload { event, end, volume, duration }.write(&mut v);
            v
        }),
    ]
}

fn step_ms() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 0u64..40, 1 => 0u64..3000]
}

/// Timestamps from a small pool near `base` (so events repeat, reorder and
/// interleave, across the 32-bit wrap when `base` is near it). The pool is
/// smaller than the receiver's memory of finished events (16): with more
/// distinct timestamps cycling, an evicted one would legitimately count as a
/// new press.
fn pooled_arrivals() -> impl Strategy<Value = Vec<Arrival>> {
    (any::<u32>(), proptest::collection::vec((any::<u16>(), 0u32..12, any::<bool>(), payload(), step_ms()), 0..200))
        .prop_map(|(base, raw)| {
            raw.into_iter()
                .map(|(sequence, k, marker, payload, step_ms)| Arrival {
                    sequence,
                    timestamp: base.wrapping_add(k * 160),
                    marker,
                    payload,
                    step_ms,
                })
                .collect()
        })
}

/// Fully random timestamps: every packet jumps anywhere.
fn random_arrivals() -> impl Strategy<Value = Vec<Arrival>> {
    proptest::collection::vec((any::<u16>(), any::<u32>(), any::<bool>(), payload(), step_ms()), 0..200).prop_map(
        |raw| {
            raw.into_iter()
                .map(|(sequence, timestamp, marker, payload, step_ms)| Arrival {
                    sequence,
                    timestamp,
                    marker,
                    payload,
                    step_ms,
                })
                .collect()
        },
    )
}

/// Handles every timeout due by `now`.
fn run_timers(rx: &mut Rfc4733Receiver, now: Instant, out: &mut Vec<DtmfEvent>) {
    while rx.poll_timeout().is_some_and(|due| due <= now) {
        match rx.handle_timeout(now) {
            Some(d) => out.push(d),
            None => break,
        }
    }
}

/// Feeds the arrivals in virtual time, then waits long enough for every
/// event to be reported, and checks the receiver's promises.
fn check_receiver(clock_rate: u32, arrivals: &[Arrival]) -> Result<(), TestCaseError> {
    let mut rx = Rfc4733Receiver::new(clock_rate);
    let t0 = Instant::now();
    let mut now = t0;
    let mut digits = Vec::new();
    let mut timestamps = HashSet::new();
    for a in arrivals {
        now += Duration::from_millis(a.step_ms);
        run_timers(&mut rx, now, &mut digits);
        timestamps.insert(a.timestamp);
        digits.extend(rx.handle_packet(a.sequence, a.timestamp, a.marker, &a.payload, now));
        run_timers(&mut rx, now, &mut digits);
    }
    now += Duration::from_secs(10);
    run_timers(&mut rx, now, &mut digits);

    prop_assert!(
        digits.len() <= timestamps.len(),
        "{} digits from {} distinct timestamps",
        digits.len(),
        timestamps.len()
    );
    // Nothing is left pending forever once the stream has gone quiet.
    prop_assert_eq!(rx.poll_timeout(), None);
    for d in &digits {
        prop_assert!(digit_to_event(d.digit).is_some(), "not a digit: {:?}", d.digit);
        prop_assert!(d.started >= t0 && d.started <= now);
    }
    // Digits come out in the order their presses started.
    prop_assert!(digits.windows(2).all(|w| w[0].started <= w[1].started));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn receiver_pooled_timestamps(clock in prop_oneof![Just(8000u32), Just(48_000), Just(0), Just(1)], arrivals in pooled_arrivals()) {
        check_receiver(clock, &arrivals)?;
    }

    #[test]
    fn receiver_random_timestamps(clock in prop_oneof![Just(8000u32), Just(48_000)], arrivals in random_arrivals()) {
        check_receiver(clock, &arrivals)?;
    }

    #[test]
    fn payload_write_parse_round_trip(event: u8, end: bool, volume in 0u8..64, duration: u16, extra in proptest::collection::vec(any::<u8>(), 0..8)) {
        let p = EventPayload { event, end, volume, duration };
        let mut buf = Vec::new();
        p.write(&mut buf);
        prop_assert_eq!(buf.len(), 4);
        buf.extend_from_slice(&extra);
        prop_assert_eq!(EventPayload::parse(&buf), Some(p));
    }

    #[test]
    fn sip_info_never_panics(ct in "[a-zA-Z/; =-]{0,40}", body in proptest::collection::vec(any::<u8>(), 0..64)) {
        for ct in [ct.as_str(), "application/dtmf-relay", "application/dtmf"] {
            if let Some((d, _)) = parse_sip_info(ct, &body) {
                prop_assert!(digit_to_event(d).is_some());
            }
        }
    }
}

/// Small deterministic PRNG (xorshift64*) so a loss pattern is a function of
/// one generated seed and shrinks with it.
struct Rng(u64);
impl Rng {
    fn chance(&mut self, percent: u64) -> bool {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % 100 < percent
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the digits, tone and gap lengths, packet time, clock rate and
    /// start timestamp: with up to 30% of the non-end packets lost, the
    /// receiver reports exactly the digits sent, with their full durations.
    /// Tones up to 3 s cover long-event segments at 48 kHz (0xFFFF units is
    /// 1.37 s there).
    #[test]
    fn sender_receiver_round_trip(
        digits in "[0-9*#A-Da-d]{1,8}",
        tone_ms in prop_oneof![3 => 40u32..300, 1 => 300u32..3000],
        gap_ms in 0u32..200,
        ptime_ms in prop_oneof![Just(10u32), Just(20), Just(30), Just(40)],
        clock_rate in prop_oneof![Just(8000u32), Just(16_000), Just(48_000)],
        start_ts: u32,
        loss_percent in 0u64..=30,
        seed in 1u64..,
    ) {
        let mut tx = Rfc4733Sender::new(clock_rate, ptime_ms);
        tx.queue(&digits, tone_ms, gap_ms).unwrap();
        let mut rx = Rfc4733Receiver::new(clock_rate);
        let mut rng = Rng(seed);
        let slot_units = clock_rate * ptime_ms / 1000;
        let t0 = Instant::now();
        let (mut ts, mut now) = (start_ts, t0);
        let mut got = Vec::new();
        let mut slots = 0u32;
        while tx.is_active() {
            run_timers(&mut rx, now, &mut got);
            if let Some(packets) = tx.next_for_slot(ts) {
                for p in packets {
                    let e = EventPayload::parse(&p.payload).unwrap();
                    prop_assert_eq!(e.volume, 10);
                    if !e.end && rng.chance(loss_percent) {
                        continue;
                    }
                    got.extend(rx.handle_packet(0, p.timestamp, p.marker, &p.payload, now));
                }
            }
            ts = ts.wrapping_add(slot_units);
            now += Duration::from_millis(u64::from(ptime_ms));
            slots += 1;
            prop_assert!(slots < 100_000, "sender never finishes");
        }
        run_timers(&mut rx, now + Duration::from_secs(2), &mut got);

        let sent: String = digits.chars().map(|c| c.to_ascii_uppercase()).collect();
        let received: String = got.iter().map(|d| d.digit).collect();
        prop_assert_eq!(received, sent);
        for d in &got {
            // Tones are whole packet slots, at least one.
            prop_assert!(d.duration_ms >= tone_ms && d.duration_ms < tone_ms.max(ptime_ms) + ptime_ms,
                "duration {} for a {} ms tone at {} ms packets", d.duration_ms, tone_ms, ptime_ms);
        }
    }
}

#[test]
fn digit_codes_are_a_bijection_on_dtmf() {
    for ev in 0..=255u8 {
        if let Some(d) = event_to_digit(ev) {
            assert_eq!(digit_to_event(d), Some(ev));
        }
    }
}
