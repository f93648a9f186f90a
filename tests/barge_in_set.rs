//! Barge-in on real speech in virtual time (`call::bargein_sim`, what `switchboard bench-barge-in`
//! runs): Piper's agent reply goes out through the pacer, the caller's μ-law line carries its echo
//! at −10 dB after 60 ms, and interruptions, back-channels ("uh-huh", "mm-hmm", …), coughs or
//! nothing come back; the Silero VAD and the shipped barge-in settings decide. Repeatable: the
//! clock is simulated and the onsets come from a fixed seed.

mod common;

use switchboard::call::bargein::BargeInConfig;
use switchboard::call::bargein_sim::{self, percentile, Line};
use switchboard::models::tts::PiperVoice;
use switchboard::models::vad::SileroVad;

#[test]
fn interruptions_stop_the_agent_and_echo_back_channels_and_coughs_do_not() {
    let m = common::models_dir("piper/en_US-joe-medium.onnx");
    let rt = common::ort_runtime();
    let mut vad = SileroVad::load(rt, &m.join("silero_vad/silero_vad.onnx"), &common::cpu_options(1)).unwrap();
    let onnx = m.join("piper/en_US-joe-medium.onnx");
    let mut voice = PiperVoice::load(rt, &onnx, &onnx.with_extension("onnx.json"), &common::cpu_options(2)).unwrap();
    let size = bargein_sim::SetSize { interruptions: 8, back_channel_rounds: 1, coughs: 6 };
    let r =
        bargein_sim::evaluate(&mut vad, &mut voice, &BargeInConfig::default(), 400, &Line::default(), size).unwrap();
    let summary = r.summary();
    println!("{summary}");
    for (kind, v) in [
        ("interruption", &r.interruptions),
        ("back-channel", &r.back_channels),
        ("cough", &r.coughs),
        ("echo only", &r.echo_only),
    ] {
        for o in v {
            println!("  {kind}: {o:?}");
        }
    }
    // Every interruption stops the agent, fast: the caller's onset on the wire to the agent's last packet.
    assert!(r.interruptions.iter().all(|o| o.committed && o.onset_ms.is_some()), "{summary}");
    let lat = r.stop_latencies();
    assert!(percentile(&lat, 50.0).unwrap() <= 150, "{summary}");
    assert!(*lat.last().unwrap() <= 400, "{summary}");
    // The agent's own echo never even pauses it; coughs and back-channels never stop it.
    assert!(r.echo_only.iter().all(|o| !o.paused), "{summary}");
    assert!(r.coughs.iter().all(|o| !o.committed), "{summary}");
    assert!(r.back_channels.iter().all(|o| !o.committed), "{summary}");
    // A back-channel that paused the agent let it resume.
    assert!(r.back_channels.iter().filter(|o| o.paused && !o.committed).all(|o| o.resumed), "{summary}");

    // Without the echo check, the same echo would interrupt the agent: the check is what holds it.
    // (The onset gate off, so that it is the VAD path that hears the echo as speech.)
    let no_check = BargeInConfig { echo_ncc: 2.0, onset_dbfs: 0.0, ..Default::default() };
    let bare = bargein_sim::run_trial(
        &mut vad,
        &no_check,
        400,
        &Line { echo_gain: 0.5, ..Line::default() },
        &voice.synthesize_16k(bargein_sim::AGENT_REPLY).unwrap(),
        None,
    );
    assert!(bare.paused, "echo at −6 dB with no echo check should reach the VAD as speech: {bare:?}");
}
