//! Language models behind one streaming interface: text deltas, whole tool
//! calls and the end of the reply (`chat::LlmEvent`), from either backend:
//! `openai` (any OpenAI-compatible endpoint, streamed over SSE) or `onnx`
//! (the embedded Qwen model on a worker thread, `local`).

pub mod chat;
pub mod constrain;
pub mod local;
pub mod openai;
pub mod qwen;
pub mod sampler;
pub mod schedule;
pub mod sse;
pub mod template;
pub mod tokenizer;
mod worker_life;

use chat::{ChatRequest, ChatStreamError, LlmEvent};
use sse::SseError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    #[error("cannot reach the language model at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the language model answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the language model timed out ({0})")]
    Timeout(&'static str),
    #[error("{0}")]
    Stream(#[from] ChatStreamError),
    #[error("{0}")]
    Sse(#[from] SseError),
    #[error("the reply ended before it was complete")]
    Truncated,
    #[error("the language model is busy (its queue is full)")]
    Busy,
    #[error("the language model failed: {0}")]
    Model(String),
}

impl LlmError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            LlmError::Connect { .. } => "connect",
            LlmError::Status { .. } => "status",
            LlmError::Timeout(_) => "timeout",
            LlmError::Stream(_) | LlmError::Sse(_) => "garbage",
            LlmError::Truncated => "truncated",
            LlmError::Busy => "busy",
            LlmError::Model(_) => "model",
        }
    }
}

enum Abort {
    Task(tokio::task::JoinHandle<()>),
    Flag(Arc<AtomicBool>),
}

/// One reply in progress: poll it; drop it (or `cancel`) to abort.
pub struct LlmStream {
    rx: mpsc::Receiver<Result<LlmEvent, LlmError>>,
    abort: Option<Abort>,
}

impl LlmStream {
    pub(crate) fn with_task(
        rx: mpsc::Receiver<Result<LlmEvent, LlmError>>,
        task: tokio::task::JoinHandle<()>,
    ) -> LlmStream {
        LlmStream { rx, abort: Some(Abort::Task(task)) }
    }

    pub(crate) fn with_flag(rx: mpsc::Receiver<Result<LlmEvent, LlmError>>, flag: Arc<AtomicBool>) -> LlmStream {
        LlmStream { rx, abort: Some(Abort::Flag(flag)) }
    }

    pub fn poll(&mut self) -> Option<Result<LlmEvent, LlmError>> {
        self.rx.try_recv().ok()
    }

    /// Wait for the next event (tests and tools, not the media loop).
    pub fn wait(&mut self, timeout: Duration) -> Option<Result<LlmEvent, LlmError>> {
        self.rx.recv_timeout(timeout).ok()
    }

    pub fn cancel(&mut self) {
        match self.abort.take() {
            Some(Abort::Task(t)) => t.abort(),
            Some(Abort::Flag(f)) => f.store(true, Ordering::Relaxed),
            None => {}
        }
    }
}

impl Drop for LlmStream {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// An agent's language model, whichever backend serves it.
#[derive(Debug, Clone)]
pub enum LlmBackend {
    OpenAi(openai::OpenAiBackend),
    Local(local::LocalLlm),
}

impl LlmBackend {
    /// Start a reply for conversation `session` (a local model keeps its cache per session).
    pub fn stream(&self, req: &ChatRequest, session: u64) -> LlmStream {
        match self {
            LlmBackend::OpenAi(b) => b.stream(req),
            LlmBackend::Local(b) => b.stream(req, session),
        }
    }

    /// Prepare for the first reply (a local model computes the instructions now).
    pub fn warm(&self, req: &ChatRequest, session: u64) {
        if let LlmBackend::Local(b) = self {
            b.warm(req, session);
        }
    }

    /// The conversation is over.
    pub fn end(&self, session: u64) {
        if let LlmBackend::Local(b) = self {
            b.end(session);
        }
    }

    /// The replies waiting for their first step (`None` for an endpoint: its queue is not ours).
    pub fn backlog(&self) -> Option<&std::sync::Arc<crate::models::backlog::Backlog>> {
        match self {
            LlmBackend::OpenAi(_) => None,
            LlmBackend::Local(b) => Some(b.backlog()),
        }
    }

    /// What the embedded model has computed (`None` for an endpoint).
    pub fn stats(&self) -> Option<&std::sync::Arc<local::LlmStats>> {
        match self {
            LlmBackend::OpenAi(_) => None,
            LlmBackend::Local(b) => Some(b.stats()),
        }
    }

    /// No reply being computed here (an endpoint's requests end with their calls).
    pub fn is_idle(&self) -> bool {
        match self {
            LlmBackend::OpenAi(_) => true,
            LlmBackend::Local(b) => b.is_idle(),
        }
    }
}
