//! An agent whose greeting is text: the appliance speaks it with the Piper
//! voice, and what a SIPp caller receives on the wire is that speech (checked
//! against an offline synthesis of the same text, through G.711, by
//! cross-correlation), audible, at the start of the call.

mod common;

use common::*;
use std::path::PathBuf;
use std::time::Duration;
use switchboard::models::tts::PiperVoice;

const TEXT: &str = "Thank you for calling. Our opening hours are nine to five, Monday to Friday.";

fn models_dir() -> PathBuf {
    common::models_dir("piper/en_US-joe-medium.onnx")
}

#[test]
fn sipp_caller_hears_the_text_greeting_spoken_by_piper() {
    require_tools(&["sipp", "tcpdump", "sox", "espeak-ng"]);
    let m = models_dir();
    // The same synthesis offline, at 22.05 kHz, converted to 8 kHz by sox (independent of our resampler).
    let mut voice = PiperVoice::load(
        common::ort_runtime(),
        &m.join("piper/en_US-joe-medium.onnx"),
        &m.join("piper/en_US-joe-medium.onnx.json"),
        &common::cpu_options(2),
    )
    .unwrap();
    // Deterministic on both sides: no voice variation (noise 0), so the two syntheses are identical.
    let mut sc = voice.scales();
    sc.noise_scale = 0.0;
    sc.noise_w = 0.0;
    voice.set_scales(sc);
    let offline = voice.synthesize(TEXT).unwrap();
    let ports = alloc_ports();
    let cfg = format!(
        "models:\n  runtime:\n    library: {lib}\n  tts:\n    path: {tts}\n    intra_threads: 2\nroutes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n    mode: silent\n    greeting_text: \"{TEXT}\"\n    noise_scale: 0\n    noise_w: 0\n",
        lib = m.join("onnxruntime/libonnxruntime.so.1.32.0").display(),
        tts = m.join("piper/en_US-joe-medium.onnx").display()
    );
    let app = Appliance::start(&cfg, &ports);
    let wav22 = app.dir().join("offline22k.wav");
    write_wav(&wav22, &offline, voice.sample_rate());
    let wav8 = app.dir().join("offline8k.wav");
    run_checked(std::process::Command::new(tool("sox")).arg(&wav22).args(["-D", "-r", "8000"]).arg(&wav8));
    let (expected, _) = read_wav_mono_i16(&wav8);

    let cap = Capture::start(app.dir(), &format!("udp and portrange {}-{}", ports.rtp_low, ports.rtp_high));
    let run = run_sipp(
        app.dir(),
        &scenario("uac_pcmu_speech.xml"),
        &ports.sip_addr(),
        &ports,
        &["-s", "1000", "-m", "1", "-d", "4000"],
        Duration::from_secs(40),
    );
    let pkts = cap.stop();
    assert!(run.successful == 1 && run.failed == 0, "{}\n{}", run.report(), app.log_tail(30));
    let first =
        pkts.iter().find(|p| (ports.rtp_low..=ports.rtp_high).contains(&p.src.port())).expect("RTP from the appliance");
    let audio = rtp_stream_to_pcm(&pkts, first.dst.port(), Some(first.src.port()));
    assert!(is_audible(&audio.pcm, 8000), "{}", common::audio::describe(&audio.pcm, 8000));
    let (lag, ncc) = find_in(&audio.pcm, &expected).expect("greeting found");
    assert!(ncc > 0.8, "the wire carries the Piper greeting: ncc {ncc:.3}");
    assert!(lag < 8000, "it starts within 1 s of the answer: lag {lag}");
    assert!(app.log().contains("tts: ") && app.log().contains(" on cpu"), "{}", app.log_tail(20));

    // And the words: the caller's audio, transcribed by the Whisper tiny.en oracle (CTranslate2).
    let heard = app.dir().join("heard8k.wav");
    write_wav(&heard, &audio.pcm[..audio.pcm.len().min(8000 * 12)], 8000);
    let out = run_checked(
        std::process::Command::new(models_dir().join("venv/bin/python"))
            .arg(repo_root().join("scripts/transcribe.py"))
            .arg(&heard),
    );
    let transcript = String::from_utf8_lossy(&out.stdout).to_string();
    let words = |t: &str| -> Vec<String> {
        t.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
    };
    let said = words(TEXT);
    let got = words(&transcript);
    let found = said.iter().filter(|w| got.contains(w)).count();
    assert!(
        found * 10 >= said.len() * 8,
        "the caller heard the greeting's words: {found}/{} in {transcript:?}",
        said.len()
    );
}
