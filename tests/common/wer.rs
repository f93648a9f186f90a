//! Word error rate: words are lower-cased runs of letters, digits and
//! apostrophes (punctuation and case do not count); errors are the word-level
//! edit distance (substitutions + deletions + insertions).

pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

/// Edit distance between the reference's and the hypothesis' words.
pub fn word_errors(reference: &str, hypothesis: &str) -> usize {
    let (r, h) = (words(reference), words(hypothesis));
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for i in 1..=r.len() {
        let mut cur = vec![i; h.len() + 1];
        for j in 1..=h.len() {
            let sub = prev[j - 1] + usize::from(r[i - 1] != h[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        prev = cur;
    }
    prev[h.len()]
}

/// Corpus WER over (reference, hypothesis) pairs: total errors / total reference words.
pub fn corpus_wer<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> f64 {
    let (mut errors, mut total) = (0usize, 0usize);
    for (r, h) in pairs {
        errors += word_errors(r, h);
        total += words(r).len();
    }
    errors as f64 / total.max(1) as f64
}
