//! The driver's side of `http` tools: each request on the async runtime, with its timeout,
//! retries (5xx, unreachable: with a growing pause) and the size cap of its answer.

use crate::agent::tools::{fill_url, Tool, ToolJob, ToolOutcome, ToolRunner};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;

/// Runs an agent's `http` tools with its own connection pool.
#[derive(Debug)]
pub struct HttpTools {
    client: reqwest::Client,
}

impl HttpTools {
    pub fn new() -> Result<HttpTools, String> {
        let client = reqwest::Client::builder().build().map_err(|e| format!("http client for tools: {e}"))?;
        Ok(HttpTools { client })
    }
}

impl ToolRunner for HttpTools {
    /// POST/PUT/PATCH send `{"tool": …, "arguments": …, "call": {…}}`, GET/DELETE only the URL.
    fn start_http(&self, tool: &Tool, args: Value, vars: &BTreeMap<String, String>) -> ToolJob {
        start_http(tool, args, vars, &self.client)
    }
}

fn start_http(tool: &Tool, args: Value, vars: &BTreeMap<String, String>, client: &reqwest::Client) -> ToolJob {
    let c = &tool.config;
    let url = match fill_url(c.url.as_deref().unwrap_or_default(), &args, vars) {
        Ok(u) => u,
        Err(e) => return ToolJob::ready(ToolOutcome::error("invalid_arguments", &e)),
    };
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return ToolJob::ready(ToolOutcome::error("error", "no async runtime to call the webhook on"));
    };
    let method =
        reqwest::Method::from_bytes(c.method.as_deref().unwrap_or("POST").as_bytes()).unwrap_or(reqwest::Method::POST);
    let with_body = !matches!(method, reqwest::Method::GET | reqwest::Method::DELETE);
    let body = json!({ "tool": c.name, "arguments": args, "call": vars });
    let headers = tool.headers.clone();
    let timeout = c.timeout();
    let attempts = 1 + c.retries.get() as usize;
    let max = c.max_response_bytes.get() as usize;
    let client = client.clone();
    let (tx, rx) = mpsc::channel();
    let task = handle.spawn(async move {
        let mut last = ToolOutcome::error("error", "not attempted");
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
            }
            let mut req = client.request(method.clone(), &url).timeout(timeout);
            for (k, v) in &headers {
                req = req.header(k, v);
            }
            if with_body {
                req = req.json(&body);
            }
            let res = async {
                let r = req.send().await?;
                let status = r.status();
                let bytes = r.bytes().await?;
                Ok::<_, reqwest::Error>((status, bytes))
            }
            .await;
            last = match res {
                Ok((status, bytes)) => {
                    let cut = &bytes[..bytes.len().min(max)];
                    let text = String::from_utf8_lossy(cut).to_string();
                    // JSON stays JSON for the model; anything else is a string.
                    let body: Value = serde_json::from_slice(cut).unwrap_or(Value::String(text));
                    let truncated = bytes.len() > max;
                    if status.is_success() {
                        ToolOutcome::ok(json!({ "status": status.as_u16(), "body": body, "truncated": truncated }))
                    } else {
                        let o = ToolOutcome { outcome: "error", content: json!({ "error": format!("the backend answered HTTP {}", status.as_u16()), "body": body }).to_string() };
                        if status.is_server_error() {
                            o
                        } else {
                            break_with(&tx, o);
                            return;
                        }
                    }
                }
                Err(e) if e.is_timeout() => ToolOutcome::error("timeout", &format!("no answer within {} ms", timeout.as_millis())),
                Err(e) => ToolOutcome::error("error", &format!("the backend could not be reached: {}", short_error(&e))),
            };
            if last.outcome == "ok" {
                break;
            }
        }
        let _ = tx.send(last);
    });
    ToolJob::new(rx, Some(Box::new(move || task.abort())))
}

fn break_with(tx: &mpsc::Sender<ToolOutcome>, o: ToolOutcome) {
    let _ = tx.send(o);
}

/// reqwest's error without the URL (it may carry arguments).
fn short_error(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "connection failed".into()
    } else if e.is_body() || e.is_decode() {
        "the answer could not be read".into()
    } else {
        "request failed".into()
    }
}
