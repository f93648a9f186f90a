//! One simulated hour per scenario through the adaptive jitter buffer, in
//! virtual time (`switchboard::media::jitter::sim`): 180 000 packets of 20 ms
//! with 30 ms of jitter (uniform 0–30 ms per packet, so packets reorder), 0.5 %
//! explicit swaps, 1 % duplicates, a +10 s timestamp jump at 30 min, an SSRC
//! change at 45 min, sender clock drift of 0 / +100 / −100 ppm, and no loss,
//! uniform 5 % / 20 % or Gilbert–Elliott bursty 5 % / 20 % (mean burst 3).
//!
//! `cargo test --release --test jitter_hour` runs all of it in about a
//! second (a few seconds in a debug build): the simulation is arithmetic.
//!
//! Bounds, and why:
//! * delay: `current_delay()` sampled at every tick after 5 s stays within
//!   `[min_delay, max_delay + one frame]` (the controller moves it one frame
//!   at a time inside those bounds; drift would push it out within an hour if
//!   it did not work: ±100 ppm is ±360 ms per hour);
//! * concealment: concealed slots / all slots within 2 points of the loss the
//!   network caused (the buffer adds late packets and the blind concealment at
//!   the two resyncs; it saves nothing — concealment is loss), and at most
//!   0.5 % with no loss at all (late swapped packets only);
//! * no underrun cycle: resyncs ≤ the injected discontinuities (2), slots
//!   concealed with nothing buffered ≤ packets lost or late (+ the two
//!   resyncs' worth), and at most 60 stretch + shrink adjustments in the hour
//!   (drift alone needs ~18);
//! * accounting: samples handed to the decoder equal the hour of audio sent
//!   within ±1 %; packets come out in sending order.

use std::time::Duration;
use switchboard::media::jitter::sim::{self, Loss, Scenario};

fn check(name: &str) {
    let s: Scenario = sim::standard().into_iter().find(|s| s.name == name).expect("scenario");
    let r = sim::simulate(&s);
    eprintln!("{r:#?}");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let frame_ms = ms(s.ptime);
    let cfg = &s.config;

    assert_eq!(r.sent, 180_000);
    assert_eq!(r.out_of_order, 0, "{name}");

    // Bounded delay, never unbounded.
    assert!(r.min_current_ms >= ms(cfg.min_delay), "{name}: delay {} ms below min", r.min_current_ms);
    assert!(
        r.max_current_ms <= ms(cfg.max_delay) + frame_ms,
        "{name}: delay {} ms above max + frame",
        r.max_current_ms
    );
    assert!(r.max_delay_ms <= ms(cfg.max_delay) + 3.0 * frame_ms, "{name}: a packet waited {} ms", r.max_delay_ms);

    // Bounded concealment.
    let concealment = r.concealment_ratio();
    if s.loss == Loss::None {
        assert!(concealment <= 0.005, "{name}: concealment {concealment}");
    } else {
        assert!(concealment <= s.loss.rate() + 0.02, "{name}: concealment {concealment}");
        assert!((concealment - r.wire_loss_ratio()).abs() <= 0.02, "{name}: concealment {concealment}");
    }

    // No underrun cycle.
    let st = r.stats;
    assert!(st.resyncs <= r.events, "{name}: {} resyncs", st.resyncs);
    let cap = (ms(cfg.max_delay) / frame_ms) as u64;
    assert!(st.underruns <= r.wire_lost + st.late + (r.events + 1) * cap, "{name}: {} underruns", st.underruns);
    assert!(st.stretched + st.shrunk <= 60, "{name}: {} stretches, {} shrinks", st.stretched, st.shrunk);

    // The hour of audio is accounted for.
    let ratio = r.output_samples as f64 / r.sent_samples as f64;
    assert!((0.99..=1.01).contains(&ratio), "{name}: output/sent = {ratio}");
    assert_eq!(r.played + r.concealed + r.stretched, r.slots());
    assert_eq!(st.played, r.played);
}

macro_rules! hour {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                check($name);
            }
        )*

        #[test]
        fn every_standard_scenario_is_tested() {
            let tested = [$($name),*];
            for s in sim::standard() {
                assert!(tested.contains(&s.name.as_str()), "{} untested", s.name);
            }
        }
    };
}

hour! {
    no_loss => "no loss, +0 ppm",
    no_loss_fast_sender => "no loss, +100 ppm",
    no_loss_slow_sender => "no loss, -100 ppm",
    uniform_5 => "uniform 5 %, +0 ppm",
    uniform_5_fast_sender => "uniform 5 %, +100 ppm",
    uniform_5_slow_sender => "uniform 5 %, -100 ppm",
    uniform_20 => "uniform 20 %, +0 ppm",
    uniform_20_fast_sender => "uniform 20 %, +100 ppm",
    uniform_20_slow_sender => "uniform 20 %, -100 ppm",
    bursty_5 => "bursty 5 %, +0 ppm",
    bursty_5_fast_sender => "bursty 5 %, +100 ppm",
    bursty_5_slow_sender => "bursty 5 %, -100 ppm",
    bursty_20 => "bursty 20 %, +0 ppm",
    bursty_20_fast_sender => "bursty 20 %, +100 ppm",
    bursty_20_slow_sender => "bursty 20 %, -100 ppm",
}

/// Drift must be absorbed by adjustments, not by luck: with the SSRC change
/// and timestamp jump removed (each re-anchors the stream), a whole hour of
/// ±100 ppm needs ~18 single-frame adjustments in the right direction.
#[test]
fn drift_over_an_hour_is_absorbed_by_single_frame_adjustments() {
    for (ppm, name) in [(100.0, "fast"), (-100.0, "slow")] {
        let mut s = Scenario::hour(name, 77, Loss::None, ppm);
        s.ts_jump = None;
        s.ssrc_change = None;
        let r = sim::simulate(&s);
        let st = r.stats;
        let (needed, other) = if ppm > 0.0 { (st.shrunk, st.stretched) } else { (st.stretched, st.shrunk) };
        // 360 ms of slide = 18 frames.
        assert!((16..=20).contains(&needed), "{name}: {st:?}");
        assert!(other <= 3, "{name}: {st:?}");
        assert_eq!((st.resyncs, st.realigned), (0, 0), "{name}");
        assert!(r.min_current_ms >= 20.0 && r.max_current_ms <= 220.0, "{r:?}");
        // Spread evenly: never an underrun-then-rebuffer cycle.
        assert!(st.underruns <= st.late + 10, "{name}: {st:?}");
    }
}
