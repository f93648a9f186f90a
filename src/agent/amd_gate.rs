//! Answering-machine handling for outbound calls: an agent in front of the call's real agent.
//!
//! From the answer, the callee's audio goes to the detector (`media::amd`) and the real agent
//! waits, so a person hears the agent after their "Hello?" rather than over it. A person: the
//! real agent starts and from then on sees everything. A machine, by the campaign's policy:
//! `hangup` ends the call at once; `leave_message` synthesises the message while the greeting
//! still runs, waits for the beep (or for the greeting to end without one), speaks the message
//! and hangs up; `ignore` starts the real agent as if a person had answered.

use super::{Agent, AgentOutput, PlayoutState};
use crate::media::amd::{Amd, AmdConfig, AmdDecision, AmdEvent};
use crate::models::tts_worker::{SpeechChunk, Style, TtsWorker};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What to do when a machine answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachinePolicy {
    Hangup,
    LeaveMessage(String),
    Ignore,
}

/// Without a beep, the message starts this long after the machine decision.
const NO_BEEP_WAIT: Duration = Duration::from_secs(10);

enum State {
    Detecting,
    Human,
    /// Waiting for the beep; the message is being synthesised meanwhile.
    AwaitBeep {
        since: Instant,
    },
    /// The message plays; hang up once it has.
    Speaking,
    Done,
}

pub struct AmdGate {
    inner: Box<dyn Agent>,
    amd: Amd,
    policy: MachinePolicy,
    tts: Option<(TtsWorker, Style)>,
    state: State,
    rate: u32,
    out: VecDeque<AgentOutput>,
    speech: Option<crate::models::tts_worker::Speech>,
    message: Vec<i16>,
    message_ready: bool,
    beeped: bool,
    decision: Option<AmdDecision>,
}

impl AmdGate {
    pub fn new(inner: Box<dyn Agent>, policy: MachinePolicy, tts: Option<(TtsWorker, Style)>) -> AmdGate {
        AmdGate {
            inner,
            amd: Amd::new(AmdConfig::default(), crate::media::codec::AGENT_RATE),
            policy,
            tts,
            state: State::Detecting,
            rate: crate::media::codec::AGENT_RATE,
            out: VecDeque::new(),
            speech: None,
            message: Vec::new(),
            message_ready: false,
            beeped: false,
            decision: None,
        }
    }

    fn decided(&mut self, d: AmdDecision, now: Instant) {
        tracing::info!(
            machine = d.is_machine(),
            reason = d.reason(),
            after_ms = d.after_ms(),
            "answering-machine detection"
        );
        self.decision = Some(d);
        self.out.push_back(AgentOutput::Amd(d));
        if !d.is_machine() || self.policy == MachinePolicy::Ignore {
            self.state = State::Human;
            self.inner.start(self.rate, now);
            return;
        }
        match self.policy.clone() {
            MachinePolicy::Hangup => {
                self.state = State::Done;
                self.out.push_back(AgentOutput::Hangup(format!("answering machine ({})", d.reason())));
            }
            MachinePolicy::LeaveMessage(text) => {
                self.speech = self.tts.as_ref().and_then(|(w, style)| w.speak(&text, *style));
                if self.speech.is_none() {
                    tracing::warn!("no voice for the voicemail message: hanging up");
                    self.state = State::Done;
                    self.out.push_back(AgentOutput::Hangup("answering machine (no voice for the message)".into()));
                    return;
                }
                self.state = State::AwaitBeep { since: now };
            }
            MachinePolicy::Ignore => unreachable!("handled above"),
        }
    }
}

impl Agent for AmdGate {
    fn start(&mut self, sample_rate: u32, _now: Instant) {
        self.rate = sample_rate;
    }

    fn on_caller_audio(&mut self, pcm: &[i16], playout: PlayoutState, now: Instant) {
        if matches!(self.state, State::Human) {
            self.inner.on_caller_audio(pcm, playout, now);
            return;
        }
        if matches!(self.state, State::Detecting | State::AwaitBeep { .. }) {
            for ev in self.amd.push(pcm) {
                match ev {
                    AmdEvent::Decided(d) => self.decided(d, now),
                    AmdEvent::Beep { .. } => self.beeped = true,
                }
            }
        }
    }

    fn poll_output(&mut self, playout: PlayoutState, now: Instant) -> Option<AgentOutput> {
        if let Some(o) = self.out.pop_front() {
            return Some(o);
        }
        match self.state {
            State::Human => self.inner.poll_output(playout, now),
            State::AwaitBeep { since } => {
                while let Some(c) = self.speech.as_mut().and_then(|s| s.poll()) {
                    match c {
                        SpeechChunk::Audio { pcm, .. } => self.message.extend_from_slice(&pcm),
                        SpeechChunk::Done { .. } => self.message_ready = true,
                        SpeechChunk::Failed { reason, .. } => {
                            tracing::warn!(%reason, "voicemail message synthesis failed: hanging up");
                            self.state = State::Done;
                            return Some(AgentOutput::Hangup("answering machine (message synthesis failed)".into()));
                        }
                    }
                }
                let go = self.beeped || now.duration_since(since) >= NO_BEEP_WAIT;
                if go && self.message_ready {
                    tracing::info!(beep = self.beeped, samples = self.message.len(), "leaving the voicemail message");
                    self.state = State::Speaking;
                    return Some(AgentOutput::Audio(std::mem::take(&mut self.message)));
                }
                None
            }
            State::Speaking if playout.queued_samples == 0 => {
                self.state = State::Done;
                Some(AgentOutput::Hangup("voicemail message left".into()))
            }
            _ => None,
        }
    }

    fn on_dtmf(&mut self, event: &crate::media::dtmf::DtmfEvent, now: Instant) {
        if matches!(self.state, State::Human) {
            self.inner.on_dtmf(event, now);
        }
    }
    fn on_speech(&mut self, event: crate::models::vad::VadEvent, now: Instant) {
        if matches!(self.state, State::Human) {
            self.inner.on_speech(event, now);
        }
    }
    fn on_transcript(&mut self, t: &crate::agent::TurnTranscript, now: Instant) {
        if matches!(self.state, State::Human) {
            self.inner.on_transcript(t, now);
        }
    }
    fn on_tentative_transcript(&mut self, t: &crate::agent::TurnTranscript, now: Instant) {
        if matches!(self.state, State::Human) {
            self.inner.on_tentative_transcript(t, now);
        }
    }
    fn on_turn_resumed(&mut self, turn: u64, now: Instant) {
        // Always: a speculation begun while a person was heard must not outlive its turn.
        self.inner.on_turn_resumed(turn, now);
    }
    fn on_interrupt(&mut self, played_samples: u64, now: Instant) {
        if matches!(self.state, State::Human) {
            self.inner.on_interrupt(played_samples, now);
        }
    }
    fn on_transfer(&mut self, progress: &crate::agent::TransferProgress, now: Instant) {
        self.inner.on_transfer(progress, now);
    }
    fn on_fault(&mut self, what: &str, now: Instant) -> bool {
        self.inner.on_fault(what, now)
    }
    fn finish(&mut self, now: Instant) -> Vec<AgentOutput> {
        if let Some(s) = &self.speech {
            s.cancel();
        }
        self.inner.finish(now)
    }
}
