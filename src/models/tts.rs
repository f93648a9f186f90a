//! Piper TTS (VITS, `en_US-joe-medium`) on ONNX Runtime.
//!
//! The contract is the one of the reference `piper.py`:
//!
//! * phonemes come from the espeak-ng **program**, run as a separate process
//!   (`espeak-ng -q --ipa -v <voice> <text>`): espeak-ng is GPL, so it is
//!   never linked. It prints one line of IPA per clause (sentence ends and
//!   commas both end a clause) without punctuation; each clause gets a `.`
//!   and the clauses are joined with a space. Stress marks (ˈ ˌ) and length
//!   marks (ː) are kept: they are symbols of the voice.
//! * ids: `^`, `_`, then every character (Unicode scalar) of the phoneme
//!   string followed by `_` (pad), then `$`, through the voice JSON's
//!   `phoneme_id_map`. Characters the map lacks are skipped and counted.
//! * inputs `input` [1, N] i64, `input_lengths` [1] i64, `scales` [3] f32
//!   (noise_scale, length_scale, noise_w from the JSON's `inference`);
//!   output f32 audio in [-1, 1] at the JSON's sample rate (22 050 Hz),
//!   converted to i16 as `clip(x, -1, 1) * 32767` truncated.
//!
//! With noise_scale = noise_w = 0 the model is deterministic (the VITS
//! sampling noise is multiplied by them), which is what the tests compare.
//!
//! Latency: callers split a reply with [`sentences`] and synthesize sentence
//! by sentence, so the first audio is ready after the first sentence.

use super::runtime::{Provider, Runtime, RuntimeError, SessionOptions};
use crate::media::resample::{ResampleError, Resampler};
use ort::session::Session;
use ort::value::Tensor;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error("espeak-ng program `{program}` not found (install the espeak-ng package): {reason}")]
    EspeakMissing { program: PathBuf, reason: String },
    #[error("espeak-ng failed ({status}): {stderr}")]
    EspeakFailed { status: String, stderr: String },
    #[error("espeak-ng did not finish within {0:?}")]
    EspeakTimeout(Duration),
    #[error("piper voice config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error(transparent)]
    Model(#[from] RuntimeError),
    #[error("tts inference: {0}")]
    Inference(#[from] ort::Error),
    #[error(transparent)]
    Resample(#[from] ResampleError),
}

// ------------------------------------------------------------------ phonemizer

/// Runs the espeak-ng program for IPA phonemes.
#[derive(Debug, Clone)]
pub struct Phonemizer {
    program: PathBuf,
    voice: String,
    timeout: Duration,
}

impl Phonemizer {
    /// `espeak-ng` from `PATH`, 5 s timeout.
    pub fn new(voice: &str) -> Phonemizer {
        Phonemizer { program: PathBuf::from("espeak-ng"), voice: voice.to_string(), timeout: Duration::from_secs(5) }
    }
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Phonemizer {
        self.program = program.into();
        self
    }
    pub fn with_timeout(mut self, timeout: Duration) -> Phonemizer {
        self.timeout = timeout;
        self
    }
    pub fn voice(&self) -> &str {
        &self.voice
    }

    /// The IPA of `text`, one string per clause as espeak-ng prints them
    /// (trimmed, empty lines dropped, no punctuation).
    pub fn clauses(&self, text: &str) -> Result<Vec<String>, TtsError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Vec::new());
        }
        // A leading '-' would be read as an option.
        let arg = if text.starts_with('-') { format!(" {text}") } else { text.to_string() };
        let mut child = Command::new(&self.program)
            .args(["-q", "--ipa", "-v", &self.voice])
            .arg(&arg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| TtsError::EspeakMissing { program: self.program.clone(), reason: e.to_string() })?;
        let reader = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                buf
            })
        };
        let out = reader(Box::new(child.stdout.take().expect("piped")));
        let err = reader(Box::new(child.stderr.take().expect("piped")));
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(TtsError::EspeakTimeout(self.timeout));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => return Err(TtsError::EspeakFailed { status: "wait failed".into(), stderr: e.to_string() }),
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        if !status.success() {
            return Err(TtsError::EspeakFailed {
                status: status.to_string(),
                stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// The phoneme string of `text` as piper.py builds it: each clause + ".", joined by " ".
    pub fn phonemes(&self, text: &str) -> Result<String, TtsError> {
        Ok(join_clauses(&self.clauses(text)?))
    }
}

/// piper.py: `" ".join(c + "." for c in clauses)`.
pub fn join_clauses(clauses: &[String]) -> String {
    clauses.iter().map(|c| format!("{c}.")).collect::<Vec<_>>().join(" ")
}

// ------------------------------------------------------------------ sentences

const ABBREVIATIONS: &[&str] =
    &["mr", "mrs", "ms", "dr", "st", "prof", "sr", "jr", "vs", "etc", "e.g", "i.e", "approx"];

/// Split a reply into sentences (each keeps its final punctuation) so that
/// the first can be synthesized before the rest is. A sentence ends at
/// `.`, `!`, `?` (or a run of them, plus closing quotes/brackets) followed by
/// whitespace or the end, or at a line break; not after common abbreviations
/// ("Dr.", "e.g.") and not inside numbers ("3.5").
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let push = |cur: &mut String, out: &mut Vec<String>| {
        let s = cur.split_whitespace().collect::<Vec<_>>().join(" ");
        if s.chars().any(char::is_alphanumeric) {
            out.push(s);
        } else if !s.is_empty() {
            // Punctuation only: attach to the previous sentence.
            if let Some(last) = out.last_mut() {
                last.push_str(&s);
            }
        }
        cur.clear();
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            push(&mut cur, &mut out);
            i += 1;
            continue;
        }
        cur.push(c);
        i += 1;
        if matches!(c, '.' | '!' | '?' | '…') {
            while i < chars.len() && matches!(chars[i], '.' | '!' | '?' | '…' | '"' | '\'' | ')' | ']' | '”' | '’')
            {
                cur.push(chars[i]);
                i += 1;
            }
            let at_break = i >= chars.len() || chars[i].is_whitespace();
            if at_break && !(c == '.' && ends_with_abbreviation(&cur)) {
                push(&mut cur, &mut out);
            }
        }
    }
    push(&mut cur, &mut out);
    out
}

fn ends_with_abbreviation(s: &str) -> bool {
    let word = s.trim_end_matches('.').rsplit(|c: char| c.is_whitespace()).next().unwrap_or("").to_lowercase();
    ABBREVIATIONS.contains(&word.as_str())
        || (word.chars().count() == 1 && word.chars().all(char::is_alphabetic) && word != "i")
}

// ------------------------------------------------------------------ voice

#[derive(serde::Deserialize)]
struct VoiceJson {
    audio: AudioJson,
    espeak: EspeakJson,
    #[serde(default)]
    inference: InferenceJson,
    phoneme_id_map: HashMap<String, Vec<i64>>,
}
#[derive(serde::Deserialize)]
struct AudioJson {
    sample_rate: u32,
}
#[derive(serde::Deserialize)]
struct EspeakJson {
    voice: String,
}
#[derive(serde::Deserialize)]
struct InferenceJson {
    noise_scale: f32,
    length_scale: f32,
    noise_w: f32,
}
impl Default for InferenceJson {
    fn default() -> Self {
        InferenceJson { noise_scale: 0.667, length_scale: 1.0, noise_w: 0.8 }
    }
}

/// The VITS scales passed to the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scales {
    pub noise_scale: f32,
    pub length_scale: f32,
    pub noise_w: f32,
}

/// One loaded Piper voice.
pub struct PiperVoice {
    session: Session,
    provider: Provider,
    sample_rate: u32,
    id_map: HashMap<char, Vec<i64>>,
    pad: Vec<i64>,
    bos: Vec<i64>,
    eos: Vec<i64>,
    phonemizer: Phonemizer,
    scales: Scales,
    speaking_rate: f32,
    skipped: u64,
}

impl PiperVoice {
    /// Open the model and read its JSON (sample rate, phoneme map, espeak voice, scales).
    pub fn load(
        rt: &Runtime,
        onnx_path: &Path,
        json_path: &Path,
        opts: &SessionOptions,
    ) -> Result<PiperVoice, TtsError> {
        let cfg_err = |reason: String| TtsError::Config { path: json_path.to_path_buf(), reason };
        let text = std::fs::read_to_string(json_path).map_err(|e| cfg_err(e.to_string()))?;
        // JSON is YAML (the file has no escapes beyond `\"`): no extra dependency.
        let cfg: VoiceJson = serde_yaml_ng::from_str(&text).map_err(|e| cfg_err(e.to_string()))?;
        let mut id_map = HashMap::new();
        for (k, v) in &cfg.phoneme_id_map {
            let mut it = k.chars();
            if let (Some(c), None) = (it.next(), it.next()) {
                id_map.insert(c, v.clone());
            }
        }
        let get = |c: char| id_map.get(&c).cloned().ok_or_else(|| cfg_err(format!("phoneme_id_map has no `{c}`")));
        let (pad, bos, eos) = (get('_')?, get('^')?, get('$')?);
        if cfg.audio.sample_rate == 0 {
            return Err(cfg_err("audio.sample_rate is 0".into()));
        }
        let (session, provider) = rt.session("tts", onnx_path, opts)?;
        Ok(PiperVoice {
            session,
            provider,
            sample_rate: cfg.audio.sample_rate,
            id_map,
            pad,
            bos,
            eos,
            phonemizer: Phonemizer::new(&cfg.espeak.voice),
            scales: Scales {
                noise_scale: cfg.inference.noise_scale,
                length_scale: cfg.inference.length_scale,
                noise_w: cfg.inference.noise_w,
            },
            speaking_rate: 1.0,
            skipped: 0,
        })
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }
    /// The model's output rate (22 050 Hz for the medium voices).
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }
    pub fn phonemizer(&self) -> &Phonemizer {
        &self.phonemizer
    }
    /// Replace the phonemizer (another program path, timeout).
    pub fn set_phonemizer(&mut self, p: Phonemizer) {
        self.phonemizer = p;
    }
    /// The scales from the JSON (or as set); `length_scale` before the speaking rate.
    pub fn scales(&self) -> Scales {
        self.scales
    }
    pub fn set_scales(&mut self, s: Scales) {
        self.scales = s;
    }
    /// Speaking rate: 1.0 is the voice's own; 1.25 is 25 % faster. The
    /// model's length_scale is the JSON's divided by this (clamped to 0.25..4).
    pub fn set_speaking_rate(&mut self, rate: f32) {
        self.speaking_rate = if rate.is_finite() { rate.clamp(0.25, 4.0) } else { 1.0 };
    }
    pub fn speaking_rate(&self) -> f32 {
        self.speaking_rate
    }
    /// Phoneme characters not in the voice's map, skipped since load.
    pub fn skipped_phonemes(&self) -> u64 {
        self.skipped
    }

    /// Ids of a phoneme string, and how many characters were skipped.
    pub fn ids_for_phonemes(&self, phonemes: &str) -> (Vec<i64>, usize) {
        let mut ids = self.bos.clone();
        ids.extend_from_slice(&self.pad);
        let mut missing = 0;
        for c in phonemes.chars() {
            match self.id_map.get(&c) {
                Some(v) => {
                    ids.extend_from_slice(v);
                    ids.extend_from_slice(&self.pad);
                }
                None => missing += 1,
            }
        }
        ids.extend_from_slice(&self.eos);
        (ids, missing)
    }

    /// Phoneme ids of `text` (espeak-ng, then the map); unknown phonemes are
    /// skipped and counted in `skipped_phonemes`.
    pub fn phoneme_ids(&mut self, text: &str) -> Result<Vec<i64>, TtsError> {
        let phonemes = self.phonemizer.phonemes(text)?;
        let (ids, missing) = self.ids_for_phonemes(&phonemes);
        if missing > 0 {
            self.skipped += missing as u64;
            tracing::warn!(missing, phonemes = %phonemes, "tts: phonemes not in the voice's map skipped");
        }
        Ok(ids)
    }

    /// Run the model on ids: f32 audio at `sample_rate()`.
    pub fn infer(&mut self, ids: &[i64]) -> Result<Vec<f32>, TtsError> {
        self.infer_with(ids, self.scales, self.speaking_rate)
    }

    /// `infer` with this request's scales and speaking rate (the voice's own stay as they are).
    pub fn infer_with(&mut self, ids: &[i64], s: Scales, speaking_rate: f32) -> Result<Vec<f32>, TtsError> {
        if ids.len() <= self.bos.len() + self.pad.len() + self.eos.len() {
            return Ok(Vec::new());
        }
        let n = ids.len();
        let rate = if speaking_rate.is_finite() { speaking_rate.clamp(0.25, 4.0) } else { 1.0 };
        let scales = vec![s.noise_scale, s.length_scale / rate, s.noise_w];
        let outputs = self.session.run(ort::inputs![
            "input" => Tensor::from_array(([1usize, n], ids.to_vec()))?,
            "input_lengths" => Tensor::from_array(([1usize], vec![n as i64]))?,
            "scales" => Tensor::from_array(([3usize], scales))?,
        ])?;
        let (_, audio) = outputs["output"].try_extract_tensor::<f32>()?;
        Ok(audio.to_vec())
    }

    /// Synthesize `text` (one model run for all of it): i16 at `sample_rate()`.
    pub fn synthesize(&mut self, text: &str) -> Result<Vec<i16>, TtsError> {
        let ids = self.phoneme_ids(text)?;
        Ok(to_i16(&self.infer(&ids)?))
    }

    /// `synthesize`, resampled to 16 kHz with the filter delay removed
    /// (exactly `ceil(n × 16000 / rate)` samples for `n` at the model rate).
    pub fn synthesize_16k(&mut self, text: &str) -> Result<Vec<i16>, TtsError> {
        let pcm = self.synthesize(text)?;
        resample_16k(&pcm, self.sample_rate)
    }

    /// `synthesize_16k` with one request's scales and speaking rate (e.g. an agent's), leaving the
    /// voice's own settings untouched: one voice serves agents with different styles.
    pub fn synthesize_16k_with(
        &mut self,
        text: &str,
        scales: Scales,
        speaking_rate: f32,
    ) -> Result<Vec<i16>, TtsError> {
        let ids = self.phoneme_ids(text)?;
        let pcm = to_i16(&self.infer_with(&ids, scales, speaking_rate)?);
        resample_16k(&pcm, self.sample_rate)
    }
}

/// piper.py: `(np.clip(audio, -1, 1) * 32767).astype(np.int16)` (truncation).
pub fn to_i16(audio: &[f32]) -> Vec<i16> {
    audio.iter().map(|&x| (if x.is_nan() { 0.0 } else { x.clamp(-1.0, 1.0) } * 32767.0) as i16).collect()
}

/// Whole-utterance resampling to 16 kHz, the resampler's delay removed.
pub fn resample_16k(pcm: &[i16], from_hz: u32) -> Result<Vec<i16>, TtsError> {
    let mut r = Resampler::new(from_hz, 16000)?;
    let delay = r.delay();
    let mut out = Vec::with_capacity(pcm.len() * 16000 / from_hz as usize + delay + 1024);
    r.process(pcm, &mut out);
    r.flush(&mut out);
    out.drain(..delay.min(out.len()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_sentences() {
        assert_eq!(
            sentences("Hello there! Dr. Smith is in. It costs 3.5 dollars... Really?\nYes"),
            vec!["Hello there!", "Dr. Smith is in.", "It costs 3.5 dollars...", "Really?", "Yes"]
        );
        assert_eq!(sentences("  "), Vec::<String>::new());
        assert_eq!(sentences("No punctuation at all"), vec!["No punctuation at all"]);
        assert_eq!(sentences("He said \"stop.\" Then left."), vec!["He said \"stop.\"", "Then left."]);
    }

    #[test]
    fn clause_join_matches_piper_py() {
        assert_eq!(join_clauses(&["a b".into(), "c".into()]), "a b. c.");
        assert_eq!(join_clauses(&[]), "");
    }

    #[test]
    fn i16_conversion_truncates_like_numpy() {
        assert_eq!(to_i16(&[0.0, 1.5, -2.0, 0.5, -0.5, f32::NAN]), vec![0, 32767, -32767, 16383, -16383, 0]);
    }

    #[test]
    fn missing_program_is_an_error() {
        let p = Phonemizer::new("en-us").with_program("/nonexistent/espeak-ng");
        assert!(matches!(p.clauses("hello"), Err(TtsError::EspeakMissing { .. })));
        assert_eq!(p.clauses("   ").unwrap(), Vec::<String>::new());
    }
}
