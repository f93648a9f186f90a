//! Whisper's byte-level BPE, decode direction only: line `i` of the model's
//! `vocabulary.txt` is token `i`, written in GPT-2's "bytes to unicode"
//! alphabet (every byte mapped to a printable character; `Ġ` is a space).
//! Decoding maps the characters back to bytes and the joined bytes to UTF-8,
//! so a multi-byte character split across tokens comes out whole.

use std::collections::HashMap;
use std::path::Path;

pub struct Tokenizer {
    /// Token id → its bytes (empty for special tokens, which are never spoken).
    tokens: Vec<Vec<u8>>,
    /// First special token (`<|endoftext|>`): ids from here on carry no text.
    first_special: usize,
}

/// GPT-2's `bytes_to_unicode`, inverted: character → byte.
fn unicode_to_byte() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut chars = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    printable.iter().zip(&chars).map(|(&b, &c)| (char::from_u32(c).expect("valid code point"), b as u8)).collect()
}

impl Tokenizer {
    /// `first_special` is the end-of-text id: it and every id above are special.
    pub fn load(path: &Path, first_special: usize) -> std::io::Result<Tokenizer> {
        let text = std::fs::read_to_string(path)?;
        Ok(Tokenizer::from_lines(text.lines(), first_special))
    }

    pub fn from_lines<'a>(lines: impl Iterator<Item = &'a str>, first_special: usize) -> Tokenizer {
        let map = unicode_to_byte();
        let tokens = lines
            .enumerate()
            .map(|(i, l)| {
                if i >= first_special {
                    return Vec::new();
                }
                // A character outside the alphabet cannot come from the BPE: keep it as UTF-8.
                l.chars()
                    .flat_map(|c| match map.get(&c) {
                        Some(&b) => vec![b],
                        None => c.to_string().into_bytes(),
                    })
                    .collect()
            })
            .collect();
        Tokenizer { tokens, first_special }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The text of `ids`; special and unknown ids are skipped, invalid UTF-8 is replaced.
    pub fn decode(&self, ids: &[i64]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            if id >= 0 && (id as usize) < self.first_special {
                if let Some(t) = self.tokens.get(id as usize) {
                    bytes.extend_from_slice(t);
                }
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_covers_every_byte_once() {
        let m = unicode_to_byte();
        assert_eq!(m.len(), 256);
        assert_eq!(m[&'Ġ'], b' ');
        assert_eq!(m[&'Ċ'], b'\n');
        assert_eq!(m[&'A'], b'A');
    }

    #[test]
    fn decodes_spaces_specials_and_split_utf8() {
        // "é" is C3 A9: in the GPT-2 alphabet C3 → 'Ã', A9 → '©'.
        let vocab = ["Hello", "Ġworld", "Ã", "©", ".", "<|endoftext|>"];
        let t = Tokenizer::from_lines(vocab.iter().copied(), 5);
        assert_eq!(t.decode(&[0, 1, 4]), "Hello world.");
        assert_eq!(t.decode(&[2, 3]), "é");
        assert_eq!(t.decode(&[0, 5, 99, -1]), "Hello");
    }
}
