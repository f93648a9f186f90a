//! Property tests for RTCP fed with hostile input: the compound parser must
//! never panic whatever arrives (random bytes, or a valid compound packet
//! mutated and truncated), writing then parsing must give back the packets,
//! and a session driven with arbitrary RTP/RTCP events must neither panic nor
//! emit anything that is not a well-formed report.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use switchboard::media::rtcp::{
    self, ReportBlock, RtcpConfig, RtcpPacket, RtcpSession, SenderInfo, PT_BYE, PT_RR, PT_SDES, PT_SR,
};

fn report_block() -> impl Strategy<Value = ReportBlock> {
    (any::<u32>(), any::<u8>(), -0x80_0000i32..=0x7F_FFFF, any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>())
        .prop_map(|(ssrc, fraction_lost, cumulative_lost, highest_seq, jitter, lsr, dlsr)| ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost,
            highest_seq,
            jitter,
            lsr,
            dlsr,
        })
}

/// Packets `write` can represent exactly: counts within 31, texts within 255
/// bytes, SDES item types non-zero, `Other` only for types that are valid
/// with an empty body.
fn packet() -> impl Strategy<Value = RtcpPacket> {
    let blocks = || proptest::collection::vec(report_block(), 0..6);
    prop_oneof![
        (any::<u32>(), any::<(u64, u32, u32, u32)>(), blocks()).prop_map(|(ssrc, (ntp, ts, pc, oc), reports)| {
            RtcpPacket::SenderReport {
                ssrc,
                info: SenderInfo { ntp, rtp_timestamp: ts, packet_count: pc, octet_count: oc },
                reports,
            }
        }),
        (any::<u32>(), blocks()).prop_map(|(ssrc, reports)| RtcpPacket::ReceiverReport { ssrc, reports }),
        proptest::collection::vec((any::<u32>(), proptest::collection::vec((1u8..=255, "\\PC{0,40}"), 0..5)), 0..4)
            .prop_map(|chunks| RtcpPacket::Sdes { chunks }),
        (proptest::collection::vec(any::<u32>(), 0..6), proptest::option::of("\\PC{0,60}"))
            .prop_map(|(ssrcs, reason)| RtcpPacket::Bye { ssrcs, reason }),
        (192u8..=223)
            .prop_filter("SR/RR/SDES/BYE need a body", |t| !(PT_SR..=PT_BYE).contains(t))
            .prop_map(|packet_type| RtcpPacket::Other { packet_type }),
    ]
}

fn compound() -> impl Strategy<Value = Vec<RtcpPacket>> {
    proptest::collection::vec(packet(), 1..6)
}

fn encode(packets: &[RtcpPacket]) -> Vec<u8> {
    let mut out = Vec::new();
    packets.iter().for_each(|p| rtcp::write(p, &mut out));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = rtcp::parse_compound(&buf);
    }

    /// Headers that pass the version, type and length checks, with random
    /// counts, padding bits and bodies, so the per-type parsers are reached.
    #[test]
    fn parse_plausible_headers_never_panics(
        parts in proptest::collection::vec(
            (any::<u8>(), prop_oneof![Just(PT_SR), Just(PT_RR), Just(PT_SDES), Just(PT_BYE), 192u8..=223],
             proptest::collection::vec(any::<u8>(), 0..20)),
            1..6,
        ),
    ) {
        let mut buf = Vec::new();
        for (flags, pt, mut body) in parts {
            body.truncate(body.len() / 4 * 4);
            buf.push(0x80 | (flags & 0x3F));
            buf.push(pt);
            buf.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
            // Length counts the header word too; fix up below.
            let at = buf.len() - 2;
            buf.extend_from_slice(&[0; 4]);
            buf.extend_from_slice(&body);
            let words = (body.len() / 4 + 1) as u16;
            buf[at..at + 2].copy_from_slice(&words.to_be_bytes());
        }
        if let Ok(packets) = rtcp::parse_compound(&buf) {
            prop_assert!(!packets.is_empty() && packets.len() <= rtcp::MAX_PACKETS);
        }
    }

    #[test]
    fn mutated_and_truncated_compounds_never_panic(
        packets in compound(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let valid = encode(&packets);
        // Every prefix that ends inside a packet is an error, never a panic.
        let mut truncated = valid.clone();
        truncated.truncate(cut.index(valid.len()));
        let _ = rtcp::parse_compound(&truncated);
        let mut mutated = valid.clone();
        for (at, byte) in flips {
            let i = at.index(mutated.len());
            mutated[i] = byte;
        }
        let _ = rtcp::parse_compound(&mutated);
        mutated.truncate(cut.index(mutated.len()));
        let _ = rtcp::parse_compound(&mutated);
    }

    #[test]
    fn write_parse_round_trip(packets in compound()) {
        let buf = encode(&packets);
        prop_assert_eq!(buf.len() % 4, 0);
        prop_assert_eq!(rtcp::parse_compound(&buf), Ok(packets.clone()));
        // Appending to a non-empty buffer writes the same bytes.
        let mut out = vec![0xEE];
        packets.iter().for_each(|p| rtcp::write(p, &mut out));
        prop_assert_eq!(&out[1..], &buf[..]);
    }
}

const OURS: u32 = 0x5B5B_0001;
const PEER: u32 = 0xCA11_E400;

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    /// Time going backwards must not panic either.
    Rewind(u64),
    RtpIn {
        ssrc: u32,
        seq: u16,
        ts: u32,
    },
    /// The peer's stream continuing in order (with gaps).
    RtpInNext {
        gap: u16,
    },
    RtpOut {
        len: usize,
    },
    RtcpBytes(Vec<u8>),
    RtcpValid(Vec<RtcpPacket>),
    /// A report about us from the peer with arbitrary LSR/DLSR.
    ReportAboutUs {
        sr: bool,
        lsr: u32,
        dlsr: u32,
    },
    Timeout,
    Bye,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..3000).prop_map(Op::Advance),
        1 => (0u64..500).prop_map(Op::Rewind),
        2 => (prop_oneof![Just(PEER), any::<u32>()], any::<u16>(), any::<u32>())
            .prop_map(|(ssrc, seq, ts)| Op::RtpIn { ssrc, seq, ts }),
        6 => (1u16..4).prop_map(|gap| Op::RtpInNext { gap }),
        3 => (0usize..2000).prop_map(|len| Op::RtpOut { len }),
        2 => proptest::collection::vec(any::<u8>(), 0..128).prop_map(Op::RtcpBytes),
        2 => compound().prop_map(Op::RtcpValid),
        2 => (any::<bool>(), prop_oneof![Just(0u32), any::<u32>()], any::<u32>())
            .prop_map(|(sr, lsr, dlsr)| Op::ReportAboutUs { sr, lsr, dlsr }),
        3 => Just(Op::Timeout),
        1 => Just(Op::Bye),
    ]
}

fn check_report(buf: &[u8], bye: bool) -> Result<(), TestCaseError> {
    let packets = rtcp::parse_compound(buf).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert_eq!(packets.len(), if bye { 3 } else { 2 });
    match &packets[0] {
        RtcpPacket::SenderReport { ssrc, reports, .. } | RtcpPacket::ReceiverReport { ssrc, reports } => {
            prop_assert_eq!(*ssrc, OURS);
            prop_assert!(reports.len() <= 1);
        }
        p => prop_assert!(false, "report first, got {:?}", p),
    }
    let sdes_ok = matches!(&packets[1], RtcpPacket::Sdes { chunks } if chunks.len() == 1 && chunks[0].0 == OURS);
    prop_assert!(sdes_ok, "SDES CNAME second, got {:?}", packets[1]);
    if bye {
        prop_assert_eq!(&packets[2], &RtcpPacket::Bye { ssrcs: vec![OURS], reason: None });
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn session_survives_arbitrary_input(
        ops in proptest::collection::vec(op(), 1..200),
        seed: u64,
        wall_secs in 0u64..=u64::from(u32::MAX) * 2,
    ) {
        let t0 = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(wall_secs);
        let cfg = RtcpConfig { ssrc: OURS, cname: "prop@test".into(), clock_rate: 8000, interval: Duration::from_secs(5) };
        let mut s = RtcpSession::with_seed(cfg, t0, wall, seed);
        let mut now = t0;
        let mut latest = t0;
        let mut elapsed = Duration::ZERO;
        let (mut seq, mut ts, mut out_ts) = (0u16, 0u32, 0u32);
        for op in ops {
            match op {
                Op::Advance(n) => { now += Duration::from_millis(n); elapsed += Duration::from_millis(n); }
                Op::Rewind(n) => {
                    let back = Duration::from_millis(n).min(elapsed);
                    now -= back;
                    elapsed -= back;
                }
                Op::RtpIn { ssrc, seq, ts } => s.on_rtp_received(ssrc, seq, ts, now),
                Op::RtpInNext { gap } => {
                    seq = seq.wrapping_add(gap);
                    ts = ts.wrapping_add(160 * u32::from(gap));
                    s.on_rtp_received(PEER, seq, ts, now);
                }
                Op::RtpOut { len } => {
                    out_ts = out_ts.wrapping_add(160);
                    s.on_rtp_sent(out_ts, len, now);
                }
                Op::RtcpBytes(b) => { let _ = s.handle_rtcp(&b, now); }
                Op::RtcpValid(p) => {
                    let buf = encode(&p);
                    prop_assert_eq!(s.handle_rtcp(&buf, now), Ok(p));
                }
                Op::ReportAboutUs { sr, lsr, dlsr } => {
                    let reports = vec![ReportBlock { ssrc: OURS, fraction_lost: 3, cumulative_lost: -5, highest_seq: 9, jitter: 80, lsr, dlsr }];
                    let p = if sr {
                        RtcpPacket::SenderReport { ssrc: PEER, info: SenderInfo { ntp: u64::from(lsr) << 16, rtp_timestamp: 0, packet_count: 0, octet_count: 0 }, reports }
                    } else {
                        RtcpPacket::ReceiverReport { ssrc: PEER, reports }
                    };
                    let mut buf = Vec::new();
                    rtcp::write(&p, &mut buf);
                    s.handle_rtcp(&buf, now).unwrap();
                    let st = s.stats();
                    prop_assert_eq!(st.remote_cumulative_lost, Some(-5));
                    prop_assert_eq!(st.remote_jitter_ms, Some(10.0));
                    if let Some(rtt) = st.rtt {
                        // The 16.16 arithmetic never yields more than 2^31 units.
                        prop_assert!(rtt <= Duration::from_secs(32_768));
                    }
                }
                Op::Timeout => {
                    let due = s.poll_timeout();
                    if let Some(buf) = s.handle_timeout(now) {
                        prop_assert!(now >= due);
                        check_report(&buf, false)?;
                    }
                    if now >= due {
                        prop_assert!(s.poll_timeout() > now, "rescheduled after firing");
                    }
                }
                Op::Bye => check_report(&s.bye(now), true)?,
            }
            let st = s.stats();
            prop_assert!((0.0..=1.0).contains(&st.fraction_lost));
            prop_assert!(st.jitter_ms.is_finite() && st.jitter_ms >= 0.0);
            if let Some(f) = st.remote_fraction_lost {
                prop_assert!((0.0..1.0).contains(&f));
            }
            // Never scheduled more than 1.5 intervals past the latest time seen.
            latest = latest.max(now);
            prop_assert!(s.poll_timeout() <= latest + Duration::from_millis(7500));
        }
    }
}

#[test]
fn new_session_with_real_clock_values() {
    // The driver passes Instant::now() and SystemTime::now() once.
    let cfg = RtcpConfig { ssrc: OURS, cname: "x".into(), clock_rate: 8000, interval: Duration::from_secs(5) };
    let now = Instant::now();
    let mut s = RtcpSession::with_seed(cfg, now, SystemTime::now(), 1);
    s.on_rtp_sent(0, 160, now);
    let at = s.poll_timeout();
    let buf = s.handle_timeout(at).expect("first report");
    check_report(&buf, false).unwrap();
}
