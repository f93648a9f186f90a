#![no_main]
//! cargo fuzz target `rtp_rtcp`; the body is switchboard::fuzzing::rtp_rtcp, which
//! tests/fuzz_corpus.rs replays over fuzz/corpus/rtp_rtcp and fuzz/regressions/rtp_rtcp.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard::fuzzing::rtp_rtcp(data));
