//! Barge-in on the wire: a SIPp caller starts talking while the agent's greeting plays; a capture
//! of both RTP directions shows the agent's audio stopping shortly after the caller's speech began,
//! and the call record and metrics say it was an interruption.

mod common;

use std::time::Duration;

/// RMS of a PCMU payload, decoded.
fn pcmu_rms(payload: &[u8]) -> f64 {
    let mut pcm = Vec::new();
    switchboard::media::g711::decode_ulaw(payload, &mut pcm);
    common::rms(&pcm)
}

#[test]
fn the_caller_interrupts_the_greeting() {
    common::require_tools(&["sipp", "tcpdump", "sox"]);
    let m = common::models_dir("whisper_tiny_en/whisper.json");
    let ports = common::alloc_ports();
    let dir = common::test_dir("barge");
    // The caller: 2.5 s of silence (the greeting plays), then a sentence over it, then 6 s of quiet.
    common::speech::caller_pcap(&m, &dir, &[(2.5, "Sorry to interrupt, but I need to talk to someone about my order.")], 0.0, 6.0, 0x5EC0_0004);

    let greeting = "Thank you for calling Sunny Bakery. Our opening hours are seven to six on weekdays and eight to two on Saturday, \
and we are closed on Sunday. Custom cakes need two days of notice. How can I help you today?";
    let cfg = format!(
        "models:\n  runtime:\n    library: {m}/onnxruntime/libonnxruntime.so.1.32.0\n  vad:\n    path: {m}/silero_vad/silero_vad.onnx\n  tts:\n    path: {m}/piper/en_US-joe-medium.onnx\n  asr:\n    tiny:\n      path: {m}/whisper_tiny_en\n\
         calls:\n  record_dir: {{{{run_dir}}}}/records\n\
         routes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n    mode: repeat\n    greeting_text: \"{greeting}\"\n    turn_detection:\n      type: server_vad\n    transcription: {{}}\n",
        m = m.display(),
    );
    let app = common::Appliance::start_in(&dir, &cfg, &ports);
    let cap = common::Capture::start(app.dir(), &format!("udp and portrange {}-{}", ports.rtp_low, ports.rtp_high));
    let xml = std::fs::read_to_string(common::scenario("uac_pcmu_turn_pause.xml")).unwrap().replace("<pause milliseconds=\"9000\"/>", "<pause milliseconds=\"14000\"/>");
    let scen = dir.join("barge.xml");
    std::fs::write(&scen, xml).unwrap();
    let run = common::run_sipp(app.dir(), &scen, &ports.sip_addr(), &ports, &["-s", "1000", "-m", "1"], Duration::from_secs(60));
    let pkts = cap.stop();
    assert!(run.successful == 1 && run.failed == 0, "{}\n{}", run.report(), app.log_tail(30));

    // Both directions on the wire, by capture time.
    let rtp: Vec<common::audio::RtpPacket> = pkts.iter().filter_map(|p| common::audio::parse_rtp(p.time, p.src, p.dst, &p.payload)).collect();
    let ours = |p: &&common::audio::RtpPacket| (ports.rtp_low..=ports.rtp_high).contains(&p.src.port()) && p.pt == 0;
    let theirs = |p: &&common::audio::RtpPacket| (ports.rtp_low..=ports.rtp_high).contains(&p.dst.port()) && p.pt == 0;
    let n_theirs = rtp.iter().filter(theirs).count();
    let max_theirs = rtp.iter().filter(theirs).map(|p| pcmu_rms(&p.payload)).fold(0.0, f64::max);
    eprintln!("rtp {} packets; caller {n_theirs} (max rms {max_theirs:.3}); agent {}", rtp.len(), rtp.iter().filter(ours).count());
    let caller_onset = rtp.iter().filter(theirs).find(|p| pcmu_rms(&p.payload) > 0.02).expect("the caller's speech on the wire").time;
    let agent_speech: Vec<f64> = rtp.iter().filter(ours).filter(|p| pcmu_rms(&p.payload) > 0.02).map(|p| p.time).collect();
    assert!(agent_speech.iter().any(|&t| t < caller_onset - 1.0), "the greeting was playing before the caller spoke");
    // The last agent speech packet of the greeting: the first gap of > 400 ms after the onset ends it.
    let mut last = caller_onset;
    for &t in agent_speech.iter().filter(|&&t| t >= caller_onset) {
        if t - last > 0.4 {
            break;
        }
        last = t;
    }
    let stop_ms = (last - caller_onset) * 1000.0;
    println!("caller onset on the wire → last greeting packet: {stop_ms:.0} ms");
    println!("{}", app.log().lines().filter(|l| l.contains("barge-in") || l.contains("speech started")).collect::<Vec<_>>().join("\n"));
    assert!(stop_ms <= 250.0, "the agent's audio stopped {stop_ms:.0} ms after the caller began\n{}", app.log_tail(30));
    assert!(app.log().contains("barge-in: the caller interrupted"), "{}", app.log_tail(30));
    assert_eq!(app.metric_value("switchboard_barge_ins_total{outcome=\"interrupted\"}"), Some(1.0), "{}", app.metrics());
    let rec_dir = dir.join("records");
    let rec = common::wait_until(Duration::from_secs(15), || std::fs::read_dir(&rec_dir).ok()?.flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|x| x == "json")))
        .expect("a call record");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&rec).unwrap()).unwrap();
    let ev = r["events"].as_array().unwrap().iter().find(|e| e["type"] == "response_interrupted").expect("response_interrupted in the record");
    assert!(ev["audio_end_ms"].as_u64().unwrap() > 1500, "{ev}");
}
