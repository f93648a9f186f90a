//! Jitter-buffer report: one simulated hour per scenario, in virtual time.
//!
//! ```text
//! cargo run --release --example jitter_report
//! ```
//!
//! Every scenario: 20 ms G.711 packets for one hour (180 000 packets), 40 ms
//! base network delay plus uniform 0–30 ms jitter per packet (which reorders
//! packets whenever two draws differ by more than 20 ms), 0.5 % explicit swaps,
//! 1 % duplicates, a +10 s timestamp jump at 30 min and an SSRC change at
//! 45 min; loss and sender clock drift as named. The first row is a clean
//! network (no jitter, swaps or duplicates) to show the delay it settles at. The buffer runs with
//! `JitterConfig::default()` (20–200 ms, starting at 20 ms) and is popped on a
//! 20 ms tick offset 7 ms from the sender's grid.

use switchboard::media::jitter::sim;

fn main() {
    let mut scenarios = sim::standard();
    // A clean LAN: no jitter, no loss, no reordering: the delay should settle at the minimum.
    let mut clean = scenarios[0].clone();
    clean.name = "clean network (0 jitter), +0 ppm".into();
    clean.jitter = std::time::Duration::ZERO;
    clean.swap_prob = 0.0;
    clean.duplicate_prob = 0.0;
    scenarios.insert(0, clean);
    let cfg = &scenarios[0].config;
    println!(
        "Adaptive jitter buffer, one simulated hour per row (`cargo run --release --example jitter_report`).\n\
         Config: min {} ms, initial {} ms, max {} ms. Delay = playout tick − (send time + 40 ms base network delay),\n\
         so it includes the 0–20 ms quantisation of the 20 ms playout tick; concealment = concealed slots / all slots.\n",
        cfg.min_delay.as_millis(),
        cfg.target_delay.as_millis(),
        cfg.max_delay.as_millis()
    );
    println!("| scenario | network loss | mean added delay (ms) | p95 delay (ms) | concealment ratio | stretch / shrink | late | resyncs |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for s in &scenarios {
        let r = sim::simulate(s);
        println!(
            "| {} | {:.2} % | {:.1} | {:.1} | {:.2} % | {} / {} | {} | {} |",
            r.name,
            100.0 * r.wire_loss_ratio(),
            r.mean_delay_ms,
            r.p95_delay_ms,
            100.0 * r.concealment_ratio(),
            r.stats.stretched,
            r.stats.shrunk,
            r.stats.late,
            r.stats.resyncs,
        );
    }
}
