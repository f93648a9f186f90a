//! What the call tells the agent, in the agent's own terms: the caller's words and how a transfer
//! it asked for is going. The call maps its recogniser's and its SIP dialog's events to these, so
//! an agent is built and tested without either.

/// A transcript of (part of) one caller turn.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnTranscript {
    /// Turns are numbered from 0 in the call.
    pub turn: u64,
    /// The audio transcribed, in the caller stream's time.
    pub audio_start_ms: u64,
    pub audio_end_ms: u64,
    /// A partial (the turn is still going on); the final one follows.
    pub partial: bool,
    /// Empty when the recogniser heard no speech.
    pub text: String,
    pub language: Option<String>,
    pub no_speech_prob: f32,
    /// From submitting the audio to having the text (queueing included).
    pub latency_ms: f64,
}

/// How a blind transfer the agent asked for is going, as the call reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferProgress {
    /// The peer accepted it: it is calling the target.
    Accepted,
    /// The target is ringing or trying (a provisional status).
    Trying(u16),
    /// The target answered; the call ends as transferred.
    Succeeded,
    /// No transfer (refused, unanswered, or the target failed); the call goes on.
    Failed { code: u16, reason: String },
}
