#![no_main]
//! cargo fuzz target `sdp`; the body is switchboard::fuzzing::sdp, which
//! tests/fuzz_corpus.rs replays over fuzz/corpus/sdp and fuzz/regressions/sdp.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard::fuzzing::sdp(data));
