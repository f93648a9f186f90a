//! Streamed reply text → whole sentences, as soon as each one ends, so the
//! voice can start on the first sentence while the model is still writing the
//! rest. The sentence rules are `tts::sentences` (abbreviations, numbers like
//! "3.5", closing quotes): a sentence is complete once text follows it, so a
//! "3." at the end of a delta waits for the next one.

use crate::models::tts::sentences;

#[derive(Default)]
pub struct SentenceSplitter {
    buf: String,
}

impl SentenceSplitter {
    pub fn new() -> SentenceSplitter {
        SentenceSplitter::default()
    }

    /// More text; returns the sentences it completed.
    pub fn push(&mut self, delta: &str) -> Vec<String> {
        self.buf.push_str(delta);
        let mut parts = sentences(&self.buf);
        if parts.len() <= 1 {
            return Vec::new();
        }
        // The last part may still be growing: keep it (with the space that may follow it).
        let last = parts.pop().unwrap_or_default();
        let trailing_space = self.buf.ends_with(char::is_whitespace);
        self.buf = if trailing_space { format!("{last} ") } else { last };
        parts
    }

    /// The reply is complete: whatever is left is the last sentence.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        let parts = sentences(&rest);
        if parts.is_empty() {
            None
        } else {
            Some(parts.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(deltas: &[&str]) -> Vec<String> {
        let mut s = SentenceSplitter::new();
        let mut out = Vec::new();
        for d in deltas {
            out.extend(s.push(d));
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn sentences_come_out_as_soon_as_they_end() {
        let mut s = SentenceSplitter::new();
        assert!(s.push("We open at 8").is_empty());
        assert!(s.push(" on Saturday.").is_empty(), "could still be followed by more");
        assert_eq!(s.push(" On Sunday"), vec!["We open at 8 on Saturday."]);
        assert!(s.push(" we are closed").is_empty());
        assert_eq!(s.finish(), Some("On Sunday we are closed".into()));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn numbers_and_abbreviations_split_across_deltas() {
        assert_eq!(run(&["It costs 3.", "5 dollars. Ask Dr.", " Smith! Ok"]), vec!["It costs 3.5 dollars.", "Ask Dr. Smith!", "Ok"]);
        assert_eq!(run(&["Hello", " ", "there.", " ", "Bye."]), vec!["Hello there.", "Bye."]);
        assert_eq!(run(&["", "  "]), Vec::<String>::new());
    }
}
