//! The `openai` backend's failure paths against loopback servers that misbehave the way real
//! ones do: nobody listening, a server that accepts and never answers, 5xx before a good reply,
//! a reply that is not an event stream, a stream cut in the middle. (The success path against a
//! real OpenAI-compatible server — llama.cpp's — is in tests/llm_server.rs.)

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard::models::llm::chat::{ChatRequest, LlmEvent, Message, Role};
use switchboard::models::llm::openai::{OpenAiBackend, OpenAiConfig};
use switchboard::models::llm::LlmError;

fn cfg(port: u16) -> OpenAiConfig {
    OpenAiConfig {
        base_url: format!("http://127.0.0.1:{port}/v1"),
        model: "test".into(),
        api_key: Some("sk-secret-never-logged".into()),
        connect_timeout: Duration::from_millis(500),
        first_token_timeout: Duration::from_millis(800),
        idle_timeout: Duration::from_millis(800),
        retries: 2,
    }
}

fn req() -> ChatRequest {
    ChatRequest {
        messages: vec![Message::new(Role::User, "Are you open on Sunday?")],
        tools: vec![],
        tool_choice: Default::default(),
        temperature: None,
        max_tokens: Some(32),
    }
}

/// Every event until the stream ends (error or Done).
fn collect(b: &OpenAiBackend) -> Vec<Result<LlmEvent, LlmError>> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let _g = rt.enter();
    let mut s = b.stream(&req());
    let mut out = Vec::new();
    while let Some(e) = s.wait(Duration::from_secs(10)) {
        let end = matches!(e, Err(_) | Ok(LlmEvent::Done { .. }));
        out.push(e);
        if end {
            break;
        }
    }
    out
}

/// A raw HTTP/1.1 server on loopback answering each connection with the next scripted response
/// (`None`: accept and say nothing). Returns its port and the count of requests it saw.
fn scripted(responses: Vec<Option<String>>) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for (r, conn) in responses.into_iter().zip(l.incoming()) {
            let mut c = conn.unwrap();
            let seen = s2.clone();
            // One thread per connection: a silent one must not hold up the next.
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                let _ = c.set_read_timeout(Some(Duration::from_millis(300)));
                let n = c.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                assert!(head.contains("Bearer sk-secret-never-logged"), "the key is sent as a bearer token");
                seen.fetch_add(1, Ordering::SeqCst);
                match r {
                    Some(resp) => {
                        let _ = c.write_all(resp.as_bytes());
                    }
                    None => std::thread::sleep(Duration::from_secs(3)),
                }
            });
        }
    });
    (port, seen)
}

fn http(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

const GOOD: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"No, we are closed on Sunday.\"}}]}\n\ndata: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";

#[test]
fn nobody_listening_is_a_connect_error_after_the_retries() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(); // bound, then closed
    let b = OpenAiBackend::new(cfg(port)).unwrap();
    let t0 = Instant::now();
    let out = collect(&b);
    assert!(matches!(out.as_slice(), [Err(LlmError::Connect { .. })]), "{out:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "bounded: {:?}", t0.elapsed());
    assert!(!format!("{b:?}").contains("sk-secret"), "the key is not in Debug output");
}

#[test]
fn a_server_that_never_answers_times_out() {
    let (port, seen) = scripted(vec![None, None, None]);
    let b = OpenAiBackend::new(cfg(port)).unwrap();
    let t0 = Instant::now();
    let out = collect(&b);
    assert!(matches!(out.as_slice(), [Err(LlmError::Timeout(_))]), "{out:?}");
    assert_eq!(seen.load(Ordering::SeqCst), 3, "tried 1 + 2 retries");
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
}

#[test]
fn server_errors_before_the_reply_are_retried() {
    let (port, seen) = scripted(vec![
        Some(http("503 Service Unavailable", "application/json", "{\"error\":\"loading model\"}")),
        Some(http("200 OK", "text/event-stream", GOOD)),
    ]);
    let b = OpenAiBackend::new(cfg(port)).unwrap();
    let out = collect(&b);
    assert_eq!(
        out,
        vec![
            Ok(LlmEvent::Text("No, we are closed on Sunday.".into())),
            Ok(LlmEvent::Done { finish_reason: "stop".into(), usage: None })
        ]
    );
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[test]
fn a_client_error_is_not_retried_and_says_why() {
    let (port, seen) =
        scripted(vec![Some(http("401 Unauthorized", "application/json", "{\"error\":\"bad key\"}")), None]);
    let b = OpenAiBackend::new(cfg(port)).unwrap();
    let out = collect(&b);
    assert!(
        matches!(out.as_slice(), [Err(LlmError::Status { status: 401, body })] if body.contains("bad key")),
        "{out:?}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[test]
fn garbage_and_cut_streams_are_errors() {
    let (port, _) = scripted(vec![Some(http("200 OK", "text/html", "data: <html>oops</html>\n\n"))]);
    let out = collect(&OpenAiBackend::new(cfg(port)).unwrap());
    assert!(matches!(out.as_slice(), [Err(LlmError::Stream(_))]), "{out:?}");

    let cut = "data: {\"choices\":[{\"delta\":{\"content\":\"We open at\"}}]}\n\n";
    let (port, _) = scripted(vec![Some(http("200 OK", "text/event-stream", cut))]);
    let out = collect(&OpenAiBackend::new(cfg(port)).unwrap());
    assert_eq!(out, vec![Ok(LlmEvent::Text("We open at".into())), Err(LlmError::Truncated)]);
}
