//! `CallMedia` in virtual time: latching, foreign sources, the echo path.

use super::media::*;
use crate::agent::echo::EchoAgent;
use crate::media::jitter::JitterConfig;
use crate::media::{g711, rtp};
use crate::sip::sdp::{Codec, Direction};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

fn params(codec: Codec, pt: u8) -> MediaParams {
    MediaParams {
        codec,
        payload_type: pt,
        dtmf_payload_type: Some(101),
        dtmf_clock_rate: 8000,
        ptime_ms: 20,
        direction: Direction::SendRecv,
        remote: Some("10.0.0.5:4000".parse().unwrap()),
        opus: None,
    }
}

fn settings() -> MediaSettings {
    MediaSettings {
        jitter: JitterConfig {
            clock_rate: 8000,
            min_delay: Duration::from_millis(20),
            target_delay: Duration::from_millis(40),
            max_delay: Duration::from_millis(500),
            max_packets: 256,
        },
        opus: Default::default(),
        rtcp_interval: Duration::from_secs(5),
        rtp_timeout: Some(Duration::from_secs(2)),
        cname: "test@switchboard".into(),
    }
}

fn rtp_out(out: &[Outgoing]) -> Vec<(SocketAddr, Vec<u8>)> {
    out.iter()
        .filter_map(|o| match o {
            Outgoing::Rtp(a, b) => Some((*a, b.clone())),
            _ => None,
        })
        .collect()
}

fn packet(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    rtp::write(
        &rtp::RtpHeader { marker: false, payload_type: pt, sequence: seq, timestamp: ts, ssrc: 0x1234 },
        payload,
        &mut out,
    );
    out
}

fn media(codec: Codec, pt: u8, delay_ms: Option<u64>, t0: Instant) -> CallMedia {
    let agent = Box::new(EchoAgent::new(None, delay_ms));
    CallMedia::new(
        params(codec, pt),
        settings(),
        agent,
        RtpIdentity { ssrc: 9, sequence: 100, timestamp: 1000 },
        t0,
        SystemTime::now(),
        7,
    )
    .unwrap()
}

/// Drive `m` for `ms`, feeding one packet of `tone` every 20 ms from `from`; return what was sent.
fn run(
    m: &mut CallMedia,
    t0: Instant,
    ms: u64,
    from: SocketAddr,
    encode: fn(&[i16], &mut Vec<u8>),
    pt: u8,
    tone: &[i16],
) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut seq = 0u16;
    let mut next_in = t0;
    let end = t0 + Duration::from_millis(ms);
    loop {
        let tick = m.poll_timeout();
        if next_in <= tick && next_in < end {
            let off = (seq as usize * 160) % tone.len();
            let mut payload = Vec::new();
            encode(&tone[off..off + 160], &mut payload);
            m.handle_rtp(&packet(pt, seq, seq as u32 * 160, &payload), from, next_in);
            seq += 1;
            next_in += Duration::from_millis(20);
            continue;
        }
        if tick >= end {
            break;
        }
        let mut o = Vec::new();
        m.handle_timeout(tick, &mut o);
        out.extend(rtp_out(&o));
    }
    out
}

fn tone() -> Vec<i16> {
    (0..8000).map(|i| ((i as f64 * 2.0 * std::f64::consts::PI * 400.0 / 8000.0).sin() * 8000.0) as i16).collect()
}

#[test]
fn sends_silence_to_sdp_address_until_latched_then_to_the_source() {
    let t0 = Instant::now();
    let mut m = media(Codec::Pcmu, 0, Some(100), t0);
    m.start_agent(t0);
    let mut o = Vec::new();
    m.handle_timeout(t0, &mut o);
    let out = rtp_out(&o);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "10.0.0.5:4000".parse::<SocketAddr>().unwrap(), "before latching: the SDP address");
    let (h, payload) = rtp::parse(&out[0].1).unwrap();
    assert!(h.marker, "first packet of the stream carries the marker");
    assert_eq!((h.ssrc, h.sequence, h.timestamp, h.payload_type), (9, 100, 1000, 0));
    assert!(payload.iter().all(|&b| b == g711::ULAW_SILENCE));

    let nat: SocketAddr = "198.51.100.7:31000".parse().unwrap();
    assert_eq!(m.handle_rtp(&packet(0, 1, 160, &[0xff; 160]), nat, t0), RxOutcome::Latched(nat));
    let other: SocketAddr = "203.0.113.9:5000".parse().unwrap();
    assert_eq!(m.handle_rtp(&packet(0, 2, 320, &[0xff; 160]), other, t0), RxOutcome::Foreign);
    assert_eq!(m.handle_rtp(b"not rtp", nat, t0), RxOutcome::Invalid);
    assert_eq!(m.handle_rtp(&packet(18, 3, 480, &[0; 20]), nat, t0), RxOutcome::Invalid, "payload type not negotiated");
    let mut o = Vec::new();
    m.handle_timeout(t0 + Duration::from_millis(20), &mut o);
    assert_eq!(rtp_out(&o)[0].0, nat, "after latching: back to the source (symmetric RTP)");
    let s = m.stats();
    assert_eq!((s.packets_in, s.foreign_dropped, s.invalid_dropped), (1, 1, 2));
}

#[test]
fn echo_returns_the_callers_audio_after_the_delay() {
    for (codec, pt, enc, dec) in [
        (
            Codec::Pcmu,
            0u8,
            g711::encode_ulaw as fn(&[i16], &mut Vec<u8>),
            g711::decode_ulaw as fn(&[u8], &mut Vec<i16>),
        ),
        (Codec::Pcma, 8, g711::encode_alaw, g711::decode_alaw),
    ] {
        let t0 = Instant::now();
        let mut m = media(codec, pt, Some(200), t0);
        m.start_agent(t0);
        let from: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let tone = tone();
        let out = run(&mut m, t0, 2000, from, enc, pt, &tone);
        // ~100 packets in 2 s, evenly numbered and timestamped.
        assert!((99..=101).contains(&out.len()), "{}", out.len());
        let mut pcm = Vec::new();
        let mut first_loud = None;
        for (i, (_, p)) in out.iter().enumerate() {
            let (h, payload) = rtp::parse(p).unwrap();
            assert_eq!(h.sequence, 100u16.wrapping_add(i as u16));
            assert_eq!(h.timestamp, 1000 + 160 * i as u32);
            assert_eq!(h.payload_type, pt);
            let before = pcm.len();
            dec(payload, &mut pcm);
            if first_loud.is_none() && pcm[before..].iter().any(|s| s.abs() > 2000) {
                first_loud = Some(i);
            }
        }
        // Echo starts after jitter delay (40 ms) + echo delay (200 ms) + resampler delay: packet ~12-15.
        let first = first_loud.expect("echo heard");
        assert!((11..=16).contains(&first), "echo began at packet {first}");
        let tail = &pcm[(first + 2) * 160..];
        let loud = tail.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / tail.len() as f64;
        assert!(loud.sqrt() > 4000.0, "echo carries the tone's energy: rms {}", loud.sqrt());
    }
}

#[test]
fn nothing_sent_while_inactive_or_on_hold() {
    let t0 = Instant::now();
    let mut p = params(Codec::Pcmu, 0);
    p.direction = Direction::Inactive;
    let mut m = CallMedia::new(
        p.clone(),
        settings(),
        Box::new(EchoAgent::new(None, None)),
        RtpIdentity::from_rng(&mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3)),
        t0,
        SystemTime::now(),
        7,
    )
    .unwrap();
    let mut out = Vec::new();
    m.handle_timeout(t0, &mut out);
    assert!(rtp_out(&out).is_empty());
    p.direction = Direction::SendRecv;
    p.remote = None; // c=0.0.0.0
    m.update(p, t0);
    m.handle_timeout(t0 + Duration::from_millis(20), &mut out);
    assert!(rtp_out(&out).is_empty(), "no address to send to");
}

#[test]
fn rfc4733_and_info_digits_reach_events_and_rtp_timeout_hangs_up() {
    let t0 = Instant::now();
    let mut m = media(Codec::Pcmu, 0, Some(100), t0);
    m.start_agent(t0);
    let from: SocketAddr = "10.0.0.5:4000".parse().unwrap();
    // "5": three updates, then the end packet three times (one digit).
    for (i, (end, dur)) in
        [(false, 160u16), (false, 320), (false, 480), (true, 640), (true, 640), (true, 640)].iter().enumerate()
    {
        let payload = [5u8, if *end { 0x80 | 10 } else { 10 }, (dur >> 8) as u8, *dur as u8];
        let mut pkt = Vec::new();
        rtp::write(
            &rtp::RtpHeader { marker: i == 0, payload_type: 101, sequence: 10 + i as u16, timestamp: 8000, ssrc: 7 },
            &payload,
            &mut pkt,
        );
        m.handle_rtp(&pkt, from, t0 + Duration::from_millis(20 * i as u64));
    }
    m.handle_info("application/dtmf-relay", b"Signal=#\r\nDuration=160\r\n", t0);
    let digits: Vec<char> = std::iter::from_fn(|| m.poll_event())
        .filter_map(|e| match e {
            MediaEvent::Dtmf(d) => Some(d.digit),
            _ => None,
        })
        .collect();
    assert_eq!(digits, vec!['5', '#']);
    assert_eq!(m.stats().dtmf_digits, 2);
    // No RTP for rtp_timeout (2 s): one hang-up request.
    let mut out = Vec::new();
    let mut t = t0;
    // 4 s: the first RTCP report is due 0.25..0.75 of the 5 s interval after the start (randomised).
    while t < t0 + Duration::from_secs(4) {
        t = m.poll_timeout().max(t);
        m.handle_timeout(t, &mut out);
        t += Duration::from_millis(1);
    }
    let hangups: Vec<String> = std::iter::from_fn(|| m.poll_event())
        .filter_map(|e| match e {
            MediaEvent::Hangup(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(hangups.len(), 1, "{hangups:?}");
    assert!(hangups[0].contains("RTP timeout"));
    // RTCP went out to the RTP peer's port + 1 meanwhile.
    assert!(out.iter().any(|o| matches!(o, Outgoing::Rtcp(a, _) if a.port() == 4001)));
}

/// An agent that can still speak: it takes the fault (apology, then its own hang-up).
struct Apologetic(std::sync::Arc<std::sync::atomic::AtomicBool>);
impl crate::agent::Agent for Apologetic {
    fn start(&mut self, _rate: u32, _now: Instant) {}
    fn on_caller_audio(&mut self, _pcm: &[i16], _p: crate::agent::PlayoutState, _now: Instant) {}
    fn poll_output(&mut self, _p: crate::agent::PlayoutState, _now: Instant) -> Option<crate::agent::AgentOutput> {
        None
    }
    fn on_fault(&mut self, _what: &str, _now: Instant) -> bool {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        true
    }
}

fn vad_gone(m: &mut CallMedia, t0: Instant) -> Vec<MediaEvent> {
    use crate::call::turns::TurnDetector;
    use crate::models::vad::{Segmenter, SegmenterConfig, VadClient};
    m.set_vad(
        VadClient::given_up(8000),
        Segmenter::new(SegmenterConfig::default()),
        TurnDetector::new(crate::call::turns::TurnMode::ServerVad, None),
    );
    let mut out = Vec::new();
    let mut now = t0;
    for _ in 0..20 {
        now = m.poll_timeout().max(now);
        m.handle_timeout(now, &mut out);
    }
    std::iter::from_fn(|| m.poll_event()).collect()
}

#[test]
fn a_call_whose_speech_detection_is_given_up_ends_or_lets_its_agent_apologise() {
    let t0 = Instant::now();
    // An agent without a voice of its own: BYE, with the reason, once.
    let mut m = media(Codec::Pcmu, 0, None, t0);
    let hangups: Vec<String> = vad_gone(&mut m, t0)
        .into_iter()
        .filter_map(|e| match e {
            MediaEvent::Hangup(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(hangups, vec!["speech detection failed".to_string()]);
    // An agent that can speak takes it (apology, then its own BYE): no immediate hang-up.
    let told = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut m = CallMedia::new(
        params(Codec::Pcmu, 0),
        settings(),
        Box::new(Apologetic(told.clone())),
        RtpIdentity { ssrc: 9, sequence: 100, timestamp: 1000 },
        t0,
        SystemTime::now(),
        7,
    )
    .unwrap();
    let events = vad_gone(&mut m, t0);
    assert!(told.load(std::sync::atomic::Ordering::Relaxed), "the agent was told");
    assert!(!events.iter().any(|e| matches!(e, MediaEvent::Hangup(_))), "{events:?}");
}
