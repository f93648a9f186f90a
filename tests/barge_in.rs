//! Barge-in on the wire: a SIPp caller starts talking while the agent's greeting plays; a capture
//! of both RTP directions shows the agent's audio stopping shortly after the caller's speech began,
//! and the call record and metrics say it was an interruption.

mod common;

use common::audio::{last_speech_packet, loud_times, pcmu_both_ways, pcmu_rms};
use std::time::Duration;

#[test]
fn the_caller_interrupts_the_greeting() {
    common::require_tools(&["sipp", "tcpdump", "sox"]);
    let m = common::models_dir("whisper_tiny_en/whisper.json");
    let ports = common::alloc_ports();
    let dir = common::test_dir("barge");
    // The caller: 2.5 s of silence (the greeting plays), then a sentence over it, then 6 s of quiet.
    common::speech::caller_pcap(
        &m,
        &dir,
        &[(2.5, "Sorry to interrupt, but I need to talk to someone about my order.")],
        0.0,
        6.0,
        0x5EC0_0004,
    );

    let greeting = "Thank you for calling Sunny Bakery. Our opening hours are seven to six on weekdays and eight to two on Saturday, \
and we are closed on Sunday. Custom cakes need two days of notice. How can I help you today?";
    let cfg = format!(
        "models:\n  runtime:\n    library: {m}/onnxruntime/libonnxruntime.so.1.32.0\n  vad:\n    path: {m}/silero_vad/silero_vad.onnx\n  tts:\n    path: {m}/piper/en_US-joe-medium.onnx\n  asr:\n    tiny:\n      path: {m}/whisper_tiny_en\n\
         calls:\n  record_dir: {{{{run_dir}}}}/records\n\
         routes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n    mode: repeat\n    greeting_text: \"{greeting}\"\n    turn_detection:\n      type: server_vad\n    transcription: {{}}\n",
        m = m.display(),
    );
    let app = common::Appliance::start_in(&dir, &cfg, &ports);
    let cap = common::Capture::start(app.dir(), &format!("udp and portrange {}-{}", ports.rtp_low, ports.rtp_high));
    let xml = std::fs::read_to_string(common::scenario("uac_pcmu_turn_pause.xml"))
        .unwrap()
        .replace("<pause milliseconds=\"9000\"/>", "<pause milliseconds=\"14000\"/>");
    let scen = dir.join("barge.xml");
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
    assert!(run.successful == 1 && run.failed == 0, "{}\n{}", run.report(), app.log_tail(30));

    // Both directions on the wire, by capture time.
    let (caller, agent) = pcmu_both_ways(&pkts, &ports);
    let max_caller = caller.iter().map(|p| pcmu_rms(&p.payload)).fold(0.0, f64::max);
    eprintln!("rtp: caller {} packets (max rms {max_caller:.3}); agent {}", caller.len(), agent.len());
    let caller_onset = *loud_times(&caller).first().expect("the caller's speech on the wire");
    let agent_speech = loud_times(&agent);
    assert!(agent_speech.iter().any(|&t| t < caller_onset - 1.0), "the greeting was playing before the caller spoke");
    let stop_ms = (last_speech_packet(&agent_speech, caller_onset) - caller_onset) * 1000.0;
    println!("caller onset on the wire → last greeting packet: {stop_ms:.0} ms");
    println!(
        "{}",
        app.log()
            .lines()
            .filter(|l| l.contains("barge-in") || l.contains("speech started"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(stop_ms <= 150.0, "the agent's audio stopped {stop_ms:.0} ms after the caller began\n{}", app.log_tail(30));
    assert!(app.log().contains("barge-in: the caller interrupted"), "{}", app.log_tail(30));
    assert_eq!(
        app.metric_value("switchboard_barge_ins_total{outcome=\"interrupted\"}"),
        Some(1.0),
        "{}",
        app.metrics()
    );
    let r = common::wait_call_record(&dir);
    let ev = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "response_interrupted")
        .expect("response_interrupted in the record");
    assert!(ev["audio_end_ms"].as_u64().unwrap() > 1500, "{ev}");
}

const BAKERY: &str = "You are the phone receptionist of Sunny Bakery. Whatever the caller's first question is, answer it by describing every one of these six cakes, \
one sentence per cake, in this order: the lemon drizzle cake with fresh lemons, the dark chocolate fudge cake, the carrot cake with cream cheese icing, \
the Victoria sponge with strawberry jam, the coffee and walnut cake, and the red velvet cake. After that, answer in one short sentence. \
Prices: every cake costs twenty dollars.";

/// The caller interrupts the agent in the middle of a long language-model reply: the audio stops on
/// the wire within the budget, the record's reply says `interrupted` and keeps only the words the
/// caller heard (checked against what Whisper hears in the captured audio), and the conversation
/// goes on with an answer to the interruption.
#[test]
fn an_interrupted_reply_keeps_only_what_the_caller_heard() {
    // 5 s into the six-sentence answer.
    interrupted_reply("barge_llm", 5.0, 1.0, 30.0);
}

#[test]
fn an_interruption_during_the_first_phrase_stops_the_reply_at_once() {
    // 0.6 s into the reply: its first phrase on the voice, the model still writing the six-cake
    // answer.
    interrupted_reply("barge_first_phrase", 0.6, 0.2, 2.0);
}

/// The caller asks for the cakes (a long answer) and interrupts once the reply has been playing
/// for `played_s` (the caller listens for it: see `common::listening_caller`); on the wire the
/// reply had played `min_played_s` to `max_played_s` at the interruption. The agent stops within
/// 150 ms on the wire, the record keeps what was heard, the interruption is answered.
fn interrupted_reply(name: &str, played_s: f64, min_played_s: f64, max_played_s: f64) {
    // Two models computing at once on two cores would make each reply seconds late (the caller
    // waits for it, but the call's length is fixed).
    let _one = common::one_llm_call_at_a_time();
    common::require_tools(&["sipp", "tcpdump", "sox"]);
    let InterruptedCall { app, dir, ports, pkts, first_ours, first_theirs, q_end, onset, agent_speech, reply_start } =
        interrupted_call(name, played_s);
    assert!(
        onset - reply_start > min_played_s && onset - reply_start < max_played_s,
        "the reply had been playing for {:.1} s when the caller interrupted, not {min_played_s}–{max_played_s} s (it began {:.1} s after the question)\n{}",
        onset - reply_start,
        reply_start - first_theirs - q_end,
        app.log_tail(40)
    );
    let m = common::models_dir("qwen2_5_coder_1_5b/llm.json");
    assert!(
        agent_speech.iter().any(|&t| t < onset && t > onset - 0.3),
        "the agent was not talking when the caller began (a gap in the reply?)\n{}",
        app.log_tail(40)
    );
    let stop = last_speech_packet(&agent_speech, onset);
    let stop_ms = (stop - onset) * 1000.0;
    println!(
        "reply began {:.2} s after the question; caller onset → last reply packet: {stop_ms:.0} ms",
        reply_start - first_theirs - q_end
    );
    assert!(stop_ms <= 150.0, "the reply's audio stopped {stop_ms:.0} ms after the caller began\n{}", app.log_tail(30));

    // What the caller heard of the reply, in Whisper's words.
    let audio = common::speech::agent_audio_16k(&dir, &pkts, &ports);
    let (a, b) =
        (((reply_start - first_ours - 0.1) * 16000.0) as usize, (((stop - first_ours) + 0.05) * 16000.0) as usize);
    let heard_audio = &audio[a.min(audio.len())..b.min(audio.len())];
    let on_wire: Vec<String> =
        common::speech::transcribe_16k(&m, heard_audio).into_iter().map(|t| t.transcript.text).collect();
    let on_wire = on_wire.join(" ");
    println!("played before the interruption (Whisper): {on_wire:?}");

    // The record: reply 1 interrupted, its text what was played; reply 2 answers the interruption.
    let r = common::wait_call_record(&dir);
    println!("replies: {}", serde_json::to_string_pretty(&r["replies"]).unwrap());
    let replies = r["replies"].as_array().unwrap();
    let cut = replies
        .iter()
        .find(|x| x["outcome"] == "interrupted")
        .unwrap_or_else(|| panic!("an interrupted reply in the record: {replies:?}"));
    assert_eq!(cut["response"], 1, "{cut}");
    let heard = cut["text"].as_str().unwrap();
    let audio_end_ms = cut["audio_end_ms"].as_u64().unwrap();
    let played_ms = ((stop - reply_start) * 1000.0) as u64;
    assert!(
        audio_end_ms.abs_diff(played_ms) < 400,
        "audio_end_ms {audio_end_ms} vs {played_ms} ms of the reply on the wire"
    );
    if let Some(full) = replies.iter().find(|x| x["response"] == 1 && x["outcome"] == "done") {
        let full = full["text"].as_str().unwrap();
        assert!(
            full.starts_with(heard) && full.len() > heard.len() + 20,
            "the heard part is a strict prefix of the reply:\nheard: {heard}\nfull: {full}"
        );
    }
    // The words Whisper hears in the played audio are the record's heard text, give or take the
    // last few (the cut falls inside a sentence, and its words are shared out by audio length).
    let heard_words = common::wer::words(heard);
    let wire_words: Vec<String> = common::wer::words(&on_wire).into_iter().filter(|w| w.len() > 3).collect();
    let found = wire_words.iter().filter(|w| heard_words.contains(w)).count();
    // A second and more of reply holds several long words, and the share matches them; inside the
    // first phrase a share of its few words by audio length is too coarse to compare word by word
    // ("I" of "I have a lemon drizzle cake" after 480 ms), so only the bound below holds there.
    if min_played_s >= 1.0 {
        assert!(
            wire_words.len() >= 5 && found * 10 >= wire_words.len() * 7,
            "heard text {heard:?} vs the wire {on_wire:?}"
        );
    }
    assert!(
        heard_words.len() <= common::wer::words(&on_wire).len() + 6,
        "the record keeps more than was played: {heard:?} vs {on_wire:?}"
    );
    let events = r["events"].as_array().unwrap();
    let kinds: Vec<(String, u64)> = events
        .iter()
        .filter(|e| e["response"].is_u64() || e["type"] == "response_interrupted")
        .map(|e| (e["type"].as_str().unwrap().to_string(), e["response"].as_u64().unwrap_or(0)))
        .collect();
    println!("response events: {kinds:?}");
    let pos = |k: &str, n: u64| kinds.iter().position(|(t, r)| t == k && *r == n);
    assert!(pos("response_started", 1) < pos("response_interrupted", 0), "{kinds:?}");
    assert!(
        events.iter().any(|e| e["type"] == "response_done" && e["response"] == 1 && e["outcome"] == "interrupted"),
        "{kinds:?}"
    );
    assert!(
        replies.iter().any(|x| x["response"] == 2 && x["outcome"] == "done" && !x["text"].as_str().unwrap().is_empty()),
        "the agent answered the interruption: {replies:?}"
    );
}

/// The call of `interrupted_reply`, with what its capture shows.
struct InterruptedCall {
    app: common::Appliance,
    dir: std::path::PathBuf,
    ports: common::Ports,
    pkts: Vec<common::UdpPacket>,
    /// Capture time of the agent's first packet (the start of the agent's audio as decoded).
    first_ours: f64,
    /// Capture time of the caller's first packet (the caller's time zero).
    first_theirs: f64,
    /// End of the question on the caller's clock (s).
    q_end: f64,
    /// Capture time of the interruption's first loud packet.
    onset: f64,
    /// Capture times of the agent's loud packets.
    agent_speech: Vec<f64>,
    /// Capture time of the reply's first loud packet.
    reply_start: f64,
}

fn interrupted_call(name: &str, played_s: f64) -> InterruptedCall {
    use common::listening_caller::{sipp_scenario, ListeningCaller, Step};
    let m = common::models_dir("qwen2_5_coder_1_5b/llm.json");
    let ports = common::alloc_ports();
    let dir = common::test_dir(name);
    let lines = common::speech::caller_lines_8k(
        &m,
        &dir,
        &["Hello, what kinds of cake do you have?", "Sorry, sorry, how much does the chocolate cake cost?"],
    );
    let [question, interruption] = <[Vec<i16>; 2]>::try_from(lines).unwrap();
    let caller = ListeningCaller::start(
        vec![
            Step::Silence(1.0),
            Step::Say(question),
            Step::WhenAgentHasSpoken { played_s, timeout_s: 25.0 },
            Step::Say(interruption),
        ],
        0x5EC0_0007,
    );
    let cfg = format!(
        "{models}\
         calls:\n  record_dir: {{{{run_dir}}}}/records\n\
         routes:\n  - match: \"*\"\n    agent: bakery\nagents:\n  bakery:\n    mode: llm\n    turn_detection:\n      type: server_vad\n    transcription: {{}}\n    llm:\n      instructions: \"{BAKERY}\"\n      max_output_tokens: 220\n",
        models = common::embedded_llm_models(&m, Some(switchboard::models::asr::TINY_FP32_WINDOW_FLOOR_S)),
    );
    let app = common::Appliance::start_in(&dir, &cfg, &ports);
    let cap = common::Capture::start(app.dir(), &format!("udp and portrange {}-{}", ports.rtp_low, ports.rtp_high));
    // The call's length is fixed (SIPp hangs up): the question (~3 s), a reply that may begin
    // seconds late on a loaded machine, `played_s` of it, the interruption (~3 s) and its answer.
    let scen = dir.join(format!("{name}.xml"));
    std::fs::write(&scen, sipp_scenario(&caller, ((30.0 + played_s) * 1000.0) as u64)).unwrap();
    let run = common::run_sipp(
        app.dir(),
        &scen,
        &ports.sip_addr(),
        &ports,
        &["-s", "1000", "-m", "1"],
        Duration::from_secs(90),
    );
    let said = caller.stop();
    let pkts = cap.stop();
    assert!(run.successful == 1 && run.failed == 0, "{}\n{}", run.report(), app.log_tail(30));
    println!(
        "{}",
        app.log()
            .lines()
            .filter(|l| l.contains("barge-in") || l.contains("agent reply") || l.contains("reply interrupted"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!("the caller: {said:?}");
    assert!(
        said.timed_out.is_empty() && said.step_starts.len() == 4,
        "the agent's reply never played {played_s} s: {said:?}\n{}",
        app.log_tail(40)
    );

    // The wire: the interruption's onset, and the reply's audio around it.
    let (caller, agent) = pcmu_both_ways(&pkts, &ports);
    let first_theirs = caller.first().expect("the caller's RTP").time;
    let first_ours = agent.first().expect("the agent's RTP").time;
    let q_end = said.step_ends[1];
    let onset = *loud_times(&caller)
        .iter()
        .find(|&&t| t > first_theirs + said.step_starts[3] - 0.1)
        .expect("the interruption on the wire");
    let agent_speech = loud_times(&agent);
    let reply_start =
        *agent_speech.iter().find(|&&t| t > first_theirs + q_end).expect("the agent answered the question");
    InterruptedCall { app, dir, ports, pkts, first_ours, first_theirs, q_end, onset, agent_speech, reply_start }
}
