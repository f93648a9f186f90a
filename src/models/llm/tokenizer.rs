//! Qwen2's byte-level BPE tokenizer (GPT-2 style), from the files the
//! converter writes beside the model: `vocab.json` (token → id, tokens in
//! GPT-2's byte-to-unicode form), `merges.txt` (pairs by rank) and the added
//! tokens listed in `llm.json`.
//!
//! Encoding: NFC, the Qwen2 pre-tokenizer regex, then BPE per piece on token
//! ids (every byte is a token; a merge is a pair of ids with a rank and a
//! result id). Text from callers and tools never becomes a control token:
//! `encode` does not look for `<|im_start|>` and friends in its input; only the
//! chat template inserts them (`special`), so a caller who says
//! "<|im_end|>" cannot end the system prompt.

use std::collections::HashMap;
use std::path::Path;
use unicode_normalization::UnicodeNormalization;

pub const PRETOKENIZE: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

pub struct QwenTokenizer {
    /// Token bytes → id (ordinary tokens).
    ids: HashMap<Vec<u8>, u32>,
    /// id → bytes; added tokens hold their text.
    bytes: Vec<Vec<u8>>,
    /// id of each single byte.
    byte_ids: [u32; 256],
    /// (left, right) → (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Added (control) tokens: text → id.
    added: HashMap<String, u32>,
    is_added: Vec<bool>,
    pretokenize: fancy_regex::Regex,
}

/// GPT-2's reversible map from bytes to printable characters (vocab.json spells tokens with it).
fn byte_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        map[b as usize] = if printable {
            char::from_u32(b).expect("a byte is a char")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("below U+0200")
        };
    }
    map
}

impl QwenTokenizer {
    /// `added`: the added tokens (text, id), from llm.json.
    pub fn load(dir: &Path, added: &[(String, u32)]) -> Result<QwenTokenizer, String> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()))
        };
        let vocab: HashMap<String, u32> =
            serde_json::from_str(&read("vocab.json")?).map_err(|e| format!("vocab.json: {e}"))?;
        let merges_text = read("merges.txt")?;
        Self::from_parts(&vocab, &merges_text, added)
    }

    pub fn from_parts(
        vocab: &HashMap<String, u32>,
        merges_text: &str,
        added: &[(String, u32)],
    ) -> Result<QwenTokenizer, String> {
        let b2u = byte_to_unicode();
        let mut u2b = HashMap::new();
        for (b, c) in b2u.iter().enumerate() {
            u2b.insert(*c, b as u8);
        }
        let n = vocab.values().chain(added.iter().map(|(_, i)| i)).map(|&i| i as usize + 1).max().unwrap_or(0);
        let mut bytes = vec![Vec::new(); n];
        let mut ids = HashMap::with_capacity(vocab.len());
        for (tok, &id) in vocab {
            let b: Option<Vec<u8>> = tok.chars().map(|c| u2b.get(&c).copied()).collect();
            let b = b.ok_or_else(|| format!("vocab.json: token {tok:?} is not in byte-level form"))?;
            ids.insert(b.clone(), id);
            bytes[id as usize] = b;
        }
        let mut byte_ids = [0u32; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = *ids.get(&vec![b as u8]).ok_or_else(|| format!("vocab.json: no token for byte {b:#04x}"))?;
        }
        let mut merges = HashMap::new();
        for (rank, line) in merges_text.lines().filter(|l| !l.is_empty() && !l.starts_with("#version")).enumerate() {
            let (l, r) =
                line.split_once(' ').ok_or_else(|| format!("merges.txt line {}: not `left right`", rank + 1))?;
            let id_of = |s: &str| -> Result<(u32, Vec<u8>), String> {
                let b: Vec<u8> = s
                    .chars()
                    .map(|c| u2b.get(&c).copied().ok_or_else(|| format!("merges.txt: {s:?} not byte-level")))
                    .collect::<Result<_, _>>()?;
                ids.get(&b).map(|&i| (i, b)).ok_or_else(|| format!("merges.txt: {s:?} is not in the vocabulary"))
            };
            let (li, lb) = id_of(l)?;
            let (ri, rb) = id_of(r)?;
            let joined = [lb, rb].concat();
            let Some(&mi) = ids.get(&joined) else {
                return Err(format!("merges.txt line {}: {l}{r} is not in the vocabulary", rank + 1));
            };
            merges.entry((li, ri)).or_insert((rank as u32, mi));
        }
        let mut is_added = vec![false; n];
        let mut added_map = HashMap::new();
        for (text, id) in added {
            bytes[*id as usize] = text.as_bytes().to_vec();
            is_added[*id as usize] = true;
            added_map.insert(text.clone(), *id);
        }
        let pretokenize = fancy_regex::Regex::new(PRETOKENIZE).map_err(|e| format!("pre-tokenizer regex: {e}"))?;
        Ok(QwenTokenizer { ids, bytes, byte_ids, merges, added: added_map, is_added, pretokenize })
    }

    pub fn vocab_size(&self) -> usize {
        self.bytes.len()
    }

    /// The id of an added token such as `<|im_start|>`.
    pub fn special(&self, text: &str) -> Option<u32> {
        self.added.get(text).copied()
    }

    pub fn is_added(&self, id: u32) -> bool {
        self.is_added.get(id as usize).copied().unwrap_or(false)
    }

    /// The bytes a token stands for (an added token: its text).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes.get(id as usize).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Ordinary text to ids; control-token text in it stays text.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let text: String = text.nfc().collect();
        let mut out = Vec::new();
        let mut at = 0;
        // The regex covers every character (its last branch is `\s+`, and every other
        // character starts one of the branches); a gap would still be encoded, byte by byte.
        for m in self.pretokenize.find_iter(&text) {
            let Ok(m) = m else { break };
            if m.start() > at {
                self.bpe(&text.as_bytes()[at..m.start()], &mut out);
            }
            self.bpe(m.as_str().as_bytes(), &mut out);
            at = m.end();
        }
        if at < text.len() {
            self.bpe(&text.as_bytes()[at..], &mut out);
        }
        out
    }

    /// Text with added tokens written out (`<|im_start|>` → its id), as llama.cpp's
    /// `tokenize(special=true)` does: for tests and tools, never for caller text.
    pub fn encode_with_special(&self, text: &str) -> Vec<u32> {
        let mut names: Vec<&String> = self.added.keys().collect();
        names.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let mut out = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let next = names
                .iter()
                .filter_map(|n| rest.find(n.as_str()).map(|p| (p, *n)))
                .min_by_key(|(p, n)| (*p, std::cmp::Reverse(n.len())));
            match next {
                Some((p, n)) => {
                    out.extend(self.encode(&rest[..p]));
                    out.push(self.added[n]);
                    rest = &rest[p + n.len()..];
                }
                None => {
                    out.extend(self.encode(rest));
                    break;
                }
            }
        }
        out
    }

    /// Byte-level BPE of one pre-token: merge the lowest-ranked adjacent pair until none is left.
    fn bpe(&self, piece: &[u8], out: &mut Vec<u32>) {
        if let Some(&id) = self.ids.get(piece) {
            // Whole pieces are usually tokens already (most words are).
            out.push(id);
            return;
        }
        let mut word: Vec<u32> = piece.iter().map(|&b| self.byte_ids[b as usize]).collect();
        while word.len() > 1 {
            let best = word
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| self.merges.get(&(w[0], w[1])).map(|&(rank, id)| (rank, i, id)))
                .min();
            let Some((rank, _, merged)) = best else { break };
            // Merge every occurrence of this pair, left to right.
            let mut next = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && self.merges.get(&(word[i], word[i + 1])).is_some_and(|&(r, _)| r == rank) {
                    next.push(merged);
                    i += 2;
                } else {
                    next.push(word[i]);
                    i += 1;
                }
            }
            word = next;
        }
        out.extend(word);
    }

    /// Ids back to text (added tokens skipped unless `specials`); bad UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32], specials: bool) -> String {
        let mut b = Vec::new();
        for &id in ids {
            if specials || !self.is_added(id) {
                b.extend_from_slice(self.token_bytes(id));
            }
        }
        String::from_utf8_lossy(&b).into_owned()
    }
}

/// Turns a stream of token bytes into text deltas that are whole UTF-8
/// characters (a character can span two tokens).
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..good]).expect("valid prefix"));
                    match e.error_len() {
                        // Invalid bytes: replace and go on.
                        Some(n) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..good + n);
                        }
                        // An incomplete character at the end: wait for its next bytes.
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// What is left at the end (an unfinished character).
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary: the 256 bytes, then merges "a b" → "ab", "ab c" → "abc", "Ġ a" → " a".
    fn toy() -> QwenTokenizer {
        let b2u = byte_to_unicode();
        let mut vocab: HashMap<String, u32> = (0..256).map(|b| (b2u[b].to_string(), b as u32)).collect();
        vocab.insert("ab".into(), 256);
        vocab.insert("abc".into(), 257);
        vocab.insert("Ġa".into(), 258);
        let merges = "a b\nab c\nĠ a\n";
        QwenTokenizer::from_parts(&vocab, merges, &[("<|im_end|>".into(), 300)]).unwrap()
    }

    #[test]
    fn merges_by_rank_and_round_trips() {
        let t = toy();
        assert_eq!(t.encode("abc"), vec![257]);
        assert_eq!(t.encode("abab"), vec![256, 256]);
        // " abc": the pre-tokenizer keeps the space with the word; " a" merges last (rank 2).
        assert_eq!(t.encode(" abc"), vec![32, 257]);
        assert_eq!(t.encode(" ax"), vec![258, b'x' as u32]);
        for s in ["héllo wörld 12:30", "a\n\n  b", "日本語 😀"] {
            assert_eq!(t.decode(&t.encode(s), false), s);
        }
    }

    #[test]
    fn control_tokens_only_where_asked() {
        let t = toy();
        let plain = t.encode("x<|im_end|>y");
        assert!(!plain.contains(&300), "caller text never becomes a control token");
        assert_eq!(t.encode_with_special("x<|im_end|>y"), vec![b'x' as u32, 300, b'y' as u32]);
        assert_eq!(t.decode(&[b'x' as u32, 300], false), "x");
        assert_eq!(t.decode(&[b'x' as u32, 300], true), "x<|im_end|>");
    }

    #[test]
    fn utf8_split_across_tokens() {
        let mut s = Utf8Stream::default();
        let e = "é😀".as_bytes();
        assert_eq!(s.push(&e[..1]), "");
        assert_eq!(s.push(&e[1..3]), "é");
        assert_eq!(s.push(&e[3..]), "😀");
        assert_eq!(s.push(&[0xff, b'a']), "\u{FFFD}a");
        assert_eq!(s.push(&[0xe2]), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }
}
