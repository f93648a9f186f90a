//! Speech recognition: Whisper (tiny.en, or the multilingual base) converted
//! from the packaged CTranslate2 weights to ONNX by scripts/whisper-to-onnx.py.
//!
//! The graphs (see the script for their exact interface):
//! - `encoder.onnx`: `mel` f32[B, 80, F] → `cross_kv` f32[2L, B, F/2, D],
//!   the cross-attention keys (2l) and values (2l+1) of every decoder layer,
//!   computed once per window. F = 3000 is Whisper's 30 s window; converter
//!   version 2 also takes a window fitted to the audio (whisper.cpp's
//!   `audio_ctx`): the audio and as much silence again (at least 1 s), whole
//!   seconds, at least `window_floor_s` (see [`window_frames`]). The encoder's
//!   cost is roughly proportional to F, so a 4 s turn costs a fraction of the
//!   30 s window; the silence and the floor keep Whisper from repeating or
//!   dropping words, which it does in a window barely longer than the speech;
//! - `decoder.onnx`: `tokens` i64[B, n], `self_kv` f32[2L, B, past, D],
//!   `cross_kv` → `logits` f32[B, n, vocab], `self_kv_out` f32[2L, B, past+n, D].
//!
//! Decoding is greedy with Whisper's rules: the prompt `[SOT, (language,
//! transcribe,) notimestamps]`, `suppress_ids` at every step and
//! `suppress_ids_begin` at the first, stop at end of text. Silence is
//! recognised, not transcribed: P(no speech) at the SOT position above 0.6
//! with an average log-probability under −1 (Whisper's rule), or above 0.8
//! whatever the confidence (Whisper's "you" on silence), gives an empty
//! transcript, and a
//! decoding loop or a token budget proportional to the audio's length stops
//! runaway output. In calls the VAD's segments are what reach the model.

pub mod batch;
pub mod greedy;
pub mod offline;
pub mod spec;
pub mod tokenizer;
pub mod worker;

use super::melspec::LogMel;
use super::runtime::{Provider, Runtime, RuntimeError, SessionOptions};
use ort::session::Session;
use ort::value::{DynValue, Tensor};
use spec::WhisperSpec;
use std::path::Path;
use tokenizer::Tokenizer;

/// Samples in one Whisper window (30 s at 16 kHz).
pub const WINDOW_SAMPLES: usize = 480_000;
/// Log-mel frames of the 30 s window (the encoder has half as many positions).
pub const FRAMES: usize = 3000;
/// The error of a transcription given up on (`Whisper::transcribe_until`).
pub const CANCELLED: &str = "cancelled";
/// Silence after the audio in a fitted window: at least 1 s, and at least as long as the
/// audio. With only 1 s after it (whisper.cpp's usual `audio_ctx`), tiny.en repeated whole
/// sentences on our corpus: a 3 s Piper sentence in a 4 s window three times over, a 16 s
/// reading in a 17 s window went back to its start (tests/models_asr.rs `window_floor_sweep`).
const FIT_PAD_FRAMES: usize = 100;
/// Fitted windows are whole seconds, so ONNX Runtime sees at most 30 input shapes.
const FIT_STEP_FRAMES: usize = 100;
/// The smallest floor that kept every measured model and precision within 1 WER point of the 30 s
/// window on tests/models_asr.rs' telephone corpus (`window_floor_sweep`, docs/ARCHITECTURE.md):
/// tiny.en fp32 kept it from 2 s; tiny.en int8 and base fp32 lost 1.5–1.9 points up to 15 s (on
/// the espeak clips, ~33 % WER already). Not base: int8 was within 1 point at 20 s in one run of
/// three, and fp32 lost 1.54 points at 20 s once the corpus's Piper clips were made noise-free.
pub const MEASURED_WINDOW_FLOOR_S: f32 = 20.0;
/// `models.asr.<name>.window_floor_s` when the config says nothing: Whisper's fixed 30 s window.
/// The corpus allowed 20 s everywhere, but a turn cut off mid-word by the caller's hang-up came
/// out garbled in a 20 s window with tiny.en int8 ("Hello, hello, hello, …", and in another run
/// different wrong words) where the 30 s window heard it (tests/asr_call.rs): a fitted window is
/// opt-in per model, with the floor measured for it.
pub const DEFAULT_WINDOW_FLOOR_S: f32 = 30.0;
/// A floor measured for tiny.en fp32 alone (the shipped config's recogniser): same WER as the
/// 30 s window on the corpus, a fraction of its encoder time. The corpus allowed 6 s, but short
/// questions cut where a call cuts them ran away in a 6 s window (16 of 96 cuts of the
/// voice-to-voice bench's 8 questions, 1.5–2.3 s each; 3 of its 8 live turns, each then redone
/// in the 30 s window: 1.3–1.9 s to the transcript); none did at 8 or 10 s offline, and at 10 s
/// none live either (1 of 8 at 8 s). 10 s costs ~50 ms more encoder time than 6 s.
pub const TINY_FP32_WINDOW_FLOOR_S: f32 = 10.0;

/// Log-mel frames of the window that encodes `samples` of 16 kHz audio (at most 30 s) under
/// a floor of `floor_s` seconds: the audio plus as much silence (at least 1 s), rounded up to
/// whole seconds, at least the floor (rounded up to an even frame count), at most 3000: audio
/// over 15 s gets the 30 s window. A floor of 0, of 30 or more (or not a number) is the fixed
/// 30 s window.
pub fn window_frames(samples: usize, floor_s: f32) -> usize {
    if !(floor_s > 0.0 && floor_s < 30.0) {
        return FRAMES;
    }
    let audio = samples.div_ceil(super::melspec::HOP);
    let fitted = (audio + FIT_PAD_FRAMES.max(audio)).div_ceil(FIT_STEP_FRAMES) * FIT_STEP_FRAMES;
    let floor = ((floor_s * 100.0).ceil() as usize).next_multiple_of(2);
    fitted.max(floor).min(FRAMES)
}

pub use crate::config::Precision;

impl Precision {
    fn suffix(self) -> &'static str {
        match self {
            Precision::Fp32 => "",
            Precision::Int8 => ".int8",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        }
    }
}

/// How to decode.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Multilingual models: a language code (`en`, `de`, ...) or `auto` to detect it per window.
    pub language: String,
    pub no_speech_threshold: f32,
    pub logprob_threshold: f64,
    /// Above this P(no speech), no text whatever the confidence: Whisper says a confident
    /// "you" on silence and on chimes (P 0.86–0.95 here), while speech stays below 0.65.
    pub no_speech_certain: f32,
    /// Token budget: this many per second of audio, plus 16 (speech is ~4/s).
    pub max_tokens_per_second: f32,
    /// A decode that runs away in the fitted window is done again in the 30 s one (~4× the
    /// encoder's time). Off for partial transcripts (such a decode is an error, not words to act
    /// on): the turn's end is recognised anyway, and a partial's redo would hold a core when the
    /// end comes.
    pub redo_runaway: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            language: "en".into(),
            no_speech_threshold: 0.6,
            logprob_threshold: -1.0,
            no_speech_certain: 0.8,
            max_tokens_per_second: 12.0,
            redo_runaway: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// Trimmed; empty when the audio held no speech.
    pub text: String,
    pub tokens: Vec<i64>,
    /// The language decoded in (multilingual models), e.g. `en`.
    pub language: Option<String>,
    /// P(no speech) of the first window.
    pub no_speech_prob: f32,
    /// Mean log-probability of the chosen tokens (end of text included).
    pub avg_logprob: f64,
    pub audio_ms: u64,
    /// Wall time in the encoder and the decoder loop.
    pub encode_ms: f64,
    pub decode_ms: f64,
    /// Tokens taken from the draft (a partial transcript's) after one check, not decoded one by one.
    pub drafted: usize,
}

pub struct Whisper {
    encoder: Session,
    decoder: Session,
    spec: WhisperSpec,
    tokenizer: Tokenizer,
    mel: LogMel,
    provider: Provider,
    precision: Precision,
    window_floor_s: f32,
}

impl Whisper {
    /// Load `dir` (encoder/decoder graphs, whisper.json, vocabulary.txt); `model` names it in errors.
    pub fn load(
        rt: &Runtime,
        model: &str,
        dir: &Path,
        precision: Precision,
        opts: &SessionOptions,
    ) -> Result<Whisper, RuntimeError> {
        let bad = |reason: String| RuntimeError::Model { model: model.into(), reason };
        let spec_path = dir.join("whisper.json");
        if !spec_path.exists() {
            return Err(RuntimeError::MissingModel { model: model.into(), path: spec_path });
        }
        let spec: WhisperSpec = serde_json::from_str(
            &std::fs::read_to_string(&spec_path).map_err(|e| bad(format!("{}: {e}", spec_path.display())))?,
        )
        .map_err(|e| bad(format!("{}: {e}", spec_path.display())))?;
        if spec.n_mels != 80 {
            return Err(bad(format!("{} mel bands; this front end makes 80", spec.n_mels)));
        }
        let vocab = dir.join("vocabulary.txt");
        let tokenizer =
            Tokenizer::load(&vocab, spec.eot as usize).map_err(|e| bad(format!("{}: {e}", vocab.display())))?;
        if tokenizer.len() < spec.eot as usize {
            return Err(bad(format!(
                "{} has {} tokens, fewer than the model's text tokens",
                vocab.display(),
                tokenizer.len()
            )));
        }
        if spec.n_audio_ctx * 2 != FRAMES {
            return Err(bad(format!(
                "{} encoder positions; Whisper's 30 s window has {}",
                spec.n_audio_ctx,
                FRAMES / 2
            )));
        }
        if !spec.fitted_window() {
            tracing::warn!(
                model,
                path = %dir.display(),
                converter_version = spec.converter_version,
                "this Whisper conversion takes the 30 s window only (slower on short turns): run scripts/setup.sh to convert it again"
            );
        }
        let s = precision.suffix();
        let (encoder, provider) = rt.session(model, &dir.join(format!("encoder{s}.onnx")), opts)?;
        let (decoder, _) = rt.session(model, &dir.join(format!("decoder{s}.onnx")), opts)?;
        Ok(Whisper {
            encoder,
            decoder,
            spec,
            tokenizer,
            mel: LogMel::new(FRAMES),
            provider,
            precision,
            window_floor_s: DEFAULT_WINDOW_FLOOR_S,
        })
    }

    /// The shortest encoder window in seconds (`window_floor_s`); 0 or 30 = always the 30 s window.
    pub fn set_window_floor(&mut self, seconds: f32) {
        self.window_floor_s = seconds;
    }

    /// The floor as set (see `window_frames` for what a conversion without fitted windows does).
    pub fn window_floor(&self) -> f32 {
        self.window_floor_s
    }

    /// Log-mel frames of the window that encodes `samples` (at most 30 s) of audio: [`window_frames`]
    /// under this model's floor, or 3000 when its conversion (version 1) takes no other length.
    pub fn window_frames(&self, samples: usize) -> usize {
        if self.spec.fitted_window() {
            window_frames(samples, self.window_floor_s)
        } else {
            FRAMES
        }
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }
    pub fn precision(&self) -> Precision {
        self.precision
    }
    pub fn spec(&self) -> &WhisperSpec {
        &self.spec
    }

    /// Check a language option against the model before any call needs it.
    pub fn check_language(&self, language: &str) -> Result<(), String> {
        if !self.spec.multilingual {
            return if language == "en" {
                Ok(())
            } else {
                Err(format!("this model is English-only; language `{language}` needs a multilingual model"))
            };
        }
        if language == "auto" {
            return Ok(());
        }
        self.spec.language_token(language).map(|_| ())
    }

    /// Transcribe 16 kHz mono audio (f32 in [−1, 1]); longer than 30 s is cut into 30 s windows.
    pub fn transcribe(&mut self, audio: &[f32], opts: &DecodeOptions) -> Result<Transcript, ort::Error> {
        self.transcribe_until(audio, opts, &|| false)
    }

    /// `transcribe`, giving up with an error as soon as `stop` says so (looked at after the
    /// encoder and before each decoder step): a partial transcript overtaken by the turn's end is
    /// not worth the core the end's own transcript needs.
    pub fn transcribe_until(
        &mut self,
        audio: &[f32],
        opts: &DecodeOptions,
        stop: &dyn Fn() -> bool,
    ) -> Result<Transcript, ort::Error> {
        let mut windows = Vec::new();
        for window in audio.chunks(WINDOW_SAMPLES) {
            let frames = self.window_frames(window.len());
            let request = batch::Request { audio: window, opts, stop, draft: &[] };
            windows.push(self.windows(&[&request], frames)?.remove(0)?);
        }
        Ok(self.transcript(audio.len(), windows, opts))
    }

    /// The transcript of `samples` of audio from its windows' decodes: windows of silence (by
    /// Whisper's rule, or certain) add no text.
    fn transcript(&self, samples: usize, windows: Vec<WindowResult>, opts: &DecodeOptions) -> Transcript {
        let mut out = Transcript {
            text: String::new(),
            tokens: Vec::new(),
            language: None,
            no_speech_prob: 0.0,
            avg_logprob: 0.0,
            audio_ms: samples as u64 / 16,
            encode_ms: 0.0,
            decode_ms: 0.0,
            drafted: 0,
        };
        let mut texts = Vec::new();
        let mut logprob_sum = 0.0;
        let mut scored = 0usize;
        for (i, w) in windows.into_iter().enumerate() {
            out.encode_ms += w.encode_ms;
            out.decode_ms += w.decode_ms;
            out.drafted += w.drafted;
            if i == 0 {
                out.no_speech_prob = w.no_speech_prob;
                out.language = w.language.clone();
            }
            let avg = if w.scored > 0 { w.logprob_sum / w.scored as f64 } else { 0.0 };
            if greedy::is_silence(w.no_speech_prob, avg, opts.no_speech_threshold, opts.logprob_threshold)
                || w.no_speech_prob > opts.no_speech_certain
            {
                continue;
            }
            logprob_sum += w.logprob_sum;
            scored += w.scored;
            let text = self.tokenizer.decode(&w.tokens);
            out.tokens.extend(w.tokens);
            if !text.trim().is_empty() {
                texts.push(text.trim().to_string());
            }
        }
        out.avg_logprob = if scored > 0 { logprob_sum / scored as f64 } else { 0.0 };
        out.text = texts.join(" ");
        out
    }

    /// The encoder's cross-attention keys/values for one window of at most 30 s, encoded in
    /// `frames` log-mel frames (even, at most 3000; the audio is zero-padded or cut to fit):
    /// `cross_kv` [2L, 1, frames / 2, D] as a flat row-major vector. For tests and tools;
    /// `transcribe` encodes in `window_frames(audio.len())`.
    pub fn encode_frames(&mut self, window: &[f32], frames: usize) -> Result<Vec<f32>, ort::Error> {
        let kv = self.encode(&[window], frames)?;
        Ok(kv.try_extract_tensor::<f32>()?.1.to_vec())
    }

    /// The encoder on a batch of windows, each in `frames` log-mel frames: `cross_kv` [2L, B, frames / 2, D].
    fn encode(&mut self, windows: &[&[f32]], frames: usize) -> Result<DynValue, ort::Error> {
        if frames == 0 || frames % 2 != 0 || frames > FRAMES || (frames != FRAMES && !self.spec.fitted_window()) {
            return Err(ort::Error::new(format!(
                "cannot encode a window of {frames} log-mel frames with this conversion"
            )));
        }
        let mut feats = Vec::with_capacity(windows.len() * 80 * frames);
        for w in windows {
            feats.extend(self.mel.compute_frames(w, false, frames));
        }
        let mut outputs =
            self.encoder.run(ort::inputs!["mel" => Tensor::from_array(([windows.len(), 80, frames], feats))?])?;
        let kv = outputs.remove("cross_kv").ok_or_else(|| ort::Error::new("the encoder has no `cross_kv` output"))?;
        let shape = kv.shape().to_vec();
        let want = [2 * self.spec.n_layers as i64, windows.len() as i64, (frames / 2) as i64, self.spec.d_model as i64];
        if shape != want {
            return Err(ort::Error::new(format!("encoder `cross_kv` has shape {shape:?}, expected {want:?}")));
        }
        Ok(kv)
    }

    /// One decoder call on `batch` rows of `tokens.len() / batch` new tokens each: logits of
    /// every new position (row-major [batch][n][vocab]) and the grown cache.
    fn step(
        &mut self,
        tokens: &[i64],
        batch: usize,
        self_kv: &DynValue,
        cross_kv: &DynValue,
    ) -> Result<(Vec<f32>, DynValue), ort::Error> {
        let mut outputs = self.decoder.run(ort::inputs![
            "tokens" => Tensor::from_array(([batch, tokens.len() / batch], tokens.to_vec()))?,
            "self_kv" => self_kv,
            "cross_kv" => cross_kv,
        ])?;
        let (_, logits) = outputs["logits"].try_extract_tensor::<f32>()?;
        if logits.len() != tokens.len() * self.spec.vocab_size {
            return Err(ort::Error::new(format!(
                "decoder logits hold {} values, expected {}×{}",
                logits.len(),
                tokens.len(),
                self.spec.vocab_size
            )));
        }
        let logits = logits.to_vec();
        let kv =
            outputs.remove("self_kv_out").ok_or_else(|| ort::Error::new("the decoder has no `self_kv_out` output"))?;
        Ok((logits, kv))
    }

    fn empty_cache(&self, batch: usize) -> Result<DynValue, ort::Error> {
        Ok(Tensor::from_array(([2 * self.spec.n_layers, batch, 0usize, self.spec.d_model], Vec::<f32>::new()))?
            .into_dyn())
    }

    /// The language of each row from the logits after `[SOT]`.
    fn detect_languages(&mut self, batch: usize, cross_kv: &DynValue) -> Result<Vec<(String, i64)>, ort::Error> {
        let empty = self.empty_cache(batch)?;
        let (logits, _) = self.step(&vec![self.spec.sot; batch], batch, &empty, cross_kv)?;
        let vocab = self.spec.vocab_size;
        logits
            .chunks(vocab)
            .map(|row| {
                self.spec
                    .lang_ids
                    .iter()
                    .max_by(|a, b| row[*a.1 as usize].total_cmp(&row[*b.1 as usize]))
                    .map(|(c, &id)| (c.clone(), id))
                    .ok_or_else(|| ort::Error::new("the model lists no languages"))
            })
            .collect()
    }
}

struct WindowResult {
    /// Stopped by the loop guard or the token budget, not by end of text.
    runaway: bool,
    tokens: Vec<i64>,
    language: Option<String>,
    no_speech_prob: f32,
    logprob_sum: f64,
    scored: usize,
    encode_ms: f64,
    decode_ms: f64,
    /// Tokens of the draft confirmed (see `batch`).
    drafted: usize,
}

impl crate::config::AsrModelConfig {
    /// The encoder window floor in seconds: as configured, or the measured default.
    pub fn window_floor_s(&self) -> f32 {
        self.window_floor_s.unwrap_or(DEFAULT_WINDOW_FLOOR_S)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unset_window_floor_is_the_measured_default() {
        let cfg = |yaml: &str| -> crate::config::AsrModelConfig { serde_yaml_ng::from_str(yaml).unwrap() };
        assert_eq!(cfg("path: w").window_floor_s(), super::DEFAULT_WINDOW_FLOOR_S);
        assert_eq!(cfg("path: w\nwindow_floor_s: 10").window_floor_s(), 10.0);
    }

    use super::*;

    #[test]
    fn the_window_fits_the_audio_above_the_floor() {
        let s = |secs: f64| (secs * 16000.0) as usize;
        // 0, 30 and more, or not a number: the fixed 30 s window.
        for floor in [0.0, 30.0, 45.0, f32::NAN] {
            assert_eq!(window_frames(s(3.0), floor), FRAMES, "{floor}");
        }
        // The audio + as much silence (at least 1 s), whole seconds.
        assert_eq!(window_frames(s(3.0), 1.0), 600);
        assert_eq!(window_frames(s(3.2), 1.0), 700);
        assert_eq!(window_frames(s(0.4), 1.0), 200);
        assert_eq!(window_frames(0, 1.0), 100);
        // Never under the floor (an even frame count), never over 30 s.
        assert_eq!(window_frames(s(3.0), 8.0), 800);
        assert_eq!(window_frames(s(3.0), 2.5), 600);
        assert_eq!(window_frames(s(1.0), 5.555), 556);
        assert_eq!(window_frames(s(14.9), 1.0), FRAMES);
        assert_eq!(window_frames(s(16.0), 1.0), FRAMES);
        assert_eq!(window_frames(s(30.0), 10.0), FRAMES);
        // Always even (the encoder's stride-2 convolution halves it), and room for the STFT's
        // reflect padding after the audio (so the features are the 30 s window's head).
        for n in (0..WINDOW_SAMPLES).step_by(7919) {
            for floor in [1.0, 2.0, 4.0, 6.0, 10.0] {
                let f = window_frames(n, floor);
                assert!(f % 2 == 0 && f <= FRAMES && f * 160 >= n + 200 || f == FRAMES, "{n} {floor}: {f}");
            }
        }
    }
}
