//! Outbound calls: the admin API and `switchboard dial` place a call; the callee answers (and
//! hears the agent), is busy, or never answers (CANCEL after the ring timeout); through a PBX
//! the INVITE's 407 challenge is answered with the account's credentials.

mod common;

use common::*;
use std::time::Duration;

const GREETING: &str = "Hello, this is the bakery calling about your order.";

fn config(extra: &str) -> String {
    let m = models_dir("piper/en_US-joe-medium.onnx");
    format!(
        "models:\n  runtime:\n    library: {lib}\n  tts:\n    path: {tts}\n    intra_threads: 2\nroutes:\n  - match: \"*\"\n    agent: caller\nagents:\n  caller:\n    mode: silent\n    greeting_text: \"{GREETING}\"\n    noise_scale: 0\n    noise_w: 0\n    max_duration_s: 4\n{extra}",
        lib = m.join("onnxruntime/libonnxruntime.so.1.32.0").display(),
        tts = m.join("piper/en_US-joe-medium.onnx").display()
    )
}

fn post_dial(app: &Appliance, body: &str) -> (u16, serde_json::Value) {
    let (code, text) = app.http_request("POST", "/calls", Some(body));
    (code, serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON from POST /calls: {text}")))
}

/// Follow an outbound call to its end through `GET /calls/{id}`.
fn wait_ended(app: &Appliance, call_id: &str, timeout: Duration) -> serde_json::Value {
    wait_until(timeout, || {
        let (code, text) = app.http_get(&format!("/calls/{call_id}"));
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        (code == 200 && v["state"] == "ended").then_some(v)
    })
    .unwrap_or_else(|| {
        panic!("call {call_id} did not end: {:?}\n{}", app.http_get(&format!("/calls/{call_id}")), app.log_tail(30))
    })
}

#[test]
fn answered_busy_and_unanswered_calls_end_with_their_outcomes() {
    require_tools(&["sipp", "tcpdump"]);
    let ports = alloc_ports();
    let app = Appliance::start(&config(""), &ports);
    let callee = format!("sip:100@127.0.0.1:{}", ports.peer_sip);

    // Refusals say why, and place nothing.
    let (code, v) = post_dial(&app, r#"{"to": "sip:100@127.0.0.1:9", "agent": "nobody"}"#);
    assert_eq!(code, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("unknown agent `nobody`"), "{v}");
    let (code, v) = post_dial(&app, r#"{"to": "+441632960001", "agent": "caller"}"#);
    assert_eq!(code, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("name an account"), "{v}");
    let (code, _) = app.http_request("POST", "/calls", Some("{not json"));
    assert_eq!(code, 400);

    // Answered: the callee hears the agent's greeting; the agent ends the call (max 4 s).
    let uas = spawn_sipp(app.dir(), &scenario("uas_echo.xml"), None, &ports, &["-m", "1"]);
    assert!(wait_udp_bound(ports.peer_sip, Duration::from_secs(5)));
    let cap = Capture::start(app.dir(), &format!("udp and portrange {}-{}", ports.rtp_low, ports.rtp_high));
    let (code, v) = post_dial(&app, &format!(r#"{{"to": "{callee}", "agent": "caller"}}"#));
    assert_eq!(code, 201, "{v}");
    let id = v["call_id"].as_str().unwrap().to_string();
    let end = wait_ended(&app, &id, Duration::from_secs(20));
    let pkts = cap.stop();
    let run = uas.wait(Duration::from_secs(10));
    assert!(run.successful == 1 && run.failed == 0, "{}\n{}", run.report(), app.log_tail(30));
    assert_eq!(end["outcome"], "answered", "{end}");
    let record_path = end["record_path"].as_str().map(std::path::PathBuf::from);
    assert!(record_path.is_none(), "no record_dir configured: {end}");
    let to_callee =
        pkts.iter().find(|p| (ports.rtp_low..=ports.rtp_high).contains(&p.src.port())).expect("RTP from the appliance");
    let audio = rtp_stream_to_pcm(&pkts, to_callee.dst.port(), Some(to_callee.src.port()));
    // The 3 s sentence has pauses between words; silence would measure 0.
    assert!(
        is_audible(&audio.pcm, 8000) && active_seconds(&audio.pcm, 8000, 0.01) > 1.2,
        "the callee hears the greeting: {}",
        common::audio::describe(&audio.pcm, 8000)
    );
    assert_eq!(app.metric_value(r#"switchboard_outbound_calls_total{outcome="answered"}"#), Some(1.0));

    // Busy: 486, which we ACK; the CLI follows the call and exits 3.
    let uas = spawn_sipp(app.dir(), &scenario("uas_busy.xml"), None, &ports, &["-m", "1"]);
    assert!(wait_udp_bound(ports.peer_sip, Duration::from_secs(5)));
    let out = std::process::Command::new(common::appliance::switchboard_bin())
        .args(["dial", &callee, "--agent", "caller", "--http", &ports.http_addr(), "--config"])
        .arg(app.config_path())
        .output()
        .expect("run switchboard dial");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "busy exits 3: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("outcome: busy"), "{stdout}");
    let run = uas.wait(Duration::from_secs(10));
    assert!(run.successful == 1 && run.failed == 0, "the 486 was ACKed: {}", run.report());

    // No answer: it rings; after the 2 s ring timeout we CANCEL, it answers 487, we ACK.
    let uas = spawn_sipp(app.dir(), &scenario("uas_ring_no_answer.xml"), None, &ports, &["-m", "1"]);
    assert!(wait_udp_bound(ports.peer_sip, Duration::from_secs(5)));
    let t0 = std::time::Instant::now();
    let (code, v) = post_dial(&app, &format!(r#"{{"to": "{callee}", "agent": "caller", "ring_timeout_s": 2}}"#));
    assert_eq!(code, 201, "{v}");
    let end = wait_ended(&app, v["call_id"].as_str().unwrap(), Duration::from_secs(15));
    let took = t0.elapsed();
    assert_eq!(end["outcome"], "no_answer", "{end}");
    assert_eq!(end["code"], 487, "{end}");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(5), "ring timeout honoured: {took:?}");
    let run = uas.wait(Duration::from_secs(10));
    assert!(run.successful == 1 && run.failed == 0, "CANCEL, 487, ACK: {}", run.report());

    assert_eq!(app.metric_value(r#"switchboard_outbound_calls_total{outcome="busy"}"#), Some(1.0));
    assert_eq!(app.metric_value(r#"switchboard_outbound_calls_total{outcome="no_answer"}"#), Some(1.0));
    assert_eq!(app.metric_value("switchboard_active_calls"), Some(0.0));
    assert_eq!(app.metric_value("switchboard_rtp_ports_in_use"), Some(0.0), "every port went back");
}

#[test]
fn a_call_through_the_pbx_answers_its_proxy_challenge() {
    require_tools(&["sipp", "kamailio"]);
    let ports = alloc_ports();
    let dir = test_dir("dial-pbx");
    let kam = Kamailio::start(&dir, ports.ctrl, &[("agent", "agentpass"), ("alice", "alicepass")], 5, 3600);
    // Alice's phone (a SIPp UAS on the peer port) registers with the PBX first.
    let reg = run_sipp(
        &dir,
        &scenario("register_auth.xml"),
        &kam.addr(),
        &ports,
        &[
            "-s",
            "alice",
            "-au",
            "alice",
            "-ap",
            "alicepass",
            "-key",
            "contact_hostport",
            &format!("127.0.0.1:{}", ports.peer_sip),
        ],
        Duration::from_secs(10),
    );
    assert!(reg.successful == 1, "alice registers: {}\n{}", reg.report(), kam.log_text());
    let extra = format!(
        "accounts:\n  pbx:\n    domain: 127.0.0.1:{}\n    username: agent\n    password: agentpass\n",
        kam.port
    );
    let app = Appliance::start_in(&dir, &config(&extra), &ports);
    let uas = spawn_sipp(&dir, &scenario("uas_echo.xml"), None, &ports, &["-m", "1"]);
    assert!(wait_udp_bound(ports.peer_sip, Duration::from_secs(5)));
    assert!(wait_until(Duration::from_secs(10), || (!kam.lines("REGISTERED sip:agent@").is_empty()).then_some(()))
        .is_some());

    // A number at the account's domain: INVITE, 407, INVITE with Proxy-Authorization, routed to alice.
    let (code, v) = post_dial(&app, r#"{"to": "alice", "agent": "caller", "account": "pbx"}"#);
    assert_eq!(code, 201, "{v}");
    let end = wait_ended(&app, v["call_id"].as_str().unwrap(), Duration::from_secs(20));
    assert_eq!(end["outcome"], "answered", "{end}\n{}\n{}", app.log_tail(30), kam.log_text());
    assert_eq!(end["to"], format!("sip:alice@127.0.0.1:{}", kam.port), "{end}");
    assert_eq!(kam.lines("PROXY_CHALLENGE sip:agent@").len(), 1, "{}", kam.log_text());
    assert_eq!(kam.lines("PROXY_AUTHORIZED sip:agent@").len(), 1, "{}", kam.log_text());
    let run = uas.wait(Duration::from_secs(10));
    assert!(run.successful == 1 && run.failed == 0, "{}", run.report());
    assert!(app.log().contains("answering the INVITE's challenge"), "{}", app.log_tail(20));
}
