//! Streamed reply text → whole sentences, as soon as each one ends, so the
//! voice can start on the first sentence while the model is still writing the
//! rest. The sentence rules are `tts::sentences` (abbreviations, numbers like
//! "3.5", closing quotes): a sentence is complete once text follows it, so a
//! "3." at the end of a delta waits for the next one.
//!
//! The reply's **first phrase** goes out sooner still: the caller is waiting in
//! silence for it, and the voice costs time in proportion to the text (Piper
//! ~105 ms per 30 phonemes on 2 cores), so the first part is cut at its first
//! clause break ("Yes, …", "On Saturday, …"), or before a phrase-starting word
//! with three words before it ("Monday is open | from 7 to 18."), while the
//! model writes on; the rest of the first sentence goes out phrase by phrase too
//! (longer ones), so the voice does not fall silent after a short first phrase.
//! Only whole words are cut (a word is complete once whitespace or punctuation
//! follows it), so nothing is clipped or doubled at the join.
//!
//! A long sentence is cut at a clause break (a comma, semicolon or colon with
//! text after it) once it has `LONG_WORDS` words (10 for a reply's first): the voice synthesises a
//! sentence whole, so a 60-word run-on sentence would otherwise leave the
//! caller in seconds of silence after a short first sentence (seen with the
//! embedded model listing six cakes in one sentence: a 5 s gap).

use crate::models::tts::sentences;

#[derive(Debug, Clone, Default)]
pub struct SentenceSplitter {
    buf: String,
    /// Sentences and clauses given out so far (the first is cut sooner: it sets the reply's latency).
    emitted: usize,
    /// A whole sentence has been given out: phrases are no longer cut.
    sentence_done: bool,
}

impl SentenceSplitter {
    pub fn new() -> SentenceSplitter {
        SentenceSplitter::default()
    }

    /// More text; returns the sentences (or clauses of long sentences) it completed.
    pub fn push(&mut self, delta: &str) -> Vec<String> {
        self.buf.push_str(delta);
        let mut parts = sentences(&self.buf);
        if parts.len() > 1 {
            // The last part may still be growing: keep it (with the space that may follow it).
            let last = parts.pop().unwrap_or_default();
            let trailing_space = self.buf.ends_with(char::is_whitespace);
            self.buf = if trailing_space { format!("{last} ") } else { last };
        } else {
            parts.clear();
        }
        if parts.is_empty() && !self.sentence_done {
            // Still inside the reply's first sentence: phrase by phrase, so that the voice keeps
            // up with a short first phrase ("Yes,") instead of falling silent after it.
            loop {
                let (clause, starter) = if self.emitted + parts.len() == 0 {
                    (FIRST_MIN_WORDS, FIRST_PHRASE_WORDS)
                } else {
                    (NEXT_MIN_WORDS, NEXT_PHRASE_WORDS)
                };
                let Some(cut) = phrase_cut(&self.buf, clause, starter) else { break };
                parts.push(self.buf[..cut].trim().to_string());
                self.buf = self.buf[cut..].trim_start().to_string();
            }
        } else {
            self.sentence_done = true;
        }
        loop {
            let long = if self.emitted + parts.len() == 0 { LONG_WORDS_FIRST } else { LONG_WORDS };
            let Some(cut) = clause_cut(&self.buf, long) else { break };
            parts.push(self.buf[..cut].trim().to_string());
            self.buf = self.buf[cut..].trim_start().to_string();
        }
        self.emitted += parts.len();
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

/// A growing sentence this long (in words) is cut at its first clause break (the reply's first
/// sentence sooner: the caller is waiting for it)…
const LONG_WORDS: usize = 14;
const LONG_WORDS_FIRST: usize = 10;
/// …that leaves at least this many words before it.
const MIN_CLAUSE_WORDS: usize = 5;

/// The reply's first part is cut at a clause break with this many words before it ("No, …")…
const FIRST_MIN_WORDS: usize = 1;
/// …or before a word that starts a phrase ("at", "from", "because", …) with this many words before it.
const FIRST_PHRASE_WORDS: usize = 3;
/// The rest of the first sentence is cut the same way, in longer phrases (fewer joins).
const NEXT_MIN_WORDS: usize = 3;
const NEXT_PHRASE_WORDS: usize = 4;
/// Words that begin a phrase: cutting before one keeps each part's prosody natural ("Monday is
/// open | from 7 to 18."), where a cut after a fixed count would strand a word ("… on | Saturday.").
/// "and", "or" and "to" are left out: they join the parts of a phrase as often ("Monday to Friday").
const PHRASE_STARTERS: &[&str] = &[
    "but", "so", "because", "until", "from", "at", "on", "in", "with", "for", "which", "who", "when", "where", "if",
    "then", "between", "after", "before",
];

/// Words after which a number belongs to the phrase ("at 8:00", "from 7 to 18", "about 20"): no
/// cut between them.
const BEFORE_NUMBER: &[&str] = &[
    "to", "and", "or", "of", "by", "about", "around", "than", "the", "a", "an", "only", "just", "over", "under",
    "nearly",
];

/// Where to cut an unfinished first sentence: after the first `,`/`;`/`:` with `clause_words`
/// words before it and a word after it, or just before a complete phrase-starting word with
/// `starter_words` words before it, or just before a number with as many words before it ("The
/// phone number is | 555-0100.": a number is many tokens, and the words before it are a phrase of
/// their own when spoken) unless the word before binds it ("at 8", "to 18").
fn phrase_cut(text: &str, clause_words: usize, starter_words: usize) -> Option<usize> {
    if let Some(cut) = clause_break(text, clause_words) {
        return Some(cut);
    }
    // Words with their start; a word is complete when something (a space, punctuation) follows it.
    let mut words: Vec<(usize, &str)> = Vec::new();
    let mut at = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), at) {
            (true, Some(s)) => {
                words.push((s, &text[s..i]));
                at = None;
            }
            (false, None) => at = Some(i),
            _ => {}
        }
    }
    // A number starts with a digit: it needs not be complete to be one.
    let number =
        words.iter().copied().chain(at.map(|s| (s, &text[s..]))).enumerate().skip(starter_words).find(|(k, (_, w))| {
            let prev = words[k - 1].1;
            let bare = prev.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
            w.starts_with(|c: char| c.is_ascii_digit())
                && !prev.ends_with(['.', '!', '?', ',', ';', ':'])
                && prev.chars().last().is_some_and(char::is_alphabetic)
                && !PHRASE_STARTERS.contains(&bare.as_str())
                && !BEFORE_NUMBER.contains(&bare.as_str())
        });
    let number_cut = number.map(|(_, (start, _))| start);
    for (k, &(start, word)) in words.iter().enumerate().skip(starter_words) {
        if number_cut.is_some_and(|n| n < start) {
            break;
        }
        let bare = word.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
        if PHRASE_STARTERS.contains(&bare.as_str()) && word.chars().next().is_some_and(char::is_alphanumeric) {
            // Not after what may be a sentence's end ("8." could be "8.5"): the sentence rules decide there.
            if words[..k].last().is_some_and(|w| !w.1.ends_with(['.', '!', '?'])) {
                return Some(text[..start].trim_end().len());
            }
        }
    }
    number_cut.map(|start| text[..start].trim_end().len())
}

/// Just after the first `,`/`;`/`:` with at least `min_words` words before it and a word after it.
fn clause_break(text: &str, min_words: usize) -> Option<usize> {
    let mut words = 0;
    let mut prev_space = true;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            prev_space = true;
            continue;
        }
        if prev_space {
            words += 1;
            prev_space = false;
        }
        if matches!(c, ',' | ';' | ':') && words >= min_words {
            let after = &text[i + 1..];
            if after.starts_with(char::is_whitespace) && after.trim_start().chars().next().is_some() {
                return Some(i + 1);
            }
        }
    }
    None
}

/// Where to cut a long unfinished sentence: just after the first `,`/`;`/`:` that has at least
/// `MIN_CLAUSE_WORDS` words before it and a word after it (so "3,5" or a trailing comma waits).
fn clause_cut(text: &str, long: usize) -> Option<usize> {
    if text.split_whitespace().count() < long {
        return None;
    }
    clause_break(text, MIN_CLAUSE_WORDS)
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
        assert!(s.push("Yes").is_empty());
        assert!(s.push(" we do.").is_empty(), "could still be followed by more");
        assert_eq!(s.push(" We open at 8"), vec!["Yes we do."]);
        assert!(s.push(" on Saturday.").is_empty(), "later sentences are not cut at phrases");
        assert_eq!(s.push(" On Sunday"), vec!["We open at 8 on Saturday."]);
        assert!(s.push(" we are closed").is_empty());
        assert_eq!(s.finish(), Some("On Sunday we are closed".into()));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn the_first_phrase_goes_out_before_its_sentence_ends() {
        // At the first clause break with two words before it.
        let mut s = SentenceSplitter::new();
        assert!(s.push("On Saturday,").is_empty(), "nothing after the comma yet");
        assert_eq!(s.push(" we"), vec!["On Saturday,"]);
        assert_eq!(
            s.push(" open at 8, and close at 2."),
            vec!["we open at 8,"],
            "the rest of the first sentence in longer phrases"
        );
        assert_eq!(s.finish(), Some("and close at 2.".into()));
        // Before a phrase-starting word once three words are there, never inside a word.
        let mut s = SentenceSplitter::new();
        assert!(s.push("We open at 8").is_empty());
        assert!(s.push(" o").is_empty(), "`o` may be the start of `only`");
        assert!(s.push("n").is_empty(), "`on` may still grow");
        assert_eq!(s.push(" Sat"), vec!["We open at 8"]);
        assert_eq!(run(&["We open at 8 on Saturday."]), vec!["We open at 8", "on Saturday."]);
        assert_eq!(run(&["We are open only on weekdays."]), vec!["We are open only", "on weekdays."]);
        assert_eq!(run(&["Monday is open from 7:00 to 18:00."]), vec!["Monday is open", "from 7:00 to 18:00."]);
        assert_eq!(run(&["No, we are closed on Sunday."]), vec!["No,", "we are closed on Sunday."]);
        // Before a number with three words before it, as soon as its first digit is there, unless
        // the word before binds it.
        let mut s = SentenceSplitter::new();
        assert!(s.push("The phone number is").is_empty());
        assert_eq!(s.push(" 5"), vec!["The phone number is"]);
        assert_eq!(s.push("55-0100."), Vec::<String>::new());
        assert_eq!(s.finish(), Some("555-0100.".into()));
        assert_eq!(run(&["Monday to Friday 7:00 to 18:00."]), vec!["Monday to Friday", "7:00 to 18:00."]);
        assert_eq!(run(&["We are open until 18:00 today."]), vec!["We are open", "until 18:00 today."]);
        assert_eq!(run(&["We open at 8:00 on Saturday."]), vec!["We open at 8:00", "on Saturday."]);
        assert_eq!(run(&["It costs about 20 dollars."]), vec!["It costs about 20 dollars."]);
        assert_eq!(run(&["It opens 8:00 sharp."]), vec!["It opens 8:00 sharp."], "two words before the number");
        // Too few words before the starter, or no starter: the sentence goes whole.
        assert_eq!(run(&["Open on Saturday."]), vec!["Open on Saturday."]);
        assert_eq!(run(&["Yes, we do have them."]), vec!["Yes,", "we do have them."]);
        // The joins lose and double nothing.
        let reply = "Our bakery is open Monday to Friday from 7 to 18, and Saturday from 8 to 14.";
        let parts = run(&reply.split_inclusive(' ').collect::<Vec<_>>());
        assert_eq!(parts, vec!["Our bakery is open Monday to Friday", "from 7 to 18,", "and Saturday from 8 to 14."]);
        assert_eq!(parts.join(" "), reply);
    }

    #[test]
    fn numbers_and_abbreviations_split_across_deltas() {
        assert_eq!(
            run(&["It costs 3.", "5 dollars. Ask Dr.", " Smith! Ok"]),
            vec!["It costs 3.5 dollars.", "Ask Dr. Smith!", "Ok"]
        );
        assert_eq!(run(&["Hello", " ", "there.", " ", "Bye."]), vec!["Hello there.", "Bye."]);
        assert_eq!(run(&["", "  "]), Vec::<String>::new());
    }

    #[test]
    fn a_long_sentence_is_cut_at_its_clause_breaks_as_it_grows() {
        let reply = "Certainly! The lemon drizzle cake with fresh lemons is a delightful treat, the dark chocolate fudge cake is rich and creamy, \
the carrot cake with cream cheese icing is soft and sweet, and the red velvet cake is a beautiful option.";
        // Word by word, as a model streams it.
        let deltas: Vec<String> = reply.split_inclusive(' ').map(String::from).collect();
        let mut s = SentenceSplitter::new();
        let mut out = Vec::new();
        let mut first_clause_at = None;
        for (i, d) in deltas.iter().enumerate() {
            out.extend(s.push(d));
            if out.len() >= 2 && first_clause_at.is_none() {
                first_clause_at = Some(i);
            }
        }
        out.extend(s.finish());
        assert_eq!(
            out,
            vec![
                "Certainly!",
                "The lemon drizzle cake with fresh lemons is a delightful treat,",
                "the dark chocolate fudge cake is rich and creamy,",
                "the carrot cake with cream cheese icing is soft and sweet,",
                "and the red velvet cake is a beautiful option."
            ]
        );
        // The first clause goes to the voice once the sentence is long, not when it ends.
        assert!(first_clause_at.unwrap() < 20, "{first_clause_at:?}");
        // Short sentences with commas, and numbers with commas, are left whole.
        assert_eq!(
            run(&["Yes, we open at 8, and close at 6. It costs 3,5 euros, or so they say, I think."]),
            vec!["Yes, we open at 8, and close at 6.", "It costs 3,5 euros, or so they say, I think."]
        );
        assert_eq!(
            clause_cut("one two three four five six, seven eight nine ten eleven twelve thirteen fourteen", LONG_WORDS),
            Some(28)
        );
        assert_eq!(
            clause_cut("one two three four five six seven eight nine ten eleven twelve thirteen fourteen,", LONG_WORDS),
            None,
            "nothing after the comma yet"
        );
        // A reply that starts with a long sentence: phrase by phrase until it ends.
        assert_eq!(
            run(&["I have a lemon drizzle cake with fresh lemons, a dark chocolate fudge cake, and a carrot cake."]),
            vec![
                "I have a lemon drizzle cake with fresh lemons,",
                "a dark chocolate fudge cake,",
                "and a carrot cake."
            ]
        );
    }
}
