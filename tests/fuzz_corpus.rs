//! Replays the fuzz corpus kept in the repository (fuzz/corpus/<target>/) and
//! the reproducers of fixed fuzz findings (fuzz/regressions/<target>/) through
//! the same code as the cargo-fuzz targets (`switchboard::fuzzing`), so every
//! `cargo test` re-checks what the fuzzer once reached, without nightly or
//! libFuzzer. scripts/fuzz.sh runs the fuzzer itself.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// A corpus with fewer inputs than this is a broken checkout or a lost
/// `cargo fuzz cmin`, not a corpus: fail rather than pass on nothing.
const MIN_CORPUS_INPUTS: usize = 5;

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<PathBuf> = rd
        .map(|e| e.expect("read corpus directory").path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    v.sort();
    v
}

fn replay(target: &str, body: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let corpus = files(&root.join("corpus").join(target));
    assert!(
        corpus.len() >= MIN_CORPUS_INPUTS,
        "fuzz/corpus/{target}/ holds {} inputs (at least {MIN_CORPUS_INPUTS} expected); restore it or run fuzz/make_seeds.py",
        corpus.len()
    );
    let regressions = files(&root.join("regressions").join(target));
    let mut failed = Vec::new();
    for path in corpus.iter().chain(&regressions) {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    eprintln!("{target}: replayed {} corpus inputs and {} regressions", corpus.len(), regressions.len());
    assert!(
        failed.is_empty(),
        "{target}: {} input(s) fail (reproduce with `cargo fuzz run {target} FILE` in fuzz/):\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn sip_message() {
    replay("sip_message", switchboard::fuzzing::sip_message);
}

#[test]
fn sdp() {
    replay("sdp", switchboard::fuzzing::sdp);
}

#[test]
fn rtp_rtcp() {
    replay("rtp_rtcp", switchboard::fuzzing::rtp_rtcp);
}

#[test]
fn rfc4733() {
    replay("rfc4733", switchboard::fuzzing::rfc4733);
}

#[test]
fn yaml_config() {
    replay("yaml_config", switchboard::fuzzing::yaml_config);
}
