//! Barge-in on the wire: how soon the agent's audio stops when the caller talks over it, measured
//! where the caller would notice — on a capture of both RTP directions of real calls.
//!
//!   cargo bench --bench barge_in_wire -- [--calls 10]
//!
//! Each call: a SIPp caller (PCMU) dials an agent whose long greeting is spoken by Piper, and
//! starts talking over it at a different moment and with different words each call (Piper's
//! noise-free voice, 2.0–3.8 s into the call). From the capture: the caller's first loud packet
//! on the wire → the agent's last loud packet of the greeting (its audio gone quiet). Reports each
//! call and p50 / p95 / max, against issue 17's goal (p50 ≤ 100 ms, p95 ≤ 150 ms). The shipped
//! `barge_in` settings; `SWITCHBOARD_BIN=path/to/switchboard` measures another build.
//! `switchboard bench-barge-in` measures the same on speech in virtual time, with coughs and echo.
//! Needs the models (`scripts/setup.sh --test`) and sipp, tcpdump, sox.

#[path = "../tests/common/mod.rs"]
mod common;

use common::audio::{last_speech_packet, loud_times, pcmu_both_ways};
use std::time::Duration;

const GREETING: &str =
    "Thank you for calling Sunny Bakery. Our opening hours are seven to six on weekdays and eight to two on Saturday, \
and we are closed on Sunday. Custom cakes need two days of notice. How can I help you today?";

const INTERRUPTIONS: [&str; 5] = [
    "Sorry to interrupt, but I need to talk to someone about my order.",
    "Hello? Can you hear me?",
    "Wait, I only want to know if you are open tomorrow.",
    "Excuse me, I have a question about a birthday cake.",
    "Stop, please. I need the phone number.",
];

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches`: nothing to run quickly here.
    }
    let calls: usize =
        args.windows(2).find(|w| w[0] == "--calls").map(|w| w[1].parse().expect("--calls N")).unwrap_or(10);
    common::require_tools(&["sipp", "tcpdump", "sox"]);
    let m = common::models_dir("whisper_tiny_en/whisper.json");
    let ports = common::alloc_ports();
    let dir = common::test_dir("barge_in_wire");
    let cfg = format!(
        "models:\n  runtime:\n    library: {m}/onnxruntime/libonnxruntime.so.1.32.0\n  vad:\n    path: {m}/silero_vad/silero_vad.onnx\n  tts:\n    path: {m}/piper/en_US-joe-medium.onnx\n  asr:\n    tiny:\n      path: {m}/whisper_tiny_en\n\
         routes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n    mode: repeat\n    greeting_text: \"{GREETING}\"\n    noise_scale: 0\n    noise_w: 0\n    turn_detection:\n      type: server_vad\n    transcription: {{}}\n",
        m = m.display(),
    );
    let app = common::Appliance::start_in(&dir, &cfg, &ports);
    let xml = std::fs::read_to_string(common::scenario("uac_pcmu_turn_pause.xml"))
        .unwrap()
        .replace("<pause milliseconds=\"9000\"/>", "<pause milliseconds=\"7000\"/>");
    let scen = dir.join("barge.xml");
    std::fs::write(&scen, xml).unwrap();
    println!("barge_in_wire: {calls} calls, one at a time (artefacts in {})", dir.display());
    let mut stops = Vec::new();
    for i in 0..calls {
        let at = 2.0 + 1.8 * (i as f64 * 0.618_034).fract();
        let words = INTERRUPTIONS[i % INTERRUPTIONS.len()];
        common::speech::caller_pcap(&m, &dir, &[(at, words)], 0.0, 3.0, 0x5EC0_0100 + i as u32);
        let cap = common::Capture::start(app.dir(), &format!("udp and portrange {}-{}", ports.rtp_low, ports.rtp_high));
        let run = common::run_sipp(
            app.dir(),
            &scen,
            &ports.sip_addr(),
            &ports,
            &["-s", "1000", "-m", "1"],
            Duration::from_secs(60),
        );
        let pkts = cap.stop();
        assert!(run.successful == 1 && run.failed == 0, "{}\n{}", run.report(), app.log_tail(30));
        let (caller, agent) = pcmu_both_ways(&pkts, &ports);
        let Some(&onset) = loud_times(&caller).first() else {
            println!("call {i:2}: the caller's speech is not on the wire");
            continue;
        };
        let agent = loud_times(&agent);
        // Only an interruption of audio that was playing counts (not one in a pause of the greeting).
        if !agent.iter().any(|&t| t < onset && t > onset - 0.1) {
            println!("call {i:2}: \"{words}\" at {at:.2} s fell in a pause of the greeting: not counted");
            continue;
        }
        let stop_ms = (last_speech_packet(&agent, onset) - onset) * 1000.0;
        println!("call {i:2}: \"{words}\" at {at:.2} s: caller onset on the wire → the agent's last loud packet {stop_ms:4.0} ms");
        stops.push(stop_ms);
    }
    assert!(!stops.is_empty(), "no interruption measured\n{}", app.log_tail(30));
    let interrupted = app.metric_value("switchboard_barge_ins_total{outcome=\"interrupted\"}").unwrap_or(0.0);
    let mut sorted = stops.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "\n{} interruptions measured ({interrupted} counted as barge-ins by the appliance): p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms (goal: p50 ≤ 100, p95 ≤ 150)",
        stops.len(),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.95),
        sorted[sorted.len() - 1]
    );
}
