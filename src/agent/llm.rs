//! The conversational agent: each caller turn (its final transcript) becomes a
//! user item; the reply is streamed from the language model, cut into
//! sentences as it arrives, and each sentence goes to the voice at once, so
//! the caller hears the first sentence while the model writes the rest. When
//! the model fails (down, slow, garbage), the caller hears the agent's
//! apology — never dead air. A new turn while a reply is being written
//! replaces it (the reply is cancelled); caller speech over the voice is the
//! call's barge-in (`call::bargein`), which tells the agent what was heard.
//!
//! A reply may start on speculation: when the caller pauses and may have
//! finished (`on_tentative_transcript`), the reply to their words so far is
//! requested at once and its sentences go to the voice, but nothing is heard,
//! added to the conversation or recorded: the request is built on a copy of the
//! conversation, the audio is held, and the reply has no number yet. The final
//! transcript of the same words adopts it (the held audio plays, the caller's
//! item and the reply enter the conversation, `ReplyStarted` goes out); the
//! caller going on (`on_turn_resumed`) or other words drop it.
//!
//! Each agent is one conversation (session) of its backend: the embedded
//! model computes the instructions as soon as the call is set up (`warm`) and
//! keeps the conversation's cache between turns; the session ends with the
//! agent. Every reply's end goes out as `AgentOutput::Reply` for the record.

use super::conversation::Conversation;
use super::tools::{ToolJob, ToolOutcome, ToolRunner, ToolSet};
use super::{Agent, AgentOutput, PlayoutState, ReplyRecord, ToolRecord};
use super::{TransferProgress, TurnTranscript};
use crate::config::ToolKind;
use crate::models::llm::chat::LlmEvent;
use crate::models::llm::chat::ToolCall;
use crate::models::llm::{LlmBackend, LlmStream};
use crate::models::splitter::SentenceSplitter;
use crate::models::tts_worker::{Priority, Speech, SpeechChunk, Style, TtsWorker};
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct LlmSettings {
    pub temperature: Option<f32>,
    pub max_output_tokens: Option<u32>,
    pub apology: String,
    /// What follows the apology when the model fails.
    pub on_failure: OnFailure,
}

/// After the apology for a failed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnFailure {
    /// The caller may try again.
    Continue,
    /// BYE once the apology is heard.
    Hangup,
    /// REFER to this sip: URI (the call's variables filled in) once the apology is heard; if the
    /// transfer fails, the call goes on.
    Transfer(String),
}

/// The agent's tools and the call's variables (`{caller}`, … and what `set_variable` sets).
pub struct AgentTools {
    pub set: Arc<ToolSet>,
    /// Runs the `http` tools (the driver's).
    pub runner: Arc<dyn ToolRunner>,
    pub vars: BTreeMap<String, String>,
}

/// A tool call being run.
struct Running {
    response: u64,
    call: ToolCall,
    arguments: String,
    job: ToolJob,
    started: Instant,
    /// `async: true`: the model was told the result is pending and the conversation goes on.
    asynchronous: bool,
}

/// What the model is told at once about an asynchronous tool's call.
const PENDING: &str = r#"{"status": "pending", "note": "The result will arrive later in this conversation. Do not call this tool again for it; answer the caller's other questions meanwhile."}"#;

/// A transfer: the REFER goes out once the agent has finished speaking.
struct PendingTransfer {
    why: TransferWhy,
    target: String,
    timeout: std::time::Duration,
    /// When the REFER was asked for (None: still speaking).
    sent: Option<Instant>,
    started: Instant,
}

/// Who asked for a transfer.
enum TransferWhy {
    /// The model, with a transfer tool: the tool's result goes back to it.
    Tool { response: u64, call: ToolCall, arguments: String },
    /// The model failed (`on_failure: transfer`).
    Failure,
}

/// How long a transfer after a failure may take to be answered (as a transfer tool's default).
const FAILURE_TRANSFER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Tool rounds (a reply, its calls, their results) one caller turn may take before the agent gives up.
const MAX_TOOL_ROUNDS: u32 = 4;

struct Reply {
    response: u64,
    /// Tool calls the model asked for in this reply.
    calls: Vec<ToolCall>,
    stream: LlmStream,
    splitter: SentenceSplitter,
    text: String,
    started: Instant,
    first_text: Option<Instant>,
}

/// A reply begun on a caller's pause, before their turn is confirmed.
struct Speculation {
    turn: u64,
    /// The caller's words it answers.
    user: String,
    /// The conversation it was built on (`Conversation::revision`): any change since voids it.
    revision: u64,
    reply: Reply,
    /// Its sentences on the voice: synthesised ahead, played only once the turn is confirmed.
    held: VecDeque<Speech>,
    /// The model finished before the confirmation (the result waits with the reply).
    done: Option<Result<String, crate::models::llm::LlmError>>,
}

impl Speculation {
    fn drop_all(self) {
        for s in &self.held {
            s.cancel();
        }
        let mut r = self.reply;
        r.stream.cancel();
    }
}

pub struct LlmAgent {
    greeting: Option<Arc<Vec<i16>>>,
    greeting_queued: bool,
    conv: Conversation,
    backend: LlmBackend,
    session: u64,
    records: VecDeque<ReplyRecord>,
    settings: LlmSettings,
    tts: TtsWorker,
    style: Style,
    reply: Option<Reply>,
    /// A reply started on speculation (see the module's notes).
    speculation: Option<Speculation>,
    /// Sentences on the voice, in order.
    speaking: VecDeque<Speech>,
    /// The current reply's audio as queued: (sentence, first sample, samples), positions counted like
    /// the pacer's played samples, so an interruption knows which words were heard.
    on_air: Vec<(String, u64, u64)>,
    /// The assistant item of the reply on air, once it is in the conversation.
    on_air_item: Option<u64>,
    /// A turn came while the model was busy: answer it next (the newest wins).
    pending_turn: bool,
    /// The number of the last reply begun (0: none yet); its start not yet reported.
    last_response: u64,
    started: VecDeque<u64>,
    /// BYE, for this reason, once what is being said is out (the hangup tool, or a failed model
    /// with `on_failure: hangup`).
    hangup_when_quiet: Option<String>,
    tools: AgentTools,
    /// Tool calls in flight; the reply continues once they have all answered.
    running: Vec<Running>,
    tool_records: VecDeque<ToolRecord>,
    /// Tool rounds since the caller's last turn.
    tool_rounds: u32,
    /// Tool results are in: the model continues the reply.
    continue_after_tools: bool,
    /// Keys a `send_dtmf` tool asked for, for the media loop.
    dtmf_out: VecDeque<String>,
    transfer: Option<PendingTransfer>,
    /// The agent already said something for this round (a tool's `fallback`, an asynchronous
    /// tool's `filler`): the model does not go on.
    said_for_round: bool,
    /// The caller is speaking (server VAD): an asynchronous result waits for the turn's end.
    caller_speaking: bool,
    /// Something was given to the voice since the caller's last turn (for the latency log lines).
    voiced_since_turn: bool,
    /// The time the call last gave (every entry point sets it): the agent reads no clock.
    now: Instant,
}

/// The agent's voice: the synthesiser and how it speaks.
pub struct Voice {
    pub tts: TtsWorker,
    pub style: Style,
}

impl LlmAgent {
    pub fn new(
        greeting: Option<Arc<Vec<i16>>>,
        conv: Conversation,
        backend: LlmBackend,
        settings: LlmSettings,
        voice: Voice,
        tools: AgentTools,
        now: Instant,
    ) -> LlmAgent {
        static SESSIONS: AtomicU64 = AtomicU64::new(1);
        let session = SESSIONS.fetch_add(1, Ordering::Relaxed);
        // The instructions are computed while the call is set up, not when the caller first speaks.
        backend.warm(&conv.request(&tools.set.offered(&tools.vars), None, None), session);
        LlmAgent {
            greeting,
            greeting_queued: false,
            conv,
            backend,
            session,
            records: VecDeque::new(),
            settings,
            tts: voice.tts,
            style: voice.style,
            reply: None,
            speculation: None,
            speaking: VecDeque::new(),
            on_air: Vec::new(),
            on_air_item: None,
            pending_turn: false,
            last_response: 0,
            started: VecDeque::new(),
            hangup_when_quiet: None,
            tools,
            running: Vec::new(),
            tool_records: VecDeque::new(),
            tool_rounds: 0,
            continue_after_tools: false,
            dtmf_out: VecDeque::new(),
            transfer: None,
            said_for_round: false,
            caller_speaking: false,
            voiced_since_turn: true,
            now,
        }
    }

    /// Tool calls whose results the model waits for before it goes on (not asynchronous ones).
    fn tools_busy(&self) -> bool {
        self.running.iter().any(|r| !r.asynchronous) || self.transfer.is_some()
    }

    /// A reply should start now: a turn is waiting, or tool results are in and the caller is not
    /// in the middle of saying something (their turn's reply will cover the results).
    fn reply_due(&self) -> bool {
        self.reply.is_none()
            && !self.tools_busy()
            && (self.pending_turn || (self.continue_after_tools && !self.caller_speaking))
    }

    fn cancel_reply(&mut self) {
        if let Some(mut r) = self.reply.take() {
            r.stream.cancel();
            self.records.push_back(ReplyRecord {
                response: r.response,
                audio_end_ms: None,
                text: r.text.trim().to_string(),
                outcome: "cancelled",
                error: None,
                finish_reason: None,
                first_text_ms: r.first_text.map(|t| t.duration_since(r.started).as_millis() as u64),
                total_ms: self.now.saturating_duration_since(r.started).as_millis() as u64,
            });
        }
    }

    fn say(&mut self, sentence: &str) {
        let first = !std::mem::replace(&mut self.voiced_since_turn, true);
        if first {
            // With "transcript" and "first audio after the turn": where a turn's latency goes
            // (bench voice_to_voice reads these).
            tracing::info!(chars = sentence.len(), "first sentence to the voice");
        }
        match self.tts.speak_with(sentence, self.style, if first { Priority::First } else { Priority::Later }) {
            Some(s) => self.speaking.push_back(s),
            None => tracing::warn!("sentence dropped: the voice's queue is full"),
        }
    }

    fn start_reply(&mut self) {
        let offered = self.tools.set.offered(&self.tools.vars);
        let req = self.conv.request(&offered, self.settings.temperature, self.settings.max_output_tokens);
        log_request(&req, false);
        let stream = self.backend.stream(&req, self.session);
        // A reply sees the whole conversation: whatever was waiting for one is answered by it.
        self.pending_turn = false;
        self.continue_after_tools = false;
        self.last_response += 1;
        self.started.push_back(self.last_response);
        self.reply = Some(Reply {
            response: self.last_response,
            calls: Vec::new(),
            stream,
            splitter: SentenceSplitter::new(),
            text: String::new(),
            started: self.now,
            first_text: None,
        });
    }

    /// The language model's events so far.
    fn pump_reply(&mut self) {
        let mut sentences = Vec::new();
        let finished = self.reply.as_mut().and_then(|r| drain_events(r, &mut sentences, self.now));
        for s in sentences {
            self.say(&s);
        }
        if let Some(result) = finished {
            let r = self.reply.take().expect("a reply was running");
            self.end_reply(r, result);
        }
        if self.reply_due() {
            self.start_reply();
        }
        self.pump_speculation();
    }

    /// A speculative reply's events: its sentences go to the voice but are held.
    fn pump_speculation(&mut self) {
        let Some(spec) = &mut self.speculation else { return };
        if spec.done.is_some() {
            return;
        }
        let mut sentences = Vec::new();
        spec.done = drain_events(&mut spec.reply, &mut sentences, self.now);
        for s in sentences {
            let first = spec.held.is_empty();
            if first {
                // The bench reads this as the first phrase's start on the voice, speculative or not.
                tracing::info!(chars = s.len(), speculative = true, "first sentence to the voice");
            }
            match self.tts.speak_with(&s, self.style, if first { Priority::First } else { Priority::Later }) {
                Some(speech) => spec.held.push_back(speech),
                None => tracing::warn!("sentence dropped: the voice's queue is full"),
            }
        }
    }

    /// A reply's model is done (or failed): the record, the conversation, the apology, tools.
    fn end_reply(&mut self, r: Reply, result: Result<String, crate::models::llm::LlmError>) {
        let first_text_ms = r.first_text.map(|t| t.duration_since(r.started).as_millis() as u64);
        let total_ms = self.now.saturating_duration_since(r.started).as_millis() as u64;
        let mut record = ReplyRecord {
            response: r.response,
            text: r.text.trim().to_string(),
            outcome: "done",
            error: None,
            finish_reason: None,
            first_text_ms,
            total_ms,
            audio_end_ms: None,
        };
        match result {
            Ok(reason) => record.finish_reason = Some(reason),
            Err(e) => {
                tracing::warn!(error = %e, partial = %r.text, "the language model failed; apologising");
                record.outcome = "failed";
                record.error = Some(e.kind());
                if r.text.trim().is_empty() {
                    let apology = self.settings.apology.clone();
                    self.say(&apology);
                    record.text = apology;
                }
                // Otherwise what was already said stays said; the rest is lost.
                match &self.settings.on_failure {
                    OnFailure::Continue => {}
                    OnFailure::Hangup => self.hangup_when_quiet = Some("the language model failed".into()),
                    OnFailure::Transfer(_) if self.transfer.is_some() => {}
                    OnFailure::Transfer(template) => {
                        match super::tools::fill_url(template, &serde_json::json!({}), &self.tools.vars) {
                            Ok(target) => {
                                tracing::info!(%target, "the language model failed: transfer once the apology is heard");
                                self.transfer = Some(PendingTransfer {
                                    why: TransferWhy::Failure,
                                    target,
                                    timeout: FAILURE_TRANSFER_TIMEOUT,
                                    sent: None,
                                    started: self.now,
                                });
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "on_failure: transfer has no target for this call; the call goes on")
                            }
                        }
                    }
                }
            }
        }
        let calls = if record.outcome == "done" { r.calls } else { Vec::new() };
        if !calls.is_empty() {
            // The calls go into the conversation with the text said before them.
            self.on_air_item = Some(self.conv.add_assistant(r.text.trim(), calls.clone()));
            self.records.push_back(record);
            self.start_tools(r.response, calls);
        } else {
            if !r.text.trim().is_empty() {
                self.on_air_item = Some(self.conv.add_assistant(r.text.trim(), vec![]));
            }
            self.records.push_back(record);
        }
    }

    /// The caller is still speaking: have the model compute the conversation with their words so
    /// far, so that when the turn ends only its last words are new work (a turn's prompt is ~20
    /// tokens at ~20 ms each on 2 cores). The model's scheduler runs it only when no caller is
    /// waiting for a reply, and a newer partial's warm-up replaces this one. Only from a quiet
    /// agent, as for a speculative start: a reply under way would lose its cached words.
    fn warm_on_partial(&mut self, t: &TurnTranscript) {
        let text = t.text.trim();
        if text.is_empty()
            || self.reply.is_some()
            || self.speculation.is_some()
            || self.tools_busy()
            || self.pending_turn
            || self.hangup_when_quiet.is_some()
        {
            return;
        }
        let mut conv = self.conv.clone();
        conv.add_user(text);
        let req = conv.request(
            &self.tools.set.offered(&self.tools.vars),
            self.settings.temperature,
            self.settings.max_output_tokens,
        );
        tracing::debug!(
            turn = t.turn,
            words = text.split_whitespace().count(),
            "language model warmed on a partial transcript"
        );
        self.backend.warm(&req, self.session);
    }

    /// Drop the speculative reply, if any: nothing of it was heard, kept or recorded.
    fn drop_speculation(&mut self) {
        if let Some(spec) = self.speculation.take() {
            tracing::debug!(turn = spec.turn, "speculative reply dropped");
            spec.drop_all();
        }
    }

    /// The final transcript confirmed the speculative reply's words: it becomes the turn's reply,
    /// numbered now, its held audio on the voice's queue in order.
    fn adopt_speculation(&mut self, spec: Speculation) {
        let Speculation { mut reply, held, done, .. } = spec;
        self.pending_turn = false;
        self.continue_after_tools = false;
        self.last_response += 1;
        self.started.push_back(self.last_response);
        reply.response = self.last_response;
        tracing::info!(
            response = reply.response,
            sentences = held.len(),
            done = done.is_some(),
            "speculative reply adopted"
        );
        // Its first phrase went to the voice (and was logged) before the turn was confirmed.
        self.voiced_since_turn = !held.is_empty();
        self.speaking.extend(held);
        match done {
            Some(result) => self.end_reply(reply, result),
            None => self.reply = Some(reply),
        }
    }

    /// Validate and start the calls of one reply; built-ins answer at once.
    fn start_tools(&mut self, response: u64, calls: Vec<ToolCall>) {
        self.tool_rounds += 1;
        let mut hangup = false;
        for call in calls {
            let started = self.now;
            let (outcome, arguments) = match self.tools.set.validate(&call, &self.tools.vars) {
                Err(e) => (ToolOutcome::error("invalid_arguments", &e), self.tools.set.shown_arguments(&call)),
                Ok((tool, args)) => {
                    let shown = super::tools::redact(&args, &tool.config.secret_arguments);
                    let filler = tool.config.filler.clone();
                    match tool.config.kind {
                        ToolKind::Http => {
                            let job = self.tools.runner.start_http(tool, args, &self.tools.vars);
                            let asynchronous = tool.config.is_async;
                            tracing::info!(tool = %call.name, arguments = %shown, asynchronous, "tool call");
                            if asynchronous {
                                self.conv.add_tool_result(&call.id, PENDING);
                            }
                            if let Some(f) = &filler {
                                self.say(f);
                                if asynchronous {
                                    // The filler is this round's answer; the result gets its own.
                                    self.conv.add_assistant(f, vec![]);
                                    self.said_for_round = true;
                                }
                            }
                            self.running.push(Running { response, call, arguments: shown, job, started, asynchronous });
                            continue;
                        }
                        ToolKind::Transfer => match super::tools::fill_url(
                            tool.config.target.as_deref().unwrap_or_default(),
                            &args,
                            &self.tools.vars,
                        ) {
                            Ok(target) if self.transfer.is_none() => {
                                tracing::info!(tool = %call.name, %target, "tool call: transfer once the agent is quiet");
                                let timeout = tool.config.timeout();
                                self.transfer = Some(PendingTransfer {
                                    why: TransferWhy::Tool { response, call, arguments: shown },
                                    target,
                                    timeout,
                                    sent: None,
                                    started,
                                });
                                if let Some(f) = filler {
                                    self.say(&f);
                                }
                                continue;
                            }
                            Ok(_) => (ToolOutcome::error("error", "a transfer is already in progress"), shown),
                            Err(e) => (ToolOutcome::error("invalid_arguments", &e), shown),
                        },
                        ToolKind::SetVariable => {
                            for (k, v) in args.as_object().into_iter().flatten() {
                                let v = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
                                self.tools.vars.insert(k.clone(), v);
                            }
                            (ToolOutcome::ok(serde_json::json!({"ok": true})), shown)
                        }
                        ToolKind::SendDtmf => match super::tools::dtmf_digits(&args) {
                            Ok(d) => {
                                self.dtmf_out.push_back(d.clone());
                                (ToolOutcome::ok(serde_json::json!({"ok": true, "sent": d})), shown)
                            }
                            Err(e) => (ToolOutcome::error("invalid_arguments", &e), shown),
                        },
                        ToolKind::Hangup => {
                            hangup = true;
                            (
                                ToolOutcome::ok(
                                    serde_json::json!({"ok": true, "note": "the call ends when you stop speaking"}),
                                ),
                                shown,
                            )
                        }
                    }
                }
            };
            self.finish_tool(response, &call, arguments, outcome, started);
        }
        if hangup {
            // The agent said its goodbye before the call: end once it is heard, without another reply.
            self.hangup_when_quiet = Some("the agent ended the call".into());
            return;
        }
        self.after_tools();
    }

    fn finish_tool(&mut self, response: u64, call: &ToolCall, arguments: String, o: ToolOutcome, started: Instant) {
        self.conv.add_tool_result(&call.id, &o.content);
        if self.record_tool(response, call, arguments, o, started) {
            self.said_for_round = true;
        }
    }

    /// An asynchronous tool's result, which arrives after the model was told it is pending: a note
    /// in the conversation, and a reply to say it once the caller is not talking (unless the
    /// tool's fallback already said what there is to say).
    fn finish_async_tool(&mut self, r: Running, o: ToolOutcome) {
        let note = format!(
            "The result of your earlier {} call ({}) has arrived: {}. Tell the caller now.",
            r.call.name, r.arguments, o.content
        );
        self.conv.add_system(&note);
        if !self.record_tool(r.response, &r.call, r.arguments, o, r.started) {
            self.continue_after_tools = true;
        }
    }

    /// Log and record a tool call's end; true when its `fallback` was said for it.
    fn record_tool(
        &mut self,
        response: u64,
        call: &ToolCall,
        arguments: String,
        o: ToolOutcome,
        started: Instant,
    ) -> bool {
        let duration_ms = self.now.saturating_duration_since(started).as_millis() as u64;
        tracing::info!(tool = %call.name, outcome = o.outcome, duration_ms, "tool result");
        // A failure the operator wrote words for: the caller hears them at once, not the model's
        // guess. (Invalid arguments are the model's own mistake: it gets to try again; a tool
        // cancelled by the call's end has nobody to tell.)
        let mut fallback_said = false;
        if !matches!(o.outcome, "ok" | "invalid_arguments" | "cancelled") {
            if let Some(f) = self.tools.set.get(&call.name).and_then(|t| t.config.fallback.clone()) {
                self.say(&f);
                self.conv.add_assistant(&f, vec![]);
                fallback_said = true;
            }
        }
        self.tool_records.push_back(ToolRecord {
            response,
            call_id: call.id.clone(),
            name: call.name.clone(),
            arguments,
            outcome: o.outcome,
            result: o.content.chars().take(500).collect(),
            duration_ms,
        });
        fallback_said
    }

    /// All of a round's results are in: let the model go on, unless it has gone round too often.
    fn after_tools(&mut self) {
        if self.tools_busy() || self.hangup_when_quiet.is_some() {
            return;
        }
        if std::mem::take(&mut self.said_for_round) {
            return;
        }
        if self.tool_rounds > MAX_TOOL_ROUNDS {
            tracing::warn!(rounds = self.tool_rounds, "too many tool rounds for one turn; apologising");
            let apology = self.settings.apology.clone();
            self.say(&apology);
            return;
        }
        self.continue_after_tools = true;
    }

    /// The transfer did not happen: the caller is still here. The model hears why; the caller
    /// hears the tool's `fallback` (or the model's next words).
    fn transfer_failed(&mut self, outcome: &'static str, why: &str) {
        if let Some(t) = self.transfer.take() {
            tracing::warn!(target = %t.target, why, "transfer failed");
            match t.why {
                TransferWhy::Tool { response, call, arguments } => {
                    self.finish_tool(response, &call, arguments, ToolOutcome::error(outcome, why), t.started);
                    self.after_tools();
                }
                // The caller is still here after the apology: the conversation goes on.
                TransferWhy::Failure => {}
            }
        }
    }

    /// Tool calls that have answered since the last packet time.
    fn poll_tools(&mut self) {
        let mut i = 0;
        let mut done = false;
        while i < self.running.len() {
            match self.running[i].job.poll() {
                Some(o) => {
                    let r = self.running.remove(i);
                    if r.asynchronous {
                        self.finish_async_tool(r, o);
                        continue;
                    }
                    self.finish_tool(r.response, &r.call, r.arguments, o, r.started);
                    done = true;
                }
                None => i += 1,
            }
        }
        if done {
            self.after_tools();
        }
    }
}

impl Agent for LlmAgent {
    fn start(&mut self, _sample_rate: u32, now: Instant) {
        self.now = now;
    }

    fn on_caller_audio(&mut self, _pcm: &[i16], _playout: PlayoutState, now: Instant) {
        self.now = now;
    }

    fn on_speech(&mut self, event: crate::models::vad::VadEvent, now: Instant) {
        self.now = now;
        self.caller_speaking = matches!(event, crate::models::vad::VadEvent::SpeechStarted { .. });
    }

    fn on_interrupt(&mut self, played: u64, now: Instant) {
        self.now = now;
        // Nothing more of this reply: not the text still being written, not the sentences queued.
        let writing = self.reply.take();
        for s in self.speaking.drain(..) {
            s.cancel();
        }
        let Some(first) = self.on_air.first().map(|a| a.1) else {
            // The greeting (or nothing of a reply) was interrupted.
            drop(writing);
            return;
        };
        let heard = heard_text(&self.on_air, played);
        let audio_end_ms = played.saturating_sub(first) / 16;
        tracing::info!(audio_end_ms, heard = %heard, "reply interrupted");
        match self.on_air_item {
            Some(id) => {
                self.conv.truncate_assistant(id, &heard);
            }
            None if !heard.is_empty() => {
                let id = self.conv.add_assistant(&heard, vec![]);
                self.conv.truncate_assistant(id, &heard);
            }
            None => {}
        }
        // The reply on air is the last one begun (a new turn clears `on_air`).
        let response = writing.as_ref().map_or(self.last_response, |r| r.response);
        let (first_text_ms, total_ms) = match &writing {
            Some(r) => (
                r.first_text.map(|t| t.duration_since(r.started).as_millis() as u64),
                self.now.saturating_duration_since(r.started).as_millis() as u64,
            ),
            None => (None, 0),
        };
        self.records.push_back(ReplyRecord {
            response,
            text: heard,
            outcome: "interrupted",
            error: None,
            finish_reason: None,
            first_text_ms,
            total_ms,
            audio_end_ms: Some(audio_end_ms),
        });
        self.on_air.clear();
        self.on_air_item = None;
        drop(writing);
    }

    fn on_tentative_transcript(&mut self, t: &TurnTranscript, now: Instant) {
        self.now = now;
        self.drop_speculation();
        let text = t.text.trim();
        // Only from a quiet agent: a reply or tools under way decide what comes next themselves.
        if text.is_empty()
            || self.reply.is_some()
            || self.tools_busy()
            || self.pending_turn
            || self.hangup_when_quiet.is_some()
        {
            return;
        }
        let mut conv = self.conv.clone();
        conv.add_user(text);
        let offered = self.tools.set.offered(&self.tools.vars);
        let req = conv.request(&offered, self.settings.temperature, self.settings.max_output_tokens);
        log_request(&req, true);
        let stream = self.backend.stream(&req, self.session);
        let reply = Reply {
            response: 0,
            calls: Vec::new(),
            stream,
            splitter: SentenceSplitter::new(),
            text: String::new(),
            started: self.now,
            first_text: None,
        };
        self.speculation = Some(Speculation {
            turn: t.turn,
            user: text.to_string(),
            revision: self.conv.revision(),
            reply,
            held: VecDeque::new(),
            done: None,
        });
    }

    fn on_turn_resumed(&mut self, turn: u64, now: Instant) {
        self.now = now;
        if self.speculation.as_ref().is_some_and(|s| s.turn == turn) {
            self.drop_speculation();
        }
    }

    fn on_transcript(&mut self, t: &TurnTranscript, now: Instant) {
        self.now = now;
        if t.partial {
            self.warm_on_partial(t);
            return;
        }
        if t.text.trim().is_empty() {
            // An empty final transcript: the turn had no words, so neither has its speculation.
            if !t.partial && self.speculation.as_ref().is_some_and(|s| s.turn == t.turn) {
                self.drop_speculation();
            }
            return;
        }
        let spec = self.speculation.take();
        // A speculation is only good if built on the conversation as it is before this turn.
        let revision = self.conv.revision();
        self.conv.add_user(t.text.trim());
        self.voiced_since_turn = false;
        // A new turn: what plays from now on belongs to the next reply.
        self.on_air.clear();
        self.on_air_item = None;
        self.tool_rounds = 0;
        match spec {
            Some(s)
                if s.turn == t.turn
                    && s.user == t.text.trim()
                    && s.revision == revision
                    && self.reply.is_none()
                    && !self.tools_busy() =>
            {
                self.adopt_speculation(s);
                return;
            }
            Some(s) => s.drop_all(),
            None => {}
        }
        if self.reply.is_some() {
            // The caller said more before the reply came: answer everything they said.
            self.cancel_reply();
            self.pending_turn = true;
        } else if self.tools_busy() {
            // Tools are running: answer once their results are in (they are not lost).
            self.pending_turn = true;
        } else {
            self.start_reply();
        }
    }

    fn poll_output(&mut self, playout: PlayoutState, now: Instant) -> Option<AgentOutput> {
        self.now = now;
        if !self.greeting_queued {
            self.greeting_queued = true;
            if let Some(g) = &self.greeting {
                return Some(AgentOutput::Audio(g.to_vec()));
            }
        }
        self.poll_tools();
        if self.reply_due() {
            self.start_reply();
        }
        self.pump_reply();
        if let Some(n) = self.started.pop_front() {
            return Some(AgentOutput::ReplyStarted(n));
        }
        if let Some(r) = self.records.pop_front() {
            return Some(AgentOutput::Reply(r));
        }
        if let Some(t) = self.tool_records.pop_front() {
            return Some(AgentOutput::Tool(t));
        }
        if let Some(d) = self.dtmf_out.pop_front() {
            return Some(AgentOutput::SendDtmf(d));
        }
        while let Some(s) = self.speaking.front_mut() {
            match s.poll() {
                Some(SpeechChunk::Audio { pcm, text, .. }) => {
                    if self.on_air.is_empty() {
                        tracing::info!(samples = pcm.len(), "first audio after the turn");
                    }
                    let start = playout.played_samples + playout.queued_samples as u64;
                    self.on_air.push((text, start, pcm.len() as u64));
                    return Some(AgentOutput::Audio(pcm));
                }
                Some(SpeechChunk::Done { .. }) => {
                    self.speaking.pop_front();
                }
                Some(SpeechChunk::Failed { reason, .. }) => {
                    tracing::warn!(%reason, "sentence synthesis failed");
                    self.speaking.pop_front();
                }
                None => return None,
            }
        }
        if let Some(t) = &mut self.transfer {
            match t.sent {
                // Everything said before the transfer has been heard: REFER now.
                None if self.reply.is_none() && playout.queued_samples == 0 => {
                    t.sent = Some(self.now);
                    return Some(AgentOutput::Transfer(t.target.clone()));
                }
                Some(at) if self.now.saturating_duration_since(at) > t.timeout => {
                    let timeout_ms = t.timeout.as_millis();
                    self.transfer_failed("timeout", &format!("the transfer did not complete within {timeout_ms} ms"));
                }
                _ => {}
            }
        }
        if self.hangup_when_quiet.is_some() && playout.queued_samples == 0 {
            return self.hangup_when_quiet.take().map(AgentOutput::Hangup);
        }
        None
    }

    fn finish(&mut self, now: Instant) -> Vec<AgentOutput> {
        self.now = now;
        self.drop_speculation();
        self.cancel_reply();
        // Tools still running when the call ends are in the record too.
        let ended = ToolOutcome::error("cancelled", "the call ended first");
        for r in std::mem::take(&mut self.running) {
            self.record_tool(r.response, &r.call, r.arguments, ended.clone(), r.started);
        }
        if let Some(PendingTransfer { why: TransferWhy::Tool { response, call, arguments }, started, .. }) =
            self.transfer.take()
        {
            self.record_tool(response, &call, arguments, ended, started);
        }
        let started = self.started.drain(..).map(AgentOutput::ReplyStarted);
        let replies = self.records.drain(..).map(AgentOutput::Reply);
        let tools = self.tool_records.drain(..).map(AgentOutput::Tool);
        started.chain(replies).chain(tools).collect()
    }

    /// Without its speech models the conversation cannot go on: the apology, then BYE once it
    /// has been heard.
    fn on_fault(&mut self, what: &str, now: Instant) -> bool {
        self.now = now;
        tracing::error!(what, "a speech model failed for this call; apologising and ending it");
        let apology = self.settings.apology.clone();
        self.say(&apology);
        self.hangup_when_quiet = Some(format!("{what}; the agent apologised"));
        true
    }

    fn on_transfer(&mut self, progress: &TransferProgress, now: Instant) {
        self.now = now;
        match progress {
            TransferProgress::Accepted | TransferProgress::Trying(_) => {}
            TransferProgress::Succeeded => match self.transfer.take() {
                Some(PendingTransfer {
                    why: TransferWhy::Tool { response, call, arguments }, target, started, ..
                }) => {
                    let o = ToolOutcome::ok(serde_json::json!({"ok": true, "transferred_to": target}));
                    self.finish_tool(response, &call, arguments, o, started);
                }
                Some(PendingTransfer { why: TransferWhy::Failure, target, .. }) => {
                    tracing::info!(%target, "the call was transferred after the language model failed")
                }
                None => {}
            },
            TransferProgress::Failed { code, reason } => {
                self.transfer_failed("error", &format!("the transfer failed: {code} {reason}"))
            }
        }
    }
}

impl Drop for LlmAgent {
    fn drop(&mut self) {
        self.drop_speculation();
        self.cancel_reply();
        self.backend.end(self.session);
    }
}

/// The conversation a reply is asked on, at debug level (the tests check what a dropped
/// speculation left in it: nothing).
fn log_request(req: &crate::models::llm::chat::ChatRequest, speculative: bool) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        let items: Vec<String> = req.messages.iter().skip(1).map(|m| format!("{:?}: {}", m.role, m.content)).collect();
        tracing::debug!(speculative, context = ?items, "reply requested");
    }
}

/// A reply's model events so far: the sentences they complete go to `sentences`; the end (the
/// finish reason, or the error) when it came.
fn drain_events(
    r: &mut Reply,
    sentences: &mut Vec<String>,
    now: Instant,
) -> Option<Result<String, crate::models::llm::LlmError>> {
    while let Some(ev) = r.stream.poll() {
        match ev {
            Ok(LlmEvent::Text(t)) => {
                r.first_text.get_or_insert(now);
                r.text.push_str(&t);
                sentences.extend(r.splitter.push(&t));
            }
            Ok(LlmEvent::ToolCall(c)) => r.calls.push(c),
            Ok(LlmEvent::Done { finish_reason, .. }) => {
                sentences.extend(r.splitter.finish());
                tracing::info!(
                    finish_reason,
                    first_text_ms = r.first_text.map(|t| t.duration_since(r.started).as_millis() as u64),
                    total_ms = now.saturating_duration_since(r.started).as_millis() as u64,
                    text = %r.text,
                    "reply"
                );
                return Some(Ok(finish_reason));
            }
            Err(e) => return Some(Err(e)),
        }
    }
    None
}

/// The words of the queued sentences that were played by sample `played`: whole sentences, then the
/// share of the next one's words that its played share of audio covers.
fn heard_text(on_air: &[(String, u64, u64)], played: u64) -> String {
    let mut out: Vec<&str> = Vec::new();
    for (text, start, len) in on_air {
        if played >= start + len {
            out.extend(text.split_whitespace());
        } else if played > *start && *len > 0 {
            let words: Vec<&str> = text.split_whitespace().collect();
            let n = (words.len() as u64 * (played - start) / len) as usize;
            out.extend(&words[..n]);
            break;
        } else {
            break;
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::heard_text;

    #[test]
    fn what_was_heard_of_a_reply() {
        let air = vec![
            ("We open at eight.".to_string(), 1000, 16000),
            ("On Sunday we are closed all day.".to_string(), 17000, 32000),
        ];
        assert_eq!(heard_text(&air, 500), "");
        assert_eq!(heard_text(&air, 17000), "We open at eight.");
        // Half of the second sentence's audio: half of its seven words (rounded down).
        assert_eq!(heard_text(&air, 17000 + 16000), "We open at eight. On Sunday we");
        assert_eq!(heard_text(&air, 99_999), "We open at eight. On Sunday we are closed all day.");
    }
}
