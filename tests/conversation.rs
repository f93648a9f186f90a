//! A whole spoken conversation on the embedded default language model (the set-up's ONNX
//! conversion of Qwen2.5-Coder-1.5B-Instruct): a SIPp caller asks three questions spoken by Piper,
//! the second and third referring to the first answer; the agent's answers, captured on the wire and
//! transcribed by the project's own Whisper, hold the right facts, in order; the call record holds
//! both sides' words with their times.

mod common;

use std::time::Duration;
use switchboard::models::asr::offline;

const INSTRUCTIONS: &str = "You are the friendly phone receptionist of Sunny Bakery. Answer the caller in one short sentence that sounds natural when spoken aloud. \
Only use these facts. Opening hours: Monday to Friday 7:00 to 18:00, Saturday 8:00 to 14:00. Closed on Sunday. Phone number: 555-0100.";

/// (when the question starts in the caller's audio, seconds; the question; what the answer must hold)
const TURNS: [(f64, &str, &[&str]); 3] = [
    // Whisper writes "8:00" as "800" and "2 p.m." as "2pm".
    (1.0, "Hi! What time do you open on Saturday?", &["8", "800", "8am", "eight"]),
    (15.0, "And when do you close that day?", &["14", "1400", "2", "2pm", "two"]),
    (29.0, "What about Sunday?", &["closed", "not open", "close"]),
];
const CALL_S: f64 = 44.0;

/// Any of `words` as a whole word ("8" is in "8:00 am", not in "18:00").
fn any_word(text: &str, words: &[&str]) -> bool {
    words.iter().any(|w| {
        fancy_regex::Regex::new(&format!(r"(?i)\b{}\b", fancy_regex::escape(w))).unwrap().is_match(text).unwrap()
    })
}

/// The agent's audio in a capture, transcribed turn by turn by the project's Whisper.
fn agent_speech(
    m: &std::path::Path,
    dir: &std::path::Path,
    pkts: &[common::UdpPacket],
    ports: &common::Ports,
) -> Vec<offline::TurnText> {
    let x = common::speech::agent_audio_16k(dir, pkts, ports);
    let spoken = common::speech::transcribe_16k(m, &x);
    for t in &spoken {
        println!("agent {:>6}..{:>6} ms: {:?}", t.start_ms, t.end_ms, t.transcript.text);
    }
    spoken
}

#[test]
fn three_turns_on_the_embedded_model() {
    common::require_tools(&["sipp", "tcpdump", "sox"]);
    let m = common::models_dir("qwen2_5_coder_1_5b/llm.json");
    let ports = common::alloc_ports();
    let dir = common::test_dir("conversation");
    // The caller's side: three questions by Piper at fixed times, as PCMU.
    let ends = common::speech::caller_pcap(&m, &dir, &TURNS.map(|(at, q, _)| (at, q)), CALL_S, 0.0, 0x5EC0_0003);

    // The appliance on the shipped models, the language model being the embedded default.
    let cfg = format!(
        "{models}\
         calls:\n  record_dir: {{{{run_dir}}}}/records\n\
         routes:\n  - match: \"*\"\n    agent: bakery\nagents:\n  bakery:\n    mode: llm\n    turn_detection:\n      type: server_vad\n    transcription: {{}}\n    llm:\n      instructions: \"{INSTRUCTIONS}\"\n      max_output_tokens: 60\n",
        models = common::embedded_llm_models(&m, None),
    );
    let app = common::Appliance::start_in(&dir, &cfg, &ports);
    let cap = common::Capture::start(app.dir(), &format!("udp and portrange {}-{}", ports.rtp_low, ports.rtp_high));
    let xml = std::fs::read_to_string(common::scenario("uac_pcmu_turn_pause.xml"))
        .unwrap()
        .replace("<pause milliseconds=\"9000\"/>", &format!("<pause milliseconds=\"{}\"/>", (CALL_S * 1000.0) as u64));
    let scen = dir.join("conversation.xml");
    std::fs::write(&scen, xml).unwrap();
    let run = common::run_sipp(
        app.dir(),
        &scen,
        &ports.sip_addr(),
        &ports,
        &["-s", "1000", "-m", "1"],
        Duration::from_secs(90),
    );
    let pkts = cap.stop();
    assert!(run.successful == 1 && run.failed == 0, "{}\n{}", run.report(), app.log_tail(30));

    // What the caller heard, turn by turn, in Whisper's words.
    let spoken = agent_speech(&m, &dir, &pkts, &ports);
    let log = app.log();
    println!(
        "{}",
        log.lines()
            .filter(|l| l.contains("transcript turn=") || l.contains("agent reply"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Each answer is spoken after its question ends and before the next question begins.
    for (i, (_, q, facts)) in TURNS.iter().enumerate() {
        let from = (ends[i] * 1000.0) as u64;
        let to = TURNS.get(i + 1).map(|t| (t.0 * 1000.0) as u64).unwrap_or((CALL_S * 1000.0) as u64);
        let said: Vec<&str> = spoken
            .iter()
            .filter(|t| t.start_ms >= from && t.start_ms < to)
            .map(|t| t.transcript.text.as_str())
            .collect();
        let said = said.join(" ");
        assert!(
            any_word(&said, facts),
            "turn {}: asked {q:?}, the caller heard {said:?}, which lacks any of {facts:?}\n{}",
            i + 1,
            app.log_tail(40)
        );
    }

    // The record: three caller turns and three replies, each with its time.
    let r = common::wait_call_record(&dir);
    let transcripts = r["transcripts"].as_array().unwrap();
    let replies = r["replies"].as_array().unwrap();
    assert_eq!(transcripts.len(), 3, "{}", serde_json::to_string_pretty(&r).unwrap());
    assert!(
        replies.len() >= 3 && replies.iter().filter(|x| x["outcome"] == "done").count() >= 3,
        "{}",
        serde_json::to_string_pretty(&r["replies"]).unwrap()
    );
    for (i, (_, _, facts)) in TURNS.iter().enumerate() {
        let text = replies.iter().filter(|x| x["outcome"] == "done").nth(i).unwrap()["text"].as_str().unwrap();
        assert!(any_word(text, facts), "reply {}: {text:?} lacks any of {facts:?}", i + 1);
        assert!(transcripts[i]["audio_end_ms"].as_u64().unwrap() > 0);
    }
    // Replies come after the turns they answer.
    let t_ms: Vec<u64> = replies.iter().map(|x| x["t_ms"].as_u64().unwrap()).collect();
    assert!(t_ms.windows(2).all(|w| w[0] <= w[1]), "{t_ms:?}");
    assert!(app.metric_sum("switchboard_llm_replies_total") >= 3.0);
}

/// A language model that cannot be reached: the caller hears the agent's apology (never dead air),
/// the agent hangs up as configured, and the failure is counted and recorded.
#[test]
fn a_dead_language_model_gets_an_apology_then_a_hangup() {
    common::require_tools(&["sipp", "tcpdump", "sox"]);
    let m = common::models_dir("whisper_tiny_en/whisper.json");
    let ports = common::alloc_ports();
    let dir = common::test_dir("llm-down");
    common::speech::caller_pcap(&m, &dir, &[(1.0, "What time do you open on Saturday?")], 6.0, 0.0, 0x5EC0_0003);
    // Nothing listens on this port.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = format!(
        "models:\n  runtime:\n    library: {m}/onnxruntime/libonnxruntime.so.1.32.0\n  vad:\n    path: {m}/silero_vad/silero_vad.onnx\n  tts:\n    path: {m}/piper/en_US-joe-medium.onnx\n  asr:\n    tiny:\n      path: {m}/whisper_tiny_en\n  llm:\n    remote:\n      type: openai\n      base_url: http://127.0.0.1:{dead}/v1\n      model: qwen\n      retries: 1\n\
         calls:\n  record_dir: {{{{run_dir}}}}/records\n\
         routes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n    mode: llm\n    turn_detection:\n      type: server_vad\n    transcription: {{}}\n    llm:\n      instructions: \"{INSTRUCTIONS}\"\n      apology: \"Sorry, our assistant cannot answer right now. Goodbye.\"\n      on_failure: hangup\n",
        m = m.display(),
    );
    let app = common::Appliance::start_in(&dir, &cfg, &ports);
    let cap = common::Capture::start(app.dir(), &format!("udp and portrange {}-{}", ports.rtp_low, ports.rtp_high));
    // uac_wait_bye.xml with the question played after the ACK: the appliance must end the call.
    let xml = std::fs::read_to_string(common::scenario("uac_wait_bye.xml")).unwrap().replace(
        "  <recv request=\"BYE\"",
        "  <nop><action><exec play_pcap_audio=\"pcap/turn_pause_pcmu.pcap\"/></action></nop>\n  <recv request=\"BYE\"",
    );
    let scen = dir.join("wait_bye_question.xml");
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
    assert!(
        run.successful == 1 && run.failed == 0,
        "the appliance hangs up after its apology\n{}\n{}",
        run.report(),
        app.log_tail(30)
    );
    let spoken = agent_speech(&m, &dir, &pkts, &ports);
    let said: String = spoken.iter().map(|t| t.transcript.text.as_str()).collect::<Vec<_>>().join(" ").to_lowercase();
    assert!(
        said.contains("sorry") && said.contains("answer"),
        "the caller hears the apology: {said:?}\n{}",
        app.log_tail(30)
    );
    assert!(
        app.metric_value("switchboard_llm_failures_total{kind=\"connect\"}").unwrap_or(0.0) >= 1.0,
        "{}",
        app.metrics()
    );
    let r = common::wait_call_record(&dir);
    let reply = &r["replies"][0];
    assert_eq!((reply["outcome"].as_str(), reply["error"].as_str()), (Some("failed"), Some("connect")), "{r}");
    assert_eq!(r["end_reason"], "completed_local_bye", "the appliance ended the call");
    assert!(app.log().contains("the language model failed"), "the hang-up says why in the log");
}
