//! The agent side of a call: what it says and how it reacts to the caller.
//!
//! An agent is a sans-IO object the call's media loop drives once per
//! packet time: caller audio goes in, agent audio comes out into the pacer's
//! queue; every entry point is given `now`. The line-test agents (greeting +
//! echo, greeting + silence: `echo`), the repeat agent and the conversational
//! one (`llm`) implement the same trait, the models' inference on worker
//! threads feeding `poll_output` through channels. The call maps its own
//! events to the agent's input types (`input`), so an agent knows no SIP.

pub mod amd_gate;
mod check;
pub mod conversation;
pub mod echo;
mod input;
pub mod llm;
pub mod repeat;
mod tool_load;
pub mod tools;
pub mod wav;

pub use check::check_config;
pub use input::{TransferProgress, TurnTranscript};

use crate::config::{AgentConfig, AgentMode};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// What the media loop tells the agent about its playout.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlayoutState {
    /// Agent samples queued in the pacer, not yet on the wire.
    pub queued_samples: usize,
    /// Agent (speech) samples that have left on the wire so far.
    pub played_samples: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentOutput {
    /// Queue this audio (mono PCM at the agent rate) after what is queued.
    Audio(Vec<i16>),
    /// Drop everything queued (interruption).
    ClearAudio,
    /// End the call with BYE, giving this reason.
    Hangup(String),
    /// A reply of the language model began: the request went to the model (Realtime's
    /// `response.created`). Its end comes as `Reply` with the same number.
    ReplyStarted(u64),
    /// A reply of the language model ended (for the call record, logs and metrics).
    Reply(ReplyRecord),
    /// A tool call ended (for the call record, logs and metrics).
    Tool(ToolRecord),
    /// Send these DTMF keys to the far end (RFC 4733).
    SendDtmf(String),
    /// Transfer the caller to this SIP URI (REFER); the outcome comes back through `on_transfer`.
    Transfer(String),
    /// Answering-machine detection decided (outbound calls with a machine policy).
    Amd(crate::media::amd::AmdDecision),
}

/// One tool call, as it ended (as the call record writes it, too).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ToolRecord {
    /// The reply that asked for it.
    pub response: u64,
    pub call_id: String,
    pub name: String,
    /// As JSON, secret arguments redacted.
    pub arguments: String,
    /// `ok`, `error`, `timeout`, `invalid_arguments`, `cancelled` (the call ended first).
    pub outcome: &'static str,
    /// What the model was given (cut for the record).
    pub result: String,
    pub duration_ms: u64,
}

/// One reply of an agent's language model, as it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyRecord {
    /// The reply's number in the call (1, 2, …), as in `ReplyStarted`.
    pub response: u64,
    /// What the agent says (the apology when the model failed before any text).
    pub text: String,
    /// `done`, `failed`, `cancelled` (the caller spoke again first) or `interrupted` (barge-in).
    pub outcome: &'static str,
    /// Why it failed: the error kind (`connect`, `timeout`, `garbage`, `busy`, `model`, …).
    pub error: Option<&'static str>,
    pub finish_reason: Option<String>,
    /// From the request to the first text.
    pub first_text_ms: Option<u64>,
    pub total_ms: u64,
    /// Interrupted: how much of the reply's audio the caller heard (ms from its first sample).
    pub audio_end_ms: Option<u64>,
}

pub trait Agent: Send {
    /// The call is up (ACK received); `sample_rate` is the agent rate (16 kHz), whatever the wire codec.
    fn start(&mut self, sample_rate: u32, now: Instant);
    /// Decoded caller audio, in order, at the agent rate (concealed gaps included).
    fn on_caller_audio(&mut self, pcm: &[i16], playout: PlayoutState, now: Instant);
    /// What the agent wants done next; called until None at each packet time.
    fn poll_output(&mut self, playout: PlayoutState, now: Instant) -> Option<AgentOutput>;
    /// A digit from the caller (RFC 4733 or SIP INFO), with when it started.
    fn on_dtmf(&mut self, _event: &crate::media::dtmf::DtmfEvent, _now: Instant) {}
    /// The caller started or stopped speaking (server_vad), in the caller audio's time.
    fn on_speech(&mut self, _event: crate::models::vad::VadEvent, _now: Instant) {}
    /// A caller turn's transcript (partials first, then the final one).
    fn on_transcript(&mut self, _t: &TurnTranscript, _now: Instant) {}
    /// The caller paused and may have finished: their words so far, to start a reply on
    /// speculation. Nothing of it may be heard, kept in the conversation or recorded until the
    /// final transcript of the same turn confirms it (`on_transcript`); `on_turn_resumed` voids it.
    fn on_tentative_transcript(&mut self, _t: &TurnTranscript, _now: Instant) {}
    /// The caller went on after a tentative end of `turn` (or it ended elsewhere): drop what was
    /// started on speculation, without a trace.
    fn on_turn_resumed(&mut self, _turn: u64, _now: Instant) {}
    /// The caller interrupted: the queued audio is gone; `played_samples` (16 kHz, counted from the
    /// start of the call's agent audio) had been heard. Stop the reply and keep what was heard.
    fn on_interrupt(&mut self, _played_samples: u64, _now: Instant) {}
    /// How a transfer the agent asked for is going.
    fn on_transfer(&mut self, _progress: &TransferProgress, _now: Instant) {}
    /// A speech model this call depends on failed for good (`what` says which). An agent that can
    /// still speak apologises and ends the call its way (true); otherwise (false) the call ends
    /// with BYE at once.
    fn on_fault(&mut self, _what: &str, _now: Instant) -> bool {
        false
    }

    /// The call is over: what the record still lacks (`ReplyStarted`, `Reply`, `Tool`), such as a
    /// reply the hang-up cut off or a tool (a transfer) that ended with the call.
    fn finish(&mut self, _now: Instant) -> Vec<AgentOutput> {
        Vec::new()
    }
}

/// Everything an agent needs from the config, with its files already loaded.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub name: String,
    pub config: AgentConfig,
    /// Greeting as mono PCM at the agent rate (16 kHz), loaded once at start-up.
    pub greeting: Option<Arc<Vec<i16>>>,
    /// The agent's voice on its worker (agents that speak at run time).
    pub tts: Option<crate::models::tts_worker::TtsWorker>,
    /// The agent's language model (`mode: llm`).
    pub llm: Option<crate::models::llm::LlmBackend>,
    /// The tools its model may call, secrets read at start-up.
    pub tools: Arc<tools::ToolSet>,
    /// Runs its `http` tools (the driver's; one connection pool per agent).
    pub tool_runner: Arc<dyn tools::ToolRunner>,
}

/// The variables an agent's instructions may use, for one call.
pub fn call_variables(
    caller: &str,
    called: &str,
    agent: &str,
    now: SystemTime,
) -> std::collections::BTreeMap<String, String> {
    let now = crate::wallclock::rfc3339(now);
    let (date, time) = (now[..10].to_string(), now[11..16].to_string());
    [
        ("caller", caller.to_string()),
        ("called", called.to_string()),
        ("agent", agent.to_string()),
        ("date", date),
        ("time", format!("{time} UTC")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The built-in variables plus per-call ones (the agent's defaults, then a contact's values);
/// the built-ins cannot be replaced.
pub fn call_variables_with(
    caller: &str,
    called: &str,
    agent: &str,
    extra: &std::collections::BTreeMap<String, String>,
    now: SystemTime,
) -> std::collections::BTreeMap<String, String> {
    let mut vars = extra.clone();
    vars.extend(call_variables(caller, called, agent, now));
    vars
}

impl AgentSpec {
    /// The agent's voice and how it speaks (for text spoken outside its conversation).
    pub fn voice(&self) -> Option<(crate::models::tts_worker::TtsWorker, crate::models::tts_worker::Style)> {
        self.tts.as_ref().map(|t| (t.clone(), self.style(t)))
    }

    fn style(&self, tts: &crate::models::tts_worker::TtsWorker) -> crate::models::tts_worker::Style {
        let mut scales = tts.default_scales();
        scales.noise_scale = self.config.noise_scale.unwrap_or(scales.noise_scale);
        scales.noise_w = self.config.noise_w.unwrap_or(scales.noise_w);
        crate::models::tts_worker::Style { scales, speaking_rate: self.config.speaking_rate }
    }

    /// `tts` speaks text greetings (synthesised once, here, at start-up).
    pub fn load(
        name: &str,
        config: &AgentConfig,
        loaded: &crate::config::LoadedConfig,
        tts: Option<&std::sync::Mutex<crate::models::tts::PiperVoice>>,
        tool_runner: Arc<dyn tools::ToolRunner>,
    ) -> Result<AgentSpec, String> {
        let greeting = match (&config.greeting, &config.greeting_text, tts) {
            (Some(p), _, _) => {
                let path = loaded.resolve(p);
                Some(Arc::new(
                    wav::load_pcm16(&path, crate::media::codec::AGENT_RATE)
                        .map_err(|e| format!("{}: {e}", path.display()))?,
                ))
            }
            (None, Some(text), Some(voice)) => {
                let mut v = voice.lock().unwrap_or_else(|p| p.into_inner());
                let mut s = v.scales();
                s.noise_scale = config.noise_scale.unwrap_or(s.noise_scale);
                s.noise_w = config.noise_w.unwrap_or(s.noise_w);
                let pcm =
                    v.synthesize_16k_with(text, s, config.speaking_rate).map_err(|e| format!("greeting_text: {e}"))?;
                Some(Arc::new(pcm))
            }
            (None, Some(_), None) => return Err("greeting_text needs models.tts".into()),
            (None, None, _) => None,
        };
        let tools = tools::ToolSet::load(config.llm.as_ref().map_or(&[][..], |l| &l.tools[..]))?;
        Ok(AgentSpec {
            name: name.to_string(),
            config: config.clone(),
            greeting,
            tts: None,
            llm: None,
            tools: Arc::new(tools),
            tool_runner,
        })
    }

    /// The agent for one call: `caller`, `called`, per-call variables (a campaign contact's
    /// columns) and the wall-clock time the call starts at (`wall`) fill the instructions'
    /// variables; `now` is the call's start on the driver's clock.
    pub fn build_with(
        &self,
        caller: &str,
        called: &str,
        call_vars: &std::collections::BTreeMap<String, String>,
        wall: SystemTime,
        now: Instant,
    ) -> Box<dyn Agent> {
        let delay = self.config.echo_delay_ms.get();
        match self.config.mode {
            AgentMode::Echo => Box::new(echo::EchoAgent::new(self.greeting.clone(), Some(delay))),
            AgentMode::Silent => Box::new(echo::EchoAgent::new(self.greeting.clone(), None)),
            AgentMode::Repeat => match &self.tts {
                Some(tts) => Box::new(repeat::RepeatAgent::new(self.greeting.clone(), tts.clone(), self.style(tts))),
                // Validated at start-up (repeat needs a voice); never silent dead air if it slips.
                None => Box::new(echo::EchoAgent::new(self.greeting.clone(), None)),
            },
            AgentMode::Llm => match (&self.tts, &self.llm, &self.config.llm) {
                (Some(tts), Some(backend), Some(l)) => {
                    let mut extra = self.config.variables.clone();
                    extra.extend(call_vars.iter().map(|(k, v)| (k.clone(), v.clone())));
                    let vars = call_variables_with(caller, called, &self.name, &extra, wall);
                    // Validated at start-up with the same variables: rendering cannot fail here.
                    let instructions =
                        conversation::render(&l.instructions, &vars).unwrap_or_else(|_| l.instructions.clone());
                    let budget = l.max_context_tokens.get();
                    let conv = conversation::Conversation::new(instructions, (budget > 0).then_some(budget as usize));
                    let settings = llm::LlmSettings {
                        temperature: l.temperature,
                        max_output_tokens: Some(l.max_output_tokens.get() as u32),
                        apology: l.apology.clone(),
                        on_failure: match l.on_failure {
                            crate::config::LlmFailurePolicy::Continue => llm::OnFailure::Continue,
                            crate::config::LlmFailurePolicy::Hangup => llm::OnFailure::Hangup,
                            crate::config::LlmFailurePolicy::Transfer => {
                                llm::OnFailure::Transfer(l.transfer_to.clone().unwrap_or_default())
                            }
                        },
                    };
                    let tools = llm::AgentTools { set: self.tools.clone(), runner: self.tool_runner.clone(), vars };
                    Box::new(llm::LlmAgent::new(
                        self.greeting.clone(),
                        conv,
                        backend.clone(),
                        settings,
                        llm::Voice { tts: tts.clone(), style: self.style(tts) },
                        tools,
                        now,
                    ))
                }
                _ => Box::new(echo::EchoAgent::new(self.greeting.clone(), None)),
            },
        }
    }
}

#[cfg(test)]
mod variable_tests {
    use super::*;

    #[test]
    fn call_variables_fill_instructions_and_cannot_replace_the_builtins() {
        let extra: std::collections::BTreeMap<String, String> = [("first_name", "Anna"), ("caller", "spoofed")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_523_472);
        let vars = call_variables_with("+441632960001", "2001", "reminders", &extra, now);
        assert_eq!(vars["first_name"], "Anna");
        assert_eq!((vars["date"].as_str(), vars["time"].as_str()), ("2026-11-24", "12:31 UTC"), "the time given");
        assert_eq!(vars["caller"], "+441632960001", "a contact column cannot replace a built-in");
        let text = conversation::render("Call {first_name} at {caller}.", &vars).unwrap();
        assert_eq!(text, "Call Anna at +441632960001.");
        assert!(conversation::render("Hi {last_name}", &vars).is_err(), "an undeclared variable is an error");
    }
}
