//! Admission from measured load (`calls.max_queue_wait_ms`): eight SIPp callers end their turns at
//! the same moment, so their transcriptions queue for the one recogniser; while the oldest has
//! waited beyond the bound, a new INVITE gets 503 with Retry-After, and once the recogniser has
//! caught up a new call is taken again. The calls in progress lose nothing: every one of them has
//! its transcript.

mod common;

use common::*;
use std::net::UdpSocket;
use std::time::Duration;

/// Send an INVITE from a socket of our own; the first final or provisional answer other than 100.
fn invite(ports: &Ports, tag: &str) -> String {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";
    let inv = format!(
        "INVITE sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{tag};rport\r\nFrom: <sip:probe@127.0.0.1>;tag={tag}\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: {tag}@probe\r\nCSeq: 1 INVITE\r\nContact: <sip:probe@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    sock.send_to(inv.as_bytes(), ports.sip_addr()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = sock.recv_from(&mut buf).expect("an answer to the INVITE");
        let resp = String::from_utf8_lossy(&buf[..n]).to_string();
        // (A call that was taken is left unacknowledged: the appliance ends it on its own.)
        if !resp.starts_with("SIP/2.0 100") {
            return resp;
        }
    }
}

#[test]
fn saturated_models_refuse_new_calls_until_they_catch_up() {
    require_tools(&["sipp"]);
    let m = models_dir("whisper_tiny_en/whisper.json");
    let ports = alloc_ports();
    let dir = test_dir("admission");
    let rec_dir = dir.join("records");
    let cfg = format!(
        "calls:\n  record_dir: {records}\n  max_queue_wait_ms: 200\n  retry_after_s: 3\nmodels:\n  runtime:\n    library: {lib}\n  vad:\n    path: {vad}\n  asr:\n    tiny:\n      path: {asr}\n      precision: int8\n      intra_threads: 2\n\
         routes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n    mode: silent\n    turn_detection:\n      type: server_vad\n    transcription: {{}}\n",
        records = rec_dir.display(),
        lib = m.join("onnxruntime/libonnxruntime.so.1.32.0").display(),
        vad = m.join("silero_vad/silero_vad.onnx").display(),
        asr = m.join("whisper_tiny_en").display(),
    );
    let app = Appliance::start_in(&dir, &cfg, &ports);
    const CALLS: u64 = 8;
    // The sentence (~3.5 s) in all eight calls at once, then 3 s of quiet before the BYE.
    let sipp = spawn_sipp(app.dir(), &scenario("uac_pcmu_speech.xml"), Some(&ports.sip_addr()), &ports, &["-s", "1000", "-m", &CALLS.to_string(), "-r", "100", "-l", "8", "-d", "3000"]);
    let wait = || app.metric_value("switchboard_model_queue_wait_seconds{model=\"asr.tiny\"}").unwrap_or(0.0);
    let saturated = wait_until(Duration::from_secs(20), || (wait() > 0.2).then_some(()));
    assert!(saturated.is_some(), "the recogniser never had a job waiting 200 ms\n{}", app.log_tail(30));
    let refused = invite(&ports, "busy1");
    assert!(refused.starts_with("SIP/2.0 503") && refused.contains("models saturated"), "{refused}");
    assert!(refused.contains("Retry-After: 3"), "{refused}");
    assert!(app.log().contains("the models are saturated: a job has waited"), "{}", app.log_tail(20));

    let run = sipp.wait(Duration::from_secs(60));
    assert_eq!((run.successful, run.failed), (CALLS, 0), "{}\n{}", run.report(), app.log_tail(30));
    let idle = wait_until(Duration::from_secs(20), || (wait() == 0.0).then_some(()));
    assert!(idle.is_some(), "the recogniser's queue never emptied\n{}", app.log_tail(30));
    std::thread::sleep(Duration::from_millis(600));
    let taken = invite(&ports, "free1");
    assert!(taken.starts_with("SIP/2.0 180") || taken.starts_with("SIP/2.0 200"), "{taken}");
    assert!(app.log().contains("the models keep up again"), "{}", app.log_tail(20));
    assert_eq!(app.metric_value("switchboard_sip_refused_total{reason=\"models_busy\"}"), Some(1.0), "{}", app.metrics());

    // The eight calls lost nothing to the refusal: each record has its transcript.
    let records = wait_until(Duration::from_secs(30), || {
        let n = std::fs::read_dir(&rec_dir).ok()?.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "json")).count();
        (n as u64 >= CALLS).then_some(n)
    });
    assert!(records.is_some(), "{} call records\n{}", CALLS, app.log_tail(30));
    let finals = app.metric_value("switchboard_transcripts_total{outcome=\"final\"}").unwrap_or(0.0);
    assert!(finals >= CALLS as f64, "{finals} final transcripts for {CALLS} callers\n{}", app.metrics());
}
