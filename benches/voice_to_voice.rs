//! Voice-to-voice latency on real calls: from the end of the caller's question on the wire to the
//! first RTP packet carrying the agent's answer, over N turns of a conversation on the embedded
//! models with the default config's model settings (release build), with where the time goes.
//!
//!   cargo bench --bench voice_to_voice -- [--turns 20] [--callers 1[,2,4,8,16]] [--speculate-after-ms 200]
//!                                          [--window-floor S] [--no-spin] [--asr KEY=VALUE ...]
//!
//! Each answer heard in time is transcribed (Whisper tiny.en) and checked for its question's fact
//! (`FACTS`: the hour, the phone number, closed on Sunday). With a list of caller counts it runs
//! once per count and ends with the capacity table: voice to voice, answers in time and right,
//! the appliance's CPU share, the embedded model's queue wait, and the largest count whose every
//! turn was answered with p95 ≤ 1.5 s.
//!
//! A SIPp caller (or `--callers N` of them at once, all asking at the same moments: the worst case
//! for the shared models) asks bakery questions spoken by Piper (noise-free) every 11 s; tcpdump
//! captures the RTP. Per turn, from the capture (every caller) and, with one caller, the appliance's
//! log (both on this machine's clock), the stages as they follow each other on the critical path:
//! - pause: caller speech end on the wire → the turn's tentative end (the speculative start), or its
//!   commit when it was not speculated;
//! - ASR: → the transcript the reply was started on (tentative or final);
//! - LLM first text: the reply's `first_text_ms`;
//! - first phrase: → `first sentence to the voice` (the rest of the model's first phrase);
//! - TTS: → Piper's first audio ready;
//! - wait: → `first audio after the turn` (the audio held until the turn was committed, if it was
//!   ready before; `commit` shows when that was);
//! - overhead: → the first loud packet on the wire (pacer queue, packet clock, network).
//!
//! `--speculate-after-ms 0` turns the speculative start off, `--window-floor 30` gives Whisper its
//! fixed 30 s window, `--no-spin` keeps ONNX Runtime's idle threads from spinning, `--asr KEY=VALUE`
//! sets a key of every recogniser (`workers=2`, `max_batch=1`, `intra_threads=2`); `SWITCHBOARD_BIN=path/to/switchboard`
//! measures another build with the same harness (a before/after pair in one sitting).
//! Needs the models (`scripts/setup.sh --test`) and sipp, tcpdump, sox.

#[path = "../tests/common/mod.rs"]
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
    let v: String = line[at..]
        .trim_start_matches("Some(")
        .trim_start_matches('"')
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    v.parse().ok()
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((s.len() - 1) as f64 * p).round() as usize]
}

/// The shipped config's `models` section (config/switchboard.yaml), its model paths under `m`: the
/// bench measures the default thread budgets and precisions, not settings of its own. `overrides`
/// (key, value) are set in every model that has the key's kind (`spin` in every model, ASR keys
/// in every recogniser), for a before/after pair on one build.
fn default_models_yaml(m: &std::path::Path, overrides: &[(&str, serde_yaml_ng::Value)]) -> String {
    let text =
        std::fs::read_to_string(common::repo_root().join("config/switchboard.yaml")).expect("config/switchboard.yaml");
    let cfg: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("the default config is YAML");
    let mut models = cfg.get("models").expect("a models section").clone();
    fn fix(v: &mut serde_yaml_ng::Value, m: &str) {
        match v {
            serde_yaml_ng::Value::String(s) if s.starts_with("../models/") => *s = s.replacen("../models", m, 1),
            serde_yaml_ng::Value::Mapping(map) => map.iter_mut().for_each(|(_, v)| fix(v, m)),
            _ => {}
        }
    }
    fix(&mut models, &m.display().to_string());
    for (key, value) in overrides {
        let set = |model: &mut serde_yaml_ng::Value| {
            if let Some(map) = model.as_mapping_mut() {
                map.insert((*key).into(), value.clone());
            }
        };
        let Some(all) = models.as_mapping_mut() else { continue };
        for (kind, entry) in all.iter_mut() {
            match (kind.as_str(), *key) {
                (Some("runtime"), _) => {}
                // Named models: one level down.
                (Some("asr" | "llm" | "voices"), _) => {
                    entry.as_mapping_mut().into_iter().flat_map(|m| m.iter_mut()).for_each(|(_, v)| {
                        if *key == "spin" || kind.as_str() == Some("asr") {
                            set(v)
                        }
                    })
                }
                (_, "spin") => set(entry),
                _ => {}
            }
        }
    }
    let mut root = serde_yaml_ng::Mapping::new();
    root.insert("models".into(), models);
    serde_yaml_ng::to_string(&root).unwrap()
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The run's settings, from the command line.
struct Options {
    turns: usize,
    speculate: Option<u64>,
    partial: Option<u64>,
    overrides: Vec<(&'static str, serde_yaml_ng::Value)>,
}

/// What one run (K callers) measured.
struct Summary {
    callers: usize,
    v2v: Vec<f64>,
    unanswered: usize,
    /// Answers (heard in time) whose transcript holds the question's fact.
    right: usize,
    /// The appliance's CPU time over the calls, as a share of all cores' time.
    cpu: f64,
    /// The embedded model's replies: from asked to their first step (ms).
    llm_queued: Vec<f64>,
}

/// The words (or numbers) an answer to `QUESTIONS[i]` must hold: the instructions' facts.
const FACTS: [&[&str]; 10] = [
    &["8", "eight"],
    &["18", "6", "six", "eighteen"],
    &["closed", "no", "not"],
    &["555"],
    &["7", "seven"],
    &["14", "2", "two", "fourteen"],
    &["yes", "7", "seven", "18", "6", "six"],
    &["7", "seven"],
    &["18", "6", "six", "eighteen"],
    &["7", "seven", "18", "6", "six"],
];

/// Whether `said` answers `QUESTIONS[q]` with its fact: one of its words (digits apart, so that
/// "8:00" and "555-0100" count; "800" counts as 8), or the phone number's digits run together.
fn holds_fact(q: usize, said: &str) -> bool {
    let lower = said.to_lowercase();
    let mut words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
    // Whisper writes "8:00 to 14:00" as "800 to 1400": the hour is what comes before the "00".
    let hours: Vec<&str> = words
        .iter()
        .filter(|w| w.len() >= 3 && w.chars().all(|c| c.is_ascii_digit()) && w.ends_with("00"))
        .map(|w| &w[..w.len() - 2])
        .collect();
    words.extend(hours);
    let digits: String = lower.chars().filter(|c| c.is_ascii_digit()).collect();
    FACTS[q % FACTS.len()]
        .iter()
        .any(|f| words.contains(f) || (f.len() >= 3 && f.chars().all(|c| c.is_ascii_digit()) && digits.contains(f)))
}

/// The appliance's CPU time so far (user + system), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let turns: usize = arg(&args, "--turns", 20);
    // `--callers 1,2,4,8,16`: one run per count, then the capacity table.
    let callers: Vec<usize> =
        args.iter().position(|a| a == "--callers").and_then(|i| args.get(i + 1)).map_or(vec![1], |v| {
            v.split(',').map(|k| k.trim().parse().expect("--callers takes counts: 1,2,4")).collect()
        });
    // Not given: the config's default (and a build from before the key, via SWITCHBOARD_BIN, runs).
    let speculate: Option<u64> =
        args.iter().any(|a| a == "--speculate-after-ms").then(|| arg(&args, "--speculate-after-ms", 200));
    // Not given: the schema's default. `--partial-ms 0` measures without partial transcripts (and
    // so without the language model warmed on them).
    let partial: Option<u64> = args.iter().any(|a| a == "--partial-ms").then(|| arg(&args, "--partial-ms", 0));
    // The switches of step 10, to measure without them on the same build: the fixed 30 s Whisper
    // window (`--window-floor 30`); and ONNX Runtime's threads without spinning (`--no-spin`).
    let mut overrides: Vec<(&str, serde_yaml_ng::Value)> = Vec::new();
    if args.iter().any(|a| a == "--window-floor") {
        overrides.push(("window_floor_s", arg(&args, "--window-floor", 30.0f64).into()));
    }
    if args.iter().any(|a| a == "--no-spin") {
        overrides.push(("spin", false.into()));
    }
    // `--asr workers=1 --asr max_batch=8 …`: a recogniser setting other than the shipped one.
    for w in args.windows(2).filter(|w| w[0] == "--asr") {
        let (key, value) = w[1].split_once('=').expect("--asr KEY=VALUE");
        let key: &'static str = Box::leak(key.to_string().into_boxed_str());
        overrides.push((key, serde_yaml_ng::from_str(value).expect("--asr KEY=VALUE: a YAML value")));
    }
    if args.iter().any(|a| a == "--list" || a == "--test") {
        // `cargo test --benches` / `cargo bench -- --list`: nothing to run quickly here.
        return;
    }
    common::require_tools(&["sipp", "tcpdump", "sox"]);
    let opts = Options { turns, speculate, partial, overrides };
    let runs: Vec<Summary> = callers.iter().map(|&k| run_once(k, &opts)).collect();
    if runs.len() > 1 {
        println!("\ncapacity ({} turns per caller; right = the answer heard holds the question's fact; CPU = share of all {} cores):", turns, cores());
        println!(
            "{:>7} {:>8} {:>8} {:>8} {:>10} {:>8} {:>6} {:>16}",
            "callers", "p50 ms", "p90 ms", "p95 ms", "answered", "right", "CPU", "LLM queue p95 ms"
        );
        for r in &runs {
            let asked = r.v2v.len() + r.unanswered;
            let q95 = if r.llm_queued.is_empty() { f64::NAN } else { pct(&r.llm_queued, 0.95) };
            println!(
                "{:>7} {:>8.0} {:>8.0} {:>8.0} {:>5}/{:<4} {:>8} {:>5.0}% {:>16.0}",
                r.callers,
                pct(&r.v2v, 0.5),
                pct(&r.v2v, 0.9),
                pct(&r.v2v, 0.95),
                r.v2v.len(),
                asked,
                format!("{}/{asked}", r.right),
                r.cpu * 100.0,
                q95
            );
        }
        let fits = |r: &&Summary| r.unanswered == 0 && pct(&r.v2v, 0.95) <= 1500.0;
        match runs.iter().filter(fits).map(|r| r.callers).max() {
            Some(k) => println!("largest count whose every turn was answered with p95 <= 1.5 s: {k}"),
            None => println!("no count had every turn answered with p95 <= 1.5 s"),
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One run: `callers` SIPp callers at once, `opts.turns` questions each.
fn run_once(callers: usize, opts: &Options) -> Summary {
    let Options { turns, speculate, partial, ref overrides } = *opts;
    let m = common::models_dir("qwen2_5_coder_1_5b/llm.json");
    let ports = common::alloc_ports();
    let dir = common::test_dir("voice_to_voice");
    let lines: Vec<(f64, &str)> =
        (0..turns).map(|i| (1.0 + SLOT_S * i as f64, QUESTIONS[i % QUESTIONS.len()])).collect();
    let call_s = 1.0 + SLOT_S * turns as f64 + 3.0;
    let ends = common::speech::caller_pcap(&m, &dir, &lines, call_s, 0.0, 0xB0_0001);
    let cfg = format!(
        "logging:\n  level: info,switchboard::models::tts_worker=debug,switchboard::models::llm::local=debug,switchboard::models::asr=debug,switchboard::agent::llm=debug\n{models}routes:\n  - match: \"*\"\n    agent: bakery\nagents:\n  bakery:\n    mode: llm\n    noise_scale: 0\n    noise_w: 0\n    turn_detection:\n      type: server_vad\n{speculate}    transcription: {{{partial}}}\n    llm:\n      instructions: \"{INSTRUCTIONS}\"\n      temperature: 0\n      max_output_tokens: 40\n",
        models = default_models_yaml(&m, overrides),
        speculate = speculate.map(|ms| format!("      speculate_after_ms: {ms}\n")).unwrap_or_default(),
        partial = partial.map(|ms| format!("partial_interval_ms: {ms}")).unwrap_or_default(),
    );
    let app = common::Appliance::start_in(&dir, &cfg, &ports);
    let cap = common::Capture::start(app.dir(), &format!("udp and portrange {}-{}", ports.rtp_low, ports.rtp_high));
    let xml = std::fs::read_to_string(common::scenario("uac_pcmu_turn_pause.xml"))
        .unwrap()
        .replace("<pause milliseconds=\"9000\"/>", &format!("<pause milliseconds=\"{}\"/>", (call_s * 1000.0) as u64));
    let scen = dir.join("voice.xml");
    std::fs::write(&scen, xml).unwrap();
    let speculation = speculate.map_or("the config's default".to_string(), |ms| format!("{ms} ms"));
    println!("voice_to_voice: {callers} caller(s) at once, {turns} turns each, {call_s:.0} s calls, speculative start: {speculation}, partial transcripts: {}, model overrides: {overrides:?} (artefacts in {})", partial.map_or("the config's default".to_string(), |ms| format!("every {ms} ms")), dir.display());
    let (limit, count) = (callers.to_string(), callers.to_string());
    let (cpu0, wall0) = (cpu_seconds(app.pid()), std::time::Instant::now());
    let run = common::run_sipp(
        app.dir(),
        &scen,
        &ports.sip_addr(),
        &ports,
        &["-s", "1000", "-l", &limit, "-m", &count, "-r", "50"],
        Duration::from_secs(call_s as u64 + 90),
    );
    let cpu = (cpu_seconds(app.pid()) - cpu0) / wall0.elapsed().as_secs_f64() / cores() as f64;
    let pkts = cap.stop();
    assert!(run.successful == callers as u64, "{}\n{}", run.report(), app.log_tail(30));

    let rtp: Vec<_> = pkts
        .iter()
        .filter_map(|p| common::audio::parse_rtp(p.time, p.src, p.dst, &p.payload))
        .filter(|p| p.pt == 0)
        .collect();
    let ours = |port: u16| (ports.rtp_low..=ports.rtp_high).contains(&port);
    let log_text = app.log();
    let log: Vec<(f64, &str)> = log_text.lines().filter_map(|l| Some((log_time(l)?, l))).collect();

    // Each call by our RTP port: its caller's first packet is the pcap's time zero.
    let mut call_ports: Vec<u16> = rtp.iter().filter(|p| ours(p.dst.port())).map(|p| p.dst.port()).collect();
    call_ports.sort();
    call_ports.dedup();
    assert_eq!(call_ports.len(), callers, "one RTP stream per call");
    let mut v2v: Vec<f64> = Vec::new();
    // Per turn (one caller): [voice-to-voice, pause, ASR, LLM first text, first phrase, TTS, wait, overhead, commit] in ms.
    let mut rows: Vec<[f64; 9]> = Vec::new();
    let mut unanswered = 0;
    // What each answer said, in Whisper's words (the project's tiny.en, as the tests hear the agent).
    let mut whisper = switchboard::models::asr::Whisper::load(
        common::ort_runtime(),
        "tiny",
        &m.join("whisper_tiny_en"),
        switchboard::models::asr::Precision::Fp32,
        &common::cpu_options(2),
    )
    .unwrap();
    let mut right = 0;
    let mut wrong: Vec<String> = Vec::new();
    for &port in &call_ports {
        let t0 = rtp.iter().find(|p| p.dst.port() == port).expect("caller RTP").time;
        let loud: Vec<f64> = rtp
            .iter()
            .filter(|p| p.src.port() == port)
            .filter(|p| {
                let x: Vec<f64> = p.payload.iter().map(|&b| ulaw(b) as f64).collect();
                (x.iter().map(|v| v * v).sum::<f64>() / x.len().max(1) as f64).sqrt() > 300.0
            })
            .map(|p| p.time)
            .collect();
        for (i, end) in ends.iter().enumerate() {
            let wire_end = t0 + end;
            let next = t0 + lines.get(i + 1).map_or(call_s, |l| l.0);
            let Some(&audio) = loud.iter().find(|&&t| t > wire_end && t < next) else {
                println!("port {port} turn {:>2}: no answer before the next question", i + 1);
                unanswered += 1;
                continue;
            };
            v2v.push((audio - wire_end) * 1000.0);
            let answer: Vec<f32> = rtp
                .iter()
                .filter(|p| p.src.port() == port && p.time >= audio - 0.1 && p.time < next)
                .flat_map(|p| p.payload.iter().map(|&b| ulaw(b) as f32 / 32768.0).flat_map(|x| [x, x]))
                .collect();
            let said = whisper
                .transcribe(&answer, &switchboard::models::asr::DecodeOptions::default())
                .map(|t| t.text)
                .unwrap_or_default();
            if holds_fact(i, &said) {
                right += 1;
            } else {
                wrong.push(format!("port {port} turn {}: {:?} → {said:?}", i + 1, lines[i].1));
            }
            if callers > 1 {
                continue;
            }
            let after = wire_end - 0.5;
            let Some((commit, _)) = first_after(&log, "turn committed", after) else { continue };
            let tentative = first_after(&log, "speculative start", after).map(|x| x.0).filter(|&t| t <= commit);
            let start = tentative.unwrap_or(commit);
            // The transcript the reply was started on: the last tentative one before the commit, or the final one.
            let transcript = log
                .iter()
                .filter(|(t, l)| {
                    *t >= start && *t <= audio && (l.contains("tentative transcript") || l.contains("transcript turn="))
                })
                .map(|x| x.0)
                .next();
            let Some(transcript) = transcript else { continue };
            let first_text = first_after(&log, "agent reply response=", transcript)
                .and_then(|(_, l)| field(&l, "first_text_ms"))
                .unwrap_or(f64::NAN)
                / 1000.0;
            let phrase = first_after(&log, "first sentence to the voice", transcript).map_or(f64::NAN, |x| x.0);
            let synth = first_after(&log, "speech ready", phrase).map_or(f64::NAN, |x| x.0);
            let played = first_after(&log, "first audio after the turn", transcript).map_or(f64::NAN, |x| x.0);
            let row = [
                audio - wire_end,
                start - wire_end,
                transcript - start,
                first_text,
                phrase - transcript - first_text,
                synth - phrase,
                played - synth,
                audio - played,
                commit - wire_end,
            ]
            .map(|s| s * 1000.0);
            println!(
                "turn {:>2}: {:>5.0} ms = pause {:>4.0} + ASR {:>4.0} + LLM first text {:>4.0} + first phrase {:>4.0} + TTS {:>4.0} + wait {:>4.0} + overhead {:>4.0}   (committed at {:>4.0})",
                i + 1, row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8]
            );
            rows.push(row);
        }
    }
    assert!(!v2v.is_empty(), "no turn was answered\n{}", app.log_tail(40));
    for w in &wrong {
        println!("without its fact: {w}");
    }
    let llm_queued: Vec<f64> =
        log.iter().filter(|(_, l)| l.contains("local reply ")).filter_map(|(_, l)| field(l, "queued_ms")).collect();
    let specs = |outcome: &str| log_text.lines().filter(|l| l.contains(outcome)).count();
    println!(
        "\n{} of {} turns answered before the next question; speculative starts: {} used, {} dropped; \
         Whisper decodes that ran away in the fitted window (redone in the 30 s one): {}",
        v2v.len(),
        v2v.len() + unanswered,
        specs("speculative reply adopted"),
        specs("speculative work dropped"),
        specs("the decode ran away in the fitted window"),
    );
    println!(
        "answers holding their question's fact: {right} of {}; the appliance's CPU: {:.0} % of {} cores",
        v2v.len(),
        cpu * 100.0,
        cores()
    );
    println!("{:<16} {:>8} {:>8} {:>8}", "ms", "p50", "p90", "p95");
    println!("{:<16} {:>8.0} {:>8.0} {:>8.0}", "voice-to-voice", pct(&v2v, 0.5), pct(&v2v, 0.9), pct(&v2v, 0.95));
    let names =
        ["", "pause", "ASR", "LLM first text", "first phrase", "TTS first audio", "wait", "overhead", "end of turn"];
    for (k, name) in names.iter().enumerate().skip(1) {
        let v: Vec<f64> = rows.iter().map(|r| r[k]).filter(|x| x.is_finite()).collect();
        if !v.is_empty() {
            println!("{:<16} {:>8.0} {:>8.0} {:>8.0}", name, pct(&v, 0.5), pct(&v, 0.9), pct(&v, 0.95));
        }
    }
    Summary { callers, v2v, unanswered, right, cpu, llm_queued }
}
