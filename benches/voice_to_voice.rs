//! Voice-to-voice latency on a real call: from the end of the caller's question on the wire to the
//! first RTP packet carrying the agent's answer, over N turns of one conversation on the embedded
//! models (release build), with where the time goes.
//!
//!   cargo bench --bench voice_to_voice -- [--turns 20]
//!
//! A SIPp caller asks bakery questions spoken by Piper (noise-free) every 11 s; tcpdump captures the
//! RTP. Per turn, from the capture and the appliance's log (both on this machine's clock):
//! - end of turn: caller speech end on the wire → `turn committed` (the VAD's silence wait included);
//! - ASR: → `transcript`;
//! - LLM first text: the reply's `first_text_ms`;
//! - first sentence: → `first sentence to the voice` (the rest of the model's first clause);
//! - TTS: → `first audio after the turn` (Piper's first chunk);
//! - overhead: → the first loud packet on the wire (pacer queue, packet clock, network).
//!
//! Needs the models (`scripts/setup.sh --test`) and sipp, tcpdump, sox.

#[path = "../tests/common/mod.rs"]
#[allow(dead_code)]
mod common;

use std::time::Duration;

const INSTRUCTIONS: &str = "You are the friendly phone receptionist of Sunny Bakery. Answer the caller in one short sentence that sounds natural when spoken aloud. \
Only use these facts. Opening hours: Monday to Friday 7:00 to 18:00, Saturday 8:00 to 14:00. Closed on Sunday. Phone number: 555-0100.";

const QUESTIONS: [&str; 10] = [
    "What time do you open on Saturday?",
    "When do you close on Friday?",
    "Are you open on Sunday?",
    "What is your phone number?",
    "What time do you open on Monday?",
    "When do you close on Saturday?",
    "Are you open on Wednesday?",
    "How early do you open on Tuesday?",
    "When do you close on Thursday?",
    "What are your hours on Friday?",
];
const SLOT_S: f64 = 11.0;

/// `2026-11-24T21:58:45.625806Z …` → seconds since the Unix epoch.
fn log_time(line: &str) -> Option<f64> {
    let ts = line.split_whitespace().next()?;
    let (date, time) = ts.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, min, s) = (t.next()?.parse::<f64>().ok()?, t.next()?.parse::<f64>().ok()?, t.next()?.parse::<f64>().ok()?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86400.0 + h * 3600.0 + min * 60.0 + s)
}

fn ulaw(b: u8) -> i16 {
    let b = !b;
    let t = ((((b & 0x0f) as i32) << 3) + 0x84) << ((b & 0x70) >> 4);
    (if b & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

/// The first time after `after` at which a line containing `needle` was logged.
fn first_after(log: &[(f64, &str)], needle: &str, after: f64) -> Option<(f64, String)> {
    log.iter().find(|(t, l)| *t >= after && l.contains(needle)).map(|(t, l)| (*t, l.to_string()))
}

fn field(line: &str, key: &str) -> Option<f64> {
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    let v: String = line[at..].trim_start_matches("Some(").trim_start_matches('"').chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    v.parse().ok()
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((s.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let turns: usize = args.iter().position(|a| a == "--turns").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(20);
    if args.iter().any(|a| a == "--list" || a == "--test") {
        // `cargo test --benches` / `cargo bench -- --list`: nothing to run quickly here.
        return;
    }
    common::require_tools(&["sipp", "tcpdump", "sox"]);
    let m = common::models_dir("qwen2_5_coder_1_5b/llm.json");
    let ports = common::alloc_ports();
    let dir = common::test_dir("voice_to_voice");
    let lines: Vec<(f64, &str)> = (0..turns).map(|i| (1.0 + SLOT_S * i as f64, QUESTIONS[i % QUESTIONS.len()])).collect();
    let call_s = 1.0 + SLOT_S * turns as f64 + 3.0;
    let ends = common::speech::caller_pcap(&m, &dir, &lines, call_s, 0.0, 0xB0_0001);
    let cfg = format!(
        "models:\n  runtime:\n    library: {m}/onnxruntime/libonnxruntime.so.1.32.0\n  vad:\n    path: {m}/silero_vad/silero_vad.onnx\n  tts:\n    path: {m}/piper/en_US-joe-medium.onnx\n    intra_threads: 1\n  asr:\n    tiny:\n      path: {m}/whisper_tiny_en\n  llm:\n    embedded:\n      type: onnx\n      path: {m}/qwen2_5_coder_1_5b\n      temperature: 0\n\
         routes:\n  - match: \"*\"\n    agent: bakery\nagents:\n  bakery:\n    mode: llm\n    noise_scale: 0\n    noise_w: 0\n    turn_detection:\n      type: server_vad\n    transcription: {{}}\n    llm:\n      instructions: \"{INSTRUCTIONS}\"\n      max_output_tokens: 40\n",
        m = m.display(),
    );
    let app = common::Appliance::start_in(&dir, &cfg, &ports);
    let cap = common::Capture::start(app.dir(), &format!("udp and portrange {}-{}", ports.rtp_low, ports.rtp_high));
    let xml = std::fs::read_to_string(common::scenario("uac_pcmu_turn_pause.xml"))
        .unwrap()
        .replace("<pause milliseconds=\"9000\"/>", &format!("<pause milliseconds=\"{}\"/>", (call_s * 1000.0) as u64));
    let scen = dir.join("voice.xml");
    std::fs::write(&scen, xml).unwrap();
    println!("voice_to_voice: {turns} turns, {call_s:.0} s call (artefacts in {})", dir.display());
    let run = common::run_sipp(app.dir(), &scen, &ports.sip_addr(), &ports, &["-s", "1000", "-m", "1"], Duration::from_secs(call_s as u64 + 60));
    let pkts = cap.stop();
    assert!(run.successful == 1, "{}\n{}", run.report(), app.log_tail(30));

    let rtp: Vec<_> = pkts.iter().filter_map(|p| common::audio::parse_rtp(p.time, p.src, p.dst, &p.payload)).filter(|p| p.pt == 0).collect();
    let ours = |port: u16| (ports.rtp_low..=ports.rtp_high).contains(&port);
    let t0 = rtp.iter().find(|p| ours(p.dst.port())).expect("caller RTP").time;
    let loud: Vec<f64> = rtp
        .iter()
        .filter(|p| ours(p.src.port()))
        .filter(|p| {
            let x: Vec<f64> = p.payload.iter().map(|&b| ulaw(b) as f64).collect();
            (x.iter().map(|v| v * v).sum::<f64>() / x.len().max(1) as f64).sqrt() > 300.0
        })
        .map(|p| p.time)
        .collect();
    let log_text = app.log();
    let log: Vec<(f64, &str)> = log_text.lines().filter_map(|l| Some((log_time(l)?, l))).collect();

    // Per turn: [voice-to-voice, end of turn, ASR, LLM first text, first sentence, TTS, overhead] in ms.
    let mut rows: Vec<[f64; 7]> = Vec::new();
    for (i, end) in ends.iter().enumerate() {
        let wire_end = t0 + end;
        let next = t0 + lines.get(i + 1).map_or(call_s, |l| l.0);
        let Some(&audio) = loud.iter().find(|&&t| t > wire_end && t < next) else {
            println!("turn {:>2}: no answer before the next question", i + 1);
            continue;
        };
        let (Some((commit, _)), Some((transcript, _))) = (first_after(&log, "turn committed", wire_end - 0.5), first_after(&log, "transcript turn=", wire_end - 0.5)) else {
            println!("turn {:>2}: no turn or transcript in the log", i + 1);
            continue;
        };
        let first_text = first_after(&log, "agent reply response=", transcript).and_then(|(_, l)| field(&l, "first_text_ms")).unwrap_or(f64::NAN) / 1000.0;
        let sentence = first_after(&log, "first sentence to the voice", transcript).map_or(f64::NAN, |x| x.0);
        let tts = first_after(&log, "first audio after the turn", transcript).map_or(f64::NAN, |x| x.0);
        let row = [audio - wire_end, commit - wire_end, transcript - commit, first_text, sentence - transcript - first_text, tts - sentence, audio - tts].map(|s| s * 1000.0);
        println!(
            "turn {:>2}: {:>5.0} ms = end of turn {:>4.0} + ASR {:>4.0} + LLM first text {:>4.0} + first sentence {:>4.0} + TTS {:>4.0} + overhead {:>4.0}",
            i + 1, row[0], row[1], row[2], row[3], row[4], row[5], row[6]
        );
        rows.push(row);
    }
    assert!(!rows.is_empty(), "no turn was answered\n{}", app.log_tail(40));
    let names = ["voice-to-voice", "end of turn", "ASR", "LLM first text", "first sentence", "TTS first audio", "overhead"];
    println!("\n{} of {} turns answered before the next question", rows.len(), turns);
    println!("{:<16} {:>8} {:>8}", "ms", "p50", "p95");
    for (k, name) in names.iter().enumerate() {
        let v: Vec<f64> = rows.iter().map(|r| r[k]).filter(|x| x.is_finite()).collect();
        if !v.is_empty() {
            println!("{:<16} {:>8.0} {:>8.0}", name, pct(&v, 0.5), pct(&v, 0.95));
        }
    }
}
