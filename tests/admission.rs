//! Admission from measured load (`calls.max_queue_wait_ms`): eight SIPp callers end their turns at
//! the same moment, so their transcriptions queue for the one recogniser; while the oldest has
//! waited beyond the bound, a new INVITE gets 503 with Retry-After, and once the recogniser has
//! caught up a new call is taken again. The calls in progress lose nothing: every one of them has
//! its transcript.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn saturated_models_refuse_new_calls_until_they_catch_up() {
    require_tools(&["sipp"]);
    let m = models_dir("whisper_tiny_en/whisper.json");
    let ports = alloc_ports();
    let dir = test_dir("admission");
    let rec_dir = dir.join("records");
    let cfg = transcribing_appliance_yaml(&m, &rec_dir, "  max_queue_wait_ms: 200\n  retry_after_s: 3\n", "int8", 0);
    let app = Appliance::start_in(&dir, &cfg, &ports);
    const CALLS: u64 = 8;
    // The sentence (~3.5 s) in all eight calls at once, then 3 s of quiet before the BYE.
    let sipp = spawn_sipp(
        app.dir(),
        &scenario("uac_pcmu_speech.xml"),
        Some(&ports.sip_addr()),
        &ports,
        &["-s", "1000", "-m", &CALLS.to_string(), "-r", "100", "-l", "8", "-d", "3000"],
    );
    let wait = || app.metric_value("switchboard_model_queue_wait_seconds{model=\"asr.tiny\"}").unwrap_or(0.0);
    let saturated = wait_until(Duration::from_secs(20), || (wait() > 0.2).then_some(()));
    assert!(saturated.is_some(), "the recogniser never had a job waiting 200 ms\n{}", app.log_tail(30));
    let refused = probe_invite(&ports, "busy1");
    assert!(refused.starts_with("SIP/2.0 503") && refused.contains("models saturated"), "{refused}");
    assert!(refused.contains("Retry-After: 3"), "{refused}");
    assert!(app.log().contains("the models are saturated: a job has waited"), "{}", app.log_tail(20));

    let run = sipp.wait(Duration::from_secs(60));
    assert_eq!((run.successful, run.failed), (CALLS, 0), "{}\n{}", run.report(), app.log_tail(30));
    let idle = wait_until(Duration::from_secs(20), || (wait() == 0.0).then_some(()));
    assert!(idle.is_some(), "the recogniser's queue never emptied\n{}", app.log_tail(30));
    std::thread::sleep(Duration::from_millis(600));
    let taken = probe_invite(&ports, "free1");
    assert!(taken.starts_with("SIP/2.0 180") || taken.starts_with("SIP/2.0 200"), "{taken}");
    assert!(app.log().contains("the models keep up again"), "{}", app.log_tail(20));
    assert_eq!(
        app.metric_value("switchboard_sip_refused_total{reason=\"models_busy\"}"),
        Some(1.0),
        "{}",
        app.metrics()
    );

    // The eight calls lost nothing to the refusal: each record has its transcript.
    let records = wait_until(Duration::from_secs(30), || {
        let n = std::fs::read_dir(&rec_dir)
            .ok()?
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .count();
        (n as u64 >= CALLS).then_some(n)
    });
    assert!(records.is_some(), "{} call records\n{}", CALLS, app.log_tail(30));
    let finals = app.metric_value("switchboard_transcripts_total{outcome=\"final\"}").unwrap_or(0.0);
    assert!(finals >= CALLS as f64, "{finals} final transcripts for {CALLS} callers\n{}", app.metrics());
}
