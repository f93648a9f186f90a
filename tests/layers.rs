//! The layer order of docs/ARCHITECTURE.md ("Layers"), checked against every `crate::` path in src/.
//!
//! A top-level module may use only modules on lower lines of the ```layers block; modules on one
//! line do not use each other. A ```layers-pending block, when there is one, lists upward imports not
//! yet undone (`from -> to`); each must still exist, so the list shrinks and never hides a new one.
//! Comments and string literals are not code: only paths in code count.

#[path = "common/source.rs"]
mod source;

use source::{block, code_only, is_ident, rust_files};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules by layer, lowest 0, read from a ```layers block (top floor first).
fn layers(doc: &str) -> BTreeMap<String, usize> {
    let lines = block(doc, "layers");
    assert!(!lines.is_empty(), "docs/ARCHITECTURE.md has no ```layers block");
    let n = lines.len();
    let mut out = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        for m in line.split_whitespace() {
            assert!(out.insert(m.to_string(), n - 1 - i).is_none(), "`{m}` is on two lines of the layers block");
        }
    }
    out
}

/// The `from -> to` pairs of a ```layers-pending block.
fn pending(doc: &str) -> BTreeSet<(String, String)> {
    block(doc, "layers-pending")
        .iter()
        .map(|l| {
            let (a, b) = l.split_once("->").unwrap_or_else(|| panic!("layers-pending: `{l}` is not `from -> to`"));
            (a.trim().to_string(), b.trim().to_string())
        })
        .collect()
}

/// The top-level modules a file's code names: `crate::m`, `use crate::{m::…, n}`, and `super::`
/// chains that climb to the crate root (`module_path`: the file's module path below the root).
fn uses(code: &str, module_path: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = code.as_bytes();
    let starts_path = |at: usize| at == 0 || !(is_ident(b[at - 1]) || b[at - 1] == b':');
    let ident_at = |at: usize| -> &str {
        let end = b[at..].iter().position(|&c| !is_ident(c)).map_or(b.len(), |p| at + p);
        &code[at..end]
    };
    let mut i = 0;
    while i < b.len() {
        let rest = &code[i..];
        if rest.starts_with("crate::") && starts_path(i) {
            let at = i + "crate::".len();
            if b.get(at) == Some(&b'{') {
                out.extend(group_heads(&code[at..]));
            } else {
                out.insert(ident_at(at).to_string());
            }
            i = at;
        } else if rest.starts_with("super::") && starts_path(i) {
            let mut at = i;
            let mut ups = 0;
            while code[at..].starts_with("super::") {
                ups += 1;
                at += "super::".len();
            }
            // A file's own module is `module_path`; `super` from it climbs one level each.
            if ups == module_path.len() {
                if b.get(at) == Some(&b'{') {
                    out.extend(group_heads(&code[at..]));
                } else {
                    out.insert(ident_at(at).to_string());
                }
            }
            i = at;
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    out.retain(|m| !m.is_empty() && m != "self");
    out
}

/// The first names of each path in a `{…}` use group: `{a::x, b, c::{d, e}}` → a, b, c.
fn group_heads(group: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut head = true;
    let mut cur = String::new();
    for c in group.chars() {
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    head = true;
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => head = true,
            c if depth == 1 && head && (c.is_ascii_alphanumeric() || c == '_') => cur.push(c),
            _ if depth == 1 && head && !cur.is_empty() => {
                out.push(std::mem::take(&mut cur));
                head = false;
            }
            _ => {}
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Each .rs file under `src`: its top-level module and its module path below the crate root.
fn modules_of(src: &Path, file: &Path) -> Option<(String, Vec<String>)> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?.to_string();
    if parts.is_empty() && stem == "lib" {
        return None; // the crate root declares the modules
    }
    if stem != "mod" {
        parts.push(stem);
    }
    Some((parts[0].clone(), parts))
}

/// Every import against the order: (from, to, the first file that does it).
fn violations(
    files: &[(String, Vec<String>, String)],
    order: &BTreeMap<String, usize>,
) -> Vec<(String, String, String)> {
    let mut out: BTreeMap<(String, String), String> = BTreeMap::new();
    for (top, path, src) in files {
        let from = *order.get(top).unwrap_or_else(|| panic!("module `{top}` is on no line of the layers block"));
        for to in uses(&code_only(src), path) {
            if &to == top {
                continue;
            }
            let Some(&level) = order.get(&to) else { continue }; // an item of the crate root (a macro, a fn)
            if level >= from {
                out.entry((top.clone(), to)).or_insert_with(|| path.join("::"));
            }
        }
    }
    out.into_iter().map(|((a, b), f)| (a, b, f)).collect()
}

#[test]
fn imports_follow_the_layer_order() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let order = layers(&doc);
    let allowed = pending(&doc);
    let src = root.join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let files: Vec<_> = paths
        .iter()
        .filter_map(|p| {
            let (top, path) = modules_of(&src, p)?;
            Some((top, path, std::fs::read_to_string(p).unwrap()))
        })
        .collect();
    let found = violations(&files, &order);
    let new: Vec<String> = found
        .iter()
        .filter(|(a, b, _)| !allowed.contains(&(a.clone(), b.clone())))
        .map(|(a, b, f)| format!("{a} -> {b} (first in {f})"))
        .collect();
    let seen: BTreeSet<(String, String)> = found.iter().map(|(a, b, _)| (a.clone(), b.clone())).collect();
    let gone: Vec<String> = allowed.difference(&seen).map(|(a, b)| format!("{a} -> {b}")).collect();
    assert!(
        new.is_empty(),
        "imports against the layer order of docs/ARCHITECTURE.md (a module uses only lower lines):\n  {}",
        new.join("\n  ")
    );
    assert!(gone.is_empty(), "undone: remove from ```layers-pending in docs/ARCHITECTURE.md:\n  {}", gone.join("\n  "));
}

#[test]
fn a_planted_upward_import_is_caught() {
    let order = layers("```layers\nserver\ncall agent\nconfig\n```\n");
    let file = |top: &str, path: &[&str], src: &str| {
        (top.to_string(), path.iter().map(|s| s.to_string()).collect::<Vec<_>>(), src.to_string())
    };
    let clean = [
        file("call", &["call", "task"], "use crate::config::Config;\nuse super::super::config;"),
        file("server", &["server"], "use crate::{call::task, config::{A, B}};"),
        // Comments and strings are not code; a lifetime is not a char literal.
        file("config", &["config"], "// crate::server::run\nfn f<'a>(x: &'a str) { let s = \"crate::call\"; }"),
    ];
    assert_eq!(violations(&clean, &order), vec![]);
    let planted = [
        file("config", &["config", "schema"], "fn f() -> crate::call::TurnMode { todo!() }"),
        file("call", &["call"], "use super::{agent::Agent, config};"),
        file("agent", &["agent", "llm"], "use crate::{config::X, server::Y};"),
    ];
    let got: Vec<(String, String)> = violations(&planted, &order).into_iter().map(|(a, b, _)| (a, b)).collect();
    let want = [("agent", "server"), ("call", "agent"), ("config", "call")];
    assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
}
