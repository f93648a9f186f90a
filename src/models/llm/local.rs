//! The `onnx` backend: the embedded Qwen model on a thread of its own (model
//! work never runs on the async runtime), streaming the same events as the
//! `openai` backend.
//!
//! Each call is a session. The worker keeps every session's KV cache: a new
//! request is compared with the cache token by token and only the tokens
//! after the common prefix are computed, so a turn costs its new words, not
//! the whole conversation. A session with no cache starts from the longest
//! prefix any other session has (calls of one agent share the instructions).
//! `warm` computes a session's prefix while the call rings. Caches beyond the
//! memory budget are dropped, least recently used first; dropping one only
//! costs time.

use super::chat::{ChatRequest, LlmEvent, ToolCall, ToolChoice, ToolSpec};
use super::constrain::{Check, ToolGrammar};
use super::qwen::{KvCache, Qwen};
use super::sampler::{argmax, Sampler, Sampling};
use super::template::{prompt_tokens, Controls};
use super::tokenizer::Utf8Stream;
use super::{LlmError, LlmStream};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct LocalSettings {
    pub sampling: Sampling,
    /// Total KV-cache memory kept across sessions.
    pub cache_bytes: usize,
    /// Seed of the sampler (each reply draws from its own generator seeded from this and a counter).
    pub seed: u64,
}

enum Job {
    Generate { session: u64, req: ChatRequest, cancel: Arc<AtomicBool>, reply: Sender<Result<LlmEvent, LlmError>>, queued: Instant },
    Warm { session: u64, req: ChatRequest },
    End { session: u64 },
}

/// A handle on the worker; cheap to clone.
#[derive(Clone)]
pub struct LocalLlm {
    tx: SyncSender<Job>,
    name: Arc<str>,
    /// Jobs sent and not yet finished by the worker.
    jobs: Arc<AtomicUsize>,
}

impl std::fmt::Debug for LocalLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLlm").field("name", &self.name).finish()
    }
}

impl LocalLlm {
    /// Start the worker thread owning `model`; `queue` requests may wait.
    pub fn spawn(model: Qwen, settings: LocalSettings, queue: usize, name: &str) -> Result<LocalLlm, String> {
        let controls = Controls::of(model.tokenizer())?;
        let (tx, rx) = mpsc::sync_channel(queue.max(1));
        let worker = Worker::new(model, settings, controls);
        let jobs = Arc::new(AtomicUsize::new(0));
        let done = jobs.clone();
        std::thread::Builder::new().name(format!("llm-{name}")).spawn(move || worker.run(rx, &done)).map_err(|e| format!("spawn the LLM thread: {e}"))?;
        Ok(LocalLlm { tx, name: name.into(), jobs })
    }

    /// Queue a job; false when the queue is full.
    fn send(&self, job: Job) -> bool {
        self.jobs.fetch_add(1, Ordering::SeqCst);
        let sent = self.tx.try_send(job).is_ok();
        if !sent {
            self.jobs.fetch_sub(1, Ordering::SeqCst);
        }
        sent
    }

    /// Nothing queued or computing (the appliance waits for this before it exits: ONNX Runtime
    /// torn down under a running session logs errors).
    pub fn is_idle(&self) -> bool {
        self.jobs.load(Ordering::SeqCst) == 0
    }

    /// Start a reply. A full queue answers at once with an error (the agent apologises).
    pub fn stream(&self, req: &ChatRequest, session: u64) -> LlmStream {
        let (reply, rx) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Job::Generate { session, req: req.clone(), cancel: cancel.clone(), reply: reply.clone(), queued: Instant::now() };
        if !self.send(job) {
            let _ = reply.send(Err(LlmError::Busy));
        }
        LlmStream::with_flag(rx, cancel)
    }

    /// Compute the prompt prefix of `req` for `session` ahead of its first reply (best effort).
    pub fn warm(&self, req: &ChatRequest, session: u64) {
        self.send(Job::Warm { session, req: req.clone() });
    }

    /// The session is over: its cache may go.
    pub fn end(&self, session: u64) {
        self.send(Job::End { session });
    }
}

struct Entry {
    cache: KvCache,
    used: u64,
}

struct Worker {
    model: Qwen,
    settings: LocalSettings,
    controls: Controls,
    sessions: HashMap<u64, Entry>,
    clock: u64,
    replies: u64,
    /// Control tokens a reply may never contain (everything but the stop and tool-call tokens).
    banned: Vec<u32>,
}

/// Length of the common prefix.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Worker {
    fn new(model: Qwen, settings: LocalSettings, controls: Controls) -> Worker {
        let spec = model.spec();
        let tok = model.tokenizer();
        let stop = &spec.special_tokens.stop;
        let banned = (0..spec.vocab_size as u32)
            .filter(|&id| {
                let filler = id as usize >= tok.vocab_size() || tok.token_bytes(id).is_empty();
                (tok.is_added(id) || filler) && !stop.contains(&id) && id != controls.tool_call && id != controls.tool_call_end
            })
            .collect();
        Worker { model, settings, controls, sessions: HashMap::new(), clock: 0, replies: 0, banned }
    }

    fn run(mut self, rx: Receiver<Job>, jobs: &AtomicUsize) {
        while let Ok(job) = rx.recv() {
            self.handle(job);
            jobs.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn handle(&mut self, job: Job) {
        match job {
            Job::End { session } => {
                self.sessions.remove(&session);
            }
            Job::Warm { session, req } => {
                let tokens = prompt_tokens(self.model.tokenizer(), &self.controls, &req, false);
                let t0 = Instant::now();
                match self.prefill(session, &tokens) {
                    Ok((_, fed)) => tracing::debug!(session, tokens = tokens.len(), fed, ms = t0.elapsed().as_millis() as u64, "language model warmed"),
                    Err(e) => tracing::warn!(session, error = %e, "warming the language model failed"),
                }
            }
            Job::Generate { session, req, cancel, reply, queued } => {
                if cancel.load(Ordering::Relaxed) {
                    return;
                }
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.generate(session, &req, &cancel, &reply, queued)));
                let err = match r {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(_) => {
                        // The cache may be half-written: forget it.
                        self.sessions.remove(&session);
                        Some("the language model panicked".to_string())
                    }
                };
                if let Some(e) = err {
                    tracing::warn!(session, error = %e, "local language model failed");
                    let _ = reply.send(Err(LlmError::Model(e)));
                }
            }
        }
    }

    /// Bring `session`'s cache to `tokens` minus at least its last token; feed the rest.
    /// Returns the last position's logits and how many tokens were computed.
    fn prefill(&mut self, session: u64, tokens: &[u32]) -> Result<(Vec<f32>, usize), String> {
        if tokens.is_empty() {
            return Err("empty prompt".into());
        }
        self.clock += 1;
        let mut entry = match self.sessions.remove(&session) {
            Some(e) => e,
            None => {
                // Start from the longest prefix another session has computed.
                let best = self.sessions.values().map(|e| (common_prefix(&e.cache.tokens, tokens), e)).max_by_key(|(n, _)| *n);
                let cache = match best {
                    Some((n, e)) if n > 0 => self.model.clone_prefix(&e.cache, n).map_err(|e| e.to_string())?,
                    _ => self.model.empty_cache().map_err(|e| e.to_string())?,
                };
                Entry { cache, used: 0 }
            }
        };
        entry.used = self.clock;
        // At least one token must be fed to get logits.
        let keep = common_prefix(&entry.cache.tokens, tokens).min(tokens.len() - 1);
        let result = (|| {
            self.model.truncate(&mut entry.cache, keep)?;
            self.model.forward(&mut entry.cache, &tokens[keep..])
        })();
        match result {
            Ok(logits) => {
                self.sessions.insert(session, entry);
                self.evict(session);
                Ok((logits, tokens.len() - keep))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Drop the least recently used caches (never `current`'s) beyond the budget.
    fn evict(&mut self, current: u64) {
        let spec = self.model.spec();
        loop {
            let total: usize = self.sessions.values().map(|e| e.cache.bytes(spec)).sum();
            if total <= self.settings.cache_bytes {
                return;
            }
            let victim = self.sessions.iter().filter(|(s, _)| **s != current).min_by_key(|(_, e)| e.used).map(|(s, _)| *s);
            match victim {
                Some(s) => {
                    self.sessions.remove(&s);
                }
                None => return,
            }
        }
    }

    fn generate(&mut self, session: u64, req: &ChatRequest, cancel: &AtomicBool, reply: &Sender<Result<LlmEvent, LlmError>>, queued: Instant) -> Result<(), String> {
        let started = Instant::now();
        let tokens = prompt_tokens(self.model.tokenizer(), &self.controls, req, true);
        let (mut logits, fed) = self.prefill(session, &tokens)?;
        let prefill_ms = started.elapsed().as_millis() as u64;
        let mut sampling = self.settings.sampling;
        if let Some(t) = req.temperature {
            sampling.temperature = t;
        }
        self.replies += 1;
        let mut sampler = Sampler::new(sampling, self.settings.seed.wrapping_add(self.replies));
        let max_tokens = req.max_tokens.unwrap_or(512) as usize;
        let stop = self.model.spec().special_tokens.stop.clone();
        let mut banned = self.banned.clone();
        // The tools the model may call (tool_choice narrows them; `none` offers them but bans calls).
        let callable: Vec<&ToolSpec> = match &req.tool_choice {
            ToolChoice::None => vec![],
            ToolChoice::Function(name) => req.tools.iter().filter(|t| &t.name == name).collect(),
            ToolChoice::Auto | ToolChoice::Required => req.tools.iter().collect(),
        };
        if callable.is_empty() {
            banned.extend([self.controls.tool_call, self.controls.tool_call_end]);
        }
        // Outside a call, `</tool_call>` cannot come either.
        let ban_text: Vec<u32> = banned.iter().copied().chain([self.controls.tool_call_end]).collect();
        let grammar = ToolGrammar { tools: callable.iter().map(|t| (t.name.as_str(), &t.parameters)).collect() };
        let mut generated: Vec<u32> = Vec::new();
        let mut text = Utf8Stream::default();
        let mut held = HeldText::default();
        let mut in_call: Option<Vec<u8>> = None;
        let mut calls = 0usize;
        // `required` or a named function: the reply starts with a call.
        let mut forced: Vec<u32> = if !callable.is_empty() && matches!(req.tool_choice, ToolChoice::Required | ToolChoice::Function(_)) { vec![self.controls.tool_call] } else { vec![] };
        let finish = loop {
            if cancel.load(Ordering::Relaxed) {
                break "cancelled";
            }
            if generated.len() >= max_tokens {
                break "length";
            }
            let mut complete = false;
            let next = if !forced.is_empty() {
                forced.remove(0)
            } else if let Some(body) = &in_call {
                // Inside a call: the model's most likely token that keeps the call valid.
                match self.constrained_pick(&mut logits, &banned, body, &grammar) {
                    Some((id, check)) => {
                        complete = check == Check::Complete;
                        id
                    }
                    None => {
                        tracing::warn!(session, body = %String::from_utf8_lossy(body), "no token continues the tool call validly; reply ended");
                        break "invalid_tool_call";
                    }
                }
            } else {
                sampler.pick(&mut logits, &ban_text, &generated)
            };
            if in_call.is_none() && stop.contains(&next) {
                break if calls > 0 { "tool_calls" } else { "stop" };
            }
            generated.push(next);
            let mut feed = vec![next];
            if next == self.controls.tool_call {
                in_call = Some(Vec::new());
            } else if let Some(body) = &mut in_call {
                body.extend_from_slice(self.model.tokenizer().token_bytes(next));
                if complete {
                    // The call is whole: close it as the chat format does ("}\n</tool_call>").
                    let body = in_call.take().unwrap_or_default();
                    if !body.ends_with(b"\n") {
                        feed.extend(self.model.tokenizer().encode("\n"));
                    }
                    feed.push(self.controls.tool_call_end);
                    generated.extend_from_slice(&feed[1..]);
                    calls += 1;
                    match parse_tool_call(&body, calls) {
                        Ok(call) => {
                            if reply.send(Ok(LlmEvent::ToolCall(call))).is_err() {
                                break "cancelled";
                            }
                        }
                        Err(e) => tracing::warn!(session, error = %e, "a constrained tool call did not parse; ignored"),
                    }
                }
            } else {
                let delta = text.push(self.model.tokenizer().token_bytes(next));
                let (say, call) = held.push(&delta, !callable.is_empty());
                if !say.is_empty() && reply.send(Ok(LlmEvent::Text(say))).is_err() {
                    break "cancelled";
                }
                if let Some(after) = call {
                    // The model spelled `<tool_call>` out in text tokens: the same call, constrained from here.
                    in_call = Some(after.into_bytes());
                }
            }
            logits = self.model.forward(&mut self.sessions.get_mut(&session).ok_or("the session's cache went away")?.cache, &feed).map_err(|e| e.to_string())?;
        };
        let mut rest = held.finish();
        rest.push_str(&text.finish());
        if !rest.is_empty() {
            let _ = reply.send(Ok(LlmEvent::Text(rest)));
        }
        tracing::debug!(
            session,
            prompt_tokens = tokens.len(),
            fed,
            queued_ms = started.duration_since(queued).as_millis() as u64,
            prefill_ms,
            generated = generated.len(),
            total_ms = started.elapsed().as_millis() as u64,
            finish,
            "local reply"
        );
        let _ = reply.send(Ok(LlmEvent::Done { finish_reason: finish.to_string() }));
        Ok(())
    }
}

const CALL_TAG: &str = "<tool_call>";

/// Text on its way to the caller, holding back what may be `<tool_call>` written out in ordinary
/// tokens (the model does that too) until it is clearly not: a call is never spoken.
#[derive(Default)]
struct HeldText {
    pending: String,
}

impl HeldText {
    /// What can be said now, and — when the tag is complete — what followed it (the call's start).
    fn push(&mut self, delta: &str, calls_allowed: bool) -> (String, Option<String>) {
        if !calls_allowed {
            return (delta.to_string(), None);
        }
        self.pending.push_str(delta);
        if let Some(p) = self.pending.find(CALL_TAG) {
            let before = self.pending[..p].to_string();
            let after = self.pending[p + CALL_TAG.len()..].to_string();
            self.pending.clear();
            return (before, Some(after));
        }
        let keep = (1..CALL_TAG.len()).rev().find(|&n| self.pending.ends_with(&CALL_TAG[..n])).unwrap_or(0);
        let say: String = self.pending.drain(..self.pending.len() - keep).collect();
        (say, None)
    }

    fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

impl Worker {
    /// Inside a tool call: the highest-scoring token (greedy: a call's arguments are not a place for
    /// variety) whose bytes keep the call a valid prefix of the grammar, and where that leaves it.
    fn constrained_pick(&self, logits: &mut [f32], banned: &[u32], body: &[u8], grammar: &ToolGrammar) -> Option<(u32, Check)> {
        let tok = self.model.tokenizer();
        for &b in banned {
            if let Some(l) = logits.get_mut(b as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        let mut candidate = body.to_vec();
        // Most candidates fail on their first byte; bound the search all the same.
        for _ in 0..20_000 {
            let id = argmax(logits);
            if !logits[id as usize].is_finite() {
                return None;
            }
            logits[id as usize] = f32::NEG_INFINITY;
            if tok.is_added(id) {
                continue;
            }
            candidate.truncate(body.len());
            candidate.extend_from_slice(tok.token_bytes(id));
            match grammar.check(&candidate) {
                Check::Invalid => continue,
                c => return Some((id, c)),
            }
        }
        None
    }
}

/// `{"name": …, "arguments": {…}}` between the tool-call tokens.
fn parse_tool_call(body: &[u8], n: usize) -> Result<ToolCall, String> {
    let text = String::from_utf8_lossy(body);
    let v: serde_json::Value = serde_json::from_str(text.trim()).map_err(|e| format!("{e}: {text}"))?;
    let name = v.get("name").and_then(|n| n.as_str()).ok_or_else(|| format!("no name: {text}"))?;
    let args = v.get("arguments").cloned().unwrap_or(serde_json::Value::Object(Default::default()));
    let arguments = match args {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    };
    Ok(ToolCall { id: format!("call_{n}"), name: name.to_string(), arguments })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spelled_out_call_tag_is_never_said() {
        let mut h = HeldText::default();
        assert_eq!(h.push("Sure. <", true), ("Sure. ".to_string(), None));
        assert_eq!(h.push("tool", true), (String::new(), None));
        assert_eq!(h.push("_call>\n{", true), (String::new(), Some("\n{".to_string())));
        assert_eq!(h.push("a <", true), ("a ".to_string(), None), "`<` alone may start the tag");
        assert_eq!(h.push(" b!", true), ("< b!".to_string(), None));
        assert_eq!(h.push("<tool", false), ("<tool".to_string(), None), "no tools: nothing held");
        let mut h = HeldText::default();
        h.push("x <tool", true);
        assert_eq!(h.finish(), "<tool");
    }

    #[test]
    fn tool_call_bodies() {
        let c = parse_tool_call(b"\n{\"name\": \"book\", \"arguments\": {\"day\": \"Monday\"}}\n", 1).unwrap();
        assert_eq!((c.id.as_str(), c.name.as_str(), c.arguments.as_str()), ("call_1", "book", "{\"day\":\"Monday\"}"));
        assert!(parse_tool_call(b"{\"arguments\": {}}", 2).is_err());
        assert!(parse_tool_call(b"not json", 3).is_err());
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4, 5]), 2);
    }
}
