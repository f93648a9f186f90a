//! The decoding rules, on one step's logits (pure functions, so they are
//! tested without a model): suppression, greedy choice with its
//! log-probability, and the no-speech probability.

/// Logits of one position; `ids` are set to −∞ so they cannot be chosen.
pub fn suppress(logits: &mut [f32], ids: &[i64]) {
    for &id in ids {
        if let Some(l) = usize::try_from(id).ok().and_then(|i| logits.get_mut(i)) {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// log Σ exp(x), stable.
fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    if !max.is_finite() {
        return max;
    }
    max + logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln()
}

/// The greedy choice and its log-probability (after suppression, as Whisper scores it).
/// Ties go to the lowest id, like numpy's argmax.
pub fn argmax_logprob(logits: &[f32]) -> (i64, f64) {
    let mut best = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    (best as i64, logits[best] as f64 - log_sum_exp(logits))
}

/// P(no speech): the softmax of the no-speech token at the start-of-transcript position.
pub fn no_speech_prob(sot_logits: &[f32], no_speech: i64) -> f32 {
    let Some(&l) = usize::try_from(no_speech).ok().and_then(|i| sot_logits.get(i)) else { return 0.0 };
    (l as f64 - log_sum_exp(sot_logits)).exp() as f32
}

/// Whisper's silence rule: likely no speech and not confidently decoded.
pub fn is_silence(no_speech_prob: f32, avg_logprob: f64, no_speech_threshold: f32, logprob_threshold: f64) -> bool {
    no_speech_prob > no_speech_threshold && avg_logprob < logprob_threshold
}

/// True when the tokens end in the same n-gram repeated `times` times in a row
/// (a decoding loop: "thank you thank you thank you ..."), checked for n in 1..=max_n.
pub fn looping(tokens: &[i64], max_n: usize, times: usize) -> bool {
    (1..=max_n).any(|n| {
        let need = n * times;
        if tokens.len() < need {
            return false;
        }
        let tail = &tokens[tokens.len() - need..];
        let last = &tail[need - n..];
        tail.chunks(n).all(|c| c == last)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppression_changes_the_choice() {
        let mut l = vec![0.0, 5.0, 1.0, 4.0];
        assert_eq!(argmax_logprob(&l).0, 1);
        suppress(&mut l, &[1, 99, -3]);
        let (id, lp) = argmax_logprob(&l);
        assert_eq!(id, 3);
        let expect = 4.0 - ((0f64).exp() + 1f64.exp() + 4f64.exp()).ln();
        assert!((lp - expect).abs() < 1e-9);
    }

    #[test]
    fn no_speech_probability_is_a_softmax() {
        let l = vec![1.0f32, 1.0, 1.0, 1.0];
        assert!((no_speech_prob(&l, 2) - 0.25).abs() < 1e-6);
        assert_eq!(no_speech_prob(&l, 9), 0.0);
        assert!(is_silence(0.9, -1.5, 0.6, -1.0));
        assert!(!is_silence(0.9, -0.3, 0.6, -1.0));
        assert!(!is_silence(0.2, -1.5, 0.6, -1.0));
    }

    #[test]
    fn loops_are_seen() {
        assert!(looping(&[1, 2, 3, 4, 5, 4, 5, 4, 5, 4, 5], 4, 4));
        assert!(!looping(&[1, 2, 3, 4, 5, 4, 5, 4, 5], 4, 4));
        assert!(looping(&[7, 7, 7, 7], 1, 4));
        assert!(!looping(&[1, 2], 3, 4));
    }
}
