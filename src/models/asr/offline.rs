//! A recording transcribed the way a call transcribes its caller: Silero VAD
//! and the `server_vad` segmenter find the turns, each turn (prefix padding
//! before, a short tail after, as `call::transcriber` cuts it) goes to
//! Whisper. Used by `switchboard transcribe` and by the tests that check that
//! silence and noise give no words.

use super::{DecodeOptions, Transcript, Whisper};
use crate::models::vad::{self, Segmenter, SegmenterConfig, SileroVad, StreamState, VadEvent};

/// What the call's transcriber keeps after the VAD's speech end (see `call::transcriber`).
pub const TAIL_MS: u64 = 200;

#[derive(Debug, Clone)]
pub struct TurnText {
    pub start_ms: u64,
    pub end_ms: u64,
    pub transcript: Transcript,
}

/// The speech turns of 16 kHz audio, as (start, end) sample indices.
pub fn turns(vad: &mut SileroVad, cfg: SegmenterConfig, audio: &[f32]) -> Result<Vec<(usize, usize)>, ort::Error> {
    let (n, _) = vad::chunk_len(16000).expect("16 kHz is supported");
    let chunk_ms = (n * 1000 / 16000) as u64;
    let mut st = StreamState::new(16000).expect("16 kHz is supported");
    let mut seg = Segmenter::new(cfg);
    let mut out = Vec::new();
    let mut open: Option<usize> = None;
    for (i, chunk) in audio.chunks_exact(n).enumerate() {
        let p = vad.infer(&mut [&mut st], &[chunk])?[0];
        match seg.push(p, i as u64 * chunk_ms, (i as u64 + 1) * chunk_ms) {
            Some(VadEvent::SpeechStarted { audio_start_ms }) => open = Some(audio_start_ms as usize * 16),
            Some(VadEvent::SpeechStopped { audio_end_ms }) => {
                if let Some(s) = open.take() {
                    out.push((s, ((audio_end_ms + TAIL_MS) as usize * 16).min(audio.len())));
                }
            }
            None => {}
        }
    }
    // Speech running at the end of the recording ends with it.
    if let Some(s) = open {
        out.push((s, audio.len()));
    }
    Ok(out)
}

/// Every turn of `audio` (16 kHz), transcribed.
pub fn transcribe_turns(
    vad: &mut SileroVad,
    cfg: SegmenterConfig,
    whisper: &mut Whisper,
    opts: &DecodeOptions,
    audio: &[f32],
) -> Result<Vec<TurnText>, ort::Error> {
    turns(vad, cfg, audio)?
        .into_iter()
        .map(|(s, e)| {
            Ok(TurnText {
                start_ms: s as u64 / 16,
                end_ms: e as u64 / 16,
                transcript: whisper.transcribe(&audio[s..e], opts)?,
            })
        })
        .collect()
}
