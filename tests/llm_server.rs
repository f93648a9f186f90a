//! The conversation against a real OpenAI-compatible server on loopback: llama.cpp's
//! (llama-cpp-python's `llama_cpp.server`) serving the packaged Qwen2.5-Coder-1.5B-Instruct GGUF.
//!
//! Needs SWITCHBOARD_LLAMA_PYTHON (a Python with llama-cpp-python[server]) and SWITCHBOARD_LLM_GGUF
//! (the joined GGUF). [Branch work: the set-up does not install these yet.]

mod common;

use common::wer;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchboard::models::llm::chat::{ChatRequest, LlmEvent, Message, Role};
use switchboard::models::llm::openai::{OpenAiBackend, OpenAiConfig};

const INSTRUCTIONS: &str = "You are the phone receptionist of Sunny Bakery. Answer in one or two short sentences. \
Opening hours: Monday to Friday 7:00 to 18:00, Saturday 8:00 to 14:00, closed on Sunday. Phone number: 555-0100.";

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        common::stop_child(&mut self.child, "TERM", Duration::from_secs(5));
    }
}

fn server() -> Server {
    let py = std::env::var("SWITCHBOARD_LLAMA_PYTHON").expect("set SWITCHBOARD_LLAMA_PYTHON to a Python with llama-cpp-python[server]");
    let gguf = std::env::var("SWITCHBOARD_LLM_GGUF").expect("set SWITCHBOARD_LLM_GGUF to the joined Qwen2.5 GGUF");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = common::test_dir("llama");
    let log = std::fs::File::create(dir.join("llama-server.log")).unwrap();
    let child = Command::new(py)
        .args(["-m", "llama_cpp.server", "--model", &gguf, "--host", "127.0.0.1", "--port", &port.to_string(), "--n_ctx", "2048", "--n_threads", "2"])
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let s = Server { child, port };
    let up = common::wait_until(Duration::from_secs(120), || {
        common::appliance::try_http(port, "GET", "/v1/models", None, Duration::from_secs(2)).ok().filter(|(code, _)| *code == 200)
    });
    assert!(up.is_some(), "llama server did not come up; see {}", dir.join("llama-server.log").display());
    s
}

fn backend(port: u16) -> OpenAiBackend {
    OpenAiBackend::new(OpenAiConfig {
        base_url: format!("http://127.0.0.1:{port}/v1"),
        model: "qwen".into(),
        api_key: None,
        connect_timeout: Duration::from_secs(2),
        first_token_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(20),
        retries: 0,
    })
    .unwrap()
}

fn ask(b: &OpenAiBackend, messages: Vec<Message>) -> (String, Duration, usize) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let _g = rt.enter();
    let t0 = Instant::now();
    let mut s = b.stream(&ChatRequest { messages, tools: vec![], temperature: Some(0.0), max_tokens: Some(60) });
    let (mut text, mut first, mut deltas) = (String::new(), None, 0);
    while let Some(ev) = s.wait(Duration::from_secs(90)) {
        match ev.unwrap() {
            LlmEvent::Text(t) => {
                first.get_or_insert_with(|| t0.elapsed());
                deltas += 1;
                text.push_str(&t);
            }
            LlmEvent::Done { .. } => break,
            LlmEvent::ToolCall(c) => panic!("unexpected tool call {c:?}"),
        }
    }
    (text, first.unwrap_or_default(), deltas)
}

#[test]
fn the_backend_streams_answers_from_llama_cpp_and_keeps_the_conversation() {
    let srv = server();
    let b = backend(srv.port);
    let mut msgs = vec![Message::new(Role::System, INSTRUCTIONS), Message::new(Role::User, "What time do you open on Saturday?")];
    let (a1, first, deltas) = ask(&b, msgs.clone());
    println!("Saturday: {a1:?} (first text after {first:?}, {deltas} deltas)");
    assert!(deltas > 3, "streamed, not one block");
    let w = wer::words(&a1);
    assert!(w.iter().any(|x| x == "8" || x == "eight" || x.starts_with("8")), "{a1}");
    msgs.push(Message::new(Role::Assistant, a1.trim()));
    msgs.push(Message::new(Role::User, "And until what time are you open that day?"));
    let (a2, _, _) = ask(&b, msgs);
    println!("follow-up: {a2:?}");
    assert!(a2.contains("14") || a2.to_lowercase().contains("two") || a2.contains("2"), "the follow-up refers to Saturday: {a2}");
}
