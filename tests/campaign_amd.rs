//! Answering machines in a campaign: one contact's phone is answered by a voicemail greeting
//! with a beep, the other's by a person saying "Hello?". With `leave_message`, the machine gets the
//! message after its beep and the call ends; the person hears the agent only after their hello.
//! The outcomes (voicemail / completed) and the verdicts are stored.

mod common;

use common::capture::sip_messages;
use common::fixtures::write_rtp_audio_pcap;
use common::*;
use std::time::Duration;
use switchboard::models::tts::{PiperVoice, Scales};

const VOICEMAIL: &str = "Hi, you have reached the voicemail of John Smith. I can't take your call right now, please leave your name and number after the tone and I will get back to you.";
const HELLO: &str = "Hello?";

/// Piper at 8 kHz (sox converts), without voice variation.
fn speech_8k(dir: &std::path::Path, name: &str, text: &str) -> Vec<i16> {
    let m = models_dir("piper/en_US-joe-medium.onnx");
    let onnx = m.join("piper/en_US-joe-medium.onnx");
    let mut voice =
        PiperVoice::load(common::ort_runtime(), &onnx, &onnx.with_extension("onnx.json"), &common::cpu_options(2))
            .unwrap();
    voice.set_scales(Scales { noise_scale: 0.0, length_scale: 1.0, noise_w: 0.0 });
    let pcm = voice.synthesize(text).unwrap();
    let wav = dir.join(format!("{name}-22k.wav"));
    write_wav(&wav, &pcm, voice.sample_rate());
    let wav8 = dir.join(format!("{name}-8k.wav"));
    run_checked(std::process::Command::new(tool("sox")).arg(&wav).args(["-D", "-r", "8000"]).arg(&wav8));
    read_wav_mono_i16(&wav8).0
}

fn tone_8k(hz: f64, ms: u32) -> Vec<i16> {
    (0..8 * ms).map(|i| (8000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0).sin()) as i16).collect()
}

/// A callee on `port` that answers with `pcm` (8 kHz) played after the ACK.
fn callee(dir: &std::path::Path, ports: &Ports, name: &str, port: u16, rtp: u16, pcm: &[i16]) -> SippProcess {
    let wav = dir.join(format!("{name}.wav"));
    write_wav(&wav, pcm, 8000);
    let pcap = dir.join(format!("{name}.pcap"));
    write_rtp_audio_pcap(&wav, &pcap, 0, 20, 1000, 0, 0x1234);
    let tmpl = std::fs::read_to_string(scenario("uas_play.tmpl.xml")).unwrap();
    let sc = dir.join(format!("uas_{name}.xml"));
    std::fs::write(&sc, tmpl.replace("@PCAP@", &pcap.display().to_string())).unwrap();
    let p = Ports { peer_sip: port, peer_rtp: rtp, ..ports.clone() };
    let s = spawn_sipp(dir, &sc, None, &p, &["-m", "1"]);
    assert!(wait_udp_bound(port, Duration::from_secs(5)));
    s
}

#[test]
fn voicemail_gets_the_message_after_the_beep_and_a_person_hears_the_agent_after_hello() {
    require_tools(&["sipp", "tcpdump", "sox"]);
    let ports = alloc_ports();
    let dir = test_dir("campaign-amd");
    let greeting = speech_8k(&dir, "voicemail", VOICEMAIL);
    let mut machine = vec![0i16; 8 * 300];
    machine.extend(&greeting);
    machine.extend(vec![0i16; 8 * 300]);
    let beep_end_s = (machine.len() as f64 + 8.0 * 500.0) / 8000.0;
    machine.extend(tone_8k(1000.0, 500));
    machine.extend(vec![0i16; 8 * 6000]);
    let mut person = vec![0i16; 8 * 400];
    let hello = speech_8k(&dir, "hello", HELLO);
    person.extend(&hello);
    let hello_end_s = person.len() as f64 / 8000.0;
    person.extend(vec![0i16; 8 * 8000]);
    let (machine_port, person_port) = (ports.peer_sip, ports.peer_rtp_high - 2);
    let uas_machine = callee(&dir, &ports, "machine", machine_port, ports.peer_rtp, &machine);
    let uas_person = callee(&dir, &ports, "person", person_port, ports.peer_rtp + 20, &person);
    let cap = Capture::start(
        &dir,
        &format!(
            "udp and (port {machine_port} or port {person_port} or portrange {}-{})",
            ports.rtp_low, ports.rtp_high
        ),
    );

    std::fs::write(
        dir.join("contacts.csv"),
        format!("number\nsip:vm@127.0.0.1:{machine_port}\nsip:anna@127.0.0.1:{person_port}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("campaign.yaml"),
        "campaign:\n  name: amd\n  agent: caller\n  contacts: contacts.csv\n  max_concurrent: 2\n  calls_per_second: 5\n  answering_machine:\n    policy: leave_message\n    message: \"Hello, this is the bakery. Your order is ready to collect.\"\n",
    )
    .unwrap();
    let m = models_dir("piper/en_US-joe-medium.onnx");
    let config = format!(
        "calls:\n  record_dir: records\nmodels:\n  runtime:\n    library: {lib}\n  tts:\n    path: {tts}\n    intra_threads: 2\nroutes:\n  - match: \"*\"\n    agent: caller\nagents:\n  caller:\n    mode: silent\n    greeting_text: \"Good morning! This is the bakery calling about your order.\"\n    noise_scale: 0\n    noise_w: 0\n    max_duration_s: 12\n",
        lib = m.join("onnxruntime/libonnxruntime.so.1.32.0").display(),
        tts = m.join("piper/en_US-joe-medium.onnx").display()
    );
    let app = Appliance::start_in(&dir, &config, &ports);
    let (code, body) = app.http_request(
        "POST",
        "/campaigns",
        Some(&format!("{{\"file\": \"{}\"}}", dir.join("campaign.yaml").display())),
    );
    assert_eq!(code, 202, "{body}");
    let done = wait_until(Duration::from_secs(60), || {
        let (_, t) = app.http_get("/campaigns/amd");
        let v: serde_json::Value = serde_json::from_str(&t).ok()?;
        (v["done"] == true).then_some(v)
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", app.http_get("/campaigns/amd"), app.log_tail(40)));
    let pkts = cap.stop();
    let (rm, rp) = (uas_machine.wait(Duration::from_secs(5)), uas_person.wait(Duration::from_secs(5)));
    assert!(rm.successful == 1 && rp.successful == 1, "{}\n{}\n{}", rm.report(), rp.report(), app.log_tail(30));
    assert_eq!(done["final"]["voicemail"], 1, "{done}");
    assert_eq!(done["final"]["completed"], 1, "{done}");
    assert_eq!(done["outcomes"]["machine"], 1, "{done}");

    // On the wire: where each callee's 200 OK went out (the answer), then the appliance's audio.
    let sip = sip_messages(&pkts);
    let answered_at = |port: u16| {
        sip.iter()
            .find(|(_, s, _, t)| s.port() == port && t.starts_with("SIP/2.0 200") && t.contains("INVITE"))
            .map(|m| m.0)
            .expect("200 OK")
    };
    let bye_at = |port: u16| {
        sip.iter().find(|(_, _, d, t)| d.port() == port && t.starts_with("BYE ")).map(|m| m.0).expect("our BYE")
    };
    // (when our first loud sample left, seconds of loud audio) towards a callee's RTP port; we
    // send silence from the answer on, so the first packet is not yet speech.
    let speech_from_us = |peer_rtp: u16| -> Vec<(f64, f64)> {
        let first = rtp_packets(&pkts, peer_rtp, None).first().map(|p| p.time).expect("RTP to the callee");
        let audio = rtp_stream_to_pcm(&pkts, peer_rtp, None);
        let onset = audio.pcm.iter().position(|&x| x.unsigned_abs() > 1000).expect("loud audio to the callee");
        vec![(first + onset as f64 / 8000.0, active_seconds(&audio.pcm, 8000, 0.01))]
    };
    let (t_machine, t_person) = (answered_at(machine_port), answered_at(person_port));
    let (first_m, loud_m) = speech_from_us(ports.peer_rtp)[0];
    let (first_p, loud_p) = speech_from_us(ports.peer_rtp + 20)[0];
    eprintln!("machine: answered {t_machine:.2}, our first audio +{:.2} s ({loud_m:.1} s loud), beep ends +{beep_end_s:.2}; person: our first audio +{:.2} s, hello ends +{hello_end_s:.2}", first_m - t_machine, first_p - t_person);
    assert!(
        first_m - t_machine > beep_end_s - 0.2,
        "the message starts after the beep ({beep_end_s:.2} s): {:.2} s",
        first_m - t_machine
    );
    assert!(first_m - t_machine < beep_end_s + 2.0, "and soon after it: {:.2} s", first_m - t_machine);
    assert!(loud_m > 1.5, "the message is heard: {loud_m:.1} s");
    assert!(bye_at(machine_port) - t_machine < beep_end_s + 8.0, "the machine's call ends once the message is left");
    assert!(
        first_p - t_person > hello_end_s,
        "the agent waits for the person's hello ({hello_end_s:.2} s): {:.2} s",
        first_p - t_person
    );
    assert!(first_p - t_person < hello_end_s + 2.5, "then speaks: {:.2} s", first_p - t_person);
    assert!(loud_p > 1.5, "the person hears the greeting: {loud_p:.1} s");

    // The verdicts in the store's export.
    let out = run_checked(
        std::process::Command::new(common::appliance::switchboard_bin())
            .args(["campaign", "export", "amd", "--attempts", "--config"])
            .arg(app.config_path()),
    );
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(
        csv.lines().any(|l| l.contains("sip:vm@") && l.contains(",machine,") && l.contains("answered by a machine")),
        "{csv}"
    );
    assert!(
        csv.lines().any(|l| l.contains("sip:anna@") && l.contains(",answered,") && l.contains("answered by a person")),
        "{csv}"
    );
}
