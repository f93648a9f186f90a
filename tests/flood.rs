//! Overload from outside: an INVITE flood (1,000 per second from SIPp for 10 s) and an RTP flood
//! to one call's port, against the real binary, while another call's audio is checked on the
//! wire. The appliance is full (calls.max_concurrent), so every flooding INVITE must get 503 with
//! Retry-After; memory must stay bounded; the call in progress must keep its audio intact.

mod common;

use common::fixtures::rtp_packet;
use common::*;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

const FLOOD_RATE: u32 = 1000;
const FLOOD_SECONDS: u32 = 10;

fn config() -> String {
    format!(
        r#"
sip:
  t1_ms: 500
media:
  jitter_buffer: {{ target_ms: 40 }}
calls:
  max_concurrent: 2
  retry_after_s: 9
  shutdown_grace_s: 2
routes:
  - match: "1000"
    agent: echo
  - match: "quiet"
    agent: quiet
agents:
  echo:
    greeting: {greeting}
    echo_delay_ms: 300
  quiet:
    mode: silent
"#,
        greeting = fixtures().greeting_8k.display()
    )
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn an_invite_flood_and_an_rtp_flood_leave_a_call_in_progress_intact_and_memory_bounded() {
    require_tools(&["sipp", "tcpdump", "sox", "espeak-ng"]);
    let fx = fixtures();
    let ports = alloc_ports();
    let (ports_b, ports_flood) = (alloc_ports(), alloc_ports());
    let app = Appliance::start(&config(), &ports);
    let speech = fx.speech_pcm();
    let speech_ms = speech.len() as u64 * 1000 / 8000;

    // Call B first (it takes the first RTP port, the RTP flood's target): it speaks once, so the
    // appliance latches to it, then holds for the whole test.
    let b_xml = std::fs::read_to_string(scenario("uac_greeting_echo.tmpl.xml"))
        .unwrap()
        .replace("@PT@", "0")
        .replace("@CODEC@", "PCMU")
        .replace("@PCAP@", "pcap/speech_pcmu.pcap")
        .replace("@WAIT_GREETING_MS@", "200")
        .replace("@WAIT_ECHO_MS@", "22000");
    let b_scen = app.dir().join("call_b.xml");
    std::fs::write(&b_scen, b_xml).unwrap();
    let call_b = spawn_sipp(app.dir(), &b_scen, Some(&ports.sip_addr()), &ports_b, &["-s", "quiet", "-m", "1"]);
    assert!(
        wait_until(Duration::from_secs(10), || (app.metric_value("switchboard_active_calls") == Some(1.0))
            .then_some(()))
        .is_some(),
        "call B is up\n{}",
        app.log_tail(20)
    );

    // Call A: the caller says its sentence five times, 1 s apart, and hears each echoed.
    let greet_ms = fx.greeting_pcm().len() as u64 * 1000 / 8000;
    let wait_greeting = greet_ms + 700;
    let gap_ms = speech_ms + 1000;
    let plays = 5;
    let tmpl = std::fs::read_to_string(scenario("uac_greeting_echo.tmpl.xml")).unwrap();
    let one =
        "<nop><action><exec play_pcap_audio=\"@PCAP@\"/></action></nop>\n  <pause milliseconds=\"@WAIT_ECHO_MS@\"/>";
    assert!(tmpl.contains(one), "the template's play step changed");
    let repeated = (0..plays).map(|_| one.to_string()).collect::<Vec<_>>().join("\n  ");
    let a_xml = tmpl
        .replace(one, &repeated)
        .replace("@PT@", "0")
        .replace("@CODEC@", "PCMU")
        .replace("@PCAP@", "pcap/speech_pcmu.pcap")
        .replace("@WAIT_GREETING_MS@", &wait_greeting.to_string())
        .replace("@WAIT_ECHO_MS@", &gap_ms.to_string());
    let a_scen = app.dir().join("call_a.xml");
    std::fs::write(&a_scen, a_xml).unwrap();

    // Only call A's caller's RTP, both ways (the RTP flood would crowd tcpdump's buffer).
    let cap = Capture::start(app.dir(), &format!("udp and port {}", ports.peer_rtp));
    let rss_before = rss_kib(app.pid());
    let call_a = spawn_sipp(app.dir(), &a_scen, Some(&ports.sip_addr()), &ports, &["-s", "1000", "-m", "1"]);
    // The flood starts as the caller starts speaking, and lasts 10 s.
    std::thread::sleep(Duration::from_millis(wait_greeting));
    let total = (FLOOD_RATE * FLOOD_SECONDS).to_string();
    let rate = FLOOD_RATE.to_string();
    let flood_start = Instant::now();
    let flood = spawn_sipp(
        app.dir(),
        &scenario("uac_flood.xml"),
        Some(&ports.sip_addr()),
        &ports_flood,
        &[
            "-s",
            "1000",
            "-i",
            "127.0.0.2",
            "-mi",
            "127.0.0.2",
            "-r",
            &rate,
            "-rp",
            "1000",
            "-m",
            &total,
            "-l",
            "20000",
            "-timeout",
            "40s",
            "-default_behaviors",
            "none",
        ],
    );

    // Meanwhile an RTP flood to call B's port, from another address: junk and well-formed RTP.
    let target = format!("127.0.0.1:{}", ports.rtp_low.next_multiple_of(2));
    let junk = UdpSocket::bind("127.0.0.3:0").unwrap();
    let mut rtp_sent = 0u64;
    let mut peak = rss_before;
    let mut seq = 0u16;
    while flood_start.elapsed() < Duration::from_secs(FLOOD_SECONDS as u64) {
        for _ in 0..200 {
            seq = seq.wrapping_add(7919);
            let pkt = rtp_packet(0, seq, u32::from(seq) * 160, 0xdead_beef, &[0x55; 160], false);
            let _ = junk.send_to(if seq % 3 == 0 { &pkt[..7] } else { &pkt }, &target);
            rtp_sent += 1;
        }
        peak = peak.max(rss_kib(app.pid()));
        std::thread::sleep(Duration::from_millis(20));
    }
    let flood_run = flood.wait(Duration::from_secs(60));
    let flood_secs = flood_start.elapsed().as_secs_f64();
    peak = peak.max(rss_kib(app.pid()));
    let a = call_a.wait(Duration::from_secs(60));
    let b = call_b.wait(Duration::from_secs(30));
    let pkts = cap.stop();
    let rss_after = rss_kib(app.pid());

    let refused = app.metric_value("switchboard_sip_refused_total{reason=\"call_limit\"}").unwrap_or(0.0);
    let overload = app.metric_value("switchboard_sip_refused_total{reason=\"overload\"}").unwrap_or(0.0);
    let queue_dropped = app.metric_value("switchboard_sip_queue_dropped_total").unwrap_or(0.0);
    let foreign = app.metric_value("switchboard_rtp_dropped_total{reason=\"foreign_source\"}").unwrap_or(0.0);
    let invalid = app.metric_value("switchboard_rtp_dropped_total{reason=\"invalid\"}").unwrap_or(0.0);
    println!(
        "flood: {} INVITEs answered 503 of {total} sent in {flood_secs:.1} s ({:.0}/s offered); stateless 503s {overload}, queue drops {queue_dropped}; \
         RTP flood {rtp_sent} packets (foreign dropped {foreign}, invalid {invalid}); RSS before {} MiB, peak {} MiB, after {} MiB",
        flood_run.failed + flood_run.successful,
        f64::from(FLOOD_RATE * FLOOD_SECONDS) / flood_secs,
        rss_before / 1024,
        peak / 1024,
        rss_after / 1024
    );

    // Every flooding INVITE was refused with 503 and a Retry-After (the scenario fails a call on
    // anything else), none got in.
    assert_eq!(
        flood_run.successful,
        u64::from(FLOOD_RATE * FLOOD_SECONDS),
        "every flood call ended in 503 + Retry-After + ACK\n{}",
        flood_run.report()
    );
    assert!(
        refused + overload >= f64::from(FLOOD_RATE * FLOOD_SECONDS),
        "counted: call_limit {refused} overload {overload}"
    );
    // Memory: bounded, not proportional to the flood (10,000 INVITEs held for 32 s would be tens of MiB).
    assert!(peak < rss_before + 48 * 1024, "RSS grew from {} to {} MiB", rss_before / 1024, peak / 1024);
    // Both calls completed normally.
    assert!(a.successful == 1 && a.failed == 0, "call A\n{}\n{}", a.report(), app.log_tail(30));
    assert!(b.successful == 1 && b.failed == 0, "call B\n{}", b.report());
    assert!(
        foreign + invalid > 1000.0,
        "the RTP flood reached the call and was dropped: foreign {foreign} invalid {invalid}"
    );

    // Call A's audio on the wire: continuous, and each of the five sentences echoed intact.
    let from_a: Vec<&UdpPacket> = pkts
        .iter()
        .filter(|p| p.dst.port() == ports.peer_rtp && (ports.rtp_low..=ports.rtp_high).contains(&p.src.port()))
        .collect();
    let first = from_a.first().expect("the appliance sent RTP to call A");
    let audio = rtp_stream_to_pcm(&pkts, first.dst.port(), Some(first.src.port()));
    assert_eq!(audio.seq_errors, 0, "call A's RTP has no gaps or reordering");
    let rate_pps = audio.packets as f64 / (audio.last_time - audio.first_time);
    assert!((48.0..52.0).contains(&rate_pps), "20 ms packets throughout: {rate_pps:.2}/s");
    let times: Vec<f64> = from_a.iter().map(|p| p.time).collect();
    let worst_gap = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    println!("call A: {} packets, worst gap between packets {:.0} ms", audio.packets, worst_gap * 1000.0);
    assert!(worst_gap < 0.2, "call A's audio stalled for {:.0} ms", worst_gap * 1000.0);
    // Each sentence as the caller sent it: each echo is looked for after the sentence's first
    // packet on the wire (not the scenario's time: SIPp shares the cores with the flood), and
    // compared with the audio the caller's packets carried, laid out by their RTP timestamps as
    // a jitter buffer plays them. (SIPp replays the pcap with the same sequence numbers and
    // timestamps each time: every sentence restarts the stream.)
    let sent: Vec<common::audio::RtpPacket> = pkts
        .iter()
        .filter(|p| p.src.port() == ports.peer_rtp && (ports.rtp_low..=ports.rtp_high).contains(&p.dst.port()))
        .filter_map(|p| common::audio::parse_rtp(p.time, p.src, p.dst, &p.payload))
        .filter(|p| p.pt == 0)
        .collect();
    let bursts: Vec<&[common::audio::RtpPacket]> = sent.chunk_by(|a, b| b.time - a.time < 0.5).collect();
    assert_eq!(bursts.len(), plays as usize, "the caller's sentences on the wire: {} bursts", bursts.len());
    for (k, burst) in bursts.iter().enumerate() {
        let t = burst[0].time;
        let ts0 = burst.iter().map(|p| p.ts).min().unwrap();
        let mut said = vec![0i16; 0];
        for p in burst.iter() {
            let at = p.ts.wrapping_sub(ts0) as usize;
            let mut pcm = Vec::new();
            switchboard::media::g711::decode_ulaw(&p.payload, &mut pcm);
            if said.len() < at + pcm.len() {
                said.resize(at + pcm.len(), 0);
            }
            said[at..at + pcm.len()].copy_from_slice(&pcm);
        }
        let worst_send_gap = burst.windows(2).map(|w| w[1].time - w[0].time).fold(0.0, f64::max);
        let planned = audio.first_time + (wait_greeting + k as u64 * gap_ms) as f64 / 1000.0;
        let lo = (((t - audio.first_time) * 8000.0) as usize).min(audio.pcm.len());
        let hi = (lo + gap_ms as usize * 8).min(audio.pcm.len());
        let m =
            find_in_piecewise(&audio.pcm[lo..hi], &said, 4000, 480).unwrap_or_else(|| panic!("sentence {k}: no echo"));
        println!(
            "sentence {k}: sent {:+.0} ms from the scenario's time ({} packets, worst gap {:.0} ms), echo at +{} ms, pieces mean ncc {:.3} min {:.3}",
            (t - planned) * 1000.0,
            burst.len(),
            worst_send_gap * 1000.0,
            m.lag / 8,
            m.mean_ncc,
            m.min_ncc
        );
        assert!(
            m.mean_ncc > 0.85 && m.min_ncc > 0.5,
            "sentence {k} echoed intact during the flood: mean {:.3} min {:.3}",
            m.mean_ncc,
            m.min_ncc
        );
        // The agent's 300 ms echo delay, the jitter buffer and a packet time or two: no more
        // (silence put into the caller's audio between the jitter buffer and the agent came
        // back as an echo 0.3–0.6 s later and torn).
        assert!(m.lag / 8 < 600, "sentence {k} echoed {} ms after it was sent", m.lag / 8);
    }
}
