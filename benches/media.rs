//! Per-frame cost of the media hot path: one 20 ms frame at 8 kHz.
//!
//! Run with `cargo bench --bench media`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use switchboard::media::g711;
use switchboard::media::jitter::{JitterBuffer, JitterConfig, MediaPacket};
use switchboard::media::pacer::{Pacer, PacerConfig};

const FRAME: usize = 160;

fn g711_frame(c: &mut Criterion) {
    let pcm: Vec<i16> = (0..FRAME).map(|i| ((i as f32 * 0.3).sin() * 12_000.0) as i16).collect();
    let mut enc = Vec::with_capacity(FRAME);
    let mut dec = Vec::with_capacity(FRAME);
    c.bench_function("ulaw encode+decode 160 samples", |b| {
        b.iter(|| {
            enc.clear();
            dec.clear();
            g711::encode_ulaw(black_box(&pcm), &mut enc);
            g711::decode_ulaw(black_box(&enc), &mut dec);
            black_box(&dec);
        })
    });
    c.bench_function("alaw encode+decode 160 samples", |b| {
        b.iter(|| {
            enc.clear();
            dec.clear();
            g711::encode_alaw(black_box(&pcm), &mut enc);
            g711::decode_alaw(black_box(&enc), &mut dec);
            black_box(&dec);
        })
    });
}

fn jitter_packet(c: &mut Criterion) {
    // Steady state: a few packets buffered, each iteration inserts the next
    // one and pops the one that has become due, in virtual time.
    let t0 = Instant::now();
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let payload = vec![0xFFu8; FRAME];
    let mut n: u64 = 0;
    let packet = |n: u64| MediaPacket {
        sequence: n as u16,
        timestamp: (n as u32).wrapping_mul(FRAME as u32),
        marker: false,
        ssrc: 1,
        payload_type: 0,
        payload: payload.clone(),
    };
    for _ in 0..3 {
        jb.insert(packet(n), t0 + Duration::from_millis(n * 20));
        n += 1;
    }
    c.bench_function("jitter insert+pop one packet", |b| {
        b.iter(|| {
            let now = t0 + Duration::from_millis(n * 20);
            black_box(jb.insert(packet(n), now));
            black_box(jb.pop(now));
            n += 1;
        })
    });
}

fn pacer_frame(c: &mut Criterion) {
    let t0 = Instant::now();
    let cfg = PacerConfig {
        clock_rate: 8000,
        pcm_rate: 8000,
        ptime: Duration::from_millis(20),
        payload_type: 0,
        ssrc: 1,
        initial_sequence: 0,
        initial_timestamp: 0,
        max_catch_up: 3,
    };
    let mut pacer = Pacer::new(cfg, t0);
    let speech = vec![1000i16; FRAME];
    c.bench_function("pacer one speech frame", |b| {
        b.iter(|| {
            pacer.push_audio(&speech);
            let now = pacer.poll_timeout();
            black_box(pacer.handle_timeout(now));
        })
    });
}

criterion_group!(benches, g711_frame, jitter_packet, pacer_frame);
criterion_main!(benches);
