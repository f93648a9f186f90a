//! One call's speech recognition, sans-IO: the caller's audio (16 kHz, the
//! same stream the VAD hears, so the VAD's millisecond times index it) is kept
//! on a short tape; a turn's first speech start opens it, its commit (see
//! `call::turns`) cuts it out and submits it to the recogniser. While the caller speaks, a partial
//! of the turn so far is submitted every `partial_interval` when a recogniser
//! is idle. A turn longer than 30 s (one Whisper window) is submitted in
//! pieces, so the tape never holds more than ~30 s plus the padding.
//!
//! A `Tentative` end (the caller paused; see `call::turns`) submits the turn so
//! far at once, without waiting for the commit: its answer comes out as a
//! `Tentative` transcript for the agent's speculative reply, never for the
//! record. When the turn is committed at that same end, that answer (already
//! in, or still on its way) is the turn's final transcript — the audio is the
//! same, so it is not recognised twice; when the caller goes on, it is dropped.
//!
//! Each answered partial's tokens are kept as the turn's draft, given with its
//! next submission (partial, tentative or final): Whisper checks them in one
//! decoder step, so at the end of a turn only its tail is decoded token by
//! token (`models::asr::batch`).
//!
//! The recogniser is behind a trait so tests drive turns in virtual time with
//! a scripted one; in calls it is the shared worker pool (`AsrClient`).

use super::turns::TurnEvent;
pub use crate::agent::TurnTranscript;
use crate::models::asr::worker::{AsrClient, AsrResult};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// What the transcriber needs from a recogniser.
pub trait Recognizer: Send {
    /// Queue audio, with a draft of its tokens (a partial transcript's of the same turn, or
    /// none); `None` when refused (queue full, or no idle worker for a partial).
    fn submit(&mut self, audio: Vec<f32>, partial: bool, draft: Vec<i64>) -> Option<u64>;
    fn poll(&mut self) -> Option<AsrResult>;
    /// The answer to `seq` is not wanted: a recogniser may skip the work.
    fn cancel(&mut self, _seq: u64) {}
}

impl Recognizer for AsrClient {
    fn submit(&mut self, audio: Vec<f32>, partial: bool, draft: Vec<i64>) -> Option<u64> {
        AsrClient::submit_drafted(self, audio, partial, draft)
    }
    fn poll(&mut self) -> Option<AsrResult> {
        AsrClient::poll(self)
    }
    fn cancel(&mut self, seq: u64) {
        AsrClient::cancel(self, seq)
    }
}

const RATE: u64 = 16;
/// Audio kept after the VAD's speech end: the stop time is where speech fell below
/// threshold, and a word's tail is often softer than that.
const TAIL_MS: u64 = crate::models::asr::offline::TAIL_MS;
/// Longest piece given to the recogniser (one Whisper window).
const MAX_PIECE_MS: u64 = 30_000;
/// Partials start once the turn has this much audio (shorter ones say little).
const MIN_PARTIAL_MS: u64 = 1000;

#[derive(Debug, Clone, PartialEq)]
pub enum TranscriberEvent {
    Transcript(TurnTranscript),
    /// The words up to a tentative end of the turn (the caller paused): for a speculative reply
    /// only. The final `Transcript` follows if the turn is committed there.
    Tentative(TurnTranscript),
    /// A turn (or piece) that will have no transcript, and why.
    Failed {
        turn: u64,
        audio_start_ms: u64,
        audio_end_ms: u64,
        reason: String,
    },
}

struct OpenTurn {
    id: u64,
    /// Sample index where the unsubmitted part of the turn begins.
    start: u64,
    last_partial: Option<Instant>,
    /// The tokens of the latest partial transcript of the audio from `start`.
    draft: Vec<i64>,
    /// The current tentative end: its audio time, the recogniser's number for it (None: refused),
    /// and its answer once in.
    tentative: Option<Tentative>,
}

struct Tentative {
    audio_end_ms: u64,
    seq: Option<u64>,
    answer: Option<TurnTranscript>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Final,
    Partial,
    Tentative,
}

struct Submitted {
    turn: u64,
    start_ms: u64,
    end_ms: u64,
    kind: Kind,
}

pub struct Transcriber {
    rec: Box<dyn Recognizer>,
    /// Caller audio; `tape[0]` is sample number `base` of the stream.
    tape: VecDeque<f32>,
    base: u64,
    /// Samples kept before a turn opens (the VAD's prefix padding must still be there).
    keep: usize,
    turn: Option<OpenTurn>,
    partial_interval: Option<Duration>,
    inflight: HashMap<u64, Submitted>,
    /// A partial is waiting for its answer: never two at once per call.
    partial_inflight: bool,
    events: VecDeque<TranscriberEvent>,
}

impl Transcriber {
    /// `prefix_padding_ms`: the VAD's (its speech starts lie this far before the speech).
    pub fn new(rec: Box<dyn Recognizer>, prefix_padding_ms: u64, partial_interval: Option<Duration>) -> Transcriber {
        Transcriber {
            rec,
            tape: VecDeque::new(),
            base: 0,
            keep: ((prefix_padding_ms + 1000) * RATE) as usize,
            turn: None,
            partial_interval,
            inflight: HashMap::new(),
            partial_inflight: false,
            events: VecDeque::new(),
        }
    }

    fn end(&self) -> u64 {
        self.base + self.tape.len() as u64
    }

    /// Caller audio, in order (the same samples the VAD is given).
    pub fn push_audio(&mut self, pcm: &[i16]) {
        self.tape.extend(pcm.iter().map(|&s| s as f32 / 32768.0));
        if let Some(t) = &self.turn {
            if self.end() - t.start >= MAX_PIECE_MS * RATE {
                let (start, end) = (t.start, self.end());
                let (id, draft) = (t.id, t.draft.clone());
                self.submit(id, start, end, Kind::Final, draft);
                // What was tentative covered the piece just submitted whole: it is void.
                let void = self.turn.as_mut().and_then(|t| {
                    t.start = end;
                    t.draft.clear();
                    t.tentative.take()
                });
                self.void(void);
            }
        }
        // Drop what no turn can need any more.
        let keep_from = match &self.turn {
            Some(t) => t.start,
            None => self.end().saturating_sub(self.keep as u64),
        };
        if keep_from > self.base {
            let n = ((keep_from - self.base) as usize).min(self.tape.len());
            self.tape.drain(..n);
            self.base += n as u64;
        }
    }

    /// The turn detector's events, in order: a turn opens at its first speech start and is
    /// cut when it is committed (one turn may hold several pauses with semantic_vad).
    pub fn on_turn(&mut self, ev: &TurnEvent, now: Instant) {
        match *ev {
            TurnEvent::SpeechStarted { audio_start_ms, new_turn: true, turn } => {
                let start = (audio_start_ms * RATE).clamp(self.base, self.end());
                self.turn =
                    Some(OpenTurn { id: turn, start, last_partial: Some(now), draft: Vec::new(), tentative: None });
            }
            TurnEvent::Tentative { turn, audio_end_ms, .. } => {
                let Some(t) = &self.turn else { return };
                if t.id != turn {
                    return;
                }
                let (id, start, draft) = (t.id, t.start, t.draft.clone());
                let end = self.cut_end(audio_end_ms, start);
                self.drop_partial();
                let seq = self.submit(id, start, end, Kind::Tentative, draft);
                let void =
                    self.turn.as_mut().and_then(|t| t.tentative.replace(Tentative { audio_end_ms, seq, answer: None }));
                self.void(void);
            }
            TurnEvent::Resumed { turn } => {
                let void = self.turn.as_mut().filter(|t| t.id == turn).and_then(|t| t.tentative.take());
                self.void(void);
            }
            TurnEvent::Committed(c) => {
                if let Some(t) = self.turn.take() {
                    self.drop_partial();
                    let end = self.cut_end(c.audio_end_ms, t.start);
                    match t.tentative {
                        // The same audio was submitted at the pause: its answer is the final one.
                        Some(tent) if c.speculated && tent.audio_end_ms == c.audio_end_ms && tent.seq.is_some() => {
                            match tent.answer {
                                Some(mut tr) => {
                                    tr.partial = false;
                                    self.events.push_back(TranscriberEvent::Transcript(tr));
                                }
                                None => {
                                    if let Some(s) = tent.seq.and_then(|seq| self.inflight.get_mut(&seq)) {
                                        s.kind = Kind::Final;
                                    }
                                }
                            }
                        }
                        other => {
                            self.void(other);
                            self.submit(t.id, t.start, end, Kind::Final, t.draft);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// The turn's end is being recognised: a partial still computing says less, and would hold a
    /// core the end's transcript (and the reply waiting on it) needs.
    fn drop_partial(&mut self) {
        let partials: Vec<u64> =
            self.inflight.iter().filter(|(_, s)| s.kind == Kind::Partial).map(|(&seq, _)| seq).collect();
        for seq in partials {
            self.inflight.remove(&seq);
            self.rec.cancel(seq);
        }
        self.partial_inflight = false;
    }

    /// A tentative transcript no longer current: its job, if not answered yet, is not wanted.
    fn void(&mut self, tentative: Option<Tentative>) {
        if let Some(seq) = tentative.filter(|t| t.answer.is_none()).and_then(|t| t.seq) {
            self.inflight.remove(&seq);
            self.rec.cancel(seq);
        }
    }

    /// The sample where a turn ending (VAD) at `audio_end_ms` is cut: its tail kept, within the tape.
    fn cut_end(&self, audio_end_ms: u64, start: u64) -> u64 {
        ((audio_end_ms + TAIL_MS) * RATE).min(self.end()).max(start)
    }

    fn submit(&mut self, turn: u64, start: u64, end: u64, kind: Kind, draft: Vec<i64>) -> Option<u64> {
        let lo = (start - self.base) as usize;
        let hi = ((end - self.base) as usize).min(self.tape.len());
        let audio: Vec<f32> = self.tape.range(lo..hi).copied().collect();
        let (start_ms, end_ms) = (start / RATE, end / RATE);
        // A tentative cut is as urgent as a final one: the reply waits on it.
        let partial = kind == Kind::Partial;
        match self.rec.submit(audio, partial, draft) {
            Some(seq) => {
                self.partial_inflight |= partial;
                self.inflight.insert(seq, Submitted { turn, start_ms, end_ms, kind });
                Some(seq)
            }
            // A skipped partial or tentative cut costs nothing: the final one comes.
            None if kind != Kind::Final => None,
            None => {
                self.events.push_back(TranscriberEvent::Failed {
                    turn,
                    audio_start_ms: start_ms,
                    audio_end_ms: end_ms,
                    reason: "the recogniser's queue is full".into(),
                });
                None
            }
        }
    }

    /// Once per packet time: partials, and the recogniser's answers.
    pub fn tick(&mut self, now: Instant) {
        if let (Some(interval), Some(t)) = (self.partial_interval, &self.turn) {
            // Not while the caller pauses: the pause's own transcript is on its way.
            let due = t.tentative.is_none() && t.last_partial.is_none_or(|at| now.duration_since(at) >= interval);
            if due && !self.partial_inflight && self.end() - t.start >= MIN_PARTIAL_MS * RATE {
                let (id, start, end, draft) = (t.id, t.start, self.end(), t.draft.clone());
                if let Some(t) = &mut self.turn {
                    t.last_partial = Some(now);
                }
                self.submit(id, start, end, Kind::Partial, draft);
            }
        }
        while let Some(r) = self.rec.poll() {
            let Some(s) = self.inflight.remove(&r.seq) else { continue };
            match s.kind {
                Kind::Partial => {
                    self.partial_inflight = false;
                    // A partial that arrives after its turn ended says less than the final one; a
                    // failed one is no failed turn (the final one comes).
                    if self.turn.as_ref().is_none_or(|t| t.id != s.turn) {
                        continue;
                    }
                    match &r.transcript {
                        Err(e) => {
                            tracing::debug!(turn = s.turn, error = %e, "no partial transcript");
                            continue;
                        }
                        // The draft of the turn's next submission, if it is of the same audio's start.
                        Ok(t) => {
                            if let Some(open) = self.turn.as_mut().filter(|o| o.start / RATE == s.start_ms) {
                                open.draft = t.tokens.clone();
                            }
                        }
                    }
                }
                Kind::Tentative => {
                    // Only the current tentative cut of the open turn counts; others were dropped.
                    let Some(tent) =
                        self.turn.as_mut().and_then(|t| t.tentative.as_mut()).filter(|x| x.seq == Some(r.seq))
                    else {
                        continue;
                    };
                    match r.transcript {
                        Ok(t) => {
                            let tr = TurnTranscript {
                                turn: s.turn,
                                audio_start_ms: s.start_ms,
                                audio_end_ms: s.end_ms,
                                partial: true,
                                text: t.text,
                                language: t.language,
                                no_speech_prob: t.no_speech_prob,
                                latency_ms: r.latency_ms,
                            };
                            tent.answer = Some(tr.clone());
                            self.events.push_back(TranscriberEvent::Tentative(tr));
                        }
                        // The commit recognises the turn again (as if nothing had been tried).
                        Err(_) => tent.seq = None,
                    }
                    continue;
                }
                Kind::Final => {}
            }
            self.events.push_back(match r.transcript {
                Ok(t) => TranscriberEvent::Transcript(TurnTranscript {
                    turn: s.turn,
                    audio_start_ms: s.start_ms,
                    audio_end_ms: s.end_ms,
                    partial: s.kind == Kind::Partial,
                    text: t.text,
                    language: t.language,
                    no_speech_prob: t.no_speech_prob,
                    latency_ms: r.latency_ms,
                }),
                Err(reason) => TranscriberEvent::Failed {
                    turn: s.turn,
                    audio_start_ms: s.start_ms,
                    audio_end_ms: s.end_ms,
                    reason,
                },
            });
        }
    }

    /// Final transcripts submitted and not yet answered.
    pub fn pending_finals(&self) -> usize {
        self.inflight.values().filter(|s| s.kind == Kind::Final).count()
    }

    pub fn poll_event(&mut self) -> Option<TranscriberEvent> {
        self.events.pop_front()
    }

    /// Samples held (for tests: the tape stays bounded).
    pub fn held_samples(&self) -> usize {
        self.tape.len()
    }
}

#[cfg(test)]
#[path = "transcriber_tests.rs"]
mod tests;
