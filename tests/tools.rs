//! Tools on a real call: a SIPp caller asks about an order; the embedded model decides to call the
//! agent's `check_order` http tool, whose request reaches a real local webhook (Python's
//! http.server, started by the test, recording what it receives); the answer goes back to the
//! model and its words to the caller. A backend that answers 500 or too slowly gives the model an
//! error result and the caller still hears the agent. Every call is in the record and the metrics.

mod common;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Backend {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Drop for Backend {
    fn drop(&mut self) {
        common::stop_child(&mut self.child, "TERM", Duration::from_secs(5));
    }
}

impl Backend {
    /// The webhook (tests/fixtures/tool_backend.py), logging to `dir`/webhook.jsonl.
    fn start(dir: &std::path::Path) -> Backend {
        Backend::spawn("tool_backend.py", &[], dir.join("webhook.jsonl"))
    }

    /// `python3 tests/fixtures/<script> 0 <args…> <log>`, which prints its port first.
    fn spawn(script: &str, args: &[&std::path::Path], log: std::path::PathBuf) -> Backend {
        let mut child = Command::new("python3")
            .arg(common::repo_root().join("tests/fixtures").join(script))
            .arg("0")
            .args(args)
            .arg(&log)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (scripts/setup.sh --test installs it)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("the webhook printed {line:?}"));
        Backend { child, port, log }
    }

    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

const ORDER_LINE: &str = "Hello, can you check my order? The order number is 4711.";

const INSTRUCTIONS: &str = "You are the order line of Sunny Bakery. When the caller asks about an order, call the check_order tool with the order number \
they give, and never guess an order's status. Then tell the caller what the tool said, in one short sentence. If the tool fails, say you cannot look it up right now. \
When the caller asks you to press keys, call press_keys with those keys, then say that you pressed them.";

/// For the asynchronous lookup: a question the model can answer while the tool runs.
const HOURS: &str = " On Saturday the bakery opens at 8 am.";

/// `check_order`'s extra YAML lines (`async`, `filler`), indented under the tool.
fn config(m: &std::path::Path, url: &str, timeout_ms: u64) -> String {
    config_with(m, url, timeout_ms, INSTRUCTIONS, "")
}

fn config_with(m: &std::path::Path, url: &str, timeout_ms: u64, instructions: &str, check_order_extra: &str) -> String {
    format!(
        "{models}\
         calls:\n  record_dir: {{{{run_dir}}}}/records\n\
         routes:\n  - match: \"*\"\n    agent: orders\nagents:\n  orders:\n    mode: llm\n    turn_detection:\n      type: server_vad\n    transcription: {{}}\n    llm:\n      instructions: \"{instructions}\"\n      max_output_tokens: 60\n      tools:\n        - name: check_order\n          description: Look up the status and delivery day of an order by its number\n          type: http\n          method: GET\n          url: \"{url}\"\n          headers:\n            Authorization: \"Bearer ${{env:SB_TEST_ORDERS_TOKEN}}\"\n          timeout_ms: {timeout_ms}\n          retries: 1\n{check_order_extra}          parameters:\n            type: object\n            properties:\n              order_number:\n                type: string\n                description: the order number the caller gave\n            required: [order_number]\n        - name: press_keys\n          description: Press telephone keys on this call, in order\n          type: send_dtmf\n",
        models = common::embedded_llm_models(m, None),
    )
}

/// What one call left: the appliance, the webhook, what the caller heard, the record, and the
/// DTMF keys the appliance sent (RFC 4733, in order).
struct Call {
    app: common::Appliance,
    backend: Backend,
    heard: String,
    record: serde_json::Value,
    keys: String,
}

/// One call: the caller says `line`; the webhook URL ends in `url_path`.
fn call(name: &str, line: &str, url_path: &str, timeout_ms: u64) -> Call {
    call_with(name, &[(1.0, line)], 22, url_path, |m, url| config(m, url, timeout_ms), |_, _| {})
}

/// One call: the caller says `lines` at their times (s) and hangs up after `call_s`; the agent's
/// config comes from `cfg(models, webhook url)`; `during(app, backend)` runs while the call does.
fn call_with(
    name: &str,
    lines: &[(f64, &str)],
    call_s: u64,
    url_path: &str,
    cfg: impl Fn(&std::path::Path, &str) -> String,
    during: impl FnOnce(&common::Appliance, &Backend) + Send,
) -> Call {
    common::require_tools(&["sipp", "tcpdump", "sox", "python3"]);
    let m = common::models_dir("qwen2_5_coder_1_5b/llm.json");
    let ports = common::alloc_ports();
    let dir = common::test_dir(name);
    let backend = Backend::start(&dir);
    common::speech::caller_pcap(&m, &dir, lines, call_s as f64, 0.0, 0x5EC0_0008);
    std::env::set_var("SB_TEST_ORDERS_TOKEN", "t0ken-for-tests");
    let url = format!("http://127.0.0.1:{}{url_path}", backend.port);
    let app = common::Appliance::start_in(&dir, &cfg(&m, &url), &ports);
    let cap = common::Capture::start(app.dir(), &format!("udp and portrange {}-{}", ports.rtp_low, ports.rtp_high));
    let xml = std::fs::read_to_string(common::scenario("uac_pcmu_turn_pause.xml"))
        .unwrap()
        .replace("<pause milliseconds=\"9000\"/>", &format!("<pause milliseconds=\"{}\"/>", call_s * 1000));
    let scen = dir.join("tools.xml");
    std::fs::write(&scen, xml).unwrap();
    let run = std::thread::scope(|s| {
        let sipp = s.spawn(|| {
            common::run_sipp(
                app.dir(),
                &scen,
                &ports.sip_addr(),
                &ports,
                &["-s", "1000", "-m", "1"],
                Duration::from_secs(call_s + 40),
            )
        });
        during(&app, &backend);
        sipp.join().unwrap()
    });
    let pkts = cap.stop();
    assert!(run.successful == 1 && run.failed == 0, "{}\n{}", run.report(), app.log_tail(30));
    // What the caller heard, in Whisper's words.
    let x = common::speech::agent_audio_16k(&dir, &pkts, &ports);
    let heard: Vec<String> = common::speech::transcribe_16k(&m, &x).into_iter().map(|t| t.transcript.text).collect();
    let heard = heard.join(" ");
    println!("the caller heard: {heard:?}");
    println!(
        "{}",
        app.log()
            .lines()
            .filter(|l| l.contains("tool") || l.contains("agent reply") || l.contains("transcript turn"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let r = common::wait_call_record(&dir);
    println!(
        "tools: {}\nreplies: {}",
        serde_json::to_string_pretty(&r["tools"]).unwrap(),
        serde_json::to_string_pretty(&r["replies"]).unwrap()
    );
    // The keys the appliance sent: each RFC 4733 event once (its copies share the timestamp).
    let mut keys = String::new();
    let mut last_ts = None;
    for p in pkts.iter().filter_map(|p| common::audio::parse_rtp(p.time, p.src, p.dst, &p.payload)) {
        if (ports.rtp_low..=ports.rtp_high).contains(&p.src.port())
            && p.pt == 101
            && !p.payload.is_empty()
            && last_ts != Some(p.ts)
        {
            last_ts = Some(p.ts);
            keys.push(match p.payload[0] {
                d @ 0..=9 => (b'0' + d) as char,
                10 => '*',
                11 => '#',
                e => (b'A' + e.saturating_sub(12)) as char,
            });
        }
    }
    Call { app, backend, heard, record: r, keys }
}

#[test]
fn the_model_calls_the_webhook_and_the_caller_hears_its_answer() {
    let _one = common::one_llm_call_at_a_time();
    let Call { app, backend, heard, record: r, keys } = call("tools_ok", ORDER_LINE, "/orders/{order_number}", 5000);
    assert!(keys.is_empty(), "no keys were asked for: {keys:?}");
    // The request the webhook received: the model's argument in the URL, the secret header filled in.
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}\n{}", app.log_tail(30));
    let path = percent_decode(reqs[0]["path"].as_str().unwrap());
    // The number the caller was understood to say reaches the webhook. (Whisper tiny writes the
    // spoken "4711" as "4711", "4,711" or now and then "4,70011": the digits of the transcript
    // are what the model must pass on.)
    let transcript = r["transcripts"][0]["text"].as_str().unwrap_or_default().to_string();
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    assert!(
        path.starts_with("/orders/") && digits(&path) == digits(&transcript) && digits(&path).starts_with("47"),
        "{path} for {transcript:?}"
    );
    assert_eq!(reqs[0]["method"], "GET");
    let auth = reqs[0]["headers"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.clone());
    assert_eq!(auth, Some(serde_json::json!("Bearer t0ken-for-tests")), "the secret header, filled in: {}", reqs[0]);
    // The record and the metrics.
    let tools = r["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 1, "{tools:?}");
    assert_eq!((tools[0]["name"].as_str(), tools[0]["outcome"].as_str()), (Some("check_order"), Some("ok")));
    assert!(tools[0]["result"].as_str().unwrap().contains("Friday"), "{}", tools[0]);
    assert!(!serde_json::to_string(&r).unwrap().contains("t0ken"), "the secret never reaches the record");
    assert!(!app.log().contains("t0ken"), "the secret never reaches the log");
    assert_eq!(
        app.metric_value("switchboard_tool_calls_total{outcome=\"ok\",tool=\"check_order\"}"),
        Some(1.0),
        "{}",
        app.metrics()
    );
    // The answer reached the caller: the reply after the tool says what the webhook said.
    let h = heard.to_lowercase();
    assert!(h.contains("friday") || h.contains("shipped"), "the caller heard {heard:?}\n{}", app.log_tail(30));
}

#[test]
fn a_failing_or_slow_webhook_gives_the_model_an_error_and_the_caller_an_answer() {
    let _one = common::one_llm_call_at_a_time();
    for (name, path, timeout_ms, outcome) in
        [("tools_500", "/fail/{order_number}", 5000, "error"), ("tools_slow", "/slow/{order_number}", 1000, "timeout")]
    {
        let Call { app, backend, heard, record: r, .. } = call(name, ORDER_LINE, path, timeout_ms);
        let tools = r["tools"].as_array().unwrap();
        assert_eq!(tools.len(), 1, "{name}: {tools:?}");
        assert_eq!(tools[0]["outcome"], outcome, "{name}: {}", tools[0]);
        // 500 and a timeout are retried once.
        assert_eq!(backend.requests().len(), 2, "{name}: {:?}", backend.requests());
        let after: Vec<&serde_json::Value> = r["replies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["response"].as_u64() > tools[0]["response"].as_u64())
            .collect();
        assert!(
            after.iter().any(|x| x["outcome"] == "done" && !x["text"].as_str().unwrap().is_empty()),
            "{name}: the model answered after the error: {after:?}"
        );
        assert!(!heard.trim().is_empty(), "{name}: the caller heard the agent");
        assert_eq!(
            app.metric_value(&format!("switchboard_tool_calls_total{{outcome=\"{outcome}\",tool=\"check_order\"}}")),
            Some(1.0),
            "{}",
            app.metrics()
        );
    }
}

/// `send_dtmf`: the caller asks the agent to press keys; the model calls the tool and the keys go out
/// on the call as RFC 4733 events.
#[test]
fn the_model_presses_keys_on_the_call() {
    let _one = common::one_llm_call_at_a_time();
    let c = call("tools_dtmf", "Please press the keys 1, 2 and 3 for me.", "/orders/{order_number}", 5000);
    let tools = c.record["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 1, "{tools:?}\n{}", c.app.log_tail(30));
    assert_eq!(
        (tools[0]["name"].as_str(), tools[0]["outcome"].as_str()),
        (Some("press_keys"), Some("ok")),
        "{}",
        tools[0]
    );
    assert_eq!(c.keys, "123", "the keys on the wire\n{}", c.app.log_tail(30));
    assert!(c.backend.requests().is_empty(), "the webhook was not called");
    assert!(!c.heard.trim().is_empty(), "the agent said something after pressing them");
    assert_eq!(
        c.app.metric_value("switchboard_tool_calls_total{outcome=\"ok\",tool=\"press_keys\"}"),
        Some(1.0),
        "{}",
        c.app.metrics()
    );
}

/// An asynchronous tool (`async: true`, the gpt-realtime behaviour): while the order lookup runs
/// (the webhook holds its answer until the test releases it), the agent says the filler, the
/// caller asks something else and is answered; then the result arrives and is spoken.
#[test]
fn an_async_tool_lets_the_conversation_go_on_until_its_result_arrives() {
    let _one = common::one_llm_call_at_a_time();
    let instructions = format!("{INSTRUCTIONS}{HOURS}");
    let extra = "          async: true\n          filler: Let me check that for you.\n";
    // The second question after the filler has been said: at 11 s it once came while the filler
    // was still playing (the tool call took until 10.5 s on a loaded machine), interrupted it,
    // and the model answered it with the filler's words instead of the hours.
    let lines = [(1.0, ORDER_LINE), (14.0, "And what time do you open on Saturday?")];
    let c = call_with(
        "tools_async",
        &lines,
        42,
        "/hold/orders/{order_number}",
        |m, url| config_with(m, url, 30_000, &instructions, extra),
        |app, backend| {
            // Release the result only once the second question has been answered.
            let answered = app.wait_log("agent reply response=2 outcome=\"done\"", Duration::from_secs(40));
            std::fs::write(backend.log.with_extension("jsonl.release"), b"").unwrap();
            assert!(answered, "the second question was answered while the tool ran\n{}", app.log_tail(30));
        },
    );
    let reqs = c.backend.requests();
    assert_eq!(reqs.len(), 1, "one lookup, not repeated while pending: {reqs:?}\n{}", c.app.log_tail(30));
    let tools = c.record["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 1, "{tools:?}");
    assert_eq!(
        (tools[0]["name"].as_str(), tools[0]["outcome"].as_str()),
        (Some("check_order"), Some("ok")),
        "{}",
        tools[0]
    );
    let replies = c.record["replies"].as_array().unwrap();
    let text = |r: &serde_json::Value| r["text"].as_str().unwrap_or_default().to_lowercase();
    let hours = replies
        .iter()
        .find(|r| text(r).contains('8') || text(r).contains("eight"))
        .unwrap_or_else(|| panic!("no reply gave the hours: {replies:?}"));
    let result = replies
        .iter()
        .find(|r| text(r).contains("friday") || text(r).contains("shipped"))
        .unwrap_or_else(|| panic!("no reply gave the result: {replies:?}"));
    // The question asked meanwhile was answered before the result arrived, and the result was said after.
    assert!(hours["t_ms"].as_u64() < tools[0]["t_ms"].as_u64(), "hours {hours} before the result {}", tools[0]);
    assert!(result["response"].as_u64() > hours["response"].as_u64(), "the result's reply {result} after {hours}");
    // What the caller heard, in order: the filler, the hours, the order's status.
    let h = c.heard.to_lowercase();
    let at = |w: &[&str]| w.iter().filter_map(|w| h.find(w)).min();
    let (filler, friday) = (at(&["check that"]), at(&["friday", "shipped"]));
    assert!(filler.is_some() && friday.is_some() && filler < friday, "the caller heard {h:?}");
    assert_eq!(c.app.metric_value("switchboard_tool_calls_total{outcome=\"ok\",tool=\"check_order\"}"), Some(1.0));
}

/// Arguments that do not match the tool's schema go back to the model as an error result and never
/// reach the webhook. The embedded model cannot produce them (its decoding is constrained), so the
/// decisions come from a scripted OpenAI-compatible server (tests/fixtures/scripted_llm.py): first
/// a call with a number where the schema wants a string, then words for the caller.
#[test]
fn invalid_arguments_go_back_to_the_model_and_never_reach_the_webhook() {
    let _one = common::one_llm_call_at_a_time();
    let llm_dir = common::test_dir("tools_invalid_llm");
    let script = llm_dir.join("script.json");
    let say = "Sorry, I could not read that order number. Could you say it again?";
    std::fs::write(&script, serde_json::json!([{"tool_call": {"name": "check_order", "arguments": "{\"order_number\": 4711}"}}, {"text": say}]).to_string()).unwrap();
    let llm = Backend::spawn("scripted_llm.py", &[&script], llm_dir.join("requests.jsonl"));
    let c = call_with(
        "tools_invalid",
        &[(1.0, ORDER_LINE)],
        16,
        "/orders/{order_number}",
        |m, url| {
            let embedded = format!(
                "    embedded:\n      type: onnx\n      path: {}/qwen2_5_coder_1_5b\n      temperature: 0\n",
                m.display()
            );
            let scripted = format!(
                "    scripted:\n      type: openai\n      base_url: http://127.0.0.1:{}/v1\n      model: scripted\n",
                llm.port
            );
            let cfg = config(m, url, 5000);
            assert!(cfg.contains(&embedded));
            cfg.replace(&embedded, &scripted)
        },
        |_, _| {},
    );
    assert!(c.backend.requests().is_empty(), "the webhook was not called: {:?}", c.backend.requests());
    let tools = c.record["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 1, "{tools:?}\n{}", c.app.log_tail(30));
    assert_eq!(
        (tools[0]["name"].as_str(), tools[0]["outcome"].as_str()),
        (Some("check_order"), Some("invalid_arguments")),
        "{}",
        tools[0]
    );
    // The model's second request carries its call and the error, in order.
    let reqs = llm.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    let msgs = reqs[1]["messages"].as_array().unwrap();
    let n = msgs.len();
    assert_eq!(msgs[n - 2]["role"], "assistant");
    assert_eq!(msgs[n - 2]["tool_calls"][0]["function"]["name"], "check_order", "{}", msgs[n - 2]);
    assert_eq!(
        (msgs[n - 1]["role"].as_str(), msgs[n - 1]["tool_call_id"].as_str()),
        (Some("tool"), Some("call_0")),
        "{}",
        msgs[n - 1]
    );
    assert!(msgs[n - 1]["content"].as_str().unwrap().contains("do not match"), "{}", msgs[n - 1]);
    assert!(c.heard.to_lowercase().contains("sorry"), "the caller heard the model's words: {:?}", c.heard);
    assert_eq!(
        c.app.metric_value("switchboard_tool_calls_total{outcome=\"invalid_arguments\",tool=\"check_order\"}"),
        Some(1.0),
        "{}",
        c.app.metrics()
    );
}
