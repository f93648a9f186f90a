//! Find the line of a dotted key path (`routes.1.agent`) in block-style YAML.
//!
//! serde reports locations for syntax and type errors, but checks that run
//! after deserialisation (a route naming an unknown agent) only know the key
//! path. This walks the text by indentation, which is enough for the block
//! style config files are written in; flow style falls back to the nearest
//! parent found.

/// 1-based line of the key, or of the deepest parent that could be found.
pub fn line_of(text: &str, dotted: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0usize; // first line of the current node's body
    let mut end = lines.len();
    let mut parent_indent: isize = -1;
    let mut found: Option<usize> = None;
    for seg in dotted.split('.').filter(|s| !s.is_empty()) {
        let hit = match seg.parse::<usize>() {
            Ok(idx) => find_item(&lines[start..end], parent_indent, idx),
            Err(_) => find_key(&lines[start..end], parent_indent, seg),
        };
        let Some((rel, indent)) = hit else { break };
        let abs = start + rel;
        found = Some(abs + 1);
        // The node's body runs until the next line indented at or left of it.
        let body_end = lines[abs + 1..end]
            .iter()
            .position(|l| !is_blank(l) && indent_of(l) as isize <= indent)
            .map(|p| abs + 1 + p)
            .unwrap_or(end);
        // A sequence item's keys sit on its own line after "- ": search from it.
        start = if seg.parse::<usize>().is_ok() { abs } else { abs + 1 };
        end = body_end;
        parent_indent = indent;
    }
    found
}

fn is_blank(l: &str) -> bool {
    let t = l.trim_start();
    t.is_empty() || t.starts_with('#')
}

fn indent_of(l: &str) -> usize {
    l.len() - l.trim_start_matches(' ').len()
}

/// `key:` at the shallowest indentation deeper than the parent (a "- key:" item line counts too).
fn find_key(lines: &[&str], parent_indent: isize, key: &str) -> Option<(usize, isize)> {
    for (i, l) in lines.iter().enumerate() {
        if is_blank(l) {
            continue;
        }
        let mut ind = indent_of(l);
        let mut t = &l[ind..];
        while let Some(rest) = t.strip_prefix("- ") {
            ind += 2 + (rest.len() - rest.trim_start_matches(' ').len());
            t = rest.trim_start_matches(' ');
        }
        if (ind as isize) <= parent_indent {
            continue;
        }
        let name = t.split(':').next().unwrap_or("").trim().trim_matches(|c| c == '"' || c == '\'');
        if name == key && t.contains(':') {
            return Some((i, ind as isize));
        }
    }
    None
}

/// The idx-th "- " item directly under the parent.
fn find_item(lines: &[&str], parent_indent: isize, idx: usize) -> Option<(usize, isize)> {
    let mut item_indent: Option<usize> = None;
    let mut n = 0;
    for (i, l) in lines.iter().enumerate() {
        if is_blank(l) {
            continue;
        }
        let ind = indent_of(l);
        let t = &l[ind..];
        if !(t.starts_with("- ") || t == "-") || (ind as isize) < parent_indent {
            continue;
        }
        match item_indent {
            None => item_indent = Some(ind),
            Some(ii) if ii != ind => continue,
            _ => {}
        }
        if n == idx {
            return Some((i, ind as isize));
        }
        n += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::line_of;
    const Y: &str = "sip:\n  listen: 1.2.3.4:5060\nroutes:\n  - match: \"1000\"\n    agent: a\n  - match: \"*\"\n    agent: b\nagents:\n  a:\n    mode: echo\n";
    #[test]
    fn finds_nested_keys_and_items() {
        assert_eq!(line_of(Y, "sip.listen"), Some(2));
        assert_eq!(line_of(Y, "routes.0.agent"), Some(5));
        assert_eq!(line_of(Y, "routes.1.agent"), Some(7));
        assert_eq!(line_of(Y, "routes.1"), Some(6));
        assert_eq!(line_of(Y, "agents.a.mode"), Some(10));
        // a missing leaf falls back to the deepest parent found
        assert_eq!(line_of(Y, "agents.a.greeting"), Some(9));
    }
}
