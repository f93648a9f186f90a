#![no_main]
//! cargo fuzz target `rfc4733`; the body is switchboard::fuzzing::rfc4733, which
//! tests/fuzz_corpus.rs replays over fuzz/corpus/rfc4733 and fuzz/regressions/rfc4733.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard::fuzzing::rfc4733(data));
