//! Choosing the next token from one step's logits: greedy at temperature 0,
//! otherwise temperature, top-k and top-p (nucleus) sampling with a seeded
//! generator, plus a repetition penalty on the tokens already in the reply.
//! Pure functions over a logits slice, tested without a model.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0 = greedy (deterministic).
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    /// > 1 makes tokens already in the reply less likely (1 = off).
    pub repetition_penalty: f32,
}

impl Default for Sampling {
    /// Qwen2.5-Instruct's own generation settings.
    fn default() -> Sampling {
        Sampling { temperature: 0.7, top_k: 20, top_p: 0.8, repetition_penalty: 1.05 }
    }
}

pub struct Sampler {
    pub settings: Sampling,
    rng: StdRng,
}

impl Sampler {
    pub fn new(settings: Sampling, seed: u64) -> Sampler {
        Sampler { settings, rng: StdRng::seed_from_u64(seed) }
    }

    /// The next token. `banned` can never be chosen; `recent` are penalised.
    pub fn pick(&mut self, logits: &mut [f32], banned: &[u32], recent: &[u32]) -> u32 {
        for &b in banned {
            if let Some(l) = logits.get_mut(b as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        let rp = self.settings.repetition_penalty;
        if rp > 0.0 && (rp - 1.0).abs() > f32::EPSILON {
            let mut seen = std::collections::HashSet::new();
            for &t in recent {
                if seen.insert(t) {
                    if let Some(l) = logits.get_mut(t as usize) {
                        // As in HF and llama.cpp: divide positive logits, multiply negative ones.
                        *l = if *l > 0.0 { *l / rp } else { *l * rp };
                    }
                }
            }
        }
        if self.settings.temperature <= 0.0 {
            return argmax(logits);
        }
        let k = if self.settings.top_k == 0 { logits.len() } else { self.settings.top_k.min(logits.len()) };
        let mut idx: Vec<u32> = (0..logits.len() as u32).filter(|&i| logits[i as usize].is_finite()).collect();
        if idx.is_empty() {
            return argmax(logits);
        }
        let k = k.min(idx.len());
        idx.select_nth_unstable_by(k - 1, |&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        idx.truncate(k);
        idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
        let t = self.settings.temperature as f64;
        let max = logits[idx[0] as usize] as f64;
        let mut probs: Vec<f64> = idx.iter().map(|&i| ((logits[i as usize] as f64 - max) / t).exp()).collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        // Nucleus: the smallest head whose mass reaches top_p (at least one token).
        let mut mass = 0.0;
        let mut keep = probs.len();
        for (n, p) in probs.iter().enumerate() {
            mass += p;
            if mass >= self.settings.top_p as f64 {
                keep = n + 1;
                break;
            }
        }
        let total: f64 = probs[..keep].iter().sum();
        let mut r = self.rng.random::<f64>() * total;
        for (n, p) in probs[..keep].iter().enumerate() {
            if r < *p {
                return idx[n];
            }
            r -= p;
        }
        idx[keep - 1]
    }
}

/// Highest logit; ties go to the lowest id.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_bans_and_penalty() {
        let mut s = Sampler::new(Sampling { temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0 }, 1);
        assert_eq!(s.pick(&mut [0.0, 3.0, 2.0], &[], &[]), 1);
        assert_eq!(s.pick(&mut [0.0, 3.0, 2.0], &[1], &[]), 2);
        let mut p = Sampler::new(Sampling { temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 2.0 }, 1);
        assert_eq!(p.pick(&mut [0.0, 3.0, 2.0], &[], &[1]), 2, "3/2 < 2");
    }

    #[test]
    fn sampling_stays_in_the_nucleus_and_is_seeded() {
        let logits = [5.0f32, 4.9, 1.0, 0.5, -3.0];
        let settings = Sampling { temperature: 1.0, top_k: 4, top_p: 0.9, repetition_penalty: 1.0 };
        let draw = |seed| {
            let mut s = Sampler::new(settings, seed);
            (0..200).map(|_| s.pick(&mut logits.clone(), &[], &[])).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7), "same seed, same choices");
        // Tokens 0 and 1 hold ~97 % of the mass: top_p 0.9 keeps only them.
        assert!(a.iter().all(|&t| t <= 1), "{a:?}");
        assert!(a.contains(&0) && a.contains(&1), "both near-equal tokens are drawn");
    }
}
