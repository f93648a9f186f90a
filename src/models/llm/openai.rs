//! The `openai` backend: any OpenAI-compatible chat-completions endpoint
//! (llama.cpp's server, vLLM, Ollama, OpenAI itself), streamed over SSE.
//!
//! A request runs as a task on the async runtime (network I/O, no model
//! work); its events come back through a channel the agent polls from the
//! media loop without waiting. Failures are values, never a hang: a connect
//! timeout, a first-token timeout and an idle timeout bound every request;
//! connection errors, 429 and 5xx are retried (with back-off) only before the
//! first event, since a reply cannot be retried half-spoken. Dropping or
//! cancelling the stream aborts the request. The API key is never logged.

use super::chat::{request_body, ChatRequest, ChatStreamDecoder, LlmEvent};
use super::sse::SseParser;
use super::{LlmError, LlmStream};
use std::sync::mpsc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// e.g. `http://127.0.0.1:8080/v1` (the path up to, not including, `/chat/completions`).
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub connect_timeout: Duration,
    /// From sending the request to the first event of the reply.
    pub first_token_timeout: Duration,
    /// Longest silence between two chunks once the reply is streaming.
    pub idle_timeout: Duration,
    /// Retries before the first event (connection errors, 429, 5xx).
    pub retries: u32,
}

#[derive(Clone)]
pub struct OpenAiBackend {
    cfg: OpenAiConfig,
    client: reqwest::Client,
}

impl std::fmt::Debug for OpenAiBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("OpenAiBackend").field("base_url", &self.cfg.base_url).field("model", &self.cfg.model).finish()
    }
}

impl OpenAiBackend {
    pub fn new(cfg: OpenAiConfig) -> Result<OpenAiBackend, LlmError> {
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .build()
            .map_err(|e| LlmError::Connect { url: cfg.base_url.clone(), reason: e.to_string() })?;
        Ok(OpenAiBackend { cfg, client })
    }

    fn url(&self) -> String {
        format!("{}/chat/completions", self.cfg.base_url.trim_end_matches('/'))
    }

    /// Start a reply on the current tokio runtime.
    pub fn stream(&self, req: &ChatRequest) -> LlmStream {
        let (tx, rx) = mpsc::channel();
        let this = self.clone();
        let body = request_body(&self.cfg.model, req);
        let task = tokio::runtime::Handle::current().spawn(async move {
            if let Err(e) = this.run(body, &tx).await {
                let _ = tx.send(Err(e));
            }
        });
        LlmStream::with_task(rx, task)
    }

    async fn run(
        &self,
        body: serde_json::Value,
        tx: &mpsc::Sender<Result<LlmEvent, LlmError>>,
    ) -> Result<(), LlmError> {
        let mut attempt = 0;
        let resp = loop {
            match self.send(&body).await {
                Ok(r) => break r,
                Err(e) if attempt < self.cfg.retries && retryable(&e) => {
                    attempt += 1;
                    let backoff = Duration::from_millis(200 * (1 << attempt.min(5)));
                    tracing::warn!(error = %e, attempt, backoff_ms = backoff.as_millis() as u64, "language model request failed; retrying");
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => return Err(e),
            }
        };
        let mut resp = resp;
        let mut sse = SseParser::new();
        let mut decoder = ChatStreamDecoder::new();
        let mut events = Vec::new();
        let mut first = true;
        loop {
            let wait = if first { self.cfg.first_token_timeout } else { self.cfg.idle_timeout };
            let chunk = match tokio::time::timeout(wait, resp.chunk()).await {
                Err(_) => return Err(LlmError::Timeout(if first { "no reply" } else { "the reply stalled" })),
                Ok(Err(e)) => return Err(LlmError::Connect { url: self.url(), reason: e.to_string() }),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) => c,
            };
            sse.push(&chunk, &mut events)?;
            for ev in events.drain(..) {
                for out in decoder.push(&ev.data)? {
                    first = false;
                    if tx.send(Ok(out)).is_err() {
                        return Ok(()); // nobody listens any more
                    }
                }
            }
            if decoder.is_done() {
                return Ok(());
            }
        }
        if decoder.is_done() {
            Ok(())
        } else {
            Err(LlmError::Truncated)
        }
    }

    async fn send(&self, body: &serde_json::Value) -> Result<reqwest::Response, LlmError> {
        let mut rb = self.client.post(self.url()).json(body);
        if let Some(k) = &self.cfg.api_key {
            rb = rb.bearer_auth(k);
        }
        let resp = tokio::time::timeout(self.cfg.first_token_timeout, rb.send())
            .await
            .map_err(|_| LlmError::Timeout("no response"))?
            .map_err(|e| LlmError::Connect { url: self.url(), reason: e.to_string() })?;
        let status = resp.status();
        if !status.is_success() {
            let text = tokio::time::timeout(Duration::from_secs(2), resp.text())
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or_default();
            let body: String = text.chars().take(300).collect();
            return Err(LlmError::Status { status: status.as_u16(), body });
        }
        Ok(resp)
    }
}

fn retryable(e: &LlmError) -> bool {
    match e {
        LlmError::Connect { .. } | LlmError::Timeout(_) => true,
        LlmError::Status { status, .. } => *status == 429 || *status >= 500,
        _ => false,
    }
}
