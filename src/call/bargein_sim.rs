//! Barge-in in virtual time on real audio, for `switchboard bench-barge-in` and the tests.
//!
//! The agent's reply (Piper speech) goes out through the real `Pacer` in 20 ms
//! frames. The caller's line carries the agent's echo (by default −10 dB after
//! 60 ms) plus, at a chosen moment, the caller's own sound: an interruption, a
//! back-channel ("uh-huh"), a cough, or nothing. That line audio is encoded
//! and decoded as G.711 μ-law by the codecs calls use. As in the media loop
//! (`CallMedia::handle_rtp`), each packet meets `BargeInTracker` as it arrives
//! (the echo verdict and the onset gate, whose pause holds the agent's next
//! frame), then reaches the VAD after the jitter buffer's delay, is scored by
//! the Silero VAD in 32 ms chunks, and the tracker decides — the same decision
//! code the media loop runs; only the clock is simulated, so every figure is
//! repeatable.
//!
//! The timing follows the media loop: at each packet time the agent's frame
//! leaves first, then the caller's packet of that time arrives (on a real line
//! it arrives anywhere in the 20 ms before the next frame, so the sim is up to
//! a frame pessimistic there); a VAD chunk completed at one packet time is
//! scored and acted on before the next frame leaves (the media loop reads the
//! worker's answer at the next packet time, before sending that frame).
//!
//! Times are wire times: the caller's speech onset is the first 20 ms packet
//! of their sound above −34 dBFS (the e2e tests' 0.02 RMS criterion on the
//! capture), and the agent's stop is its last speech packet sent.

use super::bargein::{BargeAction, BargeInConfig, BargeInTracker};
use crate::media::codec::{self, CodecKind, OpusParams};
use crate::media::pacer::{Pacer, PacerConfig};
use crate::models::vad::{SileroVad, StreamState};
use std::time::{Duration, Instant};

const FRAME: usize = 320; // 20 ms at 16 kHz
const CHUNK: usize = 512; // the VAD's 32 ms

/// The line between the agent and the detector.
#[derive(Debug, Clone, Copy)]
pub struct Line {
    /// Amplitude of the agent's echo on the caller's line (0.316: −10 dB; 0: none).
    pub echo_gain: f32,
    pub echo_delay_ms: u64,
    /// The receive path's delay before the VAD hears a packet (jitter buffer).
    pub jitter_ms: u64,
    /// Background noise RMS (full scale 32768).
    pub noise_rms: f32,
}

impl Default for Line {
    fn default() -> Self {
        Line { echo_gain: 0.316, echo_delay_ms: 60, jitter_ms: 40, noise_rms: 30.0 }
    }
}

/// What one trial saw.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outcome {
    /// The caller's sound began on the wire (ms from the start of the agent's reply).
    pub onset_ms: Option<u64>,
    /// The agent's audio was held (a pause that was then resumed or committed).
    pub paused: bool,
    pub resumed: bool,
    pub committed: bool,
    /// Onset → the agent's last speech packet after it (committed trials).
    pub stop_ms: Option<u64>,
    /// Onset → the first frame held back (paused trials).
    pub pause_ms: Option<u64>,
    /// When the first pause and the commit came (ms from the start of the reply, wire time).
    pub first_pause_at_ms: Option<u64>,
    pub commit_at_ms: Option<u64>,
    /// Where the time from the onset to the pause went (interruptions and sounds that paused).
    pub trace: OnsetTrace,
}

/// Milestones after the caller's onset on the wire (ms after it, at packet times): the onset
/// gate paused the agent, the onset's packet reaches the detector, the VAD chunk holding it is scored, the first chunk over the
/// threshold, the first one over it and not echo (the pause decision), and the first agent frame
/// held back.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OnsetTrace {
    pub gated_ms: Option<u64>,
    pub heard_ms: Option<u64>,
    pub chunk_scored_ms: Option<u64>,
    pub speech_chunk_ms: Option<u64>,
    pub decided_ms: Option<u64>,
}

fn rms(pcm: &[i16]) -> f32 {
    (pcm.iter().map(|&s| (s as f32) * (s as f32)).sum::<f32>() / pcm.len().max(1) as f32).sqrt()
}

/// Simple deterministic noise (no RNG dependency in the library).
fn noise(seed: &mut u64) -> f32 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
}

/// One trial: the agent speaks `agent` (16 kHz); the caller's `sound` (16 kHz) starts `at_ms` into it.
pub fn run_trial(
    vad: &mut SileroVad,
    cfg: &BargeInConfig,
    echo_max_delay_ms: u64,
    line: &Line,
    agent: &[i16],
    sound: Option<(&[i16], u64)>,
) -> Outcome {
    let t0 = Instant::now();
    let pcfg = PacerConfig {
        clock_rate: 8000,
        pcm_rate: 16000,
        ptime: Duration::from_millis(20),
        payload_type: 0,
        ssrc: 1,
        initial_sequence: 0,
        initial_timestamp: 0,
        max_catch_up: 3,
    };
    let mut pacer = Pacer::new(pcfg, t0);
    pacer.push_audio(agent);
    let mut tracker = BargeInTracker::new(cfg.clone(), echo_max_delay_ms);
    let mut enc = codec::encoder(CodecKind::Pcmu, 20, &OpusParams::default()).expect("PCMU encoder");
    let mut dec = codec::decoder(CodecKind::Pcmu, 20).expect("PCMU decoder");
    let mut stream = StreamState::new(16000).expect("16 kHz VAD");

    // The caller's own sound on the wire timeline, and where it is first audible.
    let (sound, at) = sound.map_or((&[][..], 0), |(s, at)| (s, at as usize * 16));
    let onset_frame = sound.chunks(FRAME).position(|f| rms(f) > 0.02 * 32768.0).map(|k| at / FRAME + k);

    let mut sent: Vec<i16> = Vec::with_capacity(agent.len() + 16000);
    let mut in_flight: std::collections::VecDeque<(u32, Vec<i16>)> = std::collections::VecDeque::new();
    let jitter_frames = (line.jitter_ms / 20) as usize;
    let echo_delay = line.echo_delay_ms as usize * 16;
    let mut vad_buf: Vec<f32> = Vec::new();
    let mut caller_samples = 0u64;
    let mut seq = 0u64;
    let mut seed = 0x5EED_u64;
    let mut out = Outcome { onset_ms: onset_frame.map(|f| f as u64 * 20), ..Default::default() };
    let mut last_speech_frame = None;
    let mut first_held_frame = None;
    let frames = (agent.len() + sound.len() + at) / FRAME + 50;
    let mut payload = Vec::new();
    let mut pcm = Vec::new();
    for k in 0..frames {
        // The agent's frame of this packet time.
        let talking_before = pacer.queued_samples() > 0 || pacer.is_paused();
        for f in pacer.handle_timeout(t0 + Duration::from_millis(20 * k as u64)) {
            tracker.agent_sent(&f.pcm);
            if f.speech {
                last_speech_frame = Some(k);
            } else if talking_before && pacer.is_paused() && first_held_frame.is_none() {
                first_held_frame = Some(k);
            }
            sent.extend_from_slice(&f.pcm);
        }
        // The caller's line for this packet time: echo + their sound + noise, through μ-law.
        let base = k * FRAME;
        let line_pcm: Vec<i16> = (0..FRAME)
            .map(|i| {
                let n = base + i;
                let echo =
                    n.checked_sub(echo_delay).and_then(|m| sent.get(m)).map_or(0.0, |&s| s as f32 * line.echo_gain);
                let own = n.checked_sub(at).and_then(|m| sound.get(m)).map_or(0.0, |&s| s as f32);
                (echo + own + noise(&mut seed) * line.noise_rms * 3.46).clamp(-32768.0, 32767.0) as i16
            })
            .collect();
        payload.clear();
        enc.encode(&line_pcm, &mut payload).expect("PCMU encodes any frame");
        pcm.clear();
        dec.decode(&payload, &mut pcm).expect("PCMU decodes any payload");
        // The packet arrives: its echo verdict and the onset gate.
        let talking = pacer.queued_samples() > 0 || pacer.is_paused();
        if let Some(BargeAction::Pause { .. }) = tracker.caller_arrived(k as u32, &pcm, talking, caller_samples / 16) {
            pacer.pause();
            out.paused = true;
            out.first_pause_at_ms.get_or_insert(k as u64 * 20);
            if let Some(o) = onset_frame.filter(|&o| k >= o) {
                out.trace.gated_ms.get_or_insert((k - o) as u64 * 20);
            }
        }
        in_flight.push_back((k as u32, pcm.clone()));
        if in_flight.len() <= jitter_frames {
            continue;
        }
        let Some((ts, heard)) = in_flight.pop_front() else { continue };
        // The media loop's order: the frame to the tracker, then the VAD's answers.
        if onset_frame.is_some_and(|o| caller_samples == (o * FRAME) as u64) {
            out.trace.heard_ms = Some((k - onset_frame.unwrap_or(k)) as u64 * 20);
        }
        tracker.caller_frame(caller_samples, heard.len() as u64, Some(ts));
        caller_samples += heard.len() as u64;
        vad_buf.extend(heard.iter().map(|&s| s as f32 / 32768.0));
        while vad_buf.len() >= CHUNK {
            let chunk: Vec<f32> = vad_buf.drain(..CHUNK).collect();
            let p = vad.infer(&mut [&mut stream], &[&chunk]).map(|v| v[0]).unwrap_or(0.0);
            let talking = pacer.queued_samples() > 0 || pacer.is_paused();
            if let Some(o) = onset_frame {
                let since = |k: usize| (k.saturating_sub(o) * 20) as u64;
                if (seq + 1) * CHUNK as u64 > (o * FRAME) as u64 {
                    out.trace.chunk_scored_ms.get_or_insert(since(k));
                    if p >= cfg.threshold {
                        out.trace.speech_chunk_ms.get_or_insert(since(k));
                        if !tracker.echo_in(seq * 32, (seq + 1) * 32) {
                            out.trace.decided_ms.get_or_insert(since(k));
                        }
                    }
                }
            }
            match tracker.vad_chunk(p, seq * 32, (seq + 1) * 32, talking) {
                Some(BargeAction::Pause { .. }) => {
                    pacer.pause();
                    out.paused = true;
                    out.first_pause_at_ms.get_or_insert(k as u64 * 20);
                }
                Some(BargeAction::Resume) => {
                    pacer.resume();
                    out.resumed = true;
                }
                Some(BargeAction::Commit { .. }) => {
                    pacer.clear();
                    out.committed = true;
                    out.commit_at_ms = Some(k as u64 * 20);
                }
                None => {}
            }
            seq += 1;
        }
    }
    if let Some(onset) = onset_frame {
        if out.committed {
            let last = last_speech_frame.filter(|&l| l >= onset).unwrap_or(onset);
            out.stop_ms = Some((last - onset) as u64 * 20);
        }
        out.pause_ms = first_held_frame.map(|f| f.saturating_sub(onset) as u64 * 20);
    }
    out
}

/// A crude cough: a burst of noise, shaped like one (10 ms attack, ~150 ms decay), around 1–3 kHz.
pub fn cough(seed: u64, ms: u64, level: f32) -> Vec<i16> {
    let n = ms as usize * 16;
    let mut s = seed | 1;
    let (mut lp, mut hp_prev) = (0.0f32, 0.0f32);
    (0..n)
        .map(|i| {
            let t = i as f32 / 16.0; // ms
            let env = (t / 10.0).min(1.0) * (-(t - 10.0).max(0.0) / (ms as f32 * 0.4)).exp();
            let w = noise(&mut s);
            lp = 0.6 * lp + 0.4 * w; // low-pass
            let band = lp - hp_prev; // and high-pass: a band of noise
            hp_prev = lp * 0.7;
            (band * env * level * 32767.0 * 2.0).clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

/// Another speaker from the agent's voice: played 12 % faster (pitch up by the same), so the caller
/// does not sound like the agent's own echo.
pub fn other_speaker(pcm: &[i16]) -> Vec<i16> {
    let step = 1.12f64;
    let n = (pcm.len() as f64 / step) as usize;
    (0..n)
        .map(|i| {
            let x = i as f64 * step;
            let j = x as usize;
            let f = (x - j as f64) as f32;
            let a = pcm[j] as f32;
            let b = *pcm.get(j + 1).unwrap_or(&pcm[j]) as f32;
            (a + (b - a) * f) as i16
        })
        .collect()
}

/// Percentile (0..=100) of sorted values, nearest rank.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// What the agent says in every trial (~20 s of Piper speech).
pub const AGENT_REPLY: &str = "Thank you for calling Sunny Bakery. We bake fresh bread every morning from six o'clock, \
and our cakes are made to order with two days of notice. On Saturdays we open at eight and close at two in the afternoon, \
and on Sundays we are closed all day. If you would like to place an order, I can take your name and the date you need it.";
/// Real interruptions (spoken by "another speaker", see `other_speaker`).
pub const INTERRUPTIONS: [&str; 6] = [
    "Sorry, can I stop you there?",
    "Wait, I just need the opening hours.",
    "Hold on, hold on, that is not what I asked.",
    "Actually, I would like to talk to a person.",
    "No, no, I already have an order.",
    "Excuse me, what time do you close today?",
];
/// Back-channels: the caller is listening, not taking the turn.
pub const BACK_CHANNELS: [&str; 6] = ["Uh-huh.", "Okay.", "Yeah.", "Mm-hmm.", "Right.", "Sure."];

/// Results by kind of trial.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub interruptions: Vec<Outcome>,
    pub back_channels: Vec<Outcome>,
    pub coughs: Vec<Outcome>,
    pub echo_only: Vec<Outcome>,
}

impl Report {
    /// Sorted onset → last agent packet of the committed interruptions.
    pub fn stop_latencies(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.interruptions.iter().filter_map(|o| o.stop_ms).collect();
        v.sort_unstable();
        v
    }

    /// Trials that are not interruptions but stopped the agent for good.
    pub fn false_interruptions(&self) -> usize {
        self.back_channels.iter().chain(&self.coughs).chain(&self.echo_only).filter(|o| o.committed).count()
    }

    pub fn false_trials(&self) -> usize {
        self.back_channels.len() + self.coughs.len() + self.echo_only.len()
    }

    /// A human-readable summary (the bench's output).
    pub fn summary(&self) -> String {
        let lat = self.stop_latencies();
        let pauses = {
            let mut v: Vec<u64> = self.interruptions.iter().filter_map(|o| o.pause_ms).collect();
            v.sort_unstable();
            v
        };
        let count = |v: &[Outcome], f: fn(&Outcome) -> bool| v.iter().filter(|o| f(o)).count();
        let fmt = |x: Option<u64>| x.map_or("-".into(), |x| x.to_string());
        let mut s = String::new();
        s += &format!(
            "interruptions: {} of {} stopped the agent; caller onset on the wire -> last agent speech packet: p50 {} ms, p95 {} ms, max {} ms (audio held after p50 {} ms, p95 {} ms)\n",
            count(&self.interruptions, |o| o.committed),
            self.interruptions.len(),
            fmt(percentile(&lat, 50.0)),
            fmt(percentile(&lat, 95.0)),
            fmt(lat.last().copied()),
            fmt(percentile(&pauses, 50.0)),
            fmt(percentile(&pauses, 95.0)),
        );
        let step = |f: fn(&OnsetTrace) -> Option<u64>| {
            let mut v: Vec<u64> = self.interruptions.iter().filter_map(|o| f(&o.trace)).collect();
            v.sort_unstable();
            format!("{}/{}", fmt(percentile(&v, 50.0)), fmt(percentile(&v, 95.0)))
        };
        s += &format!(
            "  where it went (ms after the onset, p50/p95): onset gate paused {}, reaches the VAD {}, its VAD chunk scored {}, first chunk over the threshold {}, and not echo (pause decided) {}\n",
            step(|t| t.gated_ms),
            step(|t| t.heard_ms),
            step(|t| t.chunk_scored_ms),
            step(|t| t.speech_chunk_ms),
            step(|t| t.decided_ms),
        );
        for (name, v) in
            [("back-channels", &self.back_channels), ("coughs", &self.coughs), ("echo only", &self.echo_only)]
        {
            s += &format!(
                "{name}: {} trials, {} stopped the agent (false barge-in), {} paused it and it resumed\n",
                v.len(),
                count(v, |o| o.committed),
                count(v, |o| o.paused && o.resumed && !o.committed),
            );
        }
        s += &format!(
            "false barge-in rate: {} of {} ({:.1} %)\n",
            self.false_interruptions(),
            self.false_trials(),
            100.0 * self.false_interruptions() as f64 / self.false_trials().max(1) as f64
        );
        s
    }
}

/// How many trials of each kind.
#[derive(Debug, Clone, Copy)]
pub struct SetSize {
    pub interruptions: usize,
    /// Each round is every back-channel once.
    pub back_channel_rounds: usize,
    pub coughs: usize,
}

/// The set: interruptions, back-channels, coughs and three echo-only replies (the line's echo,
/// −7 dB at 30 ms, −14 dB at 150 ms), at onsets spread over the reply by a fixed seed. Piper speaks
/// without its random noise (noise_scale and noise_w 0), so every run hears the same audio and
/// gives the same figures.
pub fn evaluate(
    vad: &mut SileroVad,
    voice: &mut crate::models::tts::PiperVoice,
    cfg: &BargeInConfig,
    echo_max_delay_ms: u64,
    line: &Line,
    size: SetSize,
) -> Result<Report, String> {
    let scales = crate::models::tts::Scales { noise_scale: 0.0, noise_w: 0.0, ..voice.scales() };
    let mut say = |t: &str| voice.synthesize_16k_with(t, scales, 1.0).map_err(|e| format!("synthesising {t:?}: {e}"));
    let agent = say(AGENT_REPLY)?;
    let lines: Vec<Vec<i16>> =
        INTERRUPTIONS.iter().map(|t| say(t).map(|p| other_speaker(&p))).collect::<Result<_, _>>()?;
    let backs: Vec<Vec<i16>> =
        BACK_CHANNELS.iter().map(|t| say(t).map(|p| other_speaker(&p))).collect::<Result<_, _>>()?;
    let agent_ms = agent.len() as u64 / 16;
    let mut seed = 0xB4_26E1_u64;
    // Onsets from 1 s to 4 s before the reply's end, so every sound falls on the agent's speech or its pauses.
    let span = agent_ms.saturating_sub(5000).max(1);
    let mut onset = || 1000 + ((noise(&mut seed) + 0.5) * span as f32) as u64;
    let mut r = Report::default();
    for i in 0..size.interruptions {
        let at = onset();
        r.interruptions.push(run_trial(vad, cfg, echo_max_delay_ms, line, &agent, Some((&lines[i % lines.len()], at))));
    }
    for round in 0..size.back_channel_rounds as u64 {
        for b in &backs {
            let at = onset() + round;
            r.back_channels.push(run_trial(vad, cfg, echo_max_delay_ms, line, &agent, Some((b, at))));
        }
    }
    for i in 0..size.coughs {
        let c = cough(i as u64 + 1, 120 + (i as u64 * 37) % 200, 0.25 + 0.05 * (i % 6) as f32);
        let at = onset();
        r.coughs.push(run_trial(vad, cfg, echo_max_delay_ms, line, &agent, Some((&c, at))));
    }
    // The line's own echo and two harder ones: louder (−7 dB) and quicker, quieter and later.
    for (gain, delay) in [(line.echo_gain, line.echo_delay_ms), (0.45, 30), (0.2, 150)] {
        let l = Line { echo_gain: gain, echo_delay_ms: delay, ..*line };
        r.echo_only.push(run_trial(vad, cfg, echo_max_delay_ms, &l, &agent, None));
    }
    Ok(r)
}
