//! The voice loop on a real call, without a language model: the `repeat` agent hears a SIPp
//! caller's sentence (VAD → end of turn → Whisper) and says it back with Piper, sentence by
//! sentence. What the appliance sends on the wire is captured and transcribed with the project's
//! own recogniser: it is "You said: <the caller's sentence>".

mod common;

use common::wer;
use std::time::Duration;
use switchboard::models::asr::{DecodeOptions, Precision, Whisper};

#[test]
fn the_repeat_agent_says_back_what_the_caller_said() {
    common::require_tools(&["sipp", "tcpdump", "sox"]);
    let m = common::models_dir("whisper_tiny_en/whisper.json");
    let ports = common::alloc_ports();
    let cfg = format!(
        "models:\n  runtime:\n    library: {lib}\n  vad:\n    path: {vad}\n  tts:\n    path: {tts}\n    intra_threads: 2\n  asr:\n    tiny:\n      path: {asr}\n      intra_threads: 2\n\
         routes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n    mode: repeat\n    turn_detection:\n      type: server_vad\n    transcription: {{}}\n",
        lib = m.join("onnxruntime/libonnxruntime.so.1.32.0").display(),
        vad = m.join("silero_vad/silero_vad.onnx").display(),
        tts = m.join("piper/en_US-joe-medium.onnx").display(),
        asr = m.join("whisper_tiny_en").display(),
    );
    let app = common::Appliance::start(&cfg, &ports);
    let cap = common::Capture::start(app.dir(), &format!("udp and portrange {}-{}", ports.rtp_low, ports.rtp_high));
    // The sentence plays at once; the call lasts 4 s + 6 s, time for the reply.
    let run = common::run_sipp(
        app.dir(),
        &common::scenario("uac_pcmu_speech.xml"),
        &ports.sip_addr(),
        &ports,
        &["-s", "1000", "-m", "1", "-d", "6000"],
        Duration::from_secs(40),
    );
    let pkts = cap.stop();
    assert!(run.successful == 1 && run.failed == 0, "{}\n{}", run.report(), app.log_tail(30));
    let first =
        pkts.iter().find(|p| (ports.rtp_low..=ports.rtp_high).contains(&p.src.port())).expect("RTP from the appliance");
    let audio = common::rtp_stream_to_pcm(&pkts, first.dst.port(), Some(first.src.port()));
    assert!(
        common::is_audible(&audio.pcm, 8000),
        "the agent spoke: {}\n{}",
        common::audio::describe(&audio.pcm, 8000),
        app.log_tail(30)
    );

    // What the caller heard, transcribed by our own Whisper (8 kHz → 16 kHz with sox).
    let heard8 = app.dir().join("heard8k.wav");
    common::write_wav(&heard8, &audio.pcm, 8000);
    let heard16 = app.dir().join("heard16k.wav");
    common::run_checked(
        std::process::Command::new(common::tool("sox")).arg(&heard8).args(["-D", "-r", "16000"]).arg(&heard16),
    );
    let (pcm16, _) = common::read_wav_mono_i16(&heard16);
    let x: Vec<f32> = pcm16.iter().map(|&s| s as f32 / 32768.0).collect();
    let mut w = Whisper::load(
        common::ort_runtime(),
        "tiny",
        &m.join("whisper_tiny_en"),
        Precision::Fp32,
        &common::cpu_options(2),
    )
    .unwrap();
    let said = w.transcribe(&x, &DecodeOptions::default()).unwrap().text;
    let words = wer::words(&said);
    println!("the agent said: {said:?}");
    // The appliance's own transcript of the caller, from its log, is what it said back.
    let log = app.log();
    let line = log
        .lines()
        .find(|l| l.contains("transcript turn="))
        .unwrap_or_else(|| panic!("no transcript\n{}", app.log_tail(30)));
    let caller_text = line.split("text=").nth(1).unwrap_or("").trim().to_string();
    let expected = format!("You said: {caller_text}");
    let errors = wer::word_errors(&expected, &said);
    assert!(words.starts_with(&["you".to_string(), "said".to_string()]), "{said:?}\n{}", app.log_tail(30));
    assert!(["hear", "me"].iter().all(|w| words.contains(&w.to_string())), "{said:?}");
    assert!(
        errors * 4 <= wer::words(&expected).len(),
        "the reply is the caller's words: {said:?} vs {expected:?} ({errors} errors)"
    );
}
