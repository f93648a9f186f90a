//! `switchboard bench-barge-in`: barge-in latency and false barge-ins on the set of
//! `call::bargein_sim` (real Piper speech, real Silero VAD, μ-law line with the agent's echo, the
//! agent's barge-in settings from the config), in virtual time; and the echo check's cost per
//! caller frame, in wall time.

use std::time::Instant;
use switchboard::call::bargein_sim::{self, Line};
use switchboard::call::echo_check::EchoCheck;
use switchboard::config::LoadedConfig;
use switchboard::models::{runtime, tts, vad};

pub fn bench(
    loaded: &LoadedConfig,
    agent: Option<&str>,
    interruptions: usize,
    coughs: usize,
    line: Line,
    verbose: bool,
) -> Result<(), String> {
    let m = loaded.config.models.as_ref().ok_or("the config has no models section")?;
    let v = m.vad.as_ref().ok_or("the config has no models.vad (the barge-in decision needs the VAD)")?;
    let t = m.tts.as_ref().ok_or("the config has no models.tts (the set is spoken by the Piper voice)")?;
    let settings = match agent {
        Some(a) => loaded.config.agents.get(a).ok_or_else(|| format!("no agent `{a}` in the config"))?.barge_in.clone(),
        None => {
            loaded.config.agents.values().find(|a| a.barge_in.enabled).map(|a| a.barge_in.clone()).unwrap_or_default()
        }
    };
    let rt = runtime::init(&loaded.resolve(&m.runtime.library)).map_err(|e| e.to_string())?;
    let mut vad =
        vad::SileroVad::load(rt, &loaded.resolve(&v.path), &v.session_options()).map_err(|e| e.to_string())?;
    let path = loaded.resolve(&t.path);
    let mut json = path.clone().into_os_string();
    json.push(".json");
    let mut voice = tts::PiperVoice::load(rt, &path, std::path::Path::new(&json), &t.session_options())
        .map_err(|e| e.to_string())?;
    let cfg = settings.decision();
    println!(
        "barge-in: threshold {}, pause {} ms, commit {} ms, resume {} ms, echo NCC {} at >= {} dB return loss within {} ms",
        cfg.threshold, cfg.pause_ms, cfg.commit_ms, cfg.resume_ms, cfg.echo_ncc, cfg.echo_return_loss_db, settings.echo_max_delay_ms.get()
    );
    println!(
        "line: PCMU, echo {:.1} dB after {} ms, jitter buffer {} ms, noise {:.0} dBFS",
        20.0 * line.echo_gain.max(1e-6).log10(),
        line.echo_delay_ms,
        line.jitter_ms,
        20.0 * (line.noise_rms / 32768.0).max(1e-9).log10()
    );
    let t0 = Instant::now();
    let size = bargein_sim::SetSize { interruptions, back_channel_rounds: 2, coughs };
    let report = bargein_sim::evaluate(&mut vad, &mut voice, &cfg, settings.echo_max_delay_ms.get(), &line, size)?;
    if verbose {
        let kinds = [
            ("interruption", &report.interruptions),
            ("back-channel", &report.back_channels),
            ("cough", &report.coughs),
            ("echo only", &report.echo_only),
        ];
        for (kind, v) in kinds {
            for (i, o) in v.iter().enumerate() {
                println!("  {kind} {i}: {o:?}");
            }
        }
    }
    print!("{}", report.summary());
    println!(
        "({} trials simulated in {:.1} s)",
        report.interruptions.len() + report.false_trials(),
        t0.elapsed().as_secs_f64()
    );

    // The echo check's cost: every caller frame while the agent talks (the worst case: full search).
    let agent = voice.synthesize_16k(bargein_sim::AGENT_REPLY).map_err(|e| e.to_string())?;
    let mut e = EchoCheck::new(settings.echo_max_delay_ms.get(), cfg.echo_ncc, cfg.echo_return_loss_db);
    let frames: Vec<&[i16]> = agent.chunks_exact(320).collect();
    let quiet: Vec<Vec<i16>> = frames.iter().map(|f| f.iter().map(|&s| s / 4).collect()).collect();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t0 = Instant::now();
        for (f, q) in frames.iter().zip(&quiet) {
            e.sent(f);
            std::hint::black_box(e.check(q));
        }
        best = best.min(t0.elapsed().as_secs_f64());
    }
    let per_frame_us = best * 1e6 / frames.len() as f64;
    println!(
        "echo check: {per_frame_us:.0} µs per 20 ms caller frame while the agent talks ({:.2} % of one core per call; best of 3 over {} frames)",
        per_frame_us / 20_000.0 * 100.0,
        frames.len()
    );
    Ok(())
}
