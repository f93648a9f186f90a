//! Property tests for the codecs and the resampler fed with hostile input:
//! payloads come from the network and must never panic a decoder, and the
//! resampler must keep its length bookkeeping whatever chunking it sees.

use proptest::prelude::*;
use switchboard::media::codec::{self, CodecKind, Decoder};
use switchboard::media::resample::Resampler;

#[derive(Debug, Clone)]
enum Op {
    Decode(Vec<u8>),
    Conceal(usize, Option<Vec<u8>>),
}

/// Payloads: fully random, or a random body behind a random TOC byte with
/// each framing code, so libopus and our LBRR probe get past the first byte.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        (any::<u8>(), 0u8..4, proptest::collection::vec(any::<u8>(), 0..200)).prop_map(|(toc, code, body)| {
            let mut p = vec![(toc & !3) | code];
            p.extend(body);
            p
        }),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            payload().prop_map(Op::Decode),
            (0usize..2000, proptest::option::of(payload())).prop_map(|(n, next)| Op::Conceal(n, next)),
        ],
        1..20,
    )
}

/// Drive a decoder; returns an error string if its output-length contract breaks.
fn drive(dec: &mut dyn Decoder, ops: &[Op], g711: bool) -> Result<(), String> {
    let mut out = Vec::new();
    for op in ops {
        let before = out.len();
        match op {
            Op::Decode(p) => match dec.decode(p, &mut out) {
                Ok(()) if g711 && out.len() - before != 2 * p.len() => {
                    return Err(format!("G.711 decode of {} bytes gave {}", p.len(), out.len() - before));
                }
                Ok(()) => {}
                Err(_) if g711 => return Err("G.711 decode failed".into()),
                Err(_) if out.len() != before => return Err("failed decode appended output".into()),
                Err(_) => {}
            },
            Op::Conceal(n, next) => {
                dec.conceal(*n, next.as_deref(), &mut out);
                if out.len() - before != *n {
                    return Err(format!("conceal({n}) gave {}", out.len() - before));
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn opus_decoder_never_panics(ops in ops()) {
        let mut dec = codec::decoder(CodecKind::Opus, 20).unwrap();
        drive(dec.as_mut(), &ops, false).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn g711_decoders_never_panic_and_give_two_samples_per_byte(ops in ops(), alaw: bool) {
        let kind = if alaw { CodecKind::Pcma } else { CodecKind::Pcmu };
        let mut dec = codec::decoder(kind, 20).unwrap();
        drive(dec.as_mut(), &ops, true).map_err(TestCaseError::fail)?;
    }
}

const PAIRS: [(u32, u32); 8] = [
    (8000, 16000),
    (16000, 8000),
    (16000, 48000),
    (48000, 16000),
    (22050, 16000),
    (24000, 16000),
    (44100, 16000),
    (16000, 16000),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn resampler_tracks_input_times_ratio(
        pair in 0..PAIRS.len(),
        chunks in proptest::collection::vec(proptest::collection::vec(any::<i16>(), 0..1500), 0..12),
        flush: bool,
    ) {
        let (from, to) = PAIRS[pair];
        let mut r = Resampler::new(from, to).unwrap();
        let mut out = Vec::new();
        let mut fed = 0u64;
        for c in &chunks {
            r.process(c, &mut out);
            fed += c.len() as u64;
            let ideal = fed * u64::from(to) / u64::from(from);
            // Output comes a block at a time: never ahead of the input,
            // never more than one block behind it.
            let block_out = (r.block_in() as u64 * u64::from(to)).div_ceil(u64::from(from));
            prop_assert!(out.len() as u64 <= ideal + 1);
            prop_assert!(out.len() as u64 + block_out >= ideal);
        }
        if flush {
            r.flush(&mut out);
            let expected = (fed * u64::from(to)).div_ceil(u64::from(from)) + r.delay() as u64;
            prop_assert_eq!(out.len() as u64, expected);
        }
    }

    /// Any rates: construction either fails cleanly or gives a working resampler.
    #[test]
    fn resampler_construction_never_panics(from in 0u32..50_000, to in 0u32..50_000, n in 0usize..3000) {
        if let Ok(mut r) = Resampler::new(from, to) {
            let mut out = Vec::new();
            r.process(&vec![1000; n], &mut out);
            r.flush(&mut out);
        }
    }
}
