//! Per-frame cost of the codec layer: one 20 ms frame per iteration.
//!
//! The budget for all media work of one call is ≈ 0.05 % of a core, i.e.
//! ≈ 10 µs per 20 ms frame for both directions together.
//!
//! Run with `cargo bench --bench codec`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use switchboard::media::codec::{self, CodecKind, OpusParams};
use switchboard::media::resample::Resampler;

/// A voiced, vowel-like test signal at `rate` (120 Hz with 20 harmonics).
fn voice(rate: u32, n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            let v: f64 = (1..=20).map(|k| (2.0 * std::f64::consts::PI * 120.0 * k as f64 * t).sin() / k as f64).sum();
            (v * 4000.0) as i16
        })
        .collect()
}

fn resample_frame(c: &mut Criterion) {
    for (from, to) in [(8000, 16000), (16000, 8000), (22050, 16000), (24000, 16000), (48000, 16000)] {
        let frame = voice(from, from as usize / 50);
        let mut r = Resampler::new(from, to).unwrap();
        let mut out = Vec::with_capacity(to as usize / 25);
        c.bench_function(&format!("resample {from}->{to} 20 ms"), |b| {
            b.iter(|| {
                out.clear();
                r.process(black_box(&frame), &mut out);
                black_box(&out);
            })
        });
    }
}

fn g711_frame(c: &mut Criterion) {
    let pcm16 = voice(16000, 320);
    let mut enc = codec::encoder(CodecKind::Pcmu, 20, &OpusParams::default()).unwrap();
    let mut dec = codec::decoder(CodecKind::Pcmu, 20).unwrap();
    let mut payload = Vec::with_capacity(160);
    enc.encode(&pcm16, &mut payload).unwrap();
    let mut out = Vec::with_capacity(320);
    let mut wire = Vec::with_capacity(160);
    c.bench_function("pcmu encode 20 ms (16k->8k + law)", |b| {
        b.iter(|| {
            wire.clear();
            enc.encode(black_box(&pcm16), &mut wire).unwrap();
            black_box(&wire);
        })
    });
    c.bench_function("pcmu decode 20 ms (law + PLC history + 8k->16k)", |b| {
        b.iter(|| {
            out.clear();
            dec.decode(black_box(&payload), &mut out).unwrap();
            black_box(&out);
        })
    });
    // A loss start each time (pitch search included): the worst case.
    c.bench_function("pcmu conceal 20 ms after a good frame", |b| {
        b.iter(|| {
            out.clear();
            dec.decode(&payload, &mut out).unwrap();
            dec.conceal(320, None, &mut out);
            black_box(&out);
        })
    });
}

fn opus_frame(c: &mut Criterion) {
    let params = OpusParams::default();
    let signal = voice(16000, 320 * 50);
    let mut enc = codec::encoder(CodecKind::Opus, 20, &params).unwrap();
    let packets: Vec<Vec<u8>> = signal
        .chunks_exact(320)
        .map(|f| {
            let mut p = Vec::new();
            enc.encode(f, &mut p).unwrap();
            p
        })
        .collect();
    let mut frames = signal.chunks_exact(320).cycle();
    let mut payload = Vec::with_capacity(200);
    c.bench_function("opus encode 20 ms (16 kHz, 24 kbit/s, FEC, complexity 5)", |b| {
        b.iter(|| {
            payload.clear();
            enc.encode(black_box(frames.next().unwrap()), &mut payload).unwrap();
            black_box(&payload);
        })
    });
    let mut dec = codec::decoder(CodecKind::Opus, 20).unwrap();
    let mut out = Vec::with_capacity(640);
    let mut next = packets.iter().cycle();
    c.bench_function("opus decode 20 ms", |b| {
        b.iter(|| {
            out.clear();
            dec.decode(black_box(next.next().unwrap()), &mut out).unwrap();
            black_box(&out);
        })
    });
    c.bench_function("opus conceal 20 ms (PLC)", |b| {
        b.iter(|| {
            out.clear();
            dec.conceal(320, None, &mut out);
            black_box(&out);
        })
    });
    c.bench_function("opus conceal 20 ms (FEC from next packet)", |b| {
        b.iter(|| {
            out.clear();
            dec.conceal(320, Some(black_box(&packets[20])), &mut out);
            black_box(&out);
        })
    });
}

criterion_group!(benches, resample_frame, g711_frame, opus_frame);
criterion_main!(benches);
