//! Spoken calls for the tests: a caller's side made of Piper sentences at given times (a pcap
//! SIPp plays), and the appliance's side of a capture as 16 kHz audio for the project's Whisper,
//! transcribed turn by turn.

use super::{run_checked, tool, write_wav, Ports, UdpPacket};
use std::path::Path;
use std::process::Command;

/// Piper speaks `lines` at their times (s), without sampling noise (the same audio every run),
/// into `dir`/pcap/turn_pause_pcmu.pcap (PCMU, for uac_pcmu_turn_pause.xml); the audio lasts
/// `min_total_s`, and at least `tail_s` after the last line. Returns when each line ends (s).
pub fn caller_pcap(
    models: &Path,
    dir: &Path,
    lines: &[(f64, &str)],
    min_total_s: f64,
    tail_s: f64,
    ssrc: u32,
) -> Vec<f64> {
    let mut voice = caller_voice(models);
    let rate = voice.sample_rate() as usize;
    let spoken: Vec<(usize, Vec<i16>)> =
        lines.iter().map(|(at, text)| ((at * rate as f64) as usize, say_with_pauses(&mut voice, text, rate))).collect();
    let last_end = spoken.iter().map(|(start, s)| start + s.len()).max().unwrap_or(0);
    let mut pcm = vec![0i16; ((min_total_s * rate as f64) as usize).max(last_end + (tail_s * rate as f64) as usize)];
    let mut ends = Vec::new();
    for (start, s) in &spoken {
        pcm[*start..start + s.len()].copy_from_slice(s);
        ends.push((start + s.len()) as f64 / rate as f64);
    }
    let src = dir.join("caller22k.wav");
    write_wav(&src, &pcm, rate as u32);
    let wav8 = dir.join("caller8k.wav");
    run_checked(Command::new(tool("sox")).arg(&src).args(["-D", "-r", "8000"]).arg(&wav8));
    std::fs::create_dir_all(dir.join("pcap")).unwrap();
    super::fixtures::write_rtp_audio_pcap(&wav8, &dir.join("pcap/turn_pause_pcmu.pcap"), 0, 20, 1000, 160_000, ssrc);
    ends
}

/// The callers' voice: Piper without VITS's sampling noise, so the caller says the same thing in
/// every run (with it, Whisper tiny heard "What about Sunday?" as "What about funding?" in one full
/// run out of several).
fn caller_voice(models: &Path) -> switchboard::models::tts::PiperVoice {
    let onnx = models.join("piper/en_US-joe-medium.onnx");
    let mut voice = switchboard::models::tts::PiperVoice::load(
        super::ort_runtime(),
        &onnx,
        &onnx.with_extension("onnx.json"),
        &super::cpu_options(2),
    )
    .unwrap();
    voice.set_scales(switchboard::models::tts::Scales { noise_scale: 0.0, length_scale: 1.0, noise_w: 0.0 });
    voice
}

/// Each of `lines` spoken by the callers' voice at 8 kHz (resampled by sox; the WAVs are left in
/// `dir`), without Piper's leading and trailing silence: a line starts with its first sound.
pub fn caller_lines_8k(models: &Path, dir: &Path, lines: &[&str]) -> Vec<Vec<i16>> {
    let mut voice = caller_voice(models);
    let rate = voice.sample_rate() as usize;
    lines
        .iter()
        .enumerate()
        .map(|(k, text)| {
            let mut pcm = say_with_pauses(&mut voice, text, rate);
            let loud = |x: &i16| x.unsigned_abs() > 300;
            pcm.truncate(pcm.iter().rposition(loud).map_or(pcm.len(), |p| p + 1));
            pcm.drain(..pcm.iter().position(loud).unwrap_or(0));
            let (src, wav8) = (dir.join(format!("line{k}-22k.wav")), dir.join(format!("line{k}-8k.wav")));
            write_wav(&src, &pcm, rate as u32);
            run_checked(Command::new(tool("sox")).arg(&src).args(["-D", "-r", "8000"]).arg(&wav8));
            super::read_wav_mono_i16(&wav8).0
        })
        .collect()
}

/// `text` spoken; `[pause MS]` inside it is exactly that much silence between the sounds on either
/// side (a caller thinking mid-sentence): Piper's own leading and trailing silence is cut there.
fn say_with_pauses(voice: &mut switchboard::models::tts::PiperVoice, text: &str, rate: usize) -> Vec<i16> {
    let mut split = text.split("[pause ");
    let mut pieces = vec![(0usize, split.next().unwrap_or(""))];
    for piece in split {
        let (ms, rest) = piece.split_once(']').expect("[pause MS]");
        pieces.push((ms.trim().parse().expect("[pause MS]: MS in milliseconds"), rest));
    }
    let last = pieces.len() - 1;
    let mut pcm = Vec::new();
    for (k, (pause_ms, words)) in pieces.into_iter().enumerate() {
        let mut s = voice.synthesize(words.trim()).unwrap();
        let loud = |x: &i16| x.unsigned_abs() > 300;
        if k < last {
            s.truncate(s.iter().rposition(loud).map_or(s.len(), |p| p + 1));
        }
        if k > 0 {
            s.drain(..s.iter().position(loud).unwrap_or(0));
            pcm.extend(std::iter::repeat_n(0i16, pause_ms * rate / 1000));
        }
        pcm.extend(s);
    }
    pcm
}

/// 16 kHz audio in [−1, 1] transcribed turn by turn by the project's Whisper tiny.en (fp32) after
/// the Silero VAD has cut it (800 ms of silence ends a turn).
pub fn transcribe_16k(models: &Path, audio: &[f32]) -> Vec<switchboard::models::asr::offline::TurnText> {
    use switchboard::models::asr::{offline, DecodeOptions, Precision, Whisper};
    use switchboard::models::vad::{SegmenterConfig, SileroVad};
    let rt = super::ort_runtime();
    let mut vad = SileroVad::load(rt, &models.join("silero_vad/silero_vad.onnx"), &super::cpu_options(1)).unwrap();
    let mut whisper =
        Whisper::load(rt, "tiny", &models.join("whisper_tiny_en"), Precision::Fp32, &super::cpu_options(2)).unwrap();
    let seg = SegmenterConfig { silence_duration_ms: 800, ..Default::default() };
    offline::transcribe_turns(&mut vad, seg, &mut whisper, &DecodeOptions::default(), audio).unwrap()
}

/// The appliance's RTP in a capture (the first stream from its port range), decoded and resampled
/// by sox to 16 kHz f32 in [−1, 1]; the 8 and 16 kHz WAVs are left in `dir`.
pub fn agent_audio_16k(dir: &Path, pkts: &[UdpPacket], ports: &Ports) -> Vec<f32> {
    let first =
        pkts.iter().find(|p| (ports.rtp_low..=ports.rtp_high).contains(&p.src.port())).expect("RTP from the appliance");
    let audio = super::rtp_stream_to_pcm(pkts, first.dst.port(), Some(first.src.port()));
    let heard8 = dir.join("heard8k.wav");
    write_wav(&heard8, &audio.pcm, 8000);
    let heard16 = dir.join("heard16k.wav");
    run_checked(Command::new(tool("sox")).arg(&heard8).args(["-D", "-r", "16000"]).arg(&heard16));
    let (pcm16, _) = super::read_wav_mono_i16(&heard16);
    pcm16.iter().map(|&s| s as f32 / 32768.0).collect()
}
