#![no_main]
//! cargo fuzz target `sip_message`; the body is switchboard::fuzzing::sip_message, which
//! tests/fuzz_corpus.rs replays over fuzz/corpus/sip_message and fuzz/regressions/sip_message.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard::fuzzing::sip_message(data));
