//! Bad networks: a SIPp caller asks the embedded-model agent a spoken question (Piper, G.711 μ-law)
//! over a path that loses 5 % or 15 % of the packets and adds 40 ms ± 40 ms of delay (so packets
//! arrive out of order), in both directions. The appliance's transcript of the question stays
//! close to the words spoken, its model answers the question, and the answer's audio reaches the
//! caller through the same bad path.
//!
//! How the path is made bad: not with `tc netem` — this kernel has no `sch_netem` ("Specified qdisc
//! kind is unknown", no module to load) and the tests may only use loopback — but with the userspace
//! relay of `tests/common/impair.rs`, which applies netem's `delay 40ms 40ms loss P%` semantics
//! (independent loss, uniform delay in [0, 80] ms, reordering where delays cross) with a fixed seed.
//! The appliance listens on 127.0.0.1 and writes `media.advertised_address: 127.0.0.2` into its
//! SDP; the relay owns 127.0.0.2:p for each port p of the appliance's (small) RTP range:
//!
//! * caller → appliance: SIPp sends to the SDP's 127.0.0.2:p; the relay forwards to 127.0.0.1:p,
//!   impaired.
//! * appliance → caller: the appliance latches its RTP onto the first source of valid RTP
//!   (symmetric RTP, `src/call/media.rs`), which is the relay's 127.0.0.2:p, not the caller's SDP
//!   address; the relay sends it on to the caller's source address, impaired. Only the few silent
//!   packets the appliance sends before the caller's first packet arrives go straight to the SDP
//!   address (the test checks they are a handful).
//! * RTCP: the relay owns the p+1 ports too, but SIPp sends no RTCP, so the appliance's reports
//!   reach the relay and stop there (counted as having no peer to go to).
//!
//! What is measured and printed (`cargo test --test impaired_network -- --nocapture`): the relay's
//! counts (sent, dropped, reordered, per direction), the same counts seen on the wire by tcpdump,
//! the appliance's own media figures (lost, concealed, jitter), the WER of the caller's question
//! in the call record, the reply, and what the caller heard of it (the project's Whisper on the
//! RTP that reached SIPp; SIPp has no concealment, so lost packets are silence there).
//!
//! The sans-IO side of loss and reordering (jitter buffer, concealment, RTCP loss figures) is
//! tested without a network in `src/media/jitter.rs`, `tests/jitter_hour.rs` and
//! `tests/proptest_rtp.rs`.

mod common;

use common::impair::{Impairer, Impairment, Relay, SplitMix64};
use common::wer;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const INSTRUCTIONS: &str = "You are the friendly phone receptionist of Sunny Bakery. Answer the caller in one short sentence that sounds natural when spoken aloud. \
Only use these facts. Opening hours: Monday to Friday 7:00 to 18:00, Saturday 8:00 to 14:00. Closed on Sunday. Phone number: 555-0100.";

/// The caller's question (Piper, at 1 s into the call), and what the answer must hold (Whisper writes
/// "8:00" as "800", "8 a.m." as "8am").
const QUESTION: &str = "Hello! I would like to know what time you open on Saturday morning.";
const FACTS: &[&str] = &["8", "800", "8am", "eight"];
const QUESTION_AT_S: f64 = 1.0;
/// The caller hangs up this long after the call starts. The question ends at ~4.2 s and the turn
/// 0.5 s later; on this 2-core machine the transcript took 1.3 s, the model's reply 3.3 s, and its
/// first audio came ~5 s after the turn (the reply lasts ~2.5 s): 18 s leaves room for a slower run.
const CALL_S: f64 = 18.0;

/// At most this share of the question's 13 words may be wrong in the record: 3 words (23 %).
/// Whisper tiny.en behind the appliance's jitter buffer and G.711 concealment transcribed it word
/// for word at 5 % and 15 % loss (seven loss patterns at 15 %), with one error at 30 % ("love" for "like")
/// and none at 45 %; at 60 % loss it heard "I was lucky to have been on Thursday morning." (9
/// errors), which this bound fails, as it fails any transcript that lost a clause or the content
/// words. The margin over the measured 0 is for Whisper's usual slips (a "Hi" for "Hello").
const WER_MAX: f64 = 0.25;
/// The words of the question the answer depends on: all must be in the transcript.
const KEY_WORDS: &[&str] = &["time", "open", "saturday"];

/// The appliance's RTP range is cut to this many RTP/RTCP pairs so the relay owns them all.
const RTP_PAIRS: u16 = 4;

const RELAY_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const APP_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

/// Any of `words` as a whole word ("8" is in "8:00 am", not in "18:00").
fn any_word(text: &str, words: &[&str]) -> bool {
    words.iter().any(|w| {
        fancy_regex::Regex::new(&format!(r"(?i)\b{}\b", fancy_regex::escape(w))).unwrap().is_match(text).unwrap()
    })
}

/// Lower case, times and "a.m." written one way ("8:00 AM", "8.00 a.m." and "800 a.m." are all
/// "800 am"), so the reply's WER counts words the caller lost, not Whisper's spelling of times.
fn normalise(text: &str) -> String {
    let t = text.to_lowercase().replace("a.m.", "am").replace("p.m.", "pm");
    let c: Vec<char> = t.chars().collect();
    (0..c.len())
        .filter(|&i| {
            !((c[i] == ':' || c[i] == '.')
                && i > 0
                && i + 1 < c.len()
                && c[i - 1].is_ascii_digit()
                && c[i + 1].is_ascii_digit())
        })
        .map(|i| c[i])
        .collect()
}

/// Arrival-order reordering on the wire: packets whose RTP sequence number is below one already seen.
fn wire_counts(pkts: &[common::UdpPacket], keep: impl Fn(&common::UdpPacket) -> bool) -> (u64, u64) {
    let rtp: Vec<common::RtpPacket> = pkts
        .iter()
        .filter(|p| keep(p))
        .filter_map(|p| common::audio::parse_rtp(p.time, p.src, p.dst, &p.payload))
        .collect();
    let mut max: Option<i64> = None;
    let (mut reordered, mut prev, mut ext) = (0u64, None::<u16>, 0i64);
    for p in &rtp {
        ext = match prev {
            None => p.seq as i64,
            Some(s) => ext + p.seq.wrapping_sub(s) as i16 as i64,
        };
        prev = Some(p.seq);
        match max {
            Some(m) if ext < m => reordered += 1,
            _ => max = Some(ext),
        }
    }
    (rtp.len() as u64, reordered)
}

struct Case {
    name: &'static str,
    impairment: Impairment,
    seed: u64,
}

/// One call through the impaired path; asserts and prints everything (see the module doc).
fn impaired_call(case: Case) {
    common::require_tools(&["sipp", "tcpdump", "sox"]);
    let m = common::models_dir("qwen2_5_coder_1_5b/llm.json");
    let _one = common::one_llm_call_at_a_time();
    let started = Instant::now();
    let seed = std::env::var("SWITCHBOARD_IMPAIR_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(case.seed);
    let ports = common::alloc_ports();
    let mut app_ports = ports.clone();
    app_ports.rtp_high = ports.rtp_low + 2 * RTP_PAIRS - 1;
    let dir = common::test_dir(case.name);
    let ends = common::speech::caller_pcap(&m, &dir, &[(QUESTION_AT_S, QUESTION)], CALL_S, 0.0, 0x5EC0_0010);

    let relay_ports: Vec<u16> = (app_ports.rtp_low..=app_ports.rtp_high).collect();
    let relay = Relay::start(RELAY_IP, APP_IP, &relay_ports, case.impairment, case.impairment, seed);
    let cfg = format!(
        "{models}\
         media:\n  advertised_address: {RELAY_IP}\n\
         calls:\n  record_dir: {{{{run_dir}}}}/records\n\
         routes:\n  - match: \"*\"\n    agent: bakery\nagents:\n  bakery:\n    mode: llm\n    turn_detection:\n      type: server_vad\n    transcription: {{}}\n    llm:\n      instructions: \"{INSTRUCTIONS}\"\n      max_output_tokens: 60\n",
        models = common::embedded_llm_models(&m, None),
    );
    let app = common::Appliance::start_in(&dir, &cfg, &app_ports);
    let cap = common::Capture::start(
        app.dir(),
        &format!("udp and ( port {} or portrange {}-{} )", ports.peer_rtp, app_ports.rtp_low, app_ports.rtp_high),
    );
    let xml = std::fs::read_to_string(common::scenario("uac_pcmu_turn_pause.xml"))
        .unwrap()
        .replace("<pause milliseconds=\"9000\"/>", &format!("<pause milliseconds=\"{}\"/>", (CALL_S * 1000.0) as u64));
    let scen = dir.join("impaired.xml");
    std::fs::write(&scen, xml).unwrap();
    let run = common::run_sipp(
        app.dir(),
        &scen,
        &ports.sip_addr(),
        &ports,
        &["-s", "1000", "-m", "1"],
        Duration::from_secs(60),
    );
    let pkts = cap.stop();
    let stats = relay.stop(Duration::from_millis(500));
    assert!(run.successful == 1 && run.failed == 0, "{}\n{}", run.report(), app.log_tail(30));
    let r = common::wait_call_record(&dir);

    // The appliance's RTP port of this call: where the caller's packets went on the wire.
    let app_port = pkts
        .iter()
        .find(|p| p.src.port() == ports.peer_rtp && p.dst.ip() == RELAY_IP)
        .map(|p| p.dst.port())
        .unwrap_or_else(|| panic!("no RTP from the caller to the relay in the capture\n{}", app.log_tail(30)));
    let caller = SocketAddr::new(APP_IP, ports.peer_rtp);
    let (into_relay, _) = wire_counts(&pkts, |p| p.src == caller && p.dst == SocketAddr::new(RELAY_IP, app_port));
    let (into_app, reordered_into_app) = wire_counts(&pkts, |p| {
        p.src == SocketAddr::new(RELAY_IP, app_port) && p.dst == SocketAddr::new(APP_IP, app_port)
    });
    let (from_app, _) = wire_counts(&pkts, |p| {
        p.src == SocketAddr::new(APP_IP, app_port) && p.dst == SocketAddr::new(RELAY_IP, app_port)
    });
    let (to_caller, reordered_to_caller) =
        wire_counts(&pkts, |p| p.src == SocketAddr::new(RELAY_IP, app_port) && p.dst == caller);
    let (direct, _) = wire_counts(&pkts, |p| p.src == SocketAddr::new(APP_IP, app_port) && p.dst == caller);

    // The caller's question, as the call record has it.
    let transcripts = r["transcripts"].as_array().unwrap();
    let heard_q: String = transcripts.iter().map(|t| t["text"].as_str().unwrap()).collect::<Vec<_>>().join(" ");
    let q_errors = wer::word_errors(QUESTION, &heard_q);
    let q_wer = q_errors as f64 / wer::words(QUESTION).len() as f64;
    // The agent's answer: in the record, and on the wire to the caller after the question.
    let replies: Vec<&serde_json::Value> =
        r["replies"].as_array().unwrap().iter().filter(|x| x["outcome"] == "done").collect();
    let reply = replies.first().map(|x| x["text"].as_str().unwrap().to_string()).unwrap_or_default();
    let audio = common::rtp_stream_to_pcm(&pkts, ports.peer_rtp, Some(app_port));
    let after_q = ((ends[0] * 8000.0) as usize).min(audio.pcm.len());
    let answer_pcm = &audio.pcm[after_q..];
    let loud_s = common::active_seconds(answer_pcm, 8000, 0.01);
    let before_loud_s = common::active_seconds(&audio.pcm[..after_q], 8000, 0.01);
    // What the caller heard of it, in Whisper's words (lost packets are silence at SIPp).
    let x = common::speech::agent_audio_16k(
        &dir,
        &pkts.iter().filter(|p| p.dst == caller).cloned().collect::<Vec<_>>(),
        &app_ports,
    );
    let heard_reply: String =
        common::speech::transcribe_16k(&m, &x).iter().map(|t| t.transcript.text.clone()).collect::<Vec<_>>().join(" ");
    let reply_errors = wer::word_errors(&normalise(&reply), &normalise(&heard_reply));
    let reply_wer = reply_errors as f64 / wer::words(&normalise(&reply)).len().max(1) as f64;
    let media = &r["media"];

    println!("==== {} ({}, seed {seed:#x}) ====", case.name, case.impairment);
    println!("relay:\n{stats}");
    println!(
        "wire (tcpdump): caller → relay {into_relay}, relay → appliance {into_app} ({:.1} % lost, {reordered_into_app} reordered); appliance → relay {from_app}, relay → caller {to_caller} ({:.1} % lost, {reordered_to_caller} reordered); appliance → caller directly before latching {direct}",
        100.0 * (1.0 - into_app as f64 / into_relay.max(1) as f64),
        100.0 * (1.0 - to_caller as f64 / from_app.max(1) as f64),
    );
    println!("appliance media: {media}");
    println!(
        "question: {QUESTION:?}\n  record:  {heard_q:?}\n  WER {:.1} % ({q_errors} of {} words)",
        q_wer * 100.0,
        wer::words(QUESTION).len()
    );
    println!("reply (record): {reply:?}\n  caller heard: {:.1} s loud after the question ({before_loud_s:.1} s before): {heard_reply:?}, WER {:.1} % against the record", loud_s, reply_wer * 100.0);
    println!("test time {:.1} s", started.elapsed().as_secs_f64());

    // The relay did what was asked: loss near the target on the caller's stream (a short stream,
    // 900 packets: ± 4 binomial standard deviations; with the fixed seed the pattern is the same in
    // every run), reordering, and the appliance's replies latched onto the relay (at most a second
    // of silence went around it, before the caller's first packet).
    let n = (stats.to_target.received - stats.to_target.unroutable) as f64;
    let p = case.impairment.loss;
    let sd = (p * (1.0 - p) / n).sqrt();
    assert!(
        (stats.to_target.loss() - p).abs() <= 4.0 * sd + 1e-9,
        "realised loss {:.3} vs {p}: {stats}",
        stats.to_target.loss()
    );
    assert!(
        stats.to_target.reordered > 0 && stats.to_peer.reordered > 0,
        "the jitter reordered packets both ways: {stats}"
    );
    // (tcpdump stops a little before the relay: a packet or two in flight may be missing from it.)
    assert!(
        into_app <= stats.to_target.forwarded && into_app + 3 >= stats.to_target.forwarded,
        "the wire shows what the relay says it forwarded: {into_app} vs {stats}"
    );
    assert!(
        to_caller >= stats.to_peer.forwarded.saturating_sub(5) && stats.to_peer.received >= 300,
        "the appliance's RTP went through the relay: {stats}"
    );
    assert!(direct <= 50, "{direct} packets went around the relay: the appliance did not latch onto it");

    // The transcript of the caller's question is still right.
    let words = wer::words(&heard_q);
    assert!(
        q_wer <= WER_MAX && KEY_WORDS.iter().all(|w| words.contains(&w.to_string())),
        "the question in the record: {heard_q:?}, {q_errors} word errors (WER {:.2} > {WER_MAX}) or a key word {KEY_WORDS:?} missing\n{}",
        q_wer,
        app.log_tail(40)
    );
    // The agent still answers: the right fact, and its audio reached the caller after the question.
    assert!(
        any_word(&reply, FACTS),
        "the reply {reply:?} lacks any of {FACTS:?} (question heard as {heard_q:?})\n{}",
        app.log_tail(40)
    );
    assert!(
        common::is_audible(answer_pcm, 8000) && loud_s >= 1.0,
        "the caller heard the answer: {loud_s:.1} s loud after the question\n{}",
        app.log_tail(30)
    );
    assert!(before_loud_s < 0.2, "nothing loud before the question ended: {before_loud_s:.1} s");
    // What the caller heard is the reply: most of its words survive the loss. SIPp conceals
    // nothing (a lost packet is 20 ms of silence there), so this is looser than for the question:
    // half the words. Measured: 0–12.5 % at 5 % and 15 % loss; at 45 % loss the caller heard
    // "They can reopen the 8-0-0 AM on Saturday." (88 %), which fails.
    assert!(reply_wer <= 0.5, "the caller heard {heard_reply:?} for {reply:?}: WER {reply_wer:.2}");
}

/// 5 % loss and 40 ms ± 40 ms delay each way.
#[test]
fn five_percent_loss_and_jitter_keep_the_dialogue_working() {
    impaired_call(Case { name: "loss5", impairment: Impairment::netem(5.0, 40, 40), seed: 0x5EED_0005 });
}

/// 15 % loss and 40 ms ± 40 ms delay each way.
#[test]
fn fifteen_percent_loss_and_jitter_keep_the_dialogue_working() {
    impaired_call(Case { name: "loss15", impairment: Impairment::netem(15.0, 40, 40), seed: 0x5EED_0015 });
}

/// The relay itself, against two plain sockets: it loses about the share asked, delays within the
/// jitter's bounds, reorders, relays both ways, and its decisions are reproducible from the seed.
#[test]
fn the_relay_loses_delays_and_reorders_like_netem() {
    // The decisions alone (sans-IO): 100 000 draws.
    let imp = Impairment::netem(15.0, 40, 40);
    let mut a = Impairer::new(imp, 7);
    let draws: Vec<Option<Duration>> = (0..100_000).map(|_| a.next()).collect();
    let mut b = Impairer::new(imp, 7);
    assert!(draws.iter().all(|d| *d == b.next()), "same seed, same decisions");
    let lost = draws.iter().filter(|d| d.is_none()).count() as f64 / draws.len() as f64;
    assert!((lost - 0.15).abs() < 0.005, "loss {lost}");
    let kept: Vec<f64> = draws.iter().flatten().map(|d| d.as_secs_f64() * 1000.0).collect();
    let mean = kept.iter().sum::<f64>() / kept.len() as f64;
    assert!(
        kept.iter().all(|&d| (0.0..=80.0).contains(&d)) && (mean - 40.0).abs() < 0.5,
        "delays uniform in [0, 80] ms: mean {mean}"
    );
    assert!(SplitMix64::new(1).next_u64() != SplitMix64::new(2).next_u64());

    // The relay on loopback: "caller" and "appliance" sockets on 127.0.0.1, the relay on 127.0.0.2.
    let ports = common::alloc_ports();
    let port = ports.rtp_low;
    let target = UdpSocket::bind((APP_IP, port)).unwrap();
    let peer = UdpSocket::bind((APP_IP, ports.peer_rtp)).unwrap();
    target.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let relay = Relay::start(RELAY_IP, APP_IP, &[port], imp, imp, 42);
    // 300 datagrams 10 ms apart (closer than RTP's 20 ms, for more crossings in less time).
    let n = 300u16;
    let echo = std::thread::spawn(move || {
        // The "appliance" echoes each datagram to its source (the relay), like symmetric RTP.
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok((len, from)) = target.recv_from(&mut buf) {
            assert_eq!(from, SocketAddr::new(RELAY_IP, port), "the relay forwards from its own address");
            got.push(u16::from_be_bytes([buf[0], buf[1]]));
            target.send_to(&buf[..len], from).unwrap();
        }
        got
    });
    let t0 = Instant::now();
    for i in 0..n {
        peer.send_to(&i.to_be_bytes(), (RELAY_IP, port)).unwrap();
        std::thread::sleep((t0 + Duration::from_millis(10 * (i as u64 + 1))).saturating_duration_since(Instant::now()));
    }
    let mut back = Vec::new();
    let mut buf = [0u8; 64];
    while let Ok((_, from)) = peer.recv_from(&mut buf) {
        assert_eq!(from, SocketAddr::new(RELAY_IP, port));
        back.push(u16::from_be_bytes([buf[0], buf[1]]));
    }
    let got = echo.join().unwrap();
    let stats = relay.stop(Duration::from_millis(200));
    println!("relay self-check ({imp}):\n{stats}");
    let inversions = |v: &[u16]| v.windows(2).filter(|w| w[1] < w[0]).count();
    assert_eq!(stats.to_target.received, n as u64);
    assert_eq!(got.len() as u64, stats.to_target.forwarded);
    assert_eq!(back.len() as u64, stats.to_peer.forwarded);
    assert_eq!(stats.to_peer.received, got.len() as u64, "every echo came back to the relay");
    let loss = stats.to_target.loss();
    assert!((0.08..=0.22).contains(&loss), "realised loss {loss}");
    assert!(inversions(&got) > 0 && stats.to_target.reordered > 0, "reordered on the way in: {got:?}");
    assert!(stats.to_peer.reordered > 0, "reordered on the way back");
    assert!(stats.to_target.delay_max <= Duration::from_millis(80));
}
