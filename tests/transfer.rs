//! Transfer on real calls: the caller asks for a person; the embedded model decides to call the
//! agent's `transfer` tool; the appliance says its filler line, then REFERs the caller.
//! - baresip (which does RFC 3515 transfers) calls the target, a SIPp UAS, which answers; the
//!   appliance hears the NOTIFY 200 and hangs up its own leg: the record says the tool succeeded
//!   and the call ended `transferred`.
//! - a SIPp caller that answers the REFER with 405 stays with the agent, who says the tool's
//!   fallback line instead of leaving dead air.
//! - an agent whose language model is down (`on_failure: transfer`) says its apology and REFERs the
//!   baresip caller to a person.

mod common;

use std::time::Duration;

const INSTRUCTIONS: &str =
    "You are the front desk of Sunny Bakery. When the caller asks to speak to a person, a human or staff, \
call the transfer_to_human tool at once, without asking anything. Otherwise answer in one short sentence.";

const FALLBACK: &str = "I'm sorry, I cannot put you through right now. Please call back later.";

const ASK: &str = "Hello. Can I speak to a person, please?";

fn config(m: &std::path::Path, target: &str) -> String {
    format!(
        "{models}\
         calls:\n  record_dir: {{{{run_dir}}}}/records\n\
         routes:\n  - match: \"*\"\n    agent: desk\nagents:\n  desk:\n    mode: llm\n    turn_detection:\n      type: server_vad\n    transcription: {{}}\n    llm:\n      instructions: \"{INSTRUCTIONS}\"\n      max_output_tokens: 40\n      tools:\n        - name: transfer_to_human\n          description: Put the caller through to a person at the bakery\n          type: transfer\n          target: \"{target}\"\n          filler: Putting you through now.\n          fallback: \"{FALLBACK}\"\n",
        models = common::embedded_llm_models(m, None),
    )
}

#[test]
fn the_agent_transfers_a_baresip_caller_to_a_person() {
    let _one = common::one_llm_call_at_a_time();
    common::require_tools(&["baresip", "sipp", "sox"]);
    let m = common::models_dir("qwen2_5_coder_1_5b/llm.json");
    let ports = common::alloc_ports();
    let target_ports = common::alloc_ports();
    let dir = common::test_dir("transfer_ok");
    // The caller's words, then silence: baresip hangs up when its source file ends.
    common::speech::caller_pcap(&m, &dir, &[(1.0, ASK)], 40.0, 0.0, 0x7E57_0001);
    let target_dir = dir.join("target");
    std::fs::create_dir_all(&target_dir).unwrap();
    let target = common::spawn_sipp(&target_dir, &common::scenario("uas_echo.xml"), None, &target_ports, &["-m", "1"]);
    let target_uri = format!("sip:frontdesk@127.0.0.1:{}", target_ports.peer_sip);
    let app = common::Appliance::start_in(&dir, &config(&m, &target_uri), &ports);

    let phone = common::Baresip::start(&dir, &ports, &dir.join("caller8k.wav"), "PCMU");
    phone.dial(&format!("sip:1000@{}", ports.sip_addr()));
    assert!(
        phone.wait_event("CALL_ESTABLISHED", Duration::from_secs(10)).is_some(),
        "{}\n{}",
        phone.log(),
        app.log_tail(20)
    );
    // The model decides, the filler is said, then REFER; baresip calls the target, which answers.
    assert!(app.wait_log("sending REFER", Duration::from_secs(40)), "no REFER\n{}", app.log_tail(30));
    assert!(
        phone.wait_event("CALL_ESTABLISHED", Duration::from_secs(10)).is_some(),
        "baresip's call to the target\n{}\n{}",
        phone.log(),
        app.log_tail(20)
    );
    // Our leg ends once the target has answered (NOTIFY 200): BYE from the appliance.
    assert!(
        phone.wait_event("CALL_CLOSED", Duration::from_secs(10)).is_some(),
        "the appliance's leg ended\n{}",
        app.log_tail(30)
    );
    assert!(app.wait_log("call ended", Duration::from_secs(5)));
    // The caller is with the target now; hang that call up and the UAS completes its one call.
    phone.hangup();
    let run = target.wait(Duration::from_secs(15));
    assert_eq!((run.successful, run.failed), (1, 0), "the target took the transferred call\n{}", run.report());

    let r = common::wait_call_record(&dir);
    println!(
        "tools: {}\nreplies: {}",
        serde_json::to_string_pretty(&r["tools"]).unwrap(),
        serde_json::to_string_pretty(&r["replies"]).unwrap()
    );
    let tools = r["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 1, "{tools:?}\n{}", app.log_tail(30));
    assert_eq!(
        (tools[0]["name"].as_str(), tools[0]["outcome"].as_str()),
        (Some("transfer_to_human"), Some("ok")),
        "{}",
        tools[0]
    );
    assert!(tools[0]["result"].as_str().unwrap().contains(&target_uri), "{}", tools[0]);
    assert_eq!(r["end_reason"], "transferred", "{r}");
    assert_eq!(app.metric_value("switchboard_calls_total{status=\"transferred\"}"), Some(1.0), "{}", app.metrics());
    assert_eq!(app.metric_value("switchboard_tool_calls_total{outcome=\"ok\",tool=\"transfer_to_human\"}"), Some(1.0));
}

#[test]
fn a_caller_that_refuses_the_refer_hears_the_fallback() {
    let _one = common::one_llm_call_at_a_time();
    common::require_tools(&["sipp", "tcpdump", "sox"]);
    let m = common::models_dir("qwen2_5_coder_1_5b/llm.json");
    let ports = common::alloc_ports();
    let dir = common::test_dir("transfer_405");
    common::speech::caller_pcap(&m, &dir, &[(1.0, ASK)], 20.0, 0.0, 0x7E57_0002);
    let app = common::Appliance::start_in(&dir, &config(&m, "sip:frontdesk@127.0.0.1:5999"), &ports);
    // RTP, and SIP for the REFER's time.
    let cap = common::Capture::start(
        app.dir(),
        &format!("udp and (portrange {}-{} or port {})", ports.rtp_low, ports.rtp_high, ports.sip),
    );
    let run = common::run_sipp(
        app.dir(),
        &common::scenario("uac_refuses_refer.xml"),
        &ports.sip_addr(),
        &ports,
        &["-s", "1000", "-m", "1"],
        Duration::from_secs(90),
    );
    let pkts = cap.stop();
    assert!(
        run.successful == 1 && run.failed == 0,
        "SIPp got a REFER, refused it and hung up later\n{}\n{}",
        run.report(),
        app.log_tail(30)
    );

    let r = common::wait_call_record(&dir);
    println!(
        "tools: {}\nreplies: {}",
        serde_json::to_string_pretty(&r["tools"]).unwrap(),
        serde_json::to_string_pretty(&r["replies"]).unwrap()
    );
    let tools = r["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 1, "{tools:?}");
    assert_eq!(
        (tools[0]["name"].as_str(), tools[0]["outcome"].as_str()),
        (Some("transfer_to_human"), Some("error")),
        "{}",
        tools[0]
    );
    assert!(tools[0]["result"].as_str().unwrap().contains("405"), "{}", tools[0]);
    assert_eq!(r["end_reason"], "completed_remote_bye", "the caller stayed and hung up: {r}");
    // What the caller heard, in Whisper's words: the filler before the REFER, the fallback after
    // it. (Transcribed apart: "Putting you through now" and "I cannot put you through right now"
    // less than a second apart are one turn to the VAD, where Whisper once dropped the filler.)
    let refer = pkts
        .iter()
        .find(|p| p.dst.port() != ports.sip && p.payload.starts_with(b"REFER "))
        .unwrap_or_else(|| panic!("no REFER on the wire\n{}", app.log_tail(30)))
        .time;
    let first_ours = pkts
        .iter()
        .find(|p| (ports.rtp_low..=ports.rtp_high).contains(&p.src.port()))
        .expect("RTP from the appliance")
        .time;
    let x = common::speech::agent_audio_16k(&dir, &pkts, &ports);
    let at = (((refer - first_ours) * 16000.0) as usize).min(x.len());
    let words = |audio: &[f32]| {
        common::speech::transcribe_16k(&m, audio)
            .into_iter()
            .map(|t| t.transcript.text)
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    let (before, after) = (words(&x[..at]), words(&x[at..]));
    println!("the caller heard before the REFER: {before:?}; after it: {after:?}");
    assert!(
        before.contains("through now"),
        "the filler before the REFER: {before:?} (after it: {after:?})\n{}",
        app.log_tail(30)
    );
    assert!(
        after.contains("call back later"),
        "the fallback after the 405: {after:?} (before: {before:?})\n{}",
        app.log_tail(30)
    );
    assert_eq!(
        app.metric_value("switchboard_tool_calls_total{outcome=\"error\",tool=\"transfer_to_human\"}"),
        Some(1.0),
        "{}",
        app.metrics()
    );
}

/// The language model is down (its endpoint refuses connections): the caller hears the apology,
/// then `on_failure: transfer` REFERs them to the person in `transfer_to`, whom baresip calls.
#[test]
fn a_failed_model_hands_the_caller_to_a_person() {
    common::require_tools(&["baresip", "sipp", "sox"]);
    let m = common::models_dir("whisper_tiny_en/whisper.json");
    let ports = common::alloc_ports();
    let target_ports = common::alloc_ports();
    let dir = common::test_dir("down");
    common::speech::caller_pcap(&m, &dir, &[(1.0, "What time do you open on Saturday?")], 40.0, 0.0, 0x7E57_0003);
    let target_dir = dir.join("target");
    std::fs::create_dir_all(&target_dir).unwrap();
    let target = common::spawn_sipp(&target_dir, &common::scenario("uas_echo.xml"), None, &target_ports, &["-m", "1"]);
    // A port nothing listens on: every reply fails at once with "connection refused".
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = format!(
        "models:\n  runtime:\n    library: {m}/onnxruntime/libonnxruntime.so.1.32.0\n  vad:\n    path: {m}/silero_vad/silero_vad.onnx\n  \
         tts:\n    path: {m}/piper/en_US-joe-medium.onnx\n  asr:\n    tiny:\n      path: {m}/whisper_tiny_en\n  \
         llm:\n    cloud:\n      type: openai\n      base_url: http://127.0.0.1:{down}/v1\n      model: qwen\n      retries: 0\n\
         calls:\n  record_dir: {{{{run_dir}}}}/records\n\
         routes:\n  - match: \"*\"\n    agent: desk\nagents:\n  desk:\n    mode: llm\n    turn_detection:\n      type: server_vad\n    transcription: {{}}\n    \
         llm:\n      instructions: You are the front desk of Sunny Bakery.\n      apology: Sorry, I cannot answer that now. Let me put you through to a colleague.\n      \
         on_failure: transfer\n      transfer_to: \"sip:{{called}}-desk@127.0.0.1:{port}\"\n",
        m = m.display(),
        port = target_ports.peer_sip,
    );
    let app = common::Appliance::start_in(&dir, &cfg, &ports);
    let phone = common::Baresip::start(&dir, &ports, &dir.join("caller8k.wav"), "PCMU");
    phone.dial(&format!("sip:1000@{}", ports.sip_addr()));
    assert!(
        phone.wait_event("CALL_ESTABLISHED", Duration::from_secs(10)).is_some(),
        "{}\n{}",
        phone.log(),
        app.log_tail(20)
    );
    assert!(app.wait_log("sending REFER", Duration::from_secs(30)), "no REFER\n{}", app.log_tail(30));
    assert!(
        app.log().contains("sip:1000-desk@127.0.0.1"),
        "the target has the called number filled in\n{}",
        app.log_tail(30)
    );
    assert!(
        phone.wait_event("CALL_ESTABLISHED", Duration::from_secs(10)).is_some(),
        "baresip's call to the person\n{}\n{}",
        phone.log(),
        app.log_tail(20)
    );
    assert!(
        phone.wait_event("CALL_CLOSED", Duration::from_secs(10)).is_some(),
        "the appliance's leg ended\n{}",
        app.log_tail(30)
    );
    phone.hangup();
    let run = target.wait(Duration::from_secs(15));
    assert_eq!((run.successful, run.failed), (1, 0), "the person took the transferred call\n{}", run.report());

    let r = common::wait_call_record(&dir);
    println!("replies: {}", serde_json::to_string_pretty(&r["replies"]).unwrap());
    let replies = r["replies"].as_array().unwrap();
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(
        (replies[0]["outcome"].as_str(), replies[0]["error"].as_str()),
        (Some("failed"), Some("connect")),
        "{}",
        replies[0]
    );
    assert!(
        replies[0]["text"].as_str().unwrap().contains("put you through"),
        "the apology is what the caller heard: {}",
        replies[0]
    );
    assert_eq!(r["end_reason"], "transferred", "{r}");
    assert_eq!(app.metric_value("switchboard_calls_total{status=\"transferred\"}"), Some(1.0), "{}", app.metrics());
}
