//! Self-test of the integration-test harness (tests/common) against the real tools — SIPp, baresip,
//! sox, espeak-ng, tcpdump — without the appliance.

mod common;

use common::appliance::{metric_sum, metric_value, try_http};
use common::audio::{g711_round_trip, parse_wav_mono_i16, sox_decode_g711};
use common::fixtures::{lin2alaw, lin2ulaw, rtp_packet};
use common::pcap::{parse_pcap, PcapWriter};
use common::*;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

/// Deterministic white noise (xorshift), amplitude ±`amp`.
fn noise(n: usize, amp: i32, seed: u64) -> Vec<i16> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x % (2 * amp as u64 + 1)) as i32 - amp) as i16
        })
        .collect()
}

#[test]
fn require_tools_names_the_missing_tool() {
    require_tools(&["sh"]);
    let err = std::panic::catch_unwind(|| require_tools(&["sh", "no-such-tool-xyz"])).unwrap_err();
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("no-such-tool-xyz") && msg.contains("scripts/setup.sh --test"), "{msg}");
}

#[test]
fn tools_are_installed() {
    require_tools(&["sipp", "baresip", "sox", "soxi", "espeak-ng", "tshark", "tcpdump", "kamailio", "ip"]);
}

#[test]
fn fixtures_are_generated_and_audible() {
    let f = fixtures();
    for wav in [
        &f.speech_8k,
        &f.other_speech_8k,
        &f.greeting_8k,
        &f.speech_8k_padded,
        &f.other_speech_8k_padded,
        &f.greeting_8k_padded,
    ] {
        let (pcm, rate) = read_wav_mono_i16(wav);
        assert_eq!(rate, 8000, "{}", wav.display());
        assert!(is_audible(&pcm, rate), "{}: {}", wav.display(), audio::describe(&pcm, rate));
    }
    let speech = f.speech_pcm();
    let secs = speech.len() as f64 / 8000.0;
    assert!((2.5..5.0).contains(&secs), "speech is {secs} s");
    let (padded, _) = read_wav_mono_i16(&f.speech_8k_padded);
    assert_eq!(padded.len(), speech.len() + 8000 / 2 + 8 * 8000);
    assert!(padded[..4000].iter().all(|&s| s == 0), "0.5 s lead silence");
    assert_eq!(&padded[4000..4000 + speech.len()], &speech[..]);
    let (stereo, rate) = read_wav_mono_i16(&f.speech_48k_stereo_padded);
    assert_eq!(rate, 48000);
    assert!(is_audible(&stereo, rate));

    // RTP pcaps: one 20 ms packet per 160 samples, right payload type, contiguous headers.
    for (pcap, pt) in [(&f.speech_pcmu_pcap, 0u8), (&f.speech_pcma_pcap, 8u8)] {
        let pkts = pcap::read_pcap_file(pcap).unwrap();
        assert_eq!(pkts.len(), speech.len().div_ceil(160), "{}", pcap.display());
        let rtp = rtp_packets(&pkts, 6000, Some(40000));
        assert_eq!(rtp.len(), pkts.len());
        for (i, p) in rtp.iter().enumerate() {
            assert_eq!(p.pt, pt);
            assert_eq!(p.payload.len(), 160);
            assert_eq!(p.seq, fixtures::PCAP_SEQ0.wrapping_add(i as u16));
            assert_eq!(p.ts, fixtures::PCAP_TS0.wrapping_add(160 * i as u32));
            assert_eq!(p.marker, i == 0);
            assert!((p.time - pkts[0].time - 0.02 * i as f64).abs() < 1e-6);
        }
        // Decoded by sox, the pcap is the sentence.
        let a = rtp_stream_to_pcm(&pkts, 6000, None);
        assert_eq!(a.payload_types, BTreeSet::from([pt]));
        assert_eq!(a.seq_errors, 0);
        let (lag, ncc) = find_in(&a.pcm, &speech).unwrap();
        assert!(lag == 0 && ncc > 0.99, "lag {lag} ncc {ncc}");
    }
    let dtmf = pcap::read_pcap_file(&f.dtmf_pcap).unwrap();
    let rtp = rtp_packets(&dtmf, 6000, None);
    assert_eq!(rtp.len(), 4 * (4 + 3), "4 digits x (4 packets + 3 end packets)");
    let ends: Vec<u8> = rtp.iter().filter(|p| p.payload[1] & 0x80 != 0).map(|p| p.payload[0]).collect();
    assert_eq!(ends, vec![1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]);
    assert!(rtp.iter().all(|p| p.pt == 101 && p.payload.len() == 4));
}

#[test]
fn g711_encoders_agree_with_sox() {
    let f = fixtures();
    let speech = f.speech_pcm();
    for (law, enc) in [("u-law", lin2ulaw as fn(i16) -> u8), ("a-law", lin2alaw as fn(i16) -> u8)] {
        let ours: Vec<u8> = speech.iter().map(|&s| enc(s)).collect();
        let decoded = sox_decode_g711(&ours, law);
        assert_eq!(decoded.len(), speech.len());
        // Quantisation error only: SNR well above 30 dB.
        let sig: f64 = speech.iter().map(|&s| (s as f64).powi(2)).sum();
        let err: f64 = speech.iter().zip(&decoded).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum();
        let snr = 10.0 * (sig / err).log10();
        assert!(snr > 30.0, "{law}: SNR {snr:.1} dB");
        let rt = g711_round_trip(&speech, law);
        assert_eq!(rt.len(), speech.len());
    }
}

#[test]
fn find_in_locates_speech_after_g711_round_trip() {
    let f = fixtures();
    let speech = f.speech_pcm();
    let other = f.other_speech_pcm();
    for law in ["u-law", "a-law"] {
        // 12 s haystack: quiet noise, 1.2345 s in the round-tripped sentence, then the other sentence.
        let lead = 9876usize;
        let mut hay = noise(12 * 8000, 30, 7);
        let rt = g711_round_trip(&speech, law);
        for (i, s) in rt.iter().enumerate() {
            hay[lead + i] = hay[lead + i].saturating_add(*s);
        }
        let other_at = lead + rt.len() + 4000;
        for (i, s) in other.iter().enumerate().take(hay.len() - other_at) {
            hay[other_at + i] = hay[other_at + i].saturating_add(*s);
        }
        let t = Instant::now();
        let (lag, ncc) = find_in(&hay, &speech).expect("found");
        let took = t.elapsed();
        eprintln!("{law}: lag {lag} (want {lead}), ncc {ncc:.4}, {took:?}");
        assert!(lag.abs_diff(lead) <= 2, "{law}: lag {lag}, want {lead}");
        assert!(ncc > 0.9, "{law}: ncc {ncc}");
        assert!(took < Duration::from_secs(2), "find_in took {took:?}");
        assert!((ncc_at(&hay, &speech, lag) - ncc).abs() < 1e-9);
    }

    // Unrelated speech and white noise do not match.
    let mut hay = vec![0i16; 4000];
    hay.extend(g711_round_trip(&other, "u-law"));
    hay.extend(vec![0i16; 8000]);
    let (_, ncc) = find_in(&hay, &speech).expect("computed");
    eprintln!("other speech: ncc {ncc:.4}");
    assert!(ncc < 0.5, "other speech ncc {ncc}");
    let (_, ncc) = find_in(&noise(12 * 8000, 8000, 99), &speech).expect("computed");
    eprintln!("white noise: ncc {ncc:.4}");
    assert!(ncc < 0.3, "noise ncc {ncc}");

    // Short haystack (zero-padded), silence, and tiny inputs.
    assert!(find_in(&vec![0i16; 20000], &speech).is_none());
    assert!(find_in(&speech, &[]).is_none());
    let (lag, ncc) = find_in(&speech[..20000], &speech).unwrap();
    assert_eq!(lag, 0);
    assert!(ncc > 0.5 && ncc < 1.0);
    let (lag, ncc) = find_in(&speech, &speech[8000..8400]).unwrap();
    assert_eq!(lag, 8000);
    assert!(ncc > 0.999);
}

#[test]
fn find_in_piecewise_tolerates_a_jitter_buffer_gap() {
    let speech = fixtures().speech_pcm();
    // 1 s lead, then the sentence with 30 ms of silence inserted after 1.5 s (a late-packet stretch).
    let mut hay = vec![0i16; 8000];
    hay.extend_from_slice(&speech[..12000]);
    hay.extend(std::iter::repeat_n(0i16, 240));
    hay.extend_from_slice(&speech[12000..]);
    hay.extend(vec![0i16; 8000]);
    let whole = find_in(&hay, &speech).unwrap();
    let m = find_in_piecewise(&hay, &speech, 3200, 400).unwrap();
    eprintln!(
        "whole lag {} ncc {:.3}, at 8000: {:.3}, at 8240: {:.3}",
        whole.0,
        whole.1,
        ncc_at(&hay, &speech, 8000),
        ncc_at(&hay, &speech, 8240)
    );
    eprintln!(
        "whole ncc {:.3}; piecewise mean {:.3} min {:.3} over {} pieces",
        whole.1,
        m.mean_ncc,
        m.min_ncc,
        m.pieces.len()
    );
    assert!(m.mean_ncc > 0.9, "{m:?}");
    assert!(m.pieces.iter().any(|&(off, lag, _)| off >= 12000 && lag == 8000 + off + 240), "{m:?}");
    let other = find_in_piecewise(&hay, &fixtures().other_speech_pcm(), 3200, 400).unwrap();
    assert!(other.mean_ncc < 0.5, "{other:?}");

    // A starved sender: four 40 ms gaps along the sentence add up to 160 ms, beyond ±50 ms of drift
    // from any single alignment; piece by piece, each following the last, it is still the sentence.
    let mut hay = vec![0i16; 8000];
    for (i, part) in speech.chunks(6000).enumerate() {
        if i > 0 {
            hay.extend(std::iter::repeat_n(0i16, 320));
        }
        hay.extend_from_slice(part);
    }
    hay.extend(vec![0i16; 8000]);
    let m = find_in_piecewise(&hay, &speech, 4000, 400).unwrap();
    eprintln!("gaps: whole ncc {:.3}; piecewise mean {:.3} min {:.3}", m.ncc, m.mean_ncc, m.min_ncc);
    assert!(m.mean_ncc > 0.75, "{m:?}");
    let other = find_in_piecewise(&hay, &fixtures().other_speech_pcm(), 4000, 400).unwrap();
    assert!(other.mean_ncc < 0.5, "unrelated speech still does not match: {other:?}");
}

#[test]
fn audio_helpers() {
    let square: Vec<i16> = (0..8000).map(|i| if i % 2 == 0 { 32767 } else { -32767 }).collect();
    assert!((rms(&square) - 1.0).abs() < 1e-3);
    assert_eq!(rms(&[]), 0.0);
    let mut pcm = vec![0i16; 16000];
    for s in &mut pcm[4000..8000] {
        *s = 3000;
    }
    assert!((active_seconds(&pcm, 8000, 0.01) - 0.5).abs() < 1e-9);
    assert!(!is_audible(&pcm[..4000], 8000));
    assert!(is_audible(&pcm, 8000));
    assert!(!is_audible(&vec![50i16; 16000], 8000), "-36 dBFS hum is below 1 %");

    let dir = test_dir("");
    let path = dir.join("t.wav");
    write_wav(&path, &pcm, 16000);
    assert_eq!(read_wav_mono_i16(&path), (pcm.clone(), 16000));
    // sox agrees on what we wrote.
    let out = std::process::Command::new("soxi").arg("-s").arg(&path).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "16000");

    // Stereo with an unknown chunk before data, and a data size running past the end of the file.
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF\0\0\0\0WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&[1, 0, 2, 0]);
    b.extend_from_slice(&8000u32.to_le_bytes());
    b.extend_from_slice(&32000u32.to_le_bytes());
    b.extend_from_slice(&[4, 0, 16, 0]);
    b.extend_from_slice(b"LIST\x03\0\0\0abc\0"); // odd size: padded
    b.extend_from_slice(b"data\xff\xff\xff\xff");
    for i in 0..10i16 {
        b.extend_from_slice(&i.to_le_bytes());
        b.extend_from_slice(&(-i).to_le_bytes());
    }
    assert_eq!(parse_wav_mono_i16(&b).unwrap(), ((0..10).collect::<Vec<i16>>(), 8000));
}

#[test]
fn pcap_reader_handles_formats() {
    let dir = test_dir("");
    let path = dir.join("w.pcap");
    let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let mut w = PcapWriter::create(&path).unwrap();
    w.udp(1_500_000, a, b, b"hello").unwrap();
    w.udp(2_000_001, b, a, &rtp_packet(0, 1, 2, 3, &[0xFF; 160], true)).unwrap();
    w.finish().unwrap();
    let pkts = pcap::read_pcap_file(&path).unwrap();
    assert_eq!(pkts.len(), 2);
    assert_eq!((pkts[0].src, pkts[0].dst, &pkts[0].payload[..]), (a, b, &b"hello"[..]));
    assert!((pkts[0].time - 1.5).abs() < 1e-9 && (pkts[1].time - 2.000001).abs() < 1e-9);
    // tshark reads what we write (checks our IP/UDP headers).
    let out = std::process::Command::new("tshark")
        .args(["-r"])
        .arg(&path)
        .args(["-T", "fields", "-e", "udp.srcport", "-e", "udp.dstport", "-e", "udp.length"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4000\t5000\t13\n5000\t4000\t180");

    // Hand-built records: big-endian nanosecond pcap with SLL, SLL2 and raw IPv6 frames.
    let ip4_udp = |payload: &[u8]| -> Vec<u8> {
        let mut v = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        let total = (20 + 8 + payload.len()) as u16;
        v[2..4].copy_from_slice(&total.to_be_bytes());
        v.extend_from_slice(&1111u16.to_be_bytes());
        v.extend_from_slice(&2222u16.to_be_bytes());
        v.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(payload);
        v
    };
    let ip6_udp = |payload: &[u8]| -> Vec<u8> {
        let mut v = vec![0x60, 0, 0, 0];
        v.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        v.extend_from_slice(&[17, 64]);
        v.extend_from_slice(&[0; 15]);
        v.push(1); // ::1
        v.extend_from_slice(&[0; 15]);
        v.push(1);
        v.extend_from_slice(&3333u16.to_be_bytes());
        v.extend_from_slice(&4444u16.to_be_bytes());
        v.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(payload);
        v
    };
    let file = |linktype: u32, frames: &[Vec<u8>]| -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&0xa1b2_3c4du32.to_be_bytes());
        f.extend_from_slice(&2u16.to_be_bytes());
        f.extend_from_slice(&4u16.to_be_bytes());
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&65535u32.to_be_bytes());
        f.extend_from_slice(&linktype.to_be_bytes());
        for (i, fr) in frames.iter().enumerate() {
            f.extend_from_slice(&(10 + i as u32).to_be_bytes());
            f.extend_from_slice(&500_000_000u32.to_be_bytes());
            f.extend_from_slice(&(fr.len() as u32).to_be_bytes());
            f.extend_from_slice(&(fr.len() as u32).to_be_bytes());
            f.extend_from_slice(fr);
        }
        f
    };
    let mut sll = vec![0u8; 14];
    sll.extend_from_slice(&0x0800u16.to_be_bytes());
    sll.extend(ip4_udp(b"sll"));
    let got = parse_pcap(&file(113, &[sll])).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].src.port(), got[0].dst.port(), &got[0].payload[..]), (1111, 2222, &b"sll"[..]));
    assert!((got[0].time - 10.5).abs() < 1e-9);
    let mut sll2 = 0x86DDu16.to_be_bytes().to_vec();
    sll2.extend_from_slice(&[0; 18]);
    sll2.extend(ip6_udp(b"sll2"));
    let got = parse_pcap(&file(276, &[sll2])).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].src, "[::1]:3333".parse::<SocketAddr>().unwrap());
    assert_eq!(got[0].payload, b"sll2");
    let got = parse_pcap(&file(101, &[ip6_udp(b"raw6"), ip4_udp(b"raw4"), vec![0x45, 0, 0]])).unwrap();
    assert_eq!(got.iter().map(|p| p.payload.clone()).collect::<Vec<_>>(), vec![b"raw6".to_vec(), b"raw4".to_vec()]);
    // Truncated final record is ignored; pcapng is refused clearly.
    let mut trunc = file(101, &[ip4_udp(b"one"), ip4_udp(b"two")]);
    trunc.truncate(trunc.len() - 3);
    assert_eq!(parse_pcap(&trunc).unwrap().len(), 1);
    assert!(parse_pcap(&[0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        .unwrap_err()
        .contains("pcapng"));
}

#[test]
fn rtp_stream_reassembly_orders_and_fills_gaps() {
    let f = fixtures();
    let speech = f.speech_pcm();
    let enc: Vec<u8> = speech.iter().map(|&s| lin2ulaw(s)).collect();
    let a: SocketAddr = "127.0.0.1:7000".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:7002".parse().unwrap();
    let mut pkts = Vec::new();
    let chunks: Vec<&[u8]> = enc.chunks_exact(160).collect();
    for (i, c) in chunks.iter().enumerate() {
        if i == 10 {
            continue; // lost
        }
        // Sequence numbers wrap; timestamps wrap.
        let rtp = rtp_packet(
            0,
            65530u16.wrapping_add(i as u16),
            (u32::MAX - 800).wrapping_add(160 * i as u32),
            42,
            c,
            i == 0,
        );
        pkts.push(UdpPacket { time: i as f64 * 0.02, src: a, dst: b, payload: rtp });
    }
    pkts.swap(20, 21); // reordered
    pkts.push(UdpPacket { time: 9.0, src: a, dst: b, payload: rtp_packet(101, 1, 0, 42, &[1, 0x8a, 0, 160], false) });
    pkts.push(UdpPacket { time: 9.0, src: b, dst: a, payload: b"not for us".to_vec() });
    let audio = rtp_stream_to_pcm(&pkts, 7002, Some(7000));
    assert_eq!(audio.payload_types, BTreeSet::from([0, 101]));
    assert_eq!(audio.ssrcs, BTreeSet::from([42]));
    assert_eq!(audio.packets, chunks.len() - 1 + 1);
    assert_eq!(audio.seq_errors, 5, "gap (1), swap (3), jump to the event's seq (1)");
    assert_eq!(audio.pcm.len(), chunks.len() * 160);
    assert!(audio.pcm[1600..1760].iter().all(|&s| s == 0), "lost packet is silence");
    let rt = sox_decode_g711(&enc[..chunks.len() * 160], "u-law");
    assert_eq!(&audio.pcm[..1600], &rt[..1600]);
    assert_eq!(&audio.pcm[1760..], &rt[1760..]);
}

#[test]
fn ports_are_unique_and_free() {
    let handles: Vec<_> =
        (0..4).map(|_| std::thread::spawn(|| (0..3).map(|_| alloc_ports()).collect::<Vec<_>>())).collect();
    let all: Vec<Ports> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let mut seen = BTreeSet::new();
    for p in &all {
        assert!(p.rtp_low > p.ctrl && p.rtp_high < p.peer_rtp && p.peer_rtp + 98 <= p.peer_rtp_high);
        assert!((21000..60000).contains(&p.sip) && p.peer_rtp_high < 60000);
        for port in [p.sip, p.http, p.ctrl, p.peer_sip, p.rtp_low, p.rtp_high, p.peer_rtp, p.peer_rtp_high] {
            assert!(seen.insert(port), "port {port} handed out twice");
        }
        UdpSocket::bind(("127.0.0.1", p.sip)).expect("sip port free");
        TcpListener::bind(("127.0.0.1", p.http)).expect("http port free");
    }
    let wide = ports::alloc_ports_wide(3);
    assert_eq!(wide.peer_rtp_high - wide.sip, 3 * ports::BLOCK - 2);
}

#[test]
fn http_client_and_metrics_parser() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let replies = [
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_string(),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_string(),
            "HTTP/1.1 503 Service Unavailable\r\n\r\ndraining".to_string(),
        ];
        let mut requests = Vec::new();
        for reply in replies {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            requests.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            s.write_all(reply.as_bytes()).unwrap();
        }
        requests
    });
    let t = Duration::from_secs(5);
    assert_eq!(try_http(port, "GET", "/healthz", None, t).unwrap(), (200, "ok".to_string()));
    assert_eq!(try_http(port, "GET", "/metrics", None, t).unwrap(), (200, "hello world".to_string()));
    assert_eq!(try_http(port, "POST", "/x", Some("{}"), t).unwrap(), (503, "draining".to_string()));
    let reqs = server.join().unwrap();
    assert!(reqs[0].starts_with("GET /healthz HTTP/1.1\r\n"));
    assert!(reqs[2].contains("Content-Length: 2\r\n") && reqs[2].ends_with("\r\n\r\n{}"));

    let text = "# HELP switchboard_calls_total Calls.\n# TYPE switchboard_calls_total counter\n\
                switchboard_calls_total{direction=\"inbound\",result=\"answered\"} 3\n\
                switchboard_calls_total{direction=\"inbound\",result=\"rejected\"} 1\n\
                switchboard_active_calls 2\n\
                switchboard_active_calls_peak 5\n\
                latency_bucket{le=\"+Inf\"} 7 1700000000\n";
    assert_eq!(metric_value(text, "switchboard_active_calls"), Some(2.0));
    assert_eq!(metric_value(text, "switchboard_calls_total{result=\"answered\",direction=\"inbound\"}"), Some(3.0));
    assert_eq!(metric_value(text, "switchboard_calls_total"), None);
    assert_eq!(metric_value(text, "latency_bucket{le=\"+Inf\"}"), Some(7.0));
    assert_eq!(metric_sum(text, "switchboard_calls_total"), 4.0);
    assert_eq!(metric_value(text, "missing"), None);
}

/// Waits until a UDP port is bound by someone else.
fn wait_bound(port: u16) {
    assert!(wait_udp_bound(port, Duration::from_secs(5)), "nothing bound UDP port {port}");
}

#[test]
fn sipp_uac_to_sipp_uas_echo_is_captured() {
    require_tools(&["sipp", "tcpdump", "sox"]);
    let f = fixtures();
    let speech = f.speech_pcm();
    let dir = test_dir("");
    let uas_ports = alloc_ports();
    let uac_ports = alloc_ports();
    let cap = Capture::start(&dir, &capture::bpf_for(&[&uas_ports, &uac_ports]));
    let uas = spawn_sipp(&dir, &scenario("uas_echo.xml"), None, &uas_ports, &["-rtp_echo", "-m", "1"]);
    wait_bound(uas_ports.peer_sip);
    let uac = run_sipp(
        &dir,
        &scenario("uac_pcmu_speech.xml"),
        &uas_ports.peer_sip_addr(),
        &uac_ports,
        &["-m", "1", "-d", "500"],
        Duration::from_secs(30),
    );
    assert_eq!((uac.exit_code, uac.successful, uac.failed), (0, 1, 0), "{}", uac.report());
    let uas = uas.wait(Duration::from_secs(15));
    assert_eq!((uas.exit_code, uas.successful), (0, 1), "{}", uas.report());
    let packets = cap.stop();

    let sip = capture::sip_messages(&packets);
    let first_lines: Vec<String> = sip.iter().map(|m| m.3.lines().next().unwrap_or("").to_string()).collect();
    assert!(first_lines.iter().any(|l| l.starts_with("INVITE sip:")), "{first_lines:?}");
    assert!(first_lines.iter().any(|l| l.starts_with("BYE sip:")), "{first_lines:?}");
    assert!(first_lines.iter().filter(|l| l.starts_with("SIP/2.0 200")).count() >= 2, "{first_lines:?}");

    // Caller → UAS: the sentence as sent.
    let sent = rtp_stream_to_pcm(&packets, uas_ports.peer_rtp, None);
    assert_eq!(sent.payload_types, BTreeSet::from([0]), "{sent:?}");
    assert_eq!(sent.packets, speech.len().div_ceil(160));
    assert_eq!(sent.seq_errors, 0);
    let (lag, ncc) = find_in(&sent.pcm, &speech).expect("speech sent");
    assert!(ncc > 0.99 && lag == 0, "sent: lag {lag} ncc {ncc}");

    // UAS → caller: the echo, decoded from the capture, contains the sentence.
    let echo = rtp_stream_to_pcm(&packets, uac_ports.peer_rtp, Some(uas_ports.peer_rtp));
    assert!(echo.packets >= sent.packets * 9 / 10, "echo {} of {} packets", echo.packets, sent.packets);
    assert!(is_audible(&echo.pcm, 8000), "{}", audio::describe(&echo.pcm, 8000));
    let (lag, ncc) = find_in(&echo.pcm, &speech).expect("speech echoed");
    eprintln!(
        "echo: {} packets, lag {lag}, ncc {ncc:.4}, first echo {:.1} ms after first sent",
        echo.packets,
        (echo.first_time - sent.first_time) * 1000.0
    );
    assert!(ncc > 0.9, "echo ncc {ncc}");
    assert!(echo.first_time >= sent.first_time && echo.first_time - sent.first_time < 0.1);
    write_wav(&dir.join("echo.wav"), &echo.pcm, 8000);
}

#[test]
fn baresip_call_to_sipp_uas_echo_records_the_speech() {
    require_tools(&["sipp", "baresip", "sox"]);
    let f = fixtures();
    let speech = f.speech_pcm();
    let dir = test_dir("");
    let uas_ports = alloc_ports();
    let phone_ports = alloc_ports();
    let uas = spawn_sipp(&dir, &scenario("uas_echo.xml"), None, &uas_ports, &["-rtp_echo", "-m", "1"]);
    wait_bound(uas_ports.peer_sip);
    let phone = Baresip::start(&dir, &phone_ports, &f.speech_8k_padded, "PCMU");
    let resp = phone.dial(&format!("sip:echo@{}", uas_ports.peer_sip_addr()));
    assert!(resp.contains("\"ok\":true"), "dial: {resp}");
    let est = phone.wait_event("CALL_ESTABLISHED", Duration::from_secs(10));
    assert!(est.is_some(), "no CALL_ESTABLISHED; events {:?}\n{}", phone.events(), phone.log());
    assert!(est.as_deref().and_then(|e| baresip::json_str_field(e, "peeruri")).is_some_and(|u| u.contains("echo@")));
    std::thread::sleep(Duration::from_millis(5000));
    phone.hangup();
    assert!(phone.wait_event("CALL_CLOSED", Duration::from_secs(5)).is_some(), "{:?}", phone.events());
    let uas = uas.wait(Duration::from_secs(15));
    assert_eq!(uas.successful, 1, "{}", uas.report());
    let mut phone = phone;
    phone.stop(); // finalise the recordings
    let recs = phone.recordings();
    assert_eq!(recs.len(), 1, "{recs:?}");
    let (pcm, rate) = read_wav_mono_i16(&recs[0]);
    assert_eq!(rate, 8000);
    let (lag, ncc) = find_in(&pcm, &speech).expect("speech in recording");
    eprintln!("baresip recording {}: lag {lag}, ncc {ncc:.4}", audio::describe(&pcm, rate));
    assert!(ncc > 0.9, "ncc {ncc}");
    // And not the other sentence.
    let (_, ncc_other) = find_in(&pcm, &f.other_speech_pcm()).unwrap();
    assert!(ncc_other < 0.5, "other sentence ncc {ncc_other}");
}
