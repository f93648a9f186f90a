//! Silero VAD cost per call: 100 calls each with one 32 ms chunk (16 kHz),
//! run as 100 single-stream inferences (unbatched) or one 100-stream
//! inference (batched), on 1 intra-op thread. Needs `scripts/setup.sh`'s
//! models/ (ONNX Runtime library and silero_vad.onnx).
//!
//!   cargo bench --bench vad
//!
//! Per call: time per iteration / 100 streams = CPU per 32 ms chunk per call;
//! divided by 32 ms it is the share of one core a call's VAD costs (and the
//! real-time factor of the model on one thread).

use criterion::{criterion_group, criterion_main, Criterion};
use std::path::PathBuf;
use switchboard::models::runtime::{self, Provider, SessionOptions};
use switchboard::models::vad::{SileroVad, StreamState};

fn models() -> PathBuf {
    let d = std::env::var_os("SWITCHBOARD_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"));
    assert!(d.join("silero_vad/silero_vad.onnx").exists(), "run scripts/setup.sh first ({} missing)", d.display());
    d
}

fn vad(c: &mut Criterion) {
    let m = models();
    let rt = runtime::init(&m.join("onnxruntime/libonnxruntime.so.1.32.0")).unwrap();
    let opts = SessionOptions {
        providers: vec![Provider::Cpu],
        strict: false,
        intra_threads: 1,
        inter_threads: 1,
        spin: true,
    };
    let mut vad = SileroVad::load(rt, &m.join("silero_vad/silero_vad.onnx"), &opts).unwrap();
    const CALLS: usize = 100;
    // Speech-like noise so the recurrent state is exercised.
    let mut seed = 7u32;
    let chunks: Vec<Vec<f32>> = (0..CALLS)
        .map(|_| {
            (0..512)
                .map(|i| {
                    seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                    ((i as f32 * 0.05).sin() * 0.3) + ((seed >> 16) as f32 / 65536.0 - 0.5) * 0.05
                })
                .collect()
        })
        .collect();
    let mut states: Vec<StreamState> = (0..CALLS).map(|_| StreamState::new(16000).unwrap()).collect();
    c.bench_function("vad_100_calls_unbatched", |b| {
        b.iter(|| {
            for (s, ch) in states.iter_mut().zip(&chunks) {
                vad.infer(&mut [s], &[ch.as_slice()]).unwrap();
            }
        })
    });
    c.bench_function("vad_100_calls_batched", |b| {
        b.iter(|| {
            let mut refs: Vec<&mut StreamState> = states.iter_mut().collect();
            let cs: Vec<&[f32]> = chunks.iter().map(Vec::as_slice).collect();
            vad.infer(&mut refs, &cs).unwrap();
        })
    });
}

criterion_group!(benches, vad);
criterion_main!(benches);
