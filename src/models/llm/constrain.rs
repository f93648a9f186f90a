//! Constrained decoding of tool calls: the text between `<tool_call>` and
//! `</tool_call>` must be `{"name": NAME, "arguments": ARGS}` where NAME is
//! one of the offered tools and ARGS matches that tool's JSON Schema.
//!
//! `check` decides, for the bytes written so far, whether they are a prefix
//! of such a call (`Incomplete`), a whole call (`Complete`) or can no longer
//! become one (`Invalid`). The decoder asks it for each candidate token, in
//! the order of the model's preference, and takes the first one that keeps the
//! call valid — so the model still chooses every value, within the schema.
//! It is a recursive-descent parser over bytes that treats the end of input
//! as "valid so far": the text is short (a tool call), so re-parsing it per
//! candidate is cheaper than keeping parser state in step with the tokens.
//!
//! The schema subset: `type` object (`properties`, `required`; keys not in
//! `properties` are refused, each key at most once), array (`items`,
//! `minItems`/`maxItems`), string (`enum`, `maxLength`), integer, number,
//! boolean, null, a list of types, `enum` of strings at any level; no
//! `type` accepts any JSON value. Whitespace is limited to one space or
//! newline between tokens, so the model cannot pad forever.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Invalid,
    Incomplete,
    Complete,
}

/// The tools a call may name: (name, parameters schema).
pub struct ToolGrammar<'a> {
    pub tools: Vec<(&'a str, &'a Value)>,
}

enum Stop {
    /// The input ended while still valid.
    End,
    Bad,
}

type R<T = ()> = Result<T, Stop>;

struct P<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> P<'a> {
    fn peek(&self) -> R<u8> {
        self.b.get(self.i).copied().ok_or(Stop::End)
    }
    fn bump(&mut self) -> R<u8> {
        let c = self.peek()?;
        self.i += 1;
        Ok(c)
    }
    fn lit(&mut self, s: &[u8]) -> R {
        for &c in s {
            if self.bump()? != c {
                return Err(Stop::Bad);
            }
        }
        Ok(())
    }
    /// At most one blank (space or newline).
    fn ws(&mut self) -> R {
        if matches!(self.peek()?, b' ' | b'\n') {
            self.i += 1;
        }
        Ok(())
    }

    /// A JSON string; `allowed`: its content must be one of these (prefix-checked as it grows).
    fn string(&mut self, allowed: Option<&[&str]>, max_len: Option<usize>) -> R<Vec<u8>> {
        self.lit(b"\"")?;
        let mut out = Vec::new();
        loop {
            let c = self.bump()?;
            match c {
                b'"' => {
                    if let Some(a) = allowed {
                        if !a.iter().any(|x| x.as_bytes() == out.as_slice()) {
                            return Err(Stop::Bad);
                        }
                    }
                    return Ok(out);
                }
                b'\\' => {
                    let e = self.bump()?;
                    let ch = match e {
                        b'"' | b'\\' | b'/' => e,
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        b'b' | b'f' => b' ',
                        b'u' => {
                            for _ in 0..4 {
                                if !self.bump()?.is_ascii_hexdigit() {
                                    return Err(Stop::Bad);
                                }
                            }
                            b'?'
                        }
                        _ => return Err(Stop::Bad),
                    };
                    out.push(ch);
                }
                c if c < 0x20 => return Err(Stop::Bad),
                c => out.push(c),
            }
            if let Some(a) = allowed {
                if !a.iter().any(|x| x.as_bytes().starts_with(&out)) {
                    return Err(Stop::Bad);
                }
            }
            if max_len.is_some_and(|m| out.len() > m * 4) {
                return Err(Stop::Bad);
            }
        }
    }

    /// One or more digits (none is refused, unless the input ended first).
    fn digits(&mut self) -> R {
        let start = self.i;
        while self.i < self.b.len() && self.b[self.i].is_ascii_digit() {
            self.i += 1;
        }
        if self.i == start {
            self.peek()?;
            return Err(Stop::Bad);
        }
        Ok(())
    }

    fn number(&mut self, integer: bool) -> R {
        if self.peek()? == b'-' {
            self.i += 1;
        }
        self.digits()?;
        if !integer && self.peek()? == b'.' {
            self.i += 1;
            self.digits()?;
        }
        if !integer && matches!(self.peek()?, b'e' | b'E') {
            self.i += 1;
            if matches!(self.peek()?, b'+' | b'-') {
                self.i += 1;
            }
            self.digits()?;
        }
        // A number only ends where something else begins.
        self.peek()?;
        Ok(())
    }

    fn value(&mut self, schema: &Value) -> R {
        let enum_strs: Option<Vec<&str>> = schema
            .get("enum")
            .and_then(|e| e.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>())
            .filter(|v| !v.is_empty());
        let types: Vec<&str> = match schema.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(|t| t.as_str()).collect(),
            _ if enum_strs.is_some() => vec!["string"],
            _ => vec![],
        };
        let any = types.is_empty();
        let ok = |t: &str| any || types.contains(&t);
        let c = self.peek()?;
        match c {
            b'"' if ok("string") => {
                let max = schema.get("maxLength").and_then(|m| m.as_u64()).map(|m| m as usize);
                self.string(enum_strs.as_deref(), max).map(|_| ())
            }
            b'{' if ok("object") => self.object(schema, any),
            b'[' if ok("array") => self.array(schema),
            b't' if ok("boolean") => self.lit(b"true"),
            b'f' if ok("boolean") => self.lit(b"false"),
            b'n' if ok("null") => self.lit(b"null"),
            b'-' | b'0'..=b'9' if ok("number") || ok("integer") => self.number(!any && !types.contains(&"number")),
            _ => Err(Stop::Bad),
        }
    }

    fn array(&mut self, schema: &Value) -> R {
        let items = schema.get("items").cloned().unwrap_or(Value::Bool(true));
        let items = if items.is_object() { items } else { Value::Object(Default::default()) };
        let min = schema.get("minItems").and_then(|m| m.as_u64()).unwrap_or(0) as usize;
        let max = schema.get("maxItems").and_then(|m| m.as_u64()).map(|m| m as usize).unwrap_or(usize::MAX);
        self.lit(b"[")?;
        self.ws()?;
        let mut n = 0;
        if self.peek()? == b']' {
            self.i += 1;
            return if min == 0 { Ok(()) } else { Err(Stop::Bad) };
        }
        loop {
            if n == max {
                return Err(Stop::Bad);
            }
            self.value(&items)?;
            n += 1;
            self.ws()?;
            match self.bump()? {
                b',' => self.ws()?,
                b']' if n >= min => return Ok(()),
                _ => return Err(Stop::Bad),
            }
        }
    }

    /// An object; `open`: no schema (any keys, any values).
    fn object(&mut self, schema: &Value, open: bool) -> R {
        let empty = serde_json::Map::new();
        let props = schema.get("properties").and_then(|p| p.as_object()).unwrap_or(&empty);
        let required: Vec<&str> = schema
            .get("required")
            .and_then(|r| r.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let mut seen: Vec<String> = Vec::new();
        self.lit(b"{")?;
        self.ws()?;
        if self.peek()? == b'}' {
            self.i += 1;
            return if required.is_empty() { Ok(()) } else { Err(Stop::Bad) };
        }
        loop {
            let names: Vec<&str> = props.keys().map(String::as_str).filter(|k| !seen.iter().any(|s| s == k)).collect();
            let key = if open { self.string(None, None)? } else { self.string(Some(&names), None)? };
            let key = String::from_utf8_lossy(&key).into_owned();
            self.ws()?;
            self.lit(b":")?;
            self.ws()?;
            let sub = props.get(&key).cloned().unwrap_or(Value::Object(Default::default()));
            self.value(&sub)?;
            seen.push(key);
            self.ws()?;
            match self.bump()? {
                b',' => {
                    self.ws()?;
                    if !open && seen.len() == props.len() {
                        return Err(Stop::Bad);
                    }
                }
                b'}' if required.iter().all(|r| seen.iter().any(|s| s == r)) => return Ok(()),
                _ => return Err(Stop::Bad),
            }
        }
    }
}

impl ToolGrammar<'_> {
    /// Where `text` (what follows `<tool_call>`) stands.
    pub fn check(&self, text: &[u8]) -> Check {
        let mut p = P { b: text, i: 0 };
        let r = (|| -> R {
            p.ws()?;
            p.lit(b"{")?;
            p.ws()?;
            p.lit(b"\"name\"")?;
            p.ws()?;
            p.lit(b":")?;
            p.ws()?;
            let names: Vec<&str> = self.tools.iter().map(|(n, _)| *n).collect();
            let name = p.string(Some(&names), None)?;
            let schema =
                self.tools.iter().find(|(n, _)| n.as_bytes() == name.as_slice()).map(|(_, s)| *s).ok_or(Stop::Bad)?;
            p.ws()?;
            p.lit(b",")?;
            p.ws()?;
            p.lit(b"\"arguments\"")?;
            p.ws()?;
            p.lit(b":")?;
            p.ws()?;
            // The arguments are an object, whatever the schema says at its top.
            if p.peek()? != b'{' {
                return Err(Stop::Bad);
            }
            p.value(schema)?;
            p.ws()?;
            p.lit(b"}")
        })();
        match r {
            Ok(()) if p.i == text.len() => Check::Complete,
            // Anything after the closing brace: only the one newline before `</tool_call>`.
            Ok(()) if &text[p.i..] == b"\n" => Check::Complete,
            Ok(()) => Check::Invalid,
            Err(Stop::End) => Check::Incomplete,
            Err(Stop::Bad) => Check::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn book() -> Value {
        json!({"type": "object", "properties": {
            "day": {"type": "string", "enum": ["Monday", "Tuesday", "Saturday"]},
            "people": {"type": "integer"},
            "note": {"type": "string"},
            "vip": {"type": "boolean"},
            "dishes": {"type": "array", "items": {"type": "string"}, "maxItems": 2}
        }, "required": ["day", "people"]})
    }

    fn check(text: &str) -> Check {
        let b = book();
        let none = json!({"type": "object", "properties": {}});
        ToolGrammar { tools: vec![("book_table", &b), ("hang_up", &none)] }.check(text.as_bytes())
    }

    #[test]
    fn every_prefix_of_a_valid_call_is_incomplete_and_the_whole_is_complete() {
        let call = "\n{\"name\": \"book_table\", \"arguments\": {\"day\": \"Saturday\", \"people\": 12, \"dishes\": [\"cake\", \"bread\"], \"vip\": true}}\n";
        for i in 0..call.len() - 1 {
            if call.is_char_boundary(i) && !call[..i].ends_with('}') {
                assert_eq!(check(&call[..i]), Check::Incomplete, "{:?}", &call[..i]);
            }
        }
        assert_eq!(check(call), Check::Complete);
        assert_eq!(check(call.trim_end()), Check::Complete);
        assert_eq!(check("{\"name\": \"hang_up\", \"arguments\": {}}"), Check::Complete);
    }

    #[test]
    fn what_the_schema_refuses() {
        for bad in [
            "{\"name\": \"book_tablex",                                       // unknown tool
            "{\"name\": \"delete_all\"",                                      // unknown tool
            "{\"name\": \"book_table\", \"arguments\": {\"day\": \"Sunday\"",   // not in the enum
            "{\"name\": \"book_table\", \"arguments\": {\"people\": \"four\"",  // a string for an integer
            "{\"name\": \"book_table\", \"arguments\": {\"people\": 2.5",       // a fraction for an integer
            "{\"name\": \"book_table\", \"arguments\": {\"colour\"",           // no such property
            "{\"name\": \"book_table\", \"arguments\": {\"people\": 2}",       // `day` is required
            "{\"name\": \"book_table\", \"arguments\": {\"people\": 2, \"people\"", // a key twice
            "{\"name\": \"book_table\", \"arguments\": {\"day\": \"Monday\", \"people\": 2, \"dishes\": [\"a\", \"b\", \"c\"", // maxItems
            "{\"name\": \"book_table\", \"arguments\": [",                     // arguments are an object
            "{\"name\": \"book_table\", \"arguments\":   {",                   // padding beyond one blank
            "{\"name\": \"hang_up\", \"arguments\": {}} trailing",
        ] {
            assert_eq!(check(bad), Check::Invalid, "{bad:?}");
        }
        // A number may still grow: incomplete until something follows it.
        assert_eq!(
            check("{\"name\": \"book_table\", \"arguments\": {\"day\": \"Monday\", \"people\": 12"),
            Check::Incomplete
        );
        assert_eq!(
            check("{\"name\": \"book_table\", \"arguments\": {\"note\": \"caf\\u00e9 \\\"x\\\""),
            Check::Incomplete
        );
    }
}
