//! Error paths and hostile input against the real binary, from a raw UDP
//! client: what a scanner, a broken PBX or a misrouted call would send.

mod common;

use common::*;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
sip:
  t1_ms: 50
routes:
  - match: "1000"
    agent: a
agents:
  a:
    mode: silent
"#;

struct Client {
    sock: UdpSocket,
    port: u16,
    server: String,
}

impl Client {
    fn new(ports: &Ports) -> Client {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        Client { sock, port, server: ports.sip_addr() }
    }
    fn send(&self, msg: &str) {
        self.sock.send_to(msg.as_bytes(), &self.server).unwrap();
    }
    /// Every message received within `wait`, with its arrival time.
    fn recv_all(&self, wait: Duration) -> Vec<(Instant, String)> {
        let end = Instant::now() + wait;
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            self.sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => out.push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned())),
                Err(_) => break,
            }
        }
        out
    }
    fn request(&self, msg: &str) -> Vec<String> {
        self.send(msg);
        self.recv_all(Duration::from_millis(600)).into_iter().map(|(_, m)| m).collect()
    }
    /// Send an INVITE, ACK its final error response like a UAC must (same
    /// branch, RFC 3261 §17.1.1.3), and return every status code seen.
    fn invite_rejected(&self, msg: &str, branch: &str) -> Vec<u16> {
        self.send(msg);
        let got = self.recv_all(Duration::from_millis(400));
        let last =
            got.iter().rev().find(|(_, m)| status(m) >= 300).map(|(_, m)| m.clone()).expect("a final error response");
        let ack = format!(
            "ACK sip:x@127.0.0.1 SIP/2.0\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            self.via(branch),
            header(&last, "From").unwrap(),
            header(&last, "To").unwrap(),
            header(&last, "Call-ID").unwrap()
        );
        self.send(&ack);
        // Drain what was in flight when the ACK left, then nothing more may come.
        self.recv_all(Duration::from_millis(60));
        let after = self.recv_all(Duration::from_millis(400));
        assert!(after.is_empty(), "retransmission continued after ACK: {after:?}");
        got.iter().map(|(_, m)| status(m)).collect()
    }
    fn via(&self, branch: &str) -> String {
        format!("SIP/2.0/UDP 127.0.0.1:{};branch={branch};rport", self.port)
    }
}

fn status(msg: &str) -> u16 {
    msg.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

const SDP: &str =
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";

fn invite(c: &Client, user: &str, branch: &str, sdp: &str) -> String {
    format!(
        "INVITE sip:{user}@127.0.0.1 SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=f{branch}\r\nTo: <sip:{user}@127.0.0.1>\r\n\
Call-ID: {branch}@test\r\nCSeq: 1 INVITE\r\nContact: <sip:t@127.0.0.1:{}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        c.via(branch),
        c.port,
        sdp.len()
    )
}

#[test]
fn options_unrouted_unsupported_and_unacceptable() {
    let ports = alloc_ports();
    let app = Appliance::start(CONFIG, &ports);
    let c = Client::new(&ports);

    let r = c.request(&format!("OPTIONS sip:1000@127.0.0.1 SIP/2.0\r\nVia: {}\r\nFrom: <sip:mon@x>;tag=1\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", c.via("z9hG4bKo1")));
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(status(&r[0]), 200);
    for h in ["Allow", "Accept", "Supported"] {
        assert!(header(&r[0], h).is_some(), "OPTIONS answer lacks {h}: {}", r[0]);
    }
    assert!(header(&r[0], "Allow").unwrap().contains("INVITE"));
    assert!(header(&r[0], "Via").unwrap().contains(&format!("rport={}", c.port)), "rport filled: {}", r[0]);

    let codes = c.invite_rejected(&invite(&c, "5555", "z9hG4bKn1", SDP), "z9hG4bKn1");
    assert!(!codes.is_empty() && codes.iter().all(|&s| s == 404), "{codes:?}");

    let r = c.request(&format!("MESSAGE sip:1000@127.0.0.1 SIP/2.0\r\nVia: {}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: m1\r\nCSeq: 1 MESSAGE\r\nContent-Length: 2\r\n\r\nhi", c.via("z9hG4bKm1")));
    assert_eq!(status(&r[0]), 405);
    assert!(header(&r[0], "Allow").is_some());

    let g729 = SDP.replace("RTP/AVP 0", "RTP/AVP 18") + "a=rtpmap:18 G729/8000\r\n";
    let codes = c.invite_rejected(&invite(&c, "1000", "z9hG4bKg1", &g729), "z9hG4bKg1");
    assert!(codes.contains(&488), "{codes:?}");
    // Error responses to INVITE are retransmitted until ACKed (T1 = 50 ms here).
    assert!(codes.iter().filter(|&&c| c == 488).count() >= 2, "488 retransmitted: {codes:?}");
    assert_eq!(app.metric_value("switchboard_active_calls"), Some(0.0));
}

#[test]
fn malformed_input_gets_400_or_is_dropped_and_service_continues() {
    let ports = alloc_ports();
    let app = Appliance::start(CONFIG, &ports);
    let c = Client::new(&ports);
    // Readable request line, missing CSeq: 400.
    let r = c.request(&format!("OPTIONS sip:1000@127.0.0.1 SIP/2.0\r\nVia: {}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: b1\r\nContent-Length: 0\r\n\r\n", c.via("z9hG4bKb1")));
    assert_eq!(r.len(), 1);
    assert_eq!(status(&r[0]), 400, "{}", r[0]);
    // Content-Length longer than the datagram: 400.
    let r = c.request(&format!("OPTIONS sip:1000@127.0.0.1 SIP/2.0\r\nVia: {}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: b2\r\nCSeq: 1 OPTIONS\r\nContent-Length: 500\r\n\r\nshort", c.via("z9hG4bKb2")));
    assert_eq!(r.iter().map(|m| status(m)).collect::<Vec<_>>(), vec![400], "{r:?}");
    // Unreadable SDP in an INVITE: 400, no call.
    let codes = c.invite_rejected(&invite(&c, "1000", "z9hG4bKb3", "this is not sdp"), "z9hG4bKb3");
    assert!(codes.contains(&400), "{codes:?}");
    // Garbage, binary noise, a lone CRLF, a huge datagram: no answer, no crash.
    for junk in [
        b"\x16\x03\x01\x02\x00\x01\x00".to_vec(),
        vec![0u8; 1400],
        b"\r\n\r\n".to_vec(),
        vec![b'A'; 60000],
        b"INVITE\r\n\r\n".to_vec(),
    ] {
        c.sock.send_to(&junk, ports.sip_addr()).unwrap();
    }
    assert!(c.recv_all(Duration::from_millis(300)).is_empty());
    // Still serving: a full call set-up works.
    let r = c.request(&invite(&c, "1000", "z9hG4bKok1", SDP));
    assert!(r.iter().any(|m| status(m) == 200), "{r:?}");
    assert!(app.try_wait().is_none(), "the appliance is still running");
    assert!(app.metric_value("switchboard_sip_messages_total{kind=\"malformed\"}").unwrap() >= 2.0);
}

#[test]
fn compact_headers_and_ack_timeout_bye_after_64_t1() {
    let ports = alloc_ports();
    let app = Appliance::start(CONFIG, &ports);
    let c = Client::new(&ports);
    // Compact forms throughout (v f t i m l c), lower-case, odd spacing.
    let inv = format!(
        "INVITE sip:1000@127.0.0.1 SIP/2.0\r\nv: {}\r\nf:<sip:t@127.0.0.1>;tag=cf1\r\nt :  <sip:1000@127.0.0.1>\r\ni: compact-1\r\nCSeq: 1 INVITE\r\nm: <sip:t@127.0.0.1:{}>\r\nc: application/sdp\r\nl: {}\r\n\r\n{SDP}",
        c.via("z9hG4bKc1"),
        c.port,
        SDP.len()
    );
    let start = Instant::now();
    c.send(&inv);
    // Never ACK: the 200 is retransmitted (T1=50 ms doubling to T2), then BYE at 64*T1 = 3.2 s.
    let got = c.recv_all(Duration::from_millis(4500));
    let oks: Vec<Duration> = got.iter().filter(|(_, m)| status(m) == 200).map(|(t, _)| *t - start).collect();
    let bye = got.iter().find(|(_, m)| m.starts_with("BYE ")).map(|(t, m)| (*t - start, m.clone()));
    assert!(got.iter().any(|(_, m)| status(m) == 100) && got.iter().any(|(_, m)| status(m) == 180), "{got:?}");
    assert!(oks.len() >= 6, "200 retransmitted until giving up: {oks:?}");
    let (at, bye) = bye.expect("BYE after the ACK timeout");
    assert!(at >= Duration::from_millis(3100) && at < Duration::from_millis(4000), "BYE at {at:?}");
    assert_eq!(header(&bye, "Call-ID"), Some("compact-1"));
    assert!(header(&bye, "To").unwrap().contains("tag=cf1"));
    assert!(
        app.wait_log("ack_timeout", Duration::from_secs(1))
            || app.metric_value("switchboard_calls_total{status=\"ack_timeout\"}") == Some(1.0)
    );
    assert_eq!(app.metric_value("switchboard_calls_total{status=\"ack_timeout\"}"), Some(1.0));
}

#[test]
fn check_config_reports_file_line_and_key() {
    let dir = test_dir("cfg");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "sip:\n  listen: 127.0.0.1:5060\nroutes:\n  - match: \"*\"\n    agent: a\nagents:\n  a:\n    mood: echo\n",
    )
    .unwrap();
    let out =
        std::process::Command::new(appliance::switchboard_bin()).args(["check-config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:8:", bad.display())), "{err}");
    assert!(err.contains("agents.a") && err.contains("mood"), "{err}");
    // `run` refuses the same file before binding anything.
    let out =
        std::process::Command::new(appliance::switchboard_bin()).args(["run", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let good = common::repo_root().join("config/switchboard.yaml");
    let out = std::process::Command::new(appliance::switchboard_bin()).arg("check-config").arg(&good).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Parse the RTP port out of an SDP body inside a SIP message.
fn sdp_port(msg: &str) -> u16 {
    msg.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("m=audio in the answer")
}

/// Send `n` PCMU packets of `byte` from `sock` to `dst`, 20 ms apart, and collect what comes back to `sock`.
fn stream(sock: &UdpSocket, dst: &str, ssrc: u32, seq0: u16, n: u16, payload: &[u8]) {
    for i in 0..n {
        let pkt = common::fixtures::rtp_packet(
            0,
            seq0.wrapping_add(i),
            160 * (seq0 as u32 + i as u32),
            ssrc,
            payload,
            i == 0,
        );
        sock.send_to(&pkt, dst).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn drain_rtp_pcm(sock: &UdpSocket, wait: Duration) -> Vec<i16> {
    let end = Instant::now() + wait;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 2048];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, _)) if n > 12 => bytes.extend_from_slice(&buf[12..n]),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    common::audio::sox_decode_g711(&bytes, "u-law")
}

#[test]
fn rtp_from_a_second_source_is_ignored_and_json_logs_name_the_call() {
    require_tools(&["sox"]);
    let ports = alloc_ports();
    let cfg = "logging:\n  format: json\n  level: info\nroutes:\n  - match: \"*\"\n    agent: e\nagents:\n  e:\n    mode: echo\n    echo_delay_ms: 0\n";
    let app = Appliance::start(cfg, &ports);
    let c = Client::new(&ports);
    c.send(&invite(&c, "1000", "z9hG4bKlatch", SDP));
    let got = c.recv_all(Duration::from_millis(500));
    let ok = got.iter().map(|(_, m)| m).find(|m| status(m) == 200).expect("200 OK").clone();
    let rtp_dst = format!("127.0.0.1:{}", sdp_port(&ok));
    let ack = format!(
        "ACK sip:x@127.0.0.1 SIP/2.0\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: z9hG4bKlatch@test\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        c.via("z9hG4bKlatchack"),
        header(&ok, "From").unwrap(),
        header(&ok, "To").unwrap()
    );
    c.send(&ack);

    // The caller's media comes from its own socket (not the SDP's 127.0.0.1:40000): the appliance latches to it.
    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    let intruder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tone: Vec<i16> = (0..160).map(|i| ((i as f64 * std::f64::consts::TAU / 20.0).sin() * 12000.0) as i16).collect();
    let tone_ulaw = common::audio::sox_encode_g711(&tone, "u-law");
    stream(&caller, &rtp_dst, 7, 100, 40, &tone_ulaw);
    let echoed = drain_rtp_pcm(&caller, Duration::from_millis(300));
    assert!(rms(&echoed) > 0.1, "the caller's tone comes back to the caller's source: rms {}", rms(&echoed));

    // Now the caller is silent while a second source blasts loud noise at the same port.
    let noise: Vec<u8> = (0..160u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8 & 0x7F).collect();
    let t = std::thread::spawn({
        let intruder = intruder.try_clone().unwrap();
        let dst = rtp_dst.clone();
        move || stream(&intruder, &dst, 99, 5000, 50, &noise)
    });
    stream(&caller, &rtp_dst, 7, 140, 50, &[0xFF; 160]);
    t.join().unwrap();
    let during = drain_rtp_pcm(&caller, Duration::from_millis(300));
    // Skip the tail of the tone echo still in flight, then it must be silence.
    let settled = &during[during.len().min(8000 / 2)..];
    assert!(!settled.is_empty() && rms(settled) < 0.005, "the intruder's noise is not played: rms {}", rms(settled));
    assert!(
        app.metric_value("switchboard_rtp_dropped_total{reason=\"foreign_source\"}").unwrap() >= 45.0,
        "{}",
        app.metrics()
    );
    assert!(intruder.set_read_timeout(Some(Duration::from_millis(100))).is_ok());
    assert!(intruder.recv_from(&mut [0u8; 2048]).is_err(), "nothing is sent to the intruder");

    c.send(&format!(
        "BYE sip:x@127.0.0.1 SIP/2.0\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: z9hG4bKlatch@test\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        c.via("z9hG4bKlatchbye"),
        header(&ok, "From").unwrap(),
        header(&ok, "To").unwrap()
    ));
    assert!(c.recv_all(Duration::from_millis(300)).iter().any(|(_, m)| status(m) == 200));
    assert!(app.wait_log("media stopped", Duration::from_secs(2)));
    // JSON logs: every line is an object, and the call's lines carry its Call-ID (as a field or in the call span).
    let log = app.log();
    let call_lines: Vec<&str> = log.lines().filter(|l| l.contains("z9hG4bKlatch@test")).collect();
    assert!(call_lines.len() >= 4, "{log}");
    for l in log.lines().filter(|l| l.starts_with('{')) {
        assert!(l.ends_with('}'), "one JSON object per line: {l}");
    }
    for needle in ["incoming call", "RTP latched", "media stopped", "call ended"] {
        let line = log.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no `{needle}` line in {log}"));
        assert!(line.contains("\"call_id\":\"z9hG4bKlatch@test\""), "{needle}: {line}");
    }
}
