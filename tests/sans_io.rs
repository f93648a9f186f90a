//! The sans-IO cores of docs/ARCHITECTURE.md ("Sans-IO cores") read no clock, draw no random
//! number and touch no runtime: time, randomness and I/O come in from their driver, so each can be
//! driven in virtual time by its tests. Test code (`#[cfg(test)]` items, `*_tests.rs`) may.

#[path = "common/source.rs"]
mod source;

use source::{block, code_only, rust_files, without_tests};
use std::path::{Path, PathBuf};

/// What a core must not do, and how the code says it.
const FORBIDDEN: &[(&str, &str)] = &[
    ("Instant::now(", "reads the clock (take `now`)"),
    ("SystemTime::now(", "reads the wall clock (take it from the driver)"),
    (".elapsed()", "reads the clock (use `now.duration_since(t)`)"),
    ("Instant::now)", "reads the clock (take `now`)"),
    ("rand::random", "draws from the thread RNG (seed an RNG from the driver)"),
    ("rand::rng(", "draws from the thread RNG (seed an RNG from the driver)"),
    ("thread_rng(", "draws from the thread RNG (seed an RNG from the driver)"),
    ("tokio::", "uses the async runtime (the driver does)"),
    ("std::thread::sleep", "blocks (the driver waits)"),
    ("std::fs::", "does file I/O (the driver does)"),
];

/// The paths (under src/) listed in the ```sans-io block: files, or folders ending in `/`.
fn cores(doc: &str) -> Vec<String> {
    let out: Vec<String> =
        block(doc, "sans-io").iter().flat_map(|l| l.split_whitespace()).map(str::to_string).collect();
    assert!(!out.is_empty(), "docs/ARCHITECTURE.md has no ```sans-io block");
    out
}

fn is_test_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "tests.rs" || name.ends_with("_tests.rs")
}

/// Each forbidden use in `src`: (what, why).
fn offences(src: &str) -> Vec<(&'static str, &'static str)> {
    let code = without_tests(&code_only(src));
    FORBIDDEN.iter().filter(|(what, _)| code.contains(what)).copied().collect()
}

#[test]
fn sans_io_cores_read_no_clock_and_draw_no_randomness() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let mut files: Vec<PathBuf> = Vec::new();
    for c in cores(&doc) {
        let p = root.join("src").join(&c);
        assert!(p.exists(), "```sans-io lists `{c}`, which is not under src/");
        if p.is_dir() {
            rust_files(&p, &mut files);
        } else {
            files.push(p);
        }
    }
    let mut bad = Vec::new();
    for f in files.iter().filter(|f| !is_test_file(f)) {
        for (what, why) in offences(&std::fs::read_to_string(f).unwrap()) {
            bad.push(format!("{}: `{what}` {why}", f.strip_prefix(root).unwrap().display()));
        }
    }
    assert!(bad.is_empty(), "sans-IO cores that do I/O of their own:\n  {}", bad.join("\n  "));
}

#[test]
fn a_planted_clock_read_is_caught_and_test_code_is_not() {
    let clean = "use std::time::Instant;\n/// Not `Instant::now()`: a comment.\nfn f(now: Instant) -> &'static str { \"rand::random\" }\n\
                 #[cfg(test)]\nmod tests {\n    fn t() { let t0 = std::time::Instant::now(); let c = '{'; }\n}\n\
                 #[cfg(test)]\nfn helper() { let _ = std::time::SystemTime::now(); }\n";
    assert_eq!(offences(clean), vec![]);
    let planted = format!(
        "{clean}fn g() -> u32 {{ let t = Instant::now(); t.elapsed().as_millis() as u32 + rand::random::<u32>() }}\n"
    );
    let got: Vec<&str> = offences(&planted).into_iter().map(|(what, _)| what).collect();
    assert_eq!(got, vec!["Instant::now(", ".elapsed()", "rand::random"]);
}
