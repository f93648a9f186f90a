//! CPU per call of the media path: one iteration is one 20 ms packet time of
//! an echo-mode call — an RTP packet in (latch check, jitter buffer), decode
//! to 16 kHz (resample for G.711), the agent, encode (resample for G.711) and
//! an RTP packet out — driven in virtual time, no sockets. A call needs 50
//! of these per second, so `time per iteration / 20 ms` is the share of one
//! core a call costs (socket syscalls are measured by scripts/bench-echo.sh).

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};
use switchboard::agent::echo::EchoAgent;
use switchboard::call::media::{CallMedia, MediaParams, MediaSettings, RtpIdentity};
use switchboard::media::codec::{self, CodecKind, OpusParams};
use switchboard::media::jitter::JitterConfig;
use switchboard::media::rtp;
use switchboard::sip::sdp::{Codec, Direction};

/// 1 s of speech-like 16 kHz audio: a gliding harmonic tone with noise.
fn speech_16k() -> Vec<i16> {
    let mut seed = 1u32;
    (0..16000)
        .map(|i| {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            let t = i as f64 / 16000.0;
            let f0 = 120.0 + 40.0 * (t * 3.0).sin();
            let v: f64 = (1..6).map(|h| (std::f64::consts::TAU * f0 * h as f64 * t).sin() / h as f64).sum();
            (v * 6000.0 + ((seed >> 16) as f64 - 32768.0) * 0.02) as i16
        })
        .collect()
}

fn payloads(kind: CodecKind) -> Vec<Vec<u8>> {
    let mut enc = codec::encoder(kind, 20, &OpusParams::default()).unwrap();
    speech_16k()
        .chunks(320)
        .map(|f| {
            let mut out = Vec::new();
            enc.encode(f, &mut out).unwrap();
            out
        })
        .collect()
}

fn bench_call(c: &mut Criterion, name: &str, codec: Codec, pt: u8) {
    let kind = match codec {
        Codec::Pcmu => CodecKind::Pcmu,
        Codec::Pcma => CodecKind::Pcma,
        Codec::Opus => CodecKind::Opus,
    };
    let frames = payloads(kind);
    let peer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
    let params = MediaParams {
        codec,
        payload_type: pt,
        dtmf_payload_type: Some(101),
        dtmf_clock_rate: 8000,
        ptime_ms: 20,
        direction: Direction::SendRecv,
        remote: Some(peer),
        opus: None,
    };
    let settings = MediaSettings {
        jitter: JitterConfig {
            clock_rate: 8000,
            min_delay: Duration::from_millis(20),
            target_delay: Duration::from_millis(40),
            max_delay: Duration::from_millis(200),
            max_packets: 256,
        },
        opus: OpusParams::default(),
        rtcp_interval: Duration::from_secs(5),
        rtp_timeout: None,
        cname: "bench".into(),
    };
    let t0 = Instant::now();
    let mut m = CallMedia::new(
        params,
        settings,
        Box::new(EchoAgent::new(None, Some(0))),
        RtpIdentity::from_rng(&mut rand::rng()),
        t0,
        SystemTime::now(),
        rand::random(),
    )
    .unwrap();
    m.start_agent(t0);
    let step = codec.clock_rate() / 50;
    let mut n: u32 = 0;
    let mut out = Vec::new();
    let mut pkt = Vec::with_capacity(512);
    c.bench_function(name, |b| {
        b.iter(|| {
            let now = t0 + Duration::from_millis(20 * n as u64);
            pkt.clear();
            let h = rtp::RtpHeader {
                marker: n == 0,
                payload_type: pt,
                sequence: n as u16,
                timestamp: n.wrapping_mul(step),
                ssrc: 42,
            };
            rtp::write(&h, &frames[n as usize % frames.len()], &mut pkt);
            m.handle_rtp(&pkt, peer, now);
            m.handle_timeout(now, &mut out);
            black_box(out.drain(..).count());
            n += 1;
        })
    });
    // (A bench filtered out by name runs no iteration.)
    let s = m.stats();
    assert!(n == 0 || (s.packets_out > 0 && s.decoded_samples > 0), "the bench really ran the media path");
}

fn calls(c: &mut Criterion) {
    bench_call(c, "call_frame_pcmu_echo", Codec::Pcmu, 0);
    bench_call(c, "call_frame_pcma_echo", Codec::Pcma, 8);
    bench_call(c, "call_frame_opus_echo", Codec::Opus, 111);
}

criterion_group!(benches, calls);
criterion_main!(benches);
