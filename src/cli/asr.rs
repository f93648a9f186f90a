//! `switchboard transcribe` and `switchboard bench-asr`: the recogniser on files.

use std::path::{Path, PathBuf};
use std::time::Instant;
use switchboard::config::{AsrModelConfig, LoadedConfig};
use switchboard::models::asr::{offline, DecodeOptions, Precision, Whisper};
use switchboard::models::runtime::{self, Runtime};

fn pick<'a>(loaded: &'a LoadedConfig, model: Option<&str>) -> Result<(&'a str, &'a AsrModelConfig), String> {
    let asr = loaded
        .config
        .models
        .as_ref()
        .map(|m| &m.asr)
        .filter(|a| !a.is_empty())
        .ok_or("the config has no models.asr")?;
    match model {
        Some(m) => asr.get_key_value(m).map(|(k, v)| (k.as_str(), v)).ok_or_else(|| {
            format!("models.asr has no `{m}` (it has: {})", asr.keys().cloned().collect::<Vec<_>>().join(", "))
        }),
        None => Ok(asr.iter().next().map(|(k, v)| (k.as_str(), v)).expect("not empty")),
    }
}

fn runtime(loaded: &LoadedConfig) -> Result<&'static Runtime, String> {
    let m = loaded.config.models.as_ref().ok_or("the config has no models section")?;
    runtime::init(&loaded.resolve(&m.runtime.library)).map_err(|e| e.to_string())
}

/// A WAV file as 16 kHz mono f32.
fn load(path: &Path) -> Result<Vec<f32>, String> {
    let pcm = switchboard::agent::wav::load_pcm16(path, 16000).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(pcm.iter().map(|&s| s as f32 / 32768.0).collect())
}

pub fn transcribe(
    loaded: &LoadedConfig,
    model: Option<&str>,
    language: Option<&str>,
    vad: bool,
    files: &[PathBuf],
) -> Result<(), String> {
    let rt = runtime(loaded)?;
    let (name, a) = pick(loaded, model)?;
    let mut whisper = Whisper::load(rt, name, &loaded.resolve(&a.path), a.precision, &a.session_options())
        .map_err(|e| e.to_string())?;
    whisper.set_window_floor(a.window_floor_s());
    let lang = language.unwrap_or(&a.language).to_string();
    whisper.check_language(&lang)?;
    let opts = DecodeOptions { language: lang, ..Default::default() };
    let mut silero = if vad {
        let m = loaded
            .config
            .models
            .as_ref()
            .and_then(|m| m.vad.as_ref())
            .ok_or("turns need models.vad (or use --no-vad)")?;
        Some(
            switchboard::models::vad::SileroVad::load(rt, &loaded.resolve(&m.path), &m.session_options())
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    for f in files {
        let audio = load(f)?;
        match &mut silero {
            Some(v) => {
                let cfg = switchboard::models::vad::SegmenterConfig::default();
                let turns =
                    offline::transcribe_turns(v, cfg, &mut whisper, &opts, &audio).map_err(|e| e.to_string())?;
                println!("{}: {} turn(s)", f.display(), turns.len());
                for t in turns {
                    println!(
                        "  [{:>7.2} – {:>7.2}] {}",
                        t.start_ms as f64 / 1000.0,
                        t.end_ms as f64 / 1000.0,
                        t.transcript.text
                    );
                }
            }
            None => {
                let t = whisper.transcribe(&audio, &opts).map_err(|e| e.to_string())?;
                println!("{}: {}", f.display(), t.text);
            }
        }
    }
    Ok(())
}

pub fn bench(
    loaded: &LoadedConfig,
    model: Option<&str>,
    threads: &[usize],
    precisions: &[String],
    floors: &[f32],
    runs: usize,
    files: &[PathBuf],
) -> Result<(), String> {
    if files.is_empty() {
        return Err("give WAV files to transcribe".into());
    }
    let rt = runtime(loaded)?;
    let (name, a) = pick(loaded, model)?;
    if let Some(f) = floors.iter().find(|f| !(0.0..=30.0).contains(*f)) {
        return Err(format!("window floor {f} is out of range 0..=30 (seconds)"));
    }
    let clips: Vec<(String, Vec<f32>)> =
        files.iter().map(|f| Ok((f.display().to_string(), load(f)?))).collect::<Result<_, String>>()?;
    let opts = DecodeOptions { language: a.language.clone(), ..Default::default() };
    println!(
        "model {name} ({}), onnxruntime {}, best of {runs} run(s)",
        loaded.resolve(&a.path).display(),
        rt.version()
    );
    println!(
        "{:<9} {:>7} {:>7} {:>8} {:>9} {:>10} {:>10} {:>7}  file / text",
        "precision", "threads", "floor s", "window s", "audio s", "encode ms", "decode ms", "RTF"
    );
    for p in precisions {
        let precision = match p.as_str() {
            "fp32" => Precision::Fp32,
            "int8" => Precision::Int8,
            other => return Err(format!("unknown precision `{other}` (fp32, int8)")),
        };
        for &n in threads {
            let mut o = a.session_options();
            o.intra_threads = n;
            let mut w = Whisper::load(rt, name, &loaded.resolve(&a.path), precision, &o).map_err(|e| e.to_string())?;
            let floors = if floors.is_empty() { vec![a.window_floor_s()] } else { floors.to_vec() };
            for &floor in &floors {
                w.set_window_floor(floor);
                w.transcribe(&[0.0; 16000], &opts).map_err(|e| e.to_string())?; // warm-up
                let (mut audio_s, mut total_s, mut encode) = (0.0, 0.0, Vec::new());
                for (label, clip) in &clips {
                    let mut best: Option<(f64, f64, f64, String)> = None;
                    for _ in 0..runs.max(1) {
                        let t0 = Instant::now();
                        let t = w.transcribe(clip, &opts).map_err(|e| e.to_string())?;
                        let wall = t0.elapsed().as_secs_f64();
                        if best.as_ref().is_none_or(|b| wall < b.0) {
                            best = Some((wall, t.encode_ms, t.decode_ms, t.text));
                        }
                    }
                    let (wall, enc, dec, text) = best.expect("at least one run");
                    let secs = clip.len() as f64 / 16000.0;
                    // The first window's length (a clip over 30 s has more windows).
                    let window_s =
                        w.window_frames(clip.len().min(switchboard::models::asr::WINDOW_SAMPLES)) as f64 / 100.0;
                    audio_s += secs;
                    total_s += wall;
                    encode.push(enc);
                    println!(
                        "{:<9} {:>7} {:>7} {:>8.0} {:>9.2} {:>10.0} {:>10.0} {:>7.3}  {label}: {text}",
                        precision.label(),
                        n,
                        floor,
                        window_s,
                        secs,
                        enc,
                        dec,
                        wall / secs
                    );
                }
                encode.sort_by(f64::total_cmp);
                println!(
                    "{:<9} {:>7} {:>7} {:>8} {:>9.2} {:>10.0} {:>10} {:>7.3}  (all files: encode ms p50; end-of-turn → transcript = the wall time of the turn)",
                    precision.label(),
                    n,
                    floor,
                    "",
                    audio_s,
                    encode[encode.len() / 2],
                    "",
                    total_s / audio_s
                );
            }
        }
    }
    Ok(())
}
