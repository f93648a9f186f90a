//! Where a caller's turn ends, sans-IO (OpenAI Realtime `turn_detection`).
//!
//! * `server_vad`: the turn ends when the VAD's speech stops (after
//!   `silence_duration_ms` of silence).
//! * `semantic_vad`: when the VAD's speech stops (after a shorter silence), the
//!   Smart Turn model is asked whether the caller has finished, on the last
//!   8 s of their audio. P(complete) at or above `threshold` ends the turn at
//!   once; otherwise the turn stays open — the caller may be thinking mid-
//!   sentence — and the model is asked again every 200 ms of continued
//!   silence (its answer on a finished sentence rises with the trailing
//!   silence, 0.26 → 0.67 over 200 ms on our telephone test clip, while an
//!   unfinished one stays near 0.02), until the silence reaches the eagerness
//!   bound (low 8 s, medium/auto 4 s, high 2 s), which ends the turn anyway.
//!   Speech before that makes it one turn. A model that is busy or fails
//!   leaves the bound to decide.
//! * `manual`: pauses never end a turn; the caller (a DTMF key, push-to-talk
//!   style) or a command (`commit`) does, like the Realtime API's
//!   `input_audio_buffer.commit`. The turn runs from its first speech to the
//!   moment of the commit, so words spoken up to the key press are kept.
//!
//! **Speculative start** (`with_speculation`): once the caller has been quiet
//! for `speculate_ms` inside an open turn (shorter than the silence that ends
//! it), a `Tentative` event says where the turn would end if the caller has
//! finished, so recognition and the reply can start on the pause instead of
//! after the whole end-of-turn wait. If the caller goes on, `Resumed` says the
//! tentative end is void (its work is dropped without a trace); if the turn is
//! committed at that same end, the commit says so (`speculated`) and the work
//! already under way is used. Manual turns never speculate: their end is the
//! key press, not a pause.
//!
//! Times are the caller stream's audio time (the samples the VAD is given),
//! so tests drive it in virtual time with a scripted model.

use crate::models::pool::{Answer, PoolClient};
use crate::models::vad::VadEvent;
use std::collections::VecDeque;

/// What the detector needs from the end-of-turn model.
pub trait TurnModel: Send {
    /// Ask P(turn complete) for 16 kHz audio (the last 8 s matter); `None` when refused.
    fn submit(&mut self, audio: Vec<f32>) -> Option<u64>;
    fn poll(&mut self) -> Option<(u64, Result<f32, String>)>;
}

impl TurnModel for PoolClient<Vec<f32>, f32> {
    fn submit(&mut self, audio: Vec<f32>) -> Option<u64> {
        PoolClient::submit(self, audio, false)
    }
    fn poll(&mut self) -> Option<(u64, Result<f32, String>)> {
        PoolClient::poll(self).map(|a: Answer<f32>| (a.seq, a.result))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TurnMode {
    ServerVad,
    SemanticVad {
        /// P(complete) at or above this ends the turn when the speech stops.
        threshold: f32,
        /// Silence after which the turn ends whatever the model said.
        max_wait_ms: u64,
    },
    /// Only `commit` ends a turn; `key` is the DTMF digit that commits.
    Manual {
        key: char,
    },
}

/// Why a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitReason {
    /// server_vad: the silence lasted `silence_duration_ms`.
    Silence,
    /// semantic_vad: the end-of-turn model said the caller had finished.
    Model,
    /// semantic_vad: the silence reached the eagerness bound.
    Timeout,
    /// manual: the commit key or command.
    Manual,
    /// The call ended during the turn.
    CallEnded,
}

impl CommitReason {
    pub fn label(self) -> &'static str {
        match self {
            CommitReason::Silence => "silence",
            CommitReason::Model => "model",
            CommitReason::Timeout => "timeout",
            CommitReason::Manual => "manual",
            CommitReason::CallEnded => "call_ended",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnCommit {
    pub turn: u64,
    /// From the turn's first speech start (prefix padding included) to its last speech end.
    pub audio_start_ms: u64,
    pub audio_end_ms: u64,
    pub reason: CommitReason,
    /// semantic_vad: the model's last P(complete) for this turn, if it answered.
    pub p_complete: Option<f32>,
    /// A `Tentative` event announced exactly this end: the speculative work is the turn's.
    pub speculated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TurnEvent {
    /// The VAD heard speech; `new_turn` when it opens a turn (not a continuation).
    SpeechStarted {
        audio_start_ms: u64,
        new_turn: bool,
        turn: u64,
    },
    SpeechStopped {
        audio_end_ms: u64,
    },
    /// The caller paused long enough that the turn may have ended at `audio_end_ms`: start the
    /// work speculatively. Followed by `Resumed` (drop it) or a `Committed` with `speculated`.
    Tentative {
        turn: u64,
        audio_start_ms: u64,
        audio_end_ms: u64,
    },
    /// The caller went on after a `Tentative`: it is void.
    Resumed {
        turn: u64,
    },
    Committed(TurnCommit),
}

/// The segmenter's view of the caller, once per VAD chunk (`Segmenter::state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerState {
    /// Inside an utterance and not quiet.
    Speaking,
    /// Inside an utterance, quiet since this audio time (not yet long enough to stop it).
    Quiet { since_ms: u64 },
    /// No utterance (before the first, or after the segmenter's speech stop).
    Idle,
}

/// Samples the model is given (its window).
const WINDOW: usize = crate::models::turn::WINDOW_SAMPLES;
/// While the silence goes on and the model said "not finished", ask again this often.
const REASK_MS: u64 = 200;

struct Open {
    turn: u64,
    start_ms: u64,
    /// Speech stopped here and the turn is not yet committed (semantic_vad).
    stopped_at_ms: Option<u64>,
    /// The model request for the current stop (its number and the audio time it was made),
    /// whether its answer is still owed, and the last answer.
    asked: Option<(u64, u64)>,
    awaiting: bool,
    p_complete: Option<f32>,
    /// The end a `Tentative` announced for the current pause.
    tentative_end_ms: Option<u64>,
}

pub struct TurnDetector {
    mode: TurnMode,
    model: Option<Box<dyn TurnModel>>,
    /// The last 8 s of caller audio (semantic_vad only).
    tape: VecDeque<f32>,
    /// Caller audio time: samples received so far.
    samples: u64,
    open: Option<Open>,
    next_turn: u64,
    events: VecDeque<TurnEvent>,
    /// Quiet this long inside a turn announces a tentative end (None: no speculation).
    speculate_ms: Option<u64>,
}

impl TurnDetector {
    pub fn server_vad() -> TurnDetector {
        TurnDetector::new(TurnMode::ServerVad, None)
    }

    pub fn new(mode: TurnMode, model: Option<Box<dyn TurnModel>>) -> TurnDetector {
        TurnDetector {
            mode,
            model,
            tape: VecDeque::new(),
            samples: 0,
            open: None,
            next_turn: 0,
            events: VecDeque::new(),
            speculate_ms: None,
        }
    }

    /// Announce a tentative end after `ms` of quiet inside a turn (0: off; manual turns never do).
    pub fn with_speculation(mut self, ms: u64) -> TurnDetector {
        self.speculate_ms = (ms > 0 && !matches!(self.mode, TurnMode::Manual { .. })).then_some(ms);
        self
    }

    /// The segmenter's state after each VAD chunk, `now_ms` the chunk's end: tentative ends and
    /// their withdrawal.
    pub fn on_caller_state(&mut self, state: CallerState, now_ms: u64) {
        let Some(wait) = self.speculate_ms else { return };
        let Some(o) = &mut self.open else { return };
        match state {
            CallerState::Quiet { since_ms }
                if now_ms.saturating_sub(since_ms) >= wait && o.tentative_end_ms != Some(since_ms) =>
            {
                if o.tentative_end_ms.is_some() {
                    // A new pause without speech in between cannot happen; be safe anyway.
                    self.events.push_back(TurnEvent::Resumed { turn: o.turn });
                }
                o.tentative_end_ms = Some(since_ms);
                self.events.push_back(TurnEvent::Tentative {
                    turn: o.turn,
                    audio_start_ms: o.start_ms,
                    audio_end_ms: since_ms,
                });
            }
            // The guard clears the tentative end: speech withdraws it.
            CallerState::Speaking if o.tentative_end_ms.take().is_some() => {
                self.events.push_back(TurnEvent::Resumed { turn: o.turn });
            }
            _ => {}
        }
    }

    fn now_ms(&self) -> u64 {
        self.samples / 16
    }

    /// Caller audio (16 kHz), the same samples the VAD is given.
    pub fn push_audio(&mut self, pcm: &[i16]) {
        self.samples += pcm.len() as u64;
        if matches!(self.mode, TurnMode::SemanticVad { .. }) {
            self.tape.extend(pcm.iter().map(|&s| s as f32 / 32768.0));
            let excess = self.tape.len().saturating_sub(WINDOW);
            self.tape.drain(..excess);
        }
        let now = self.now_ms();
        if let (TurnMode::SemanticVad { max_wait_ms, .. }, Some(o)) = (self.mode, &self.open) {
            if o.stopped_at_ms.is_some_and(|at| now.saturating_sub(at) >= max_wait_ms) {
                self.commit(CommitReason::Timeout);
            } else if o.stopped_at_ms.is_some()
                && !o.awaiting
                && o.asked.is_some_and(|(_, at)| now.saturating_sub(at) >= REASK_MS)
            {
                self.ask();
            }
        }
    }

    /// Ask the model about the audio so far (the open turn's current pause).
    fn ask(&mut self) {
        let audio: Vec<f32> = self.tape.iter().copied().collect();
        let seq = self.model.as_mut().and_then(|m| m.submit(audio));
        let now = self.now_ms();
        if let Some(o) = &mut self.open {
            // A refusal (busy model) still counts as asked: try again after REASK_MS.
            o.asked = Some((seq.unwrap_or(u64::MAX), now));
            o.awaiting = seq.is_some();
        }
    }

    pub fn on_vad(&mut self, ev: VadEvent) {
        match ev {
            VadEvent::SpeechStarted { audio_start_ms } => {
                let new_turn = self.open.is_none();
                if let Some(o) = &mut self.open {
                    // The caller went on: the pause was inside the turn.
                    o.stopped_at_ms = None;
                    o.asked = None;
                    o.awaiting = false;
                    if o.tentative_end_ms.take().is_some() {
                        self.events.push_back(TurnEvent::Resumed { turn: o.turn });
                    }
                } else {
                    self.open = Some(Open {
                        turn: self.next_turn,
                        start_ms: audio_start_ms,
                        stopped_at_ms: None,
                        asked: None,
                        awaiting: false,
                        p_complete: None,
                        tentative_end_ms: None,
                    });
                    self.next_turn += 1;
                }
                let turn = self.open.as_ref().map(|o| o.turn).unwrap_or_default();
                self.events.push_back(TurnEvent::SpeechStarted { audio_start_ms, new_turn, turn });
            }
            VadEvent::SpeechStopped { audio_end_ms } => {
                self.events.push_back(TurnEvent::SpeechStopped { audio_end_ms });
                let Some(o) = &mut self.open else { return };
                o.stopped_at_ms = Some(audio_end_ms);
                match self.mode {
                    TurnMode::ServerVad => self.commit(CommitReason::Silence),
                    TurnMode::SemanticVad { .. } => self.ask(),
                    // The turn may go on after this pause; only the caller's key ends it.
                    TurnMode::Manual { .. } => {}
                }
            }
        }
    }

    /// The model's answers (once per packet time).
    pub fn tick(&mut self) {
        let TurnMode::SemanticVad { threshold, .. } = self.mode else { return };
        while let Some((seq, result)) = self.model.as_mut().and_then(|m| m.poll()) {
            let Some(o) = &mut self.open else { continue };
            if o.asked.map(|(s, _)| s) != Some(seq) {
                continue; // about a pause the caller has since talked through, or superseded
            }
            o.awaiting = false;
            if let Ok(p) = result {
                o.p_complete = Some(p);
                if p >= threshold && o.stopped_at_ms.is_some() {
                    self.commit(CommitReason::Model);
                }
            }
        }
    }

    /// manual: the DTMF digit that commits the turn.
    pub fn commit_key(&self) -> Option<char> {
        match self.mode {
            TurnMode::Manual { key } => Some(key),
            _ => None,
        }
    }

    /// Commit the open turn now (any mode; `manual` depends on it). False when no speech has
    /// opened a turn: there is nothing to commit.
    pub fn commit_now(&mut self) -> bool {
        if self.open.is_none() {
            return false;
        }
        if let Some(o) = &mut self.open {
            // Words up to this moment belong to the turn, even if the VAD heard a pause before them.
            o.stopped_at_ms = None;
        }
        self.commit(CommitReason::Manual);
        true
    }

    /// The call is ending: a turn in progress ends where the audio ends.
    pub fn finish(&mut self) {
        if self.open.is_some() {
            self.commit(CommitReason::CallEnded);
        }
    }

    fn commit(&mut self, reason: CommitReason) {
        let now = self.now_ms();
        let Some(o) = self.open.take() else { return };
        let audio_end_ms = o.stopped_at_ms.unwrap_or(now);
        self.events.push_back(TurnEvent::Committed(TurnCommit {
            turn: o.turn,
            audio_start_ms: o.start_ms,
            audio_end_ms,
            reason,
            p_complete: o.p_complete,
            speculated: o.tentative_end_ms == Some(audio_end_ms),
        }));
    }

    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        self.events.pop_front()
    }

    /// Is a turn open (the caller is speaking or pausing inside a turn)?
    pub fn in_turn(&self) -> bool {
        self.open.is_some()
    }
}

/// Turn detection's settings as the turn machine's mode.
impl crate::config::TurnDetection {
    pub fn turn_mode(&self) -> TurnMode {
        match self.kind {
            crate::config::TurnDetectionKind::ServerVad => TurnMode::ServerVad,
            crate::config::TurnDetectionKind::SemanticVad => TurnMode::SemanticVad {
                threshold: self.completion_threshold,
                max_wait_ms: self.eagerness.max_wait_ms(),
            },
            // Validated to be one DTMF digit.
            crate::config::TurnDetectionKind::Manual => {
                TurnMode::Manual { key: self.commit_key.chars().next().unwrap_or('#') }
            }
        }
    }
}

#[cfg(test)]
#[path = "turns_tests.rs"]
mod tests;
