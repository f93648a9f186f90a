//! Step 2 with real peers: Opus from baresip (audio both ways, RTCP), DTMF
//! from baresip's `sndcode` and from the RFC 4733 captures SIPp ships, and
//! the RTP timeout.

mod common;

use common::*;
use std::time::Duration;

fn digits_in_log(log: &str) -> String {
    log.lines()
        .filter(|l| l.contains("DTMF received"))
        .filter_map(|l| l.split("digit=").nth(1).and_then(|r| r.chars().next()))
        .collect()
}

/// Resample a WAV to 8 kHz mono with sox (independent of our resampler).
fn to_8k_mono(src: &std::path::Path, dir: &std::path::Path) -> Vec<i16> {
    let out = dir.join(format!("{}-8k.wav", src.file_stem().unwrap().to_string_lossy()));
    run_checked(std::process::Command::new(tool("sox")).arg(src).args(["-r", "8000", "-c", "1", "-b", "16"]).arg(&out));
    read_wav_mono_i16(&out).0
}

#[test]
fn baresip_opus_call_audio_both_ways_dtmf_and_rtcp() {
    require_tools(&["baresip", "sox", "espeak-ng"]);
    let fx = fixtures();
    let ports = alloc_ports();
    let cfg = format!(
        "media:\n  codecs: [opus, pcmu]\n  rtcp_interval_ms: 1000\nroutes:\n  - match: \"*\"\n    agent: echo\nagents:\n  echo:\n    greeting: {}\n    echo_delay_ms: 200\n",
        fx.greeting_8k.display()
    );
    let app = Appliance::start(&cfg, &ports);
    let greeting = fx.greeting_pcm();
    let speech = fx.speech_pcm();
    // baresip needs 48 kHz stereo for opus/48000/2: the sentence after the greeting, then quiet.
    let lead_s = greeting.len() as f64 / 8000.0 + 1.0;
    let src = app.dir().join("opus_source.wav");
    run_checked(
        std::process::Command::new(tool("sox"))
            .arg(&fx.speech_8k)
            .args(["-r", "48000", "-c", "2", "-b", "16"])
            .arg(&src)
            .args(["pad", &format!("{lead_s:.3}"), "15"]),
    );
    let phone = Baresip::start(app.dir(), &ports, &src, "opus");
    phone.dial(&format!("sip:1000@{}", ports.sip_addr()));
    assert!(
        phone.wait_event("CALL_ESTABLISHED", Duration::from_secs(10)).is_some(),
        "{}\n{}",
        phone.log(),
        app.log_tail(20)
    );
    assert!(app.wait_log("codec=Opus", Duration::from_secs(2)), "Opus negotiated: {}", app.log_tail(20));
    std::thread::sleep(Duration::from_secs_f64(lead_s + speech.len() as f64 / 8000.0 + 1.0));
    phone.send_dtmf("123#");
    // baresip reports every ~5 s, and only a report sent after it received one of our SRs carries
    // the LSR/DLSR an RTT needs: keep the call up long enough for a few rounds.
    std::thread::sleep(Duration::from_secs(9));
    phone.hangup();
    assert!(phone.wait_event("CALL_CLOSED", Duration::from_secs(5)).is_some());
    assert!(app.wait_log("media stopped", Duration::from_secs(5)));

    // What baresip heard: the greeting, then its own sentence, both through Opus.
    let rec = phone.recordings();
    assert_eq!(rec.len(), 1, "{rec:?}");
    let heard = to_8k_mono(&rec[0], app.dir());
    assert!(is_audible(&heard, 8000), "baresip's recording is audible");
    // Piece by piece (0.5 s pieces, ±60 ms): two adaptive jitter buffers (ours and baresip's) may
    // each insert or drop a frame mid-sentence, which breaks a whole-sentence alignment but not the
    // pieces; every piece must still be the same speech.
    let g = common::audio::find_in_piecewise(&heard, &greeting, 4000, 480).expect("greeting");
    let e = common::audio::find_in_piecewise(&heard, &speech, 4000, 480).expect("echo");
    eprintln!(
        "opus greeting: pieces {:.3} (min {:.3}), whole {:.3}; echo: pieces {:.3} (min {:.3}), whole {:.3}",
        g.mean_ncc, g.min_ncc, g.ncc, e.mean_ncc, e.min_ncc, e.ncc
    );
    assert!(g.mean_ncc > 0.75, "greeting through Opus: mean piece ncc {:.3} (whole {:.3})", g.mean_ncc, g.ncc);
    // (On failure, the call's own media figures say whether the echo was concealed or late audio — a
    // starved machine — or arrived intact and was mangled: keep them in the message.)
    let media_line = app
        .log()
        .lines()
        .filter(|l| l.contains("media stopped") || l.contains("jitter") || l.contains("WARN"))
        .map(str::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        e.mean_ncc > 0.75,
        "baresip's own words back through Opus both ways: mean piece ncc {:.3} (min {:.3}, whole {:.3}, lag {} vs greeting lag {})\n{media_line}\n{}",
        e.mean_ncc,
        e.min_ncc,
        e.ncc,
        e.lag,
        g.lag,
        phone.log().lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    assert!(e.lag > g.lag + greeting.len() / 2, "echo after the greeting");
    let (_, other) = find_in(&heard, &fx.other_speech_pcm()).unwrap_or((0, 0.0));
    assert!(other < 0.5, "unrelated speech does not match: {other:.3}");

    // The digits, in order, as RFC 4733 events.
    let log = app.log();
    assert_eq!(digits_in_log(&log), "123#", "{}", app.log_tail(40));
    assert_eq!(app.metric_value("switchboard_dtmf_digits_total{source=\"rfc4733\"}"), Some(4.0));
    // RTCP both ways: baresip's reports arrived (its jitter/loss figures and our RTT).
    let stopped = log.lines().find(|l| l.contains("media stopped")).unwrap();
    assert!(stopped.contains("rtt_ms=Some("), "RTT measured from baresip's RTCP: {stopped}");
    assert_eq!(app.metric_value("switchboard_call_rtt_seconds_count"), Some(1.0));
    assert_eq!(app.metric_value("switchboard_call_jitter_seconds_count"), Some(1.0));
}

#[test]
fn sipp_plays_the_shipped_rfc4733_captures() {
    require_tools(&["sipp"]);
    for d in ["1", "2", "3", "pound"] {
        let p = format!("/usr/share/sip-tester/dtmf_2833_{d}.pcap");
        assert!(std::path::Path::new(&p).exists(), "{p} missing: install sip-tester (scripts/setup.sh --test)");
    }
    let ports = alloc_ports();
    let app = Appliance::start("routes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n    mode: silent\n", &ports);
    let run = run_sipp(
        app.dir(),
        &scenario("uac_sipp_dtmf_pcaps.xml"),
        &ports.sip_addr(),
        &ports,
        &["-s", "1000", "-m", "1"],
        Duration::from_secs(30),
    );
    assert!(run.successful == 1 && run.failed == 0, "{}\n{}", run.report(), app.log_tail(30));
    assert!(app.wait_log("media stopped", Duration::from_secs(3)));
    assert_eq!(digits_in_log(&app.log()), "123#", "{}", app.log_tail(30));
    assert_eq!(app.metric_value("switchboard_dtmf_digits_total{source=\"rfc4733\"}"), Some(4.0));
    let log = app.log();
    let durations: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("DTMF received"))
        .filter_map(|l| l.split("duration_ms=").nth(1)?.split_whitespace().next())
        .collect();
    assert_eq!(durations, vec!["280"; 4], "each shipped key press lasts 280 ms");
}

#[test]
fn silent_peer_is_hung_up_after_the_rtp_timeout() {
    require_tools(&["sipp"]);
    let ports = alloc_ports();
    let app = Appliance::start(
        "media:\n  rtp_timeout_s: 2\nroutes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n    mode: silent\n",
        &ports,
    );
    let t0 = std::time::Instant::now();
    // uac_wait_bye sends no RTP at all and waits for our BYE.
    let run = run_sipp(
        app.dir(),
        &scenario("uac_wait_bye.xml"),
        &ports.sip_addr(),
        &ports,
        &["-s", "1000", "-m", "1"],
        Duration::from_secs(20),
    );
    assert!(run.successful == 1 && run.failed == 0, "{}\n{}", run.report(), app.log_tail(30));
    let took = t0.elapsed();
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(5), "{took:?}");
    assert!(app.log().contains("RTP timeout: no media for 2 s"), "{}", app.log_tail(20));
    assert_eq!(app.metric_value("switchboard_calls_total{status=\"completed_local_bye\"}"), Some(1.0));
}
