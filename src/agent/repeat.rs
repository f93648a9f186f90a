//! The repeat line-test agent: greeting, then every caller turn spoken back
//! as "You said: …" — the whole loop of a voice agent minus the language
//! model (VAD → end of turn → Whisper → Piper, sentence by sentence → pacer).

use super::{Agent, AgentOutput, PlayoutState};
use crate::agent::TurnTranscript;
use crate::models::tts_worker::{Speech, SpeechChunk, Style, TtsWorker};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

pub struct RepeatAgent {
    greeting: Option<Arc<Vec<i16>>>,
    greeting_queued: bool,
    tts: TtsWorker,
    style: Style,
    /// Replies waiting for the voice, oldest first (bounded).
    replies: VecDeque<String>,
    speaking: Option<Speech>,
}

/// Replies waiting beyond this are dropped (a caller talking over a slow voice).
const MAX_WAITING: usize = 4;

impl RepeatAgent {
    pub fn new(greeting: Option<Arc<Vec<i16>>>, tts: TtsWorker, style: Style) -> RepeatAgent {
        RepeatAgent { greeting, greeting_queued: false, tts, style, replies: VecDeque::new(), speaking: None }
    }
}

impl Agent for RepeatAgent {
    fn start(&mut self, _sample_rate: u32, _now: Instant) {}

    fn on_caller_audio(&mut self, _pcm: &[i16], _playout: PlayoutState, _now: Instant) {}

    fn on_interrupt(&mut self, _played_samples: u64, _now: Instant) {
        // The queued audio is gone; the sentences still being synthesised and the replies waiting
        // for the voice go too, or they would play after the caller took the turn.
        if let Some(s) = self.speaking.take() {
            s.cancel();
        }
        self.replies.clear();
    }

    fn on_transcript(&mut self, t: &TurnTranscript, _now: Instant) {
        if t.partial || t.text.trim().is_empty() {
            return;
        }
        if self.replies.len() < MAX_WAITING {
            self.replies.push_back(format!("You said: {}", t.text.trim()));
        } else {
            tracing::warn!(turn = t.turn, "reply dropped: {MAX_WAITING} already waiting for the voice");
        }
    }

    fn poll_output(&mut self, _playout: PlayoutState, _now: Instant) -> Option<AgentOutput> {
        if !self.greeting_queued {
            self.greeting_queued = true;
            if let Some(g) = &self.greeting {
                return Some(AgentOutput::Audio(g.to_vec()));
            }
        }
        loop {
            if let Some(s) = &mut self.speaking {
                match s.poll() {
                    Some(SpeechChunk::Audio { pcm, sentence, synth_ms, .. }) => {
                        tracing::debug!(
                            sentence,
                            synth_ms = format!("{synth_ms:.0}"),
                            samples = pcm.len(),
                            "reply sentence synthesised"
                        );
                        return Some(AgentOutput::Audio(pcm));
                    }
                    Some(SpeechChunk::Done { .. }) => self.speaking = None,
                    Some(SpeechChunk::Failed { reason, .. }) => {
                        tracing::warn!(%reason, "reply synthesis failed");
                        self.speaking = None;
                    }
                    None => return None,
                }
            }
            let text = self.replies.pop_front()?;
            match self.tts.speak(&text, self.style) {
                Some(s) => self.speaking = Some(s),
                None => tracing::warn!("reply dropped: the voice's queue is full"),
            }
        }
    }
}
