//! Speech recognition on ONNX Runtime (Whisper tiny.en and base, converted
//! from the packaged CTranslate2 weights by scripts/whisper-to-onnx.py),
//! against the CTranslate2 float32 runtime on the same clips.
//!
//! The clips are telephone band, as a call delivers them: each source is
//! band-limited to 300–3400 Hz, taken to 8 kHz G.711 μ-law and back up to
//! 16 kHz (sox, no dither), then both recognisers get the identical 16 kHz
//! file. Sources: espeak-ng sentences, Piper sentences (our own voice) and
//! the real human recordings of moonshine-voice 0.1.5. The reference words of
//! the human clips are the published texts where the clip reads one (Beckett's
//! Worstward Ho, Dickens); for the two dialogue clips whose script we do not
//! have, the CTranslate2 transcript of the clean 16 kHz recording (which
//! makes the comparison stricter for our side, never looser).
//!
//! Clips longer than one 30 s Whisper window are split at their quietest
//! moment between 12 and 28 s, and the pieces' transcripts joined.
//!
//! Ours runs twice per precision: with Whisper's fixed 30 s window (compared
//! with CTranslate2) and with the default window fitted to each piece
//! (compared with the 30 s window: at most 1 WER point worse).

mod common;

use common::wer;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use switchboard::models::asr::{
    offline, DecodeOptions, Precision, Whisper, MEASURED_WINDOW_FLOOR_S, TINY_FP32_WINDOW_FLOOR_S,
};
use switchboard::models::vad::{SegmenterConfig, SileroVad};

const ESPEAK: &[&str] = &[
    "Hello, I would like to check the balance of my account please.",
    "My order number is four five seven, and it has not arrived yet.",
    "Can you transfer me to someone in the billing department?",
    "The meeting has been moved to Thursday afternoon at three o'clock.",
    "I need to cancel my appointment for tomorrow morning.",
    "Please send the invoice to my email address instead of by post.",
];

const PIPER: &[&str] = &[
    "Thank you for calling. How can I help you today?",
    "Your appointment is confirmed for Monday the fourth of March.",
    "I am sorry, I did not catch that. Could you say it again?",
    "The package left our warehouse this morning and should arrive on Friday.",
];

const HUMAN: &[(&str, &str)] = &[
    ("beckett.wav", "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."),
    ("clone-test.wav", "I do. I think that America do it very well."),
    (
        "endgame_nagg_nell.wav",
        "Do you hear me? Yes. Do you hear me? Yes. We laugh less heartly so we have still that resource. Laugh less heartly so. \
         We have still that resource. No, not heartily, just less heartily. Are that's a good story. Are that's a good story? \
         What are you talking about? Laughing. You thought you were in pain. Not now. Do you remember the day I went and fetched you from that ditch?",
    ),
    (
        "two_cities.wav",
        "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness, \
         it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it was the season of Darkness, \
         it was the spring of hope, it was the winter of despair, we had everything before us, we had nothing before us, \
         we were all going direct to Heaven, we were all going direct the other way. In short, the period was so far like \
         the present period, that some of its noisiest authorities insisted on its being received, for good or for evil, \
         in the superlative degree of comparison only.",
    ),
];

fn models() -> PathBuf {
    common::models_dir("whisper_tiny_en/whisper.json")
}

struct Clip {
    group: &'static str,
    name: String,
    truth: String,
    /// 16 kHz telephone-band WAVs, each at most 30 s.
    pieces: Vec<PathBuf>,
}

fn sox(args: &[&dyn AsRef<std::ffi::OsStr>]) {
    let mut c = Command::new(common::tool("sox"));
    for a in args {
        c.arg(a);
    }
    common::run_checked(&mut c);
}

/// `src` (any rate) → 300–3400 Hz, 8 kHz μ-law → 16 kHz s16, as `out`.
fn telephone(src: &Path, out: &Path) {
    let ulaw = out.with_extension("ulaw.wav");
    sox(&[&src, &"-D", &"-c", &"1", &"-r", &"8000", &"-e", &"u-law", &"-b", &"8", &ulaw, &"sinc", &"300-3400"]);
    sox(&[&ulaw, &"-D", &"-e", &"signed-integer", &"-b", &"16", &"-r", &"16000", &out]);
}

/// The speech fixture `file` through the telephone (`telephone`, written in `dir`), as 16 kHz samples.
fn telephone_clip(dir: &Path, file: &str) -> Vec<f32> {
    let out = dir.join(file);
    telephone(&models().join("fixtures/speech").join(file), &out);
    load_16k(&out)
}

/// Split a WAV longer than 30 s at its quietest 200 ms between 12 and 28 s into the piece.
fn split(path: &Path) -> Vec<PathBuf> {
    let (pcm, rate) = common::read_wav_mono_i16(path);
    assert_eq!(rate, 16000);
    let mut pieces = Vec::new();
    let mut rest = &pcm[..];
    while rest.len() > 30 * 16000 {
        let win = 3200;
        let cut = (12 * 16000..28 * 16000 - win)
            .step_by(800)
            .min_by_key(|&s| rest[s..s + win].iter().map(|&x| (x as i64).pow(2)).sum::<i64>())
            .expect("a cut point")
            + win / 2;
        pieces.push(rest[..cut].to_vec());
        rest = &rest[cut..];
    }
    pieces.push(rest.to_vec());
    pieces
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let out = path.with_extension(format!("part{i}.wav"));
            common::write_wav(&out, p, 16000);
            out
        })
        .collect()
}

fn clips(dir: &Path) -> Vec<Clip> {
    common::require_tools(&["sox", "espeak-ng"]);
    let mut out = Vec::new();
    for (i, text) in ESPEAK.iter().enumerate() {
        let src = dir.join(format!("espeak{i}.src.wav"));
        common::run_checked(
            Command::new(common::tool("espeak-ng")).args(["-v", "en-us", "-s", "160", "-w"]).arg(&src).arg(text),
        );
        let tel = dir.join(format!("espeak{i}.wav"));
        telephone(&src, &tel);
        out.push(Clip { group: "espeak-ng", name: format!("espeak{i}"), truth: text.to_string(), pieces: vec![tel] });
    }
    let m = models();
    let onnx = m.join("piper/en_US-joe-medium.onnx");
    let mut voice = switchboard::models::tts::PiperVoice::load(
        common::ort_runtime(),
        &onnx,
        &onnx.with_extension("onnx.json"),
        &common::cpu_options(2),
    )
    .unwrap();
    for (i, text) in PIPER.iter().enumerate() {
        let src = dir.join(format!("piper{i}.src.wav"));
        // Noise-free (the voice's sampling noise off): the corpus is the same on every run. With the
        // voice's own noise, a clip came out differently each run, and one run in several garbled
        // "The package left our warehouse" in the fitted window, past the 1-point bound.
        let still = switchboard::models::tts::Scales { noise_scale: 0.0, noise_w: 0.0, ..voice.scales() };
        let ids = voice.phoneme_ids(text).unwrap();
        common::write_wav(
            &src,
            &switchboard::models::tts::to_i16(&voice.infer_with(&ids, still, 1.0).unwrap()),
            voice.sample_rate(),
        );
        let tel = dir.join(format!("piper{i}.wav"));
        telephone(&src, &tel);
        out.push(Clip { group: "piper", name: format!("piper{i}"), truth: text.to_string(), pieces: vec![tel] });
    }
    for (file, text) in HUMAN {
        let src = m.join("fixtures/speech").join(file);
        let tel = dir.join(file);
        telephone(&src, &tel);
        out.push(Clip { group: "human", name: file.to_string(), truth: text.to_string(), pieces: split(&tel) });
    }
    out
}

/// The CTranslate2 float32 transcripts of `files` (scripts/transcribe.py, the oracle).
fn ctranslate2(ct2_model: &Path, files: &[&PathBuf]) -> Vec<String> {
    let out = common::run_checked(
        Command::new(models().join("venv/bin/python"))
            .arg(common::repo_root().join("scripts/transcribe.py"))
            .arg("--model")
            .arg(ct2_model)
            .args(files),
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), files.len(), "one transcript per file: {lines:?}");
    lines
}

fn load_16k(path: &Path) -> Vec<f32> {
    let (pcm, rate) = common::read_wav_mono_i16(path);
    assert_eq!(rate, 16000);
    pcm.iter().map(|&s| s as f32 / 32768.0).collect()
}

/// The corpus' pieces (each at most 30 s), in clip order.
fn pieces(clips: &[Clip]) -> Vec<&PathBuf> {
    clips.iter().flat_map(|c| &c.pieces).collect()
}

/// Per-piece texts joined back into one text per clip.
fn join_pieces(clips: &[Clip], texts: &[String]) -> Vec<String> {
    let mut it = texts.iter();
    clips
        .iter()
        .map(|c| c.pieces.iter().map(|_| it.next().unwrap().trim().to_string()).collect::<Vec<_>>().join(" "))
        .collect()
}

/// One recogniser setting's transcripts of the corpus, and its per-piece timings.
struct Run {
    precision: Precision,
    /// The encoder window floor (30 = the fixed 30 s window).
    floor: f32,
    /// One per clip.
    texts: Vec<String>,
    encode_ms: Vec<f64>,
    decode_ms: Vec<f64>,
}

impl Run {
    fn label(&self) -> String {
        if self.floor >= 30.0 || self.floor <= 0.0 {
            format!("{} 30 s", self.precision.label())
        } else {
            format!("{} ≥{} s", self.precision.label(), self.floor)
        }
    }
}

fn p50(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Transcribe the corpus with `model_dir` at each precision, once per window floor.
fn transcribe_corpus(model_dir: &str, clips: &[Clip], precisions: &[Precision], floors: &[f32]) -> Vec<Run> {
    let m = models();
    let files = pieces(clips);
    let audio: Vec<Vec<f32>> = files.iter().map(|f| load_16k(f)).collect();
    let opts = DecodeOptions::default();
    let mut runs = Vec::new();
    for &p in precisions {
        let mut w = Whisper::load(common::ort_runtime(), model_dir, &m.join(model_dir), p, &common::cpu_options(2))
            .unwrap_or_else(|e| panic!("{e}"));
        w.transcribe(&[0.0; 16000], &opts).unwrap(); // warm-up
        for &floor in floors {
            w.set_window_floor(floor);
            let t0 = Instant::now();
            let (mut texts, mut encode_ms, mut decode_ms) = (Vec::new(), Vec::new(), Vec::new());
            for a in &audio {
                let t = w.transcribe(a, &opts).unwrap();
                texts.push(t.text);
                encode_ms.push(t.encode_ms);
                decode_ms.push(t.decode_ms);
            }
            let run = Run { precision: p, floor, texts: join_pieces(clips, &texts), encode_ms, decode_ms };
            println!(
                "switchboard {model_dir} {}: {} pieces in {:.1} s (encode p50 {:.0} ms, decode p50 {:.0} ms)",
                run.label(),
                files.len(),
                t0.elapsed().as_secs_f64(),
                p50(&run.encode_ms),
                p50(&run.decode_ms)
            );
            runs.push(run);
        }
    }
    runs
}

/// Corpus word error rate of one text per clip, over one group of clips or all.
fn wer_of(clips: &[Clip], texts: &[String], group: Option<&str>) -> f64 {
    wer::corpus_wer(
        clips
            .iter()
            .zip(texts)
            .filter(|(c, _)| group.is_none_or(|g| c.group == g))
            .map(|(c, t)| (c.truth.as_str(), t.as_str())),
    )
}

const GROUPS: [Option<&str>; 4] = [Some("espeak-ng"), Some("piper"), Some("human"), None];

/// The clips, their CTranslate2 float32 texts, and ours per precision with the fixed 30 s
/// window and with fitted windows under each of its floors.
fn compare(model_dir: &str, ct2_dir: &str, settings: &[(Precision, &[f32])]) -> (Vec<Clip>, Vec<String>, Vec<Run>) {
    let dir = common::test_dir("clips");
    let clips = clips(&dir);
    let files = pieces(&clips);
    let t0 = Instant::now();
    let ct2_pieces = ctranslate2(&models().join(ct2_dir), &files);
    println!("CTranslate2 float32 ({ct2_dir}): {} pieces in {:.1} s", files.len(), t0.elapsed().as_secs_f64());
    let ct2 = join_pieces(&clips, &ct2_pieces);
    let mut runs = Vec::new();
    for &(p, floors) in settings {
        runs.extend(transcribe_corpus(model_dir, &clips, &[p], &[&[30.0][..], floors].concat()));
    }
    (clips, ct2, runs)
}

fn report_and_check(model: &str, clips: &[Clip], ct2: &[String], runs: &[Run]) {
    println!("\n{model}: word error rate on 8 kHz telephone-band clips (μ-law), corpus level");
    println!(
        "{:<10} {:>12}{}",
        "clips",
        "CT2 fp32",
        runs.iter().map(|r| format!(" {:>14}", r.label())).collect::<String>()
    );
    for g in GROUPS {
        print!("{:<10} {:>11.2}%", g.unwrap_or("all"), 100.0 * wer_of(clips, ct2, g));
        for r in runs {
            print!(" {:>13.2}%", 100.0 * wer_of(clips, &r.texts, g));
        }
        println!();
    }
    println!(
        "{:<10} {:>12}{}",
        "encode p50",
        "",
        runs.iter().map(|r| format!(" {:>11.0} ms", p50(&r.encode_ms))).collect::<String>()
    );
    for (i, c) in clips.iter().enumerate() {
        for r in runs {
            if r.texts[i] != ct2[i] {
                println!("  {} differs ({}):\n    ct2:  {}\n    ours: {}", c.name, r.label(), ct2[i], r.texts[i]);
            }
        }
    }
    // The 30 s window is the conversion itself: fp32 within 1 point of CTranslate2 (it is
    // token-identical on clean clips). int8 weights cost some accuracy on the hardest (espeak)
    // clips, as CTranslate2's own int8 does: bounded at 3 points, and reported.
    // Every bound is checked and the failures reported together (one failing does not hide another).
    let mut failures = Vec::new();
    let reference = wer_of(clips, ct2, None);
    for r in runs.iter().filter(|r| r.floor == 30.0) {
        let w = wer_of(clips, &r.texts, None);
        let bound = if r.precision == Precision::Fp32 { 0.01 } else { 0.03 };
        if (w - reference).abs() > bound {
            failures.push(format!(
                "{model} {}: WER {:.2}% vs CTranslate2 float32 {:.2}% (more than {} points apart)",
                r.label(),
                100.0 * w,
                100.0 * reference,
                100.0 * bound
            ));
        }
    }
    // A fitted window (the default floor; tiny.en fp32 also the shipped config's) costs at most
    // 1 point against the 30 s window at the same precision: the requirement the floors were
    // chosen by (docs/ARCHITECTURE.md).
    for r in runs.iter().filter(|r| r.floor != 30.0) {
        let full =
            runs.iter().find(|f| f.precision == r.precision && f.floor == 30.0).expect("the 30 s window was run");
        let (w, w30) = (wer_of(clips, &r.texts, None), wer_of(clips, &full.texts, None));
        if w - w30 > 0.01 {
            failures.push(format!(
                "{model} {}: WER {:.2}% vs {:.2}% with the 30 s window (more than 1 point worse)",
                r.label(),
                100.0 * w,
                100.0 * w30
            ));
        }
    }
    if reference >= 0.25 {
        failures.push(format!("the clips are not understandable: CT2 WER {:.1}%", 100.0 * reference));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn tiny_en_word_error_rate_matches_ctranslate2_on_telephone_audio() {
    let settings: [(Precision, &[f32]); 2] = [
        (Precision::Fp32, &[MEASURED_WINDOW_FLOOR_S, TINY_FP32_WINDOW_FLOOR_S]),
        (Precision::Int8, &[MEASURED_WINDOW_FLOOR_S]),
    ];
    let (clips, ct2, runs) = compare("whisper_tiny_en", "whisper_tiny_en_ct2", &settings);
    report_and_check("tiny.en", &clips, &ct2, &runs);
}

#[test]
fn base_word_error_rate_matches_ctranslate2_on_telephone_audio() {
    common::models_dir("whisper_base/whisper.json");
    // base has no fitted floor: int8 (7-bit weights) at 20 s came within 1 point of its 30 s window
    // once (11.38 % vs 10.77 %) and not in two later runs (12.31 %, 12.62 %); fp32 at 20 s, on the
    // noise-free corpus, lost 1.54 points (12.92 % vs 11.38 %). It keeps the 30 s window, checked
    // against CTranslate2 like the others.
    let settings: [(Precision, &[f32]); 2] = [(Precision::Fp32, &[]), (Precision::Int8, &[])];
    let (clips, ct2, runs) = compare("whisper_base", "whisper_base_ct2", &settings);
    report_and_check("base", &clips, &ct2, &runs);
}

/// How the encoder window's floor was chosen: WER and per-piece encode/decode time of every
/// floor × precision on the corpus. Not run by default (minutes); reproduce with
///   SWITCHBOARD_ASR_FLOORS=30,1,2,4,6,10 SWITCHBOARD_ASR_MODELS=whisper_tiny_en,whisper_base \
///   SWITCHBOARD_ASR_PRECISIONS=fp32,int8 \
///   cargo test --release --locked --test models_asr window_floor_sweep -- --ignored --nocapture
#[test]
#[ignore = "a measurement (minutes): see its comment"]
fn window_floor_sweep() {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let floors: Vec<f32> = env("SWITCHBOARD_ASR_FLOORS", "30,1,2,4,6,10")
        .split(',')
        .map(|f| f.trim().parse().expect("a number of seconds"))
        .collect();
    let precisions: Vec<Precision> = env("SWITCHBOARD_ASR_PRECISIONS", "fp32,int8")
        .split(',')
        .map(|p| match p.trim() {
            "fp32" => Precision::Fp32,
            "int8" => Precision::Int8,
            other => panic!("unknown precision {other}"),
        })
        .collect();
    let dir = common::test_dir("sweep");
    let clips = clips(&dir);
    let n = pieces(&clips).len();
    for model_dir in env("SWITCHBOARD_ASR_MODELS", "whisper_tiny_en").split(',') {
        let runs = transcribe_corpus(model_dir, &clips, &precisions, &floors);
        println!("\n{model_dir}: {} clips ({n} pieces), 2 threads; WER % (corpus level) and ms per piece", clips.len());
        println!(
            "{:<14} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>10}  clips that differ from the 30 s window",
            "setting", "all", "espeak", "piper", "human", "enc p50", "enc max", "dec p50"
        );
        for r in &runs {
            let full = runs.iter().find(|f| f.precision == r.precision && f.floor == 30.0);
            let differs: Vec<&str> = full.map_or(vec![], |f| {
                clips
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| r.texts[*i] != f.texts[*i])
                    .map(|(_, c)| c.name.as_str())
                    .collect()
            });
            println!(
                "{:<14} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>10.0} {:>10.0} {:>10.0}  {}",
                r.label(),
                100.0 * wer_of(&clips, &r.texts, None),
                100.0 * wer_of(&clips, &r.texts, GROUPS[0]),
                100.0 * wer_of(&clips, &r.texts, GROUPS[1]),
                100.0 * wer_of(&clips, &r.texts, GROUPS[2]),
                p50(&r.encode_ms),
                r.encode_ms.iter().copied().fold(0.0, f64::max),
                p50(&r.decode_ms),
                differs.join(" ")
            );
        }
        for r in runs.iter().filter(|r| r.floor != 30.0) {
            let Some(full) = runs.iter().find(|f| f.precision == r.precision && f.floor == 30.0) else { continue };
            for (i, c) in clips.iter().enumerate() {
                if r.texts[i] != full.texts[i] {
                    println!(
                        "  {} ({}):\n    30 s:   {}\n    fitted: {}",
                        c.name,
                        r.label(),
                        full.texts[i],
                        r.texts[i]
                    );
                }
            }
        }
    }
}

/// The fitted path at 3000 frames is the old fixed-window path: the same features (the 30 s
/// log-mel of the zero-padded audio) through the same encoder give the same keys and values.
/// And a short window really is short: [2L, 1, frames / 2, D].
#[test]
fn the_fitted_encoder_at_3000_frames_is_the_full_window_path() {
    use switchboard::models::melspec::LogMel;
    let m = models();
    let audio = telephone_clip(&common::test_dir("fitted3000"), "clone-test.wav");
    let opts = common::cpu_options(2);
    let mut w =
        Whisper::load(common::ort_runtime(), "tiny", &m.join("whisper_tiny_en"), Precision::Fp32, &opts).unwrap();
    assert!(
        w.spec().fitted_window(),
        "whisper_tiny_en was converted by converter version {}: run scripts/setup.sh",
        w.spec().converter_version
    );
    let fitted = w.encode_frames(&audio, 3000).unwrap();
    // The old path, spelled out: LogMel(3000).compute → [1, 80, 3000] → the encoder graph.
    let (mut enc, _) = common::ort_runtime().session("tiny", &m.join("whisper_tiny_en/encoder.onnx"), &opts).unwrap();
    let feats = LogMel::new(3000).compute(&audio, false);
    let out =
        enc.run(ort::inputs!["mel" => ort::value::Tensor::from_array(([1usize, 80, 3000], feats)).unwrap()]).unwrap();
    let (shape, full) = out["cross_kv"].try_extract_tensor::<f32>().unwrap();
    let (l2, d) = (2 * w.spec().n_layers, w.spec().d_model);
    assert_eq!(shape.to_vec(), vec![l2 as i64, 1, 1500, d as i64]);
    assert_eq!(fitted.len(), full.len());
    let diff = fitted.iter().zip(full).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff == 0.0, "max abs difference {diff}");
    // The clip is ~3 s: with a floor (the shipped tiny.en fp32's) the window is fitted to it, and
    // the encoder's output is that long. (Without one, a model keeps the 30 s window.)
    assert_eq!(w.window_frames(audio.len()), 3000);
    w.set_window_floor(TINY_FP32_WINDOW_FLOOR_S);
    let frames = w.window_frames(audio.len());
    assert!(
        frames < 3000 && frames % 2 == 0 && frames * 160 > audio.len(),
        "{frames} frames for {} samples",
        audio.len()
    );
    assert_eq!(w.encode_frames(&audio, frames).unwrap().len(), l2 * (frames / 2) * d);
}

/// Short turns give the same words in their fitted window (the default floor, and tiny.en
/// fp32's) as in the 30 s window. (The human clips: on the espeak and Piper sentences a word or two moves
/// either way, and int8 gains the reference's "that" on clone-test — see `window_floor_sweep`.)
#[test]
fn short_clips_transcribe_the_same_words_in_the_fitted_window() {
    let m = models();
    let dir = common::test_dir("fitted_words");
    let opts = DecodeOptions::default();
    for (p, floor, file) in [
        (Precision::Fp32, TINY_FP32_WINDOW_FLOOR_S, "clone-test.wav"),
        (Precision::Fp32, TINY_FP32_WINDOW_FLOOR_S, "beckett.wav"),
        (Precision::Fp32, MEASURED_WINDOW_FLOOR_S, "clone-test.wav"),
        (Precision::Int8, MEASURED_WINDOW_FLOOR_S, "beckett.wav"),
    ] {
        let audio = telephone_clip(&dir, file);
        let mut w =
            Whisper::load(common::ort_runtime(), "tiny", &m.join("whisper_tiny_en"), p, &common::cpu_options(2))
                .unwrap();
        w.set_window_floor(30.0);
        assert_eq!(w.window_frames(audio.len()), 3000);
        let full = w.transcribe(&audio, &opts).unwrap();
        w.set_window_floor(floor);
        let frames = w.window_frames(audio.len());
        assert!(frames < 3000, "{file}: {} s of audio should get a fitted window", audio.len() / 16000);
        let fitted = w.transcribe(&audio, &opts).unwrap();
        println!(
            "{} ≥{floor} s {file}: {frames} frames, encode {:.0} → {:.0} ms: {:?}",
            p.label(),
            full.encode_ms,
            fitted.encode_ms,
            fitted.text
        );
        assert!(!wer::words(&full.text).is_empty(), "{file}: {full:?}");
        assert_eq!(wer::words(&fitted.text), wer::words(&full.text), "{} {file}", p.label());
    }
}

/// One copy of Whisper recognising the turns of several calls at once (issue 18): turns with the
/// same fitted window share the encoder call and step through the decoder together, rows leaving
/// as they end; each turn gets exactly the tokens it gets alone (greedy, same window). A turn
/// whose caller gives up leaves the batch without changing the others' words.
#[test]
fn a_batch_of_turns_gives_each_the_tokens_it_gets_alone() {
    use switchboard::models::asr::batch::Request;
    use switchboard::models::asr::CANCELLED;
    let m = models();
    let dir = common::test_dir("batch");
    let (clone, beckett) = (telephone_clip(&dir, "clone-test.wav"), telephone_clip(&dir, "beckett.wav"));
    // Two turns in the 10 s window that end at different tokens, one in the 20 s window, a
    // second of silence (no words), and the clone clip again.
    let turns: Vec<Vec<f32>> = vec![clone.clone(), clone[..2 * 16000].to_vec(), beckett, vec![0.0; 16000], clone];
    let mut w = Whisper::load(
        common::ort_runtime(),
        "tiny",
        &m.join("whisper_tiny_en"),
        Precision::Fp32,
        &common::cpu_options(2),
    )
    .unwrap();
    w.set_window_floor(TINY_FP32_WINDOW_FLOOR_S);
    assert_eq!(turns.iter().map(|t| w.window_frames(t.len())).collect::<Vec<_>>(), vec![1000, 1000, 2000, 1000, 1000]);
    let opts = DecodeOptions::default();
    let alone: Vec<_> = turns.iter().map(|t| w.transcribe(t, &opts).unwrap()).collect();
    let never = || false;
    let requests: Vec<Request> =
        turns.iter().map(|audio| Request { audio, opts: &opts, stop: &never, draft: &[] }).collect();
    let batched = w.transcribe_batch(&requests);
    for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
        let b = b.as_ref().unwrap();
        println!(
            "turn {i}: {:?} (alone: encode {:.0} + decode {:.0} ms; batched: {:.0} + {:.0} ms)",
            b.text, a.encode_ms, a.decode_ms, b.encode_ms, b.decode_ms
        );
        assert_eq!(b.tokens, a.tokens, "turn {i}: {:?} vs alone {:?}", b.text, a.text);
        assert_eq!(b.text, a.text);
        assert!(
            (b.no_speech_prob - a.no_speech_prob).abs() < 1e-3 && (b.avg_logprob - a.avg_logprob).abs() < 1e-3,
            "turn {i}: {b:?} vs {a:?}"
        );
    }
    assert!(alone[0].text.to_lowercase().contains("america") && alone[3].text.is_empty(), "{alone:?}");
    // The first turn's caller hangs up after three decoder steps: it leaves, the others go on.
    let asked = std::sync::atomic::AtomicUsize::new(0);
    let gone = || asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= 3;
    let mut requests = requests;
    requests[0].stop = &gone;
    let batched = w.transcribe_batch(&requests);
    assert_eq!(batched[0].as_ref().err().map(|e| e.to_string()), Some(CANCELLED.to_string()));
    for (i, (a, b)) in alone.iter().zip(&batched).enumerate().skip(1) {
        assert_eq!(b.as_ref().unwrap().tokens, a.tokens, "turn {i} after the first left");
    }
}

/// A turn decoded with a draft — the tokens of its partial transcript — gets the same tokens as
/// without one, and the draft's confirmed tokens cost one decoder call, not one each; a draft
/// that goes another way (another clip's words) is left at its first difference.
#[test]
fn a_partial_transcripts_tokens_are_checked_in_one_step_and_change_nothing() {
    use switchboard::models::asr::batch::Request;
    let m = models();
    let dir = common::test_dir("draft");
    let (clone, beckett) = (telephone_clip(&dir, "clone-test.wav"), telephone_clip(&dir, "beckett.wav"));
    let mut w = Whisper::load(
        common::ort_runtime(),
        "tiny",
        &m.join("whisper_tiny_en"),
        Precision::Fp32,
        &common::cpu_options(1),
    )
    .unwrap();
    w.set_window_floor(TINY_FP32_WINDOW_FLOOR_S);
    let opts = DecodeOptions::default();
    let never = || false;
    let mut decode = |audio: &[f32], draft: &[i64]| {
        w.transcribe_batch(&[Request { audio, opts: &opts, stop: &never, draft }]).remove(0).unwrap()
    };
    for (name, audio) in [("clone", &clone), ("beckett", &beckett)] {
        let plain = decode(audio, &[]);
        assert_eq!(plain.drafted, 0);
        // What a partial transcript would have said a second before the turn's end.
        let partial = decode(&audio[..audio.len() - 16000], &[]);
        let drafted = decode(audio, &partial.tokens);
        println!(
            "{name}: {:?}; partial {:?}: {} of its {} tokens confirmed; decode {:.0} → {:.0} ms",
            plain.text,
            partial.text,
            drafted.drafted,
            partial.tokens.len(),
            plain.decode_ms,
            drafted.decode_ms
        );
        assert_eq!(drafted.tokens, plain.tokens, "{name}: {:?} vs {:?}", drafted.text, plain.text);
        assert!(
            drafted.drafted >= partial.tokens.len() / 2,
            "{name}: only {} of {:?} confirmed",
            drafted.drafted,
            partial.text
        );
        // The whole transcript as its own draft: every token confirmed.
        let again = decode(audio, &plain.tokens);
        assert_eq!((again.tokens.clone(), again.drafted), (plain.tokens.clone(), plain.tokens.len()), "{name}");
    }
    let plain = decode(&clone, &[]);
    let wrong = decode(&beckett, &[]).tokens;
    let drafted = decode(&clone, &wrong);
    assert_eq!(drafted.tokens, plain.tokens, "another clip's words as the draft change nothing");
    assert!(drafted.drafted < 2, "{}", drafted.drafted);
}

/// Silence, noise and non-speech sounds, through the call's path (VAD turns, then Whisper): no words.
#[test]
fn silence_and_noise_give_no_words() {
    common::require_tools(&["sox"]);
    let dir = common::test_dir("noise");
    let m = models();
    let mut cases: Vec<(String, PathBuf)> = Vec::new();
    for (name, synth) in [
        ("silence", vec!["trim", "0", "5"]),
        ("white noise -20 dBFS", vec!["synth", "5", "whitenoise", "vol", "0.1"]),
        ("pink noise -10 dBFS", vec!["synth", "5", "pinknoise", "vol", "0.3"]),
        ("brown noise -6 dBFS", vec!["synth", "5", "brownnoise", "vol", "0.5"]),
        ("mains hum 50 Hz + harmonics", vec!["synth", "5", "sine", "50", "sine", "150", "vol", "0.3"]),
        ("dial tone 350+440 Hz", vec!["synth", "5", "sine", "350", "sine", "440", "remix", "-", "vol", "0.3"]),
    ] {
        let src = dir.join(format!("{}.src.wav", cases.len()));
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"-n", &"-r", &"16000", &"-c", &"1", &"-b", &"16", &src];
        for a in &synth {
            args.push(a);
        }
        sox(&args);
        let tel = dir.join(format!("{}.wav", cases.len()));
        telephone(&src, &tel);
        cases.push((name.to_string(), tel));
    }
    for f in ["error.wav", "success.wav"] {
        let tel = dir.join(f);
        telephone(&m.join("fixtures/nonspeech").join(f), &tel);
        cases.push((format!("non-speech sound {f}"), tel));
    }
    let mut vad =
        SileroVad::load(common::ort_runtime(), &m.join("silero_vad/silero_vad.onnx"), &common::cpu_options(1)).unwrap();
    let mut w = Whisper::load(
        common::ort_runtime(),
        "tiny",
        &m.join("whisper_tiny_en"),
        Precision::Fp32,
        &common::cpu_options(2),
    )
    .unwrap();
    let opts = DecodeOptions::default();
    let mut failures = Vec::new();
    for (name, path) in &cases {
        let audio = load_16k(path);
        let turns = offline::transcribe_turns(&mut vad, SegmenterConfig::default(), &mut w, &opts, &audio).unwrap();
        let words: Vec<String> = turns.iter().flat_map(|t| wer::words(&t.transcript.text)).collect();
        // And Whisper alone, on the whole clip: the no-speech rule by itself (reported; the VAD is the gate).
        let alone = w.transcribe(&audio, &opts).unwrap();
        println!(
            "{name:<32} turns {}  words {:?}  (Whisper alone: {:?}, P(no speech) {:.2})",
            turns.len(),
            words,
            alone.text,
            alone.no_speech_prob
        );
        if !words.is_empty() {
            failures.push(format!("{name}: {words:?}"));
        }
        if name == "silence" && !(alone.text.is_empty() && alone.no_speech_prob > 0.6) {
            failures.push(format!("Whisper alone on silence: {alone:?}"));
        }
    }
    assert!(failures.is_empty(), "words invented: {failures:?}");
}

/// The same path on speech finds the words (so the test above is not passing by hearing nothing).
#[test]
fn turns_of_a_recording_are_transcribed() {
    let dir = common::test_dir("turns");
    let m = models();
    let tel = dir.join("beckett.wav");
    telephone(&m.join("fixtures/speech/beckett.wav"), &tel);
    let mut vad =
        SileroVad::load(common::ort_runtime(), &m.join("silero_vad/silero_vad.onnx"), &common::cpu_options(1)).unwrap();
    let mut w = Whisper::load(
        common::ort_runtime(),
        "tiny",
        &m.join("whisper_tiny_en"),
        Precision::Int8,
        &common::cpu_options(2),
    )
    .unwrap();
    let turns = offline::transcribe_turns(
        &mut vad,
        SegmenterConfig::default(),
        &mut w,
        &DecodeOptions::default(),
        &load_16k(&tel),
    )
    .unwrap();
    let text: Vec<String> = turns.iter().map(|t| t.transcript.text.clone()).collect();
    println!("{turns:#?}");
    assert!(turns.len() >= 3, "Beckett's pauses make several turns: {text:?}");
    let e = wer::word_errors(HUMAN[0].1, &text.join(" "));
    assert!(e <= 2, "{e} word errors in {text:?}");
}

#[test]
fn a_multilingual_model_refuses_an_unknown_language_and_english_only_refuses_others() {
    let m = models();
    let tiny = Whisper::load(
        common::ort_runtime(),
        "tiny",
        &m.join("whisper_tiny_en"),
        Precision::Int8,
        &common::cpu_options(1),
    )
    .unwrap();
    assert!(tiny.check_language("en").is_ok());
    let e = tiny.check_language("de").unwrap_err();
    assert!(e.contains("English-only"), "{e}");
    let base = Whisper::load(
        common::ort_runtime(),
        "base",
        &common::models_dir("whisper_base/whisper.json").join("whisper_base"),
        Precision::Int8,
        &common::cpu_options(1),
    )
    .unwrap();
    assert!(base.check_language("de").is_ok() && base.check_language("auto").is_ok());
    let e = base.check_language("xx").unwrap_err();
    assert!(e.contains("`xx`") && e.contains("en"), "{e}");
}

#[test]
fn a_missing_model_folder_is_a_clear_error() {
    let r = Whisper::load(
        common::ort_runtime(),
        "asr.x",
        Path::new("/nonexistent/whisper"),
        Precision::Fp32,
        &common::cpu_options(1),
    );
    let e = r.err().expect("an error").to_string();
    assert!(e.contains("/nonexistent/whisper/whisper.json") && e.contains("scripts/setup.sh"), "{e}");
}

/// The worker pool: answers every accepted job, refuses beyond its queue, never runs a partial
/// ahead of waiting work.
#[test]
fn the_worker_pool_is_bounded_and_answers_what_it_accepts() {
    use switchboard::models::asr::worker::AsrWorker;
    let m = models();
    let w = Whisper::load(
        common::ort_runtime(),
        "tiny",
        &m.join("whisper_tiny_en"),
        Precision::Int8,
        &common::cpu_options(1),
    )
    .unwrap();
    let pool = AsrWorker::spawn(vec![w], 1, 1, "test");
    let mut client = pool.client(DecodeOptions::default());
    let clip = telephone_clip(&common::test_dir("pool"), "clone-test.wav");
    let first = client.submit(clip.clone(), false).expect("an idle pool takes a job");
    // The one worker is busy (or about to be): a partial is not worth delaying anything for.
    assert_eq!(client.submit(clip.clone(), true), None, "partial refused while the worker is busy");
    // One more fits the queue of 1 at most; beyond that, refusals.
    let accepted: Vec<u64> = (0..4).filter_map(|_| client.submit(clip.clone(), false)).collect();
    assert!(accepted.len() <= 2, "a queue of 1 (+ the job in hand) bounds what is accepted: {accepted:?}");
    let mut answered = Vec::new();
    for _ in 0..1 + accepted.len() {
        let r = client.wait(std::time::Duration::from_secs(60)).expect("an answer");
        let t = r.transcript.expect("transcribed");
        assert!(wer::words(&t.text).contains(&"america".to_string()), "{t:?}");
        answered.push(r.seq);
    }
    answered.sort();
    let mut expect = vec![first];
    expect.extend(&accepted);
    assert_eq!(answered, expect);
    assert_eq!(pool.pending(), 0);
    // Idle again: a partial is welcome.
    assert!(client.submit(clip, true).is_some());
}
