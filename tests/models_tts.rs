//! Piper TTS (en_US-joe-medium) on ONNX Runtime from Rust, checked against
//! the Python reference (tests/fixtures/tts/*.json, made by
//! scripts/tts-reference.py with the logic of piper.py and the deterministic
//! scales noise_scale = noise_w = 0).

mod common;

use std::path::PathBuf;
use std::time::Instant;
use switchboard::models::runtime::{self, SessionOptions};
use switchboard::models::tts::{self, Phonemizer, PiperVoice, Scales, TtsError};

fn models_dir() -> PathBuf {
    common::models_dir("piper/en_US-joe-medium.onnx")
}

fn rt() -> &'static runtime::Runtime {
    common::ort_runtime()
}

fn cpu(threads: usize) -> SessionOptions {
    common::cpu_options(threads)
}

fn voice(threads: usize) -> PiperVoice {
    let m = models_dir().join("piper/en_US-joe-medium.onnx");
    PiperVoice::load(rt(), &m, &m.with_extension("onnx.json"), &cpu(threads)).unwrap_or_else(|e| panic!("{e}"))
}

#[derive(serde::Deserialize)]
struct Fixture {
    text: String,
    phonemes: String,
    phoneme_ids: Vec<i64>,
    scales: [f32; 3],
    sample_rate: u32,
    deterministic: bool,
    samples: usize,
    rms: f64,
    envelope: Vec<f64>,
}

fn fixtures() -> Vec<(String, Fixture)> {
    let dir = common::repo_root().join("tests/fixtures/tts");
    let mut out: Vec<(String, Fixture)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), serde_yaml_ng::from_str(&text).unwrap())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 2, "fixtures in {}", dir.display());
    out
}

/// RMS of 20 ms windows centred on `n` evenly spaced points (as the script).
fn envelope(pcm: &[i16], rate: u32, n: usize) -> Vec<f64> {
    let w = (rate / 50) as usize;
    let len = pcm.len();
    (0..n)
        .map(|k| {
            let c = ((k as f64 + 0.5) * len as f64 / n as f64).round() as usize;
            let a = c.saturating_sub(w / 2);
            let b = (a + w).min(len);
            if b <= a {
                return 0.0;
            }
            (pcm[a..b].iter().map(|&s| (s as f64 / 32768.0).powi(2)).sum::<f64>() / (b - a) as f64).sqrt()
        })
        .collect()
}

fn rms(pcm: &[i16]) -> f64 {
    (pcm.iter().map(|&s| (s as f64 / 32768.0).powi(2)).sum::<f64>() / pcm.len().max(1) as f64).sqrt()
}

fn correlation(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

fn deterministic(v: &mut PiperVoice, f: &Fixture) {
    let s = v.scales();
    assert_eq!(s.length_scale, f.scales[1], "length_scale from the JSON");
    v.set_scales(Scales { noise_scale: f.scales[0], length_scale: f.scales[1], noise_w: f.scales[2] });
}

#[test]
fn phoneme_ids_equal_the_python_reference() {
    let mut v = voice(1);
    assert_eq!(v.sample_rate(), 22050);
    assert_eq!(v.phonemizer().voice(), "en-us");
    for (name, f) in fixtures() {
        assert_eq!(v.phonemizer().phonemes(&f.text).unwrap(), f.phonemes, "{name}: phonemes");
        assert_eq!(v.phoneme_ids(&f.text).unwrap(), f.phoneme_ids, "{name}: ids");
    }
    assert_eq!(v.skipped_phonemes(), 0);
    // Unknown characters are skipped and counted, not fatal.
    let (ids, missing) = v.ids_for_phonemes("a\u{1F600}b");
    assert_eq!(missing, 1);
    assert_eq!(ids.len(), 2 + 2 * 2 + 1);
}

#[test]
fn audio_matches_the_python_reference() {
    let mut v = voice(2);
    for (name, f) in fixtures() {
        assert!(f.deterministic, "{name}: the reference was not deterministic");
        deterministic(&mut v, &f);
        let pcm = v.synthesize(&f.text).unwrap();
        let env = envelope(&pcm, f.sample_rate, f.envelope.len());
        let r = correlation(&env, &f.envelope);
        let len_err = (pcm.len() as f64 - f.samples as f64).abs() / f.samples as f64;
        println!(
            "{name}: {} samples (reference {}, {:.3} %), rms {:.4} (reference {:.4}), envelope correlation {r:.5}",
            pcm.len(),
            f.samples,
            len_err * 100.0,
            rms(&pcm),
            f.rms
        );
        assert!(len_err <= 0.01, "{name}: length {} vs {}", pcm.len(), f.samples);
        assert!(r > 0.95, "{name}: envelope correlation {r}");
        assert!((rms(&pcm) / f.rms - 1.0).abs() < 0.1, "{name}: rms {} vs {}", rms(&pcm), f.rms);
    }
}

#[test]
fn synthesize_16k_is_audible_speech() {
    let mut v = voice(2);
    let (_, f) = fixtures().into_iter().nth(1).unwrap();
    deterministic(&mut v, &f);
    let pcm = v.synthesize_16k(&f.text).unwrap();
    let expected = (f.samples * 16000).div_ceil(22050);
    assert!((pcm.len() as f64 - expected as f64).abs() <= expected as f64 * 0.01, "{} vs {expected}", pcm.len());
    // Same loudness and the same 20 ms envelope as the 22.05 kHz reference (delay removed).
    let r = correlation(&envelope(&pcm, 16000, f.envelope.len()), &f.envelope);
    println!(
        "16 kHz: {} samples, rms {:.4}, envelope correlation with the 22.05 kHz reference {r:.4}",
        pcm.len(),
        rms(&pcm)
    );
    assert!(r > 0.95, "envelope correlation {r}");
    assert!((rms(&pcm) / f.rms - 1.0).abs() < 0.15, "rms {} vs {}", rms(&pcm), f.rms);
    // Speech: most 20 ms frames are above -40 dBFS, some pauses, nothing clipped.
    let frames: Vec<f64> = pcm.chunks(320).map(rms).collect();
    let loud = frames.iter().filter(|&&x| x > 0.01).count() as f64 / frames.len() as f64;
    assert!(loud > 0.5 && loud < 1.0, "fraction of loud frames {loud}");
    let peak = pcm.iter().map(|s| s.unsigned_abs()).max().unwrap();
    assert!(peak > 3000 && peak < 32767, "peak {peak}");
    // Sentence by sentence gives the same audio as one sentence at a time.
    let parts =
        tts::sentences("Thank you for calling switchboard. Our opening hours are nine to five, Monday to Friday.");
    assert_eq!(
        parts,
        vec!["Thank you for calling switchboard.", "Our opening hours are nine to five, Monday to Friday."]
    );
    assert_eq!(v.synthesize_16k(&parts[1]).unwrap(), pcm);
}

#[test]
fn errors_are_values() {
    let mut v = voice(1);
    v.set_phonemizer(Phonemizer::new("en-us").with_program("/nonexistent/espeak-ng"));
    let e = v.synthesize("hello").unwrap_err();
    assert!(matches!(e, TtsError::EspeakMissing { .. }), "{e}");
    assert!(e.to_string().contains("espeak-ng"), "{e}");
    v.set_phonemizer(Phonemizer::new("en-us").with_program("false"));
    assert!(matches!(v.synthesize("hello"), Err(TtsError::EspeakFailed { .. })));
    v.set_phonemizer(Phonemizer::new("en-us"));
    assert!(v.synthesize("").unwrap().is_empty());
    let m = models_dir().join("piper/en_US-joe-medium.onnx");
    let bad = PiperVoice::load(rt(), &m, &models_dir().join("piper/missing.json"), &cpu(1));
    assert!(matches!(bad, Err(TtsError::Config { .. })));
    let bad = PiperVoice::load(rt(), &models_dir().join("piper/missing.onnx"), &m.with_extension("onnx.json"), &cpu(1));
    assert!(matches!(bad, Err(TtsError::Model(_))));
}

#[test]
fn speaking_rate_changes_the_length() {
    let mut v = voice(2);
    let (_, f) = fixtures().into_iter().next().unwrap();
    deterministic(&mut v, &f);
    let normal = v.synthesize(&f.text).unwrap().len() as f64;
    v.set_speaking_rate(1.25);
    let fast = v.synthesize(&f.text).unwrap().len() as f64;
    v.set_speaking_rate(0.8);
    let slow = v.synthesize(&f.text).unwrap().len() as f64;
    // Not exactly 1/rate: each phoneme's duration is rounded up to whole 256-sample frames.
    println!("speaking rate 1.25: {fast} samples, 1.0: {normal}, 0.8: {slow}");
    assert!(fast < normal * 0.95 && slow > normal * 1.1, "{fast} {normal} {slow}");
}

/// Time to first audio of a 12-word sentence (phonemize + inference), and
/// the real-time factor; printed, not asserted (run with --nocapture).
#[test]
fn time_to_first_audio() {
    let text = "Hello, thanks for calling switchboard, how can I help you this morning?";
    assert_eq!(text.split_whitespace().count(), 12);
    for threads in [1, 2] {
        let mut v = voice(threads);
        v.synthesize(text).unwrap(); // warm-up
        let mut best = f64::MAX;
        let mut phon_best = f64::MAX;
        let mut audio_s = 0.0;
        for _ in 0..3 {
            let t0 = Instant::now();
            let ids = v.phoneme_ids(text).unwrap();
            let t1 = Instant::now();
            let pcm = tts::to_i16(&v.infer(&ids).unwrap());
            let t = t0.elapsed().as_secs_f64();
            best = best.min(t);
            phon_best = phon_best.min((t1 - t0).as_secs_f64());
            audio_s = pcm.len() as f64 / v.sample_rate() as f64;
        }
        println!(
            "tts time to first audio ({} build, {threads} intra-op threads): {:.0} ms (espeak-ng {:.1} ms) for {audio_s:.2} s of audio, RTF {:.3}",
            if cfg!(debug_assertions) { "debug" } else { "release" },
            best * 1000.0,
            phon_best * 1000.0,
            best / audio_s
        );
    }
}

/// The worker streams a reply sentence by sentence: the first sentence's audio is there before
/// the last sentence is synthesised, and cancelling stops after the sentence in hand.
#[test]
fn the_worker_streams_sentences_and_can_be_cancelled() {
    use std::time::Duration;
    use switchboard::models::tts_worker::{SpeechChunk, Style, TtsWorker};
    let v = voice(1);
    let style = Style { scales: v.scales(), speaking_rate: 1.0 };
    let w = TtsWorker::spawn(v, 4, "test");
    let text = "Thanks for waiting. Your order left the warehouse this morning. It should arrive on Friday, between nine and noon.";
    let t0 = Instant::now();
    let mut s = w.speak(text, style).unwrap();
    let mut arrivals = Vec::new();
    let mut texts = Vec::new();
    loop {
        match s.wait(Duration::from_secs(30)).expect("a chunk") {
            SpeechChunk::Audio { sentence, text, pcm, .. } => {
                assert_eq!(sentence, arrivals.len());
                assert!(pcm.len() > 16000 / 2, "{text}: {} samples", pcm.len());
                arrivals.push(t0.elapsed());
                texts.push(text);
            }
            SpeechChunk::Done { sentences, cancelled } => {
                assert_eq!((sentences, cancelled), (3, false));
                break;
            }
            SpeechChunk::Failed { reason, .. } => panic!("{reason}"),
        }
    }
    assert_eq!(
        texts,
        vec![
            "Thanks for waiting.",
            "Your order left the warehouse this morning.",
            "It should arrive on Friday, between nine and noon."
        ]
    );
    println!("sentence arrivals: {arrivals:?}");
    assert!(arrivals[0] * 2 < arrivals[2], "the first sentence comes well before the whole reply: {arrivals:?}");

    // Cancelled after the first sentence: the rest is never synthesised.
    let mut s = w.speak(text, style).unwrap();
    assert!(matches!(s.wait(Duration::from_secs(30)), Some(SpeechChunk::Audio { sentence: 0, .. })));
    s.cancel();
    let mut rest = Vec::new();
    while let Some(c) = s.wait(Duration::from_secs(30)) {
        rest.push(c);
    }
    let done = rest.last().expect("Done");
    assert!(matches!(done, SpeechChunk::Done { cancelled: true, sentences } if *sentences <= 2), "{rest:?}");
    // A bad request is an error value, and the worker carries on.
    let mut s = w.speak("\u{0}\u{1}", style).unwrap();
    let c = s.wait(Duration::from_secs(30)).unwrap();
    assert!(matches!(c, SpeechChunk::Done { sentences: 0, .. } | SpeechChunk::Failed { .. }), "{c:?}");
    let mut s = w.speak("Still here.", style).unwrap();
    assert!(matches!(s.wait(Duration::from_secs(30)), Some(SpeechChunk::Audio { .. })));
}

/// One voice serves every call: a reply's first phrase, asked while five later phrases of other
/// calls wait, is synthesised before them (at most the one in hand and a couple more, should this
/// thread be slow to look, are done when it comes; in the order asked, all five would be). The
/// queue's bound still holds.
#[test]
fn a_first_phrase_goes_before_other_calls_later_phrases() {
    use std::time::Duration;
    use switchboard::models::tts_worker::{Priority, SpeechChunk, Style, TtsWorker};
    let v = voice(1);
    let style = Style { scales: v.scales(), speaking_rate: 1.0 };
    let w = TtsWorker::spawn(v, 8, "test");
    let later = [
        "Our rye bread is baked every morning at six.",
        "The croissants come out of the oven at seven.",
        "On Saturdays we also make a plum cake.",
        "The sourdough needs a day to rise.",
        "We close at six in the evening.",
    ];
    let mut later: Vec<_> = later.iter().map(|t| w.speak_with(t, style, Priority::Later).unwrap()).collect();
    let mut first = w.speak_with("Yes, we are open.", style, Priority::First).unwrap();
    match first.wait(Duration::from_secs(60)) {
        Some(SpeechChunk::Audio { text, .. }) => assert_eq!(text, "Yes, we are open."),
        other => panic!("{other:?}"),
    }
    let heard: Vec<bool> = later.iter_mut().map(|s| matches!(s.poll(), Some(SpeechChunk::Audio { .. }))).collect();
    let done = heard.iter().filter(|&&h| h).count();
    assert!(done <= 3, "{done} of the 5 later phrases were synthesised before the first phrase asked after them");
    for (s, mut audio) in later.iter_mut().zip(heard) {
        while let Some(c) = s.wait(Duration::from_secs(60)) {
            audio |= matches!(c, SpeechChunk::Audio { .. });
        }
        assert!(audio, "every later phrase is still spoken");
    }

    // The bound counts what waits, wherever the worker keeps it: with room for 2, a fourth
    // request asked at once is refused (the agent says so and goes on), the first two are taken.
    let v = voice(1);
    let w = TtsWorker::spawn(v, 2, "bounded");
    let asked: Vec<_> = (0..4).map(|i| w.speak_with(&format!("Phrase number {i}."), style, Priority::Later)).collect();
    assert!(asked[0].is_some() && asked[1].is_some(), "room for two");
    assert!(asked[3].is_none(), "a fourth request beyond the bound is refused");
}

/// A voice that hangs on a sentence (made to sleep for ever by the step hook): the watchdog answers
/// that sentence `Failed` within its limit, the request asked behind it is spoken by a fresh copy of
/// the voice, and so is a request asked afterwards.
#[test]
fn a_hung_voice_fails_its_sentence_and_a_fresh_copy_speaks_on() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use switchboard::models::tts_worker::{Speech, SpeechChunk, Style, TtsWorker};
    use switchboard::models::StepHook;
    let v = voice(1);
    let style = Style { scales: v.scales(), speaking_rate: 1.0 };
    let sentences = Arc::new(AtomicUsize::new(0));
    let counted = sentences.clone();
    // The second sentence of all hangs; the hook is the new copy's too, and lets it through.
    let hook = StepHook(Arc::new(move || {
        if counted.fetch_add(1, Ordering::SeqCst) == 1 {
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }));
    let w = TtsWorker::spawn_hooked(v, 4, "hangs", Some(hook));
    let limit = Duration::from_secs(1);
    w.watch(limit, || {
        let m = models_dir().join("piper/en_US-joe-medium.onnx");
        PiperVoice::load(rt(), &m, &m.with_extension("onnx.json"), &cpu(1)).map_err(|e| e.to_string())
    });
    let all = |s: &mut Speech| {
        let mut chunks = Vec::new();
        while let Some(c) = s.wait(Duration::from_secs(30)) {
            chunks.push(c);
        }
        chunks
    };
    let t0 = Instant::now();
    let mut hung = w.speak("Thanks for waiting. Your order left the warehouse this morning.", style).unwrap();
    let mut behind = w.speak("It should arrive on Friday.", style).unwrap();
    let chunks = all(&mut hung);
    let failed_at = t0.elapsed();
    assert!(
        matches!(&chunks[0], SpeechChunk::Audio { sentence: 0, .. }),
        "{:?}",
        chunks.first().map(|c| format!("{c:?}").chars().take(80).collect::<String>())
    );
    match &chunks[1..] {
        [SpeechChunk::Failed { sentence: 1, reason }] => assert!(reason.contains("did not finish"), "{reason}"),
        other => panic!("the hung sentence fails and nothing follows it: {other:?}"),
    }
    assert!(
        failed_at >= limit && failed_at < limit * 5,
        "failed {failed_at:?} after it was asked: the limit is {limit:?}"
    );
    let spoken = |chunks: &[SpeechChunk]| matches!(chunks, [SpeechChunk::Audio { pcm, .. }, SpeechChunk::Done { sentences: 1, cancelled: false }] if pcm.len() > 8000);
    assert!(spoken(&all(&mut behind)), "the request behind the hung one is spoken by the new copy");
    let mut after = w.speak("See you soon.", style).unwrap();
    assert!(spoken(&all(&mut after)), "a later request is spoken too");
    assert_eq!(sentences.load(Ordering::SeqCst), 4);
}
