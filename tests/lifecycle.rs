//! Start-up, shutdown and a real softphone: baresip calls the appliance and
//! its recording of the call holds the greeting and the caller's echo.

mod common;

use common::*;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

#[test]
fn sigterm_refuses_new_calls_then_ends_active_ones_after_grace() {
    require_tools(&["sipp"]);
    let ports = alloc_ports();
    let cfg =
        "calls:\n  shutdown_grace_s: 2\nroutes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n    mode: silent\n";
    let app = Appliance::start(cfg, &ports);
    let sipp = spawn_sipp(
        app.dir(),
        &scenario("uac_wait_bye.xml"),
        Some(&ports.sip_addr()),
        &ports,
        &["-s", "1000", "-m", "1"],
    );
    assert!(
        wait_until(Duration::from_secs(10), || (app.metric_value("switchboard_active_calls") == Some(1.0))
            .then_some(()))
        .is_some(),
        "call up"
    );
    let t0 = Instant::now();
    app.sigterm();
    // Draining: health says so, and a new INVITE gets 503 with Retry-After.
    assert!(wait_until(Duration::from_secs(2), || (app.http_get("/healthz").0 == 503).then_some(())).is_some());
    let resp = probe_invite(&ports, "drain");
    assert!(resp.starts_with("SIP/2.0 503"), "{resp}");
    assert!(resp.contains("Retry-After:"), "{resp}");
    // The active call is ended with BYE after the grace period; SIPp answers it and succeeds.
    let run = sipp.wait(Duration::from_secs(15));
    assert!(run.successful == 1 && run.failed == 0, "{}\n{}", run.report(), app.log_tail(30));
    let status = app.wait_exit(Duration::from_secs(10)).expect("the appliance exits");
    let took = t0.elapsed();
    assert!(took >= Duration::from_secs(2), "waited for the grace period: {took:?}");
    assert!(status.success(), "clean exit: {status:?}\n{}", app.log_tail(20));
    assert!(app.log().contains("grace period over"));
}

#[test]
fn sigterm_with_no_calls_exits_at_once() {
    let ports = alloc_ports();
    let app = Appliance::start("routes:\n  - match: \"*\"\n    agent: a\nagents:\n  a: {}\n", &ports);
    let t0 = Instant::now();
    app.sigterm();
    let status = app.wait_exit(Duration::from_secs(5)).expect("exits");
    assert!(status.success());
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[test]
fn busy_port_is_a_clear_startup_error() {
    let ports = alloc_ports();
    let _squatter = UdpSocket::bind(format!("127.0.0.1:{}", ports.sip)).unwrap();
    let dir = test_dir("busy");
    let cfg = dir.join("c.yaml");
    std::fs::write(&cfg, "routes:\n  - match: \"*\"\n    agent: a\nagents:\n  a: {}\n").unwrap();
    let out = std::process::Command::new(appliance::switchboard_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--sip-listen", &ports.sip_addr(), "--http-listen", &ports.http_addr()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen for SIP/UDP on {}", ports.sip_addr())), "{err}");
}

#[test]
fn baresip_hears_greeting_and_its_own_echo() {
    require_tools(&["baresip", "sox", "espeak-ng"]);
    let fx = fixtures();
    let ports = alloc_ports();
    let cfg = format!(
        "routes:\n  - match: \"*\"\n    agent: echo\nagents:\n  echo:\n    greeting: {}\n    echo_delay_ms: 200\n",
        fx.greeting_8k.display()
    );
    let app = Appliance::start(&cfg, &ports);
    let greeting = fx.greeting_pcm();
    let speech = fx.speech_pcm();
    // baresip speaks after the greeting is over (and hangs up at the end of its file).
    let lead = greeting.len() + 8000;
    let mut source = vec![0i16; lead];
    source.extend_from_slice(&speech);
    source.extend(std::iter::repeat_n(0i16, 8000 * 6));
    let src_wav = app.dir().join("baresip_source.wav");
    write_wav(&src_wav, &source, 8000);

    let phone = Baresip::start(app.dir(), &ports, &src_wav, "PCMU");
    phone.dial(&format!("sip:1000@{}", ports.sip_addr()));
    assert!(
        phone.wait_event("CALL_ESTABLISHED", Duration::from_secs(10)).is_some(),
        "{}\n{}",
        phone.log(),
        app.log_tail(20)
    );
    let call_len = Duration::from_millis((source.len() as u64 * 1000 / 8000).saturating_sub(3000));
    std::thread::sleep(call_len);
    phone.hangup();
    assert!(phone.wait_event("CALL_CLOSED", Duration::from_secs(5)).is_some());
    assert!(app.wait_log("call ended", Duration::from_secs(5)));

    let rec = phone.recordings();
    assert_eq!(rec.len(), 1, "one decoded recording: {rec:?}");
    let (pcm, rate) = read_wav_mono_i16(&rec[0]);
    assert_eq!(rate, 8000);
    assert!(is_audible(&pcm, rate), "baresip's recording is audible");
    let (glag, gncc) = find_in(&pcm, &greeting).expect("greeting in the recording");
    assert!(gncc > 0.8, "baresip heard the greeting: ncc {gncc:.3}");
    // Piece by piece, as in sip_calls: baresip's own jitter buffer and ours may each shift the echo
    // by a frame mid-sentence under load, which lowers a whole-sentence correlation (seen at 0.751
    // in CI) without changing what the caller hears; unrelated speech gives a mean near 0.3.
    let m = common::audio::find_in_piecewise(&pcm, &speech, 4000, 480).expect("echo in the recording");
    let (elag, encc) = (m.lag, m.ncc);
    assert!(
        m.mean_ncc > 0.85 && m.min_ncc > 0.5,
        "baresip heard its own words back: pieces mean {:.3} min {:.3} (whole {encc:.3})",
        m.mean_ncc,
        m.min_ncc
    );
    assert!(elag > glag + greeting.len(), "echo after the greeting ({glag} + {} < {elag})", greeting.len());
    assert_eq!(app.metric_value("switchboard_calls_total{status=\"completed_remote_bye\"}"), Some(1.0));
}

/// A stop drains: 20 callers (10 a second) each say a sentence and hang up before the end of their
/// turn, so each call owes its last turn's transcript when its dialog ends; a second after the
/// last BYE the appliance gets SIGTERM. Before it exits, every call's record is written with its
/// transcript, and no journal is left to be recovered as "interrupted" at the next start.
#[test]
fn sigterm_after_the_calls_waits_for_their_records() {
    require_tools(&["sipp"]);
    let m = models_dir("whisper_tiny_en/whisper.json");
    let ports = alloc_ports();
    let dir = test_dir("drain");
    let rec_dir = dir.join("records");
    let cfg = transcribing_appliance_yaml(&m, &rec_dir, "  shutdown_grace_s: 60\n", "int8", 0);
    let app = Appliance::start_in(&dir, &cfg, &ports);
    const CALLS: usize = 20;
    // The sentence (~3.5 s), then BYE at 4 s: too soon for the end of the turn.
    let run = run_sipp(
        app.dir(),
        &scenario("uac_pcmu_speech.xml"),
        &ports.sip_addr(),
        &ports,
        &["-s", "1000", "-m", &CALLS.to_string(), "-r", "10", "-l", "30", "-d", "0"],
        Duration::from_secs(60),
    );
    assert!(run.successful == CALLS as u64 && run.failed == 0, "{}\n{}", run.report(), app.log_tail(30));
    std::thread::sleep(Duration::from_secs(1));
    app.sigterm();
    let status = app.wait_exit(Duration::from_secs(70)).expect("the appliance exits");
    assert!(status.success(), "clean exit: {status:?}\n{}", app.log_tail(20));
    let log = app.log();
    assert!(
        log.contains("waiting for the ended calls to write their records"),
        "SIGTERM came after every call had written its record: the test did not try the drain\n{}",
        app.log_tail(30)
    );

    let files = |dir: &std::path::Path, ext: &str| -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == ext)).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let journals = files(&rec_dir.join("active"), "jsonl");
    assert!(
        journals.is_empty(),
        "journals left for the next start to recover as interrupted: {journals:?}\n{}",
        app.log_tail(30)
    );
    let records = files(&rec_dir, "json");
    assert_eq!(records.len(), CALLS, "{records:?}\n{}", app.log_tail(30));
    for p in &records {
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        assert_eq!(r["end_reason"], "completed_remote_bye", "{}: {r}", p.display());
        let text =
            r["transcripts"].as_array().and_then(|t| t.first()).and_then(|t| t["text"].as_str()).unwrap_or_default();
        assert!(!text.trim().is_empty(), "{}: the last turn's transcript is missing: {r}", p.display());
    }
    let after_exit = log.split_once("exiting").map(|(_, rest)| rest).unwrap_or_default();
    assert!(!after_exit.contains("ERROR") && !after_exit.contains("WARN"), "{after_exit}");
}
