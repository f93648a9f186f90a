use super::*;
use std::path::Path;

const P: &str = "/etc/switchboard/test.yaml";

fn err(text: &str) -> ConfigError {
    parse(Path::new(P), text).expect_err("config should be rejected")
}

const MIN: &str = "routes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n    mode: echo\n";

#[test]
fn minimal_config_gets_safe_defaults() {
    let c = parse(Path::new(P), MIN).unwrap();
    assert_eq!(c.http.listen.ip().to_string(), "127.0.0.1", "ops port is loopback unless configured");
    assert_eq!(c.sip.listen.port(), 5060);
    assert_eq!(c.sip.t1_ms.get(), 500);
    assert_eq!(c.media.codecs, vec![CodecName::Opus, CodecName::Pcmu, CodecName::Pcma]);
    assert_eq!(c.route("12345"), Some("a"));
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let e = err("sip:\n  listen: 0.0.0.0:5060\n  lisen: 1\nroutes: []\nagents: {}\n");
    assert_eq!(e.file, Path::new(P));
    assert_eq!(e.line, Some(3));
    assert!(e.key.contains("sip"), "{e}");
    assert!(e.message.starts_with("unknown field `lisen`"), "no repeated path: {e}");
    let shown = e.to_string();
    assert!(shown.starts_with("/etc/switchboard/test.yaml:3:"), "{shown}");
}

#[test]
fn wrong_type_and_bad_values_are_located() {
    let e = err(&format!("sip:\n  t1_ms: fast\n{MIN}"));
    assert_eq!((e.line, e.key.as_str()), (Some(2), "sip.t1_ms"), "{e}");
    let e = err(&format!("media:\n  rtp_ports: 30000-20000\n{MIN}"));
    assert_eq!((e.line, e.key.as_str()), (Some(2), "media.rtp_ports"), "{e}");
    assert!(e.message.contains("LOW must be"), "{e}");
    let e = err(&format!("media:\n  ptime_ms: 70\n{MIN}"));
    assert!(e.message.contains("out of range 10..=60"), "{e}");
    let e = err(&format!("sip:\n  listen: not-an-address\n{MIN}"));
    assert_eq!(e.key, "sip.listen", "{e}");
    let e = err("routes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n    mode: karaoke\n");
    assert_eq!((e.line, e.key.as_str()), (Some(6), "agents.a.mode"), "{e}");
}

#[test]
fn dangling_agent_reference_is_located() {
    let e = err("routes:\n  - match: \"1000\"\n    agent: a\n  - match: \"*\"\n    agent: nobody\nagents:\n  a: {}\n");
    assert_eq!(e.key, "routes.1.agent");
    assert_eq!(e.line, Some(5));
    assert!(e.message.contains("unknown agent `nobody`"), "{e}");
}

#[test]
fn parsing_reads_no_other_file() {
    // The greeting is the agent's to load (agent::check_config); the document itself is fine.
    let c = parse(Path::new(P), "routes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n    greeting: nope.wav\n");
    assert_eq!(c.unwrap().agents["a"].greeting.as_deref(), Some(Path::new("nope.wav")));
}

#[test]
fn yaml_syntax_error_has_a_line() {
    let e = err("routes:\n  - match: \"*\n    agent: a\n");
    assert!(e.line.is_some(), "{e}");
}

#[test]
fn shipped_default_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/switchboard.yaml");
    let c = parse(&path, &read_text(&path).unwrap()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.route("anything"), Some("default"));
}

#[test]
fn glob_routes() {
    assert!(glob_match("*", ""));
    assert!(glob_match("+4930*", "+4930123"));
    assert!(!glob_match("+4930*", "+4940123"));
    assert!(glob_match("10?0", "1010"));
    assert!(!glob_match("10?0", "100"));
    assert!(glob_match("*sales*", "eu-sales-1"));
    assert!(glob_match("1000", "1000"));
    assert!(!glob_match("1000", "10000"));
}

#[test]
fn jitter_bounds_must_be_ordered() {
    let e = err(&format!("media:\n  jitter_buffer:\n    min_ms: 80\n    target_ms: 40\n{MIN}"));
    assert_eq!((e.key.as_str(), e.line), ("media.jitter_buffer", Some(2)), "{e}");
}

const MODELS: &str = "models:\n  vad:\n    path: v.onnx\n  asr:\n    tiny:\n      path: w\n    base:\n      path: b\n      precision: int8\n      language: auto\n  voices:\n    slow:\n      path: p.onnx\n";

#[test]
fn transcription_and_voice_references_are_checked() {
    let agent = |body: &str| format!("{MODELS}routes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n{body}");
    let td = "    turn_detection:\n      type: server_vad\n";
    let ok = parse(
        Path::new(P),
        &agent(&format!("{td}    transcription:\n      model: base\n      language: de\n    voice: slow\n")),
    )
    .unwrap();
    let (name, m) = ok.asr_model_of(&ok.agents["a"]).unwrap();
    assert_eq!((name, m.precision, m.language.as_str()), ("base", Precision::Int8, "auto"));
    assert_eq!(ok.agents["a"].voice.as_deref(), Some("slow"));

    let e = err(&agent(&format!("{td}    transcription:\n      model: large\n")));
    assert_eq!(e.key, "agents.a.transcription.model", "{e}");
    assert!(e.message.contains("unknown recogniser `large`") && e.message.contains("base, tiny"), "{e}");
    // Two recognisers: the agent must name one.
    let e = err(&agent(&format!("{td}    transcription: {{}}\n")));
    assert_eq!(e.key, "agents.a.transcription", "{e}");
    assert!(e.message.contains("name the recogniser"), "{e}");
    // Turns come from the VAD.
    let e = err(&agent("    transcription:\n      model: tiny\n"));
    assert!(e.message.contains("needs turn_detection"), "{e}");
    let e = err(&agent("    voice: fast\n"));
    assert_eq!(e.key, "agents.a.voice", "{e}");
    assert!(e.message.contains("unknown voice `fast`") && e.message.contains("slow"), "{e}");
    let e = err(&agent(&format!("{td}    transcription:\n      partial_interval_ms: 90000\n")));
    assert!(e.message.contains("out of range"), "{e}");
    let e = err(&format!("models:\n  asr:\n    t:\n      path: w\n      precision: int4\n{MIN}"));
    assert_eq!(e.key, "models.asr.t.precision", "{e}");
}

#[test]
fn the_recognisers_window_floor_has_a_default_and_a_range() {
    let ok = parse(Path::new(P), &format!("{MODELS}{MIN}")).unwrap();
    let asr = &ok.models.as_ref().unwrap().asr;
    assert_eq!(asr["tiny"].window_floor_s, None, "unset: the model's measured default (models::asr)");
    let ok = parse(Path::new(P), &format!("models:\n  asr:\n    t:\n      path: w\n      window_floor_s: 30\n{MIN}"))
        .unwrap();
    assert_eq!(ok.models.as_ref().unwrap().asr["t"].window_floor_s, Some(30.0));
    let e = err(&format!("models:\n  asr:\n    t:\n      path: w\n      window_floor_s: 31\n{MIN}"));
    assert_eq!(e.key, "models.asr.t.window_floor_s", "{e}");
    assert!(e.message.contains("out of range 0..=30"), "{e}");
}

#[test]
fn one_recogniser_is_the_default() {
    let c = parse(
        Path::new(P),
        "models:\n  vad:\n    path: v.onnx\n  asr:\n    tiny:\n      path: w\nroutes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n    turn_detection:\n      type: server_vad\n    transcription: {}\n",
    )
    .unwrap();
    assert_eq!(c.asr_model_of(&c.agents["a"]).map(|(n, _)| n), Some("tiny"));
    assert_eq!(c.calls.record_dir, None);
}

#[test]
fn semantic_vad_and_repeat_are_checked() {
    let base = "models:\n  vad:\n    path: v.onnx\n  asr:\n    t:\n      path: w\nroutes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n";
    let e = err(&format!("{base}    turn_detection:\n      type: semantic_vad\n"));
    assert_eq!(e.key, "agents.a.turn_detection", "{e}");
    assert!(e.message.contains("models.turn"), "{e}");
    let ok = parse(Path::new(P), &format!("models:\n  turn:\n    path: t.onnx\n{}    turn_detection:\n      type: semantic_vad\n      eagerness: high\n", &base[8..])).unwrap();
    let td = ok.agents["a"].turn_detection.as_ref().unwrap();
    assert_eq!(
        (td.kind, td.eagerness, td.completion_threshold),
        (TurnDetectionKind::SemanticVad, Eagerness::High, 0.5)
    );
    assert_eq!(td.silence_ms(), 250, "semantic_vad asks the model after a short silence");
    let e = err(&format!("{base}    turn_detection:\n      type: semantic_vad\n      eagerness: eager\n"));
    assert_eq!(e.key, "agents.a.turn_detection.eagerness", "{e}");
    let e = err(&format!("{base}    mode: repeat\n    turn_detection:\n      type: server_vad\n"));
    assert!(e.message.contains("needs `transcription`"), "{e}");
    let e =
        err(&format!("{base}    mode: repeat\n    turn_detection:\n      type: server_vad\n    transcription: {{}}\n"));
    assert!(e.message.contains("needs a voice"), "{e}");
}

#[test]
fn manual_turns_take_one_dtmf_key() {
    let base = "models:\n  vad:\n    path: v.onnx\nroutes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n";
    let ok = parse(Path::new(P), &format!("{base}    turn_detection:\n      type: manual\n")).unwrap();
    let td = ok.agents["a"].turn_detection.as_ref().unwrap();
    assert_eq!((td.kind, td.commit_key.as_str()), (TurnDetectionKind::Manual, "#"), "# by default");
    let ok = parse(Path::new(P), &format!("{base}    turn_detection:\n      type: manual\n      commit_key: \"*\"\n"))
        .unwrap();
    assert_eq!(ok.agents["a"].turn_detection.as_ref().unwrap().commit_key, "*");
    for bad in ["\"##\"", "x", "\"\""] {
        let e = err(&format!("{base}    turn_detection:\n      type: manual\n      commit_key: {bad}\n"));
        assert_eq!(e.key, "agents.a.turn_detection.commit_key", "{bad}: {e}");
        assert!(e.message.contains("DTMF key"), "{e}");
    }
}

#[test]
fn tool_names_and_kinds_are_checked_with_the_file_line_and_key() {
    let base = "models:\n  vad:\n    path: v.onnx\n  tts:\n    path: p.onnx\n  asr:\n    t:\n      path: w\n  llm:\n    m:\n      type: onnx\n      path: q\nroutes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n    mode: llm\n    turn_detection:\n      type: server_vad\n    transcription: {}\n    llm:\n      instructions: hi\n      tools:\n";
    let tool = "        - name: check_order\n          description: Look up an order\n          type: http\n          url: http://127.0.0.1:9/orders/{n}\n";
    let ok = parse(Path::new(P), &format!("{base}{tool}")).unwrap();
    assert_eq!(ok.agents["a"].llm.as_ref().unwrap().tools[0].timeout(), std::time::Duration::from_millis(5000));
    let e = err(&format!("{base}{tool}{tool}"));
    assert_eq!(e.key, "agents.a.llm.tools.1.name", "{e}");
    assert!(e.message.contains("second tool"), "{e}");
    let e = err(&format!("{base}        - name: t\n          description: x\n          type: teleport\n"));
    assert!(e.message.contains("teleport"), "{e}");
}

#[test]
fn on_failure_transfer_needs_a_sip_target_and_the_target_needs_it() {
    let base = "models:\n  vad:\n    path: v.onnx\n  tts:\n    path: p.onnx\n  asr:\n    t:\n      path: w\n  llm:\n    m:\n      type: onnx\n      path: q\nroutes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n    mode: llm\n    turn_detection:\n      type: server_vad\n    transcription: {}\n    llm:\n      instructions: hi\n";
    let ok =
        parse(Path::new(P), &format!("{base}      on_failure: transfer\n      transfer_to: sip:desk@pbx.example\n"))
            .unwrap();
    let l = ok.agents["a"].llm.as_ref().unwrap();
    assert_eq!((l.on_failure, l.transfer_to.as_deref()), (LlmFailurePolicy::Transfer, Some("sip:desk@pbx.example")));
    let e = err(&format!("{base}      on_failure: transfer\n"));
    assert_eq!(e.key, "agents.a.llm.on_failure", "{e}");
    assert!(e.message.contains("transfer_to"), "{e}");
    assert_eq!(e.line, Some(24), "{e}");
    let e = err(&format!("{base}      on_failure: transfer\n      transfer_to: desk@pbx.example\n"));
    assert_eq!(e.key, "agents.a.llm.transfer_to", "{e}");
    assert!(e.message.contains("not a sip:"), "{e}");
    let e = err(&format!("{base}      on_failure: hangup\n      transfer_to: sip:desk@pbx.example\n"));
    assert_eq!(e.key, "agents.a.llm.transfer_to", "{e}");
    let e = err(&format!("{base}      on_failure: teleport\n"));
    assert!(e.message.contains("teleport"), "{e}");
}

#[test]
fn accounts_are_checked_and_name_the_key() {
    let acct = |body: &str| format!("{MIN}accounts:\n  pbx:\n{body}");
    let ok = parse(
        Path::new(P),
        &acct("    domain: pbx.example:5080\n    username: \"2001\"\n    password_env: PBX_PW\n    agent: a\n"),
    )
    .unwrap();
    let a = &ok.accounts["pbx"];
    assert_eq!((a.expires_s.get(), a.register, a.transport), (300, true, TransportKind::Udp));
    let e = err(&acct("    domain: pbx.example\n    username: \"2001\"\n"));
    assert!(e.key == "accounts.pbx" && e.message.contains("exactly one of"), "{e}");
    let e = err(&acct("    domain: pbx.example\n    username: \"2001\"\n    password: x\n    agent: nobody\n"));
    assert_eq!(e.key, "accounts.pbx.agent", "{e}");
    assert_eq!(e.line, Some(12), "{e}");
    let e = err(&acct("    domain: \"pbx example\"\n    username: \"2001\"\n    password: x\n"));
    assert_eq!(e.key, "accounts.pbx.domain", "{e}");
    let e = err(&acct("    domain: pbx.example\n    username: \"a@b\"\n    password: x\n"));
    assert_eq!(e.key, "accounts.pbx.username", "{e}");
    let e = err(&acct("    domain: pbx.example\n    username: \"2001\"\n    password: x\n    transport: tcp\n")
        .replace("routes:", "sip:\n  transports: [udp]\nroutes:"));
    assert_eq!(e.key, "accounts.pbx.transport", "{e}");
}

#[test]
fn host_port_reads_what_operators_write() {
    assert_eq!(host_port("pbx.example"), Some(("pbx.example".into(), 5060)));
    assert_eq!(host_port("sip:10.0.0.1:5080"), Some(("10.0.0.1".into(), 5080)));
    assert_eq!(host_port("[2001:db8::1]:5062"), Some(("2001:db8::1".into(), 5062)));
    for bad in ["", "a b", "x:0", "x:99999", "user@host", "2001:db8::1", "[zz]:5060"] {
        assert_eq!(host_port(bad), None, "{bad}");
    }
}

#[test]
fn security_defaults_are_safe_and_errors_are_located() {
    let c = parse(Path::new(P), MIN).unwrap();
    let allow: Vec<String> = c.security.allow.iter().map(|a| a.to_string()).collect();
    assert_eq!(allow, ["127.0.0.0/8", "::1/128"], "only loopback may call without a security section");
    assert!(c.security.auth.is_none());
    assert_eq!(c.calls.max_concurrent, 50);
    let e = err(&format!("security:\n  allow:\n    - 192.0.2.0/24\n    - pbx.example.com\n{MIN}"));
    // The key names the element; the YAML parser places an element's own error at its list.
    assert_eq!(e.key, "security.allow[1]", "{e}");
    assert!(matches!(e.line, Some(3..=4)), "{e}");
    assert!(e.message.contains("not an address"), "{e}");
    let e = err(&format!("security:\n  auth:\n    users: []\n{MIN}"));
    assert_eq!(e.key, "security.auth.users", "{e}");
    let e = err(&format!(
        "security:\n  auth:\n    users:\n      - username: trunk\n        password: a\n        password_env: B\n{MIN}"
    ));
    assert_eq!(e.key, "security.auth.users.0", "{e}");
    assert!(e.message.contains("exactly one"), "{e}");
    let e = err("routes:\n  - match: \"*\"\n    agent: a\n    allow: [10.0.0.0/33]\nagents:\n  a:\n    mode: echo\n");
    assert!(e.key.starts_with("routes[0].allow") || e.key.starts_with("routes.0.allow"), "{e}");
}
