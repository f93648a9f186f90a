#![no_main]
//! cargo fuzz target `yaml_config`; the body is switchboard::fuzzing::yaml_config, which
//! tests/fuzz_corpus.rs replays over fuzz/corpus/yaml_config and fuzz/regressions/yaml_config.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| switchboard::fuzzing::yaml_config(data));
