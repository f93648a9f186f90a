//! Whisper log-mel front end (as `transformers.WhisperFeatureExtractor` and
//! pipecat's numpy port `_whisper_features.py` compute it), for Smart Turn
//! (8 s, 800 frames, normalised waveform) and Whisper ASR (30 s, 3000 frames).
//!
//! The input is padded with zeros at the end (or truncated to its head) to
//! `frames * 160` samples, optionally normalised to zero mean and unit
//! variance (in f32, like the reference), then: reflect-padded STFT with a
//! periodic Hann window (n_fft 400, hop 160), power spectrum, 80-band
//! Slaney-normalised mel filterbank on the Slaney mel scale (0–8 kHz),
//! log10 with a 1e-10 floor, the trailing frame dropped, clamped to
//! max − 8, then `(x + 4) / 4`. All in f64 like numpy; output f32
//! `[80][frames]` (mel-major, the model's `[1, 80, frames]` layout).
//!
//! The FFT is a small mixed-radix (kissfft-style) complex FFT planned for
//! n = 400 = 4·4·5·5: no dependency needed.

pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
pub const N_MELS: usize = 80;
pub const SAMPLE_RATE: u32 = 16000;
const N_BINS: usize = N_FFT / 2 + 1;
const MEL_FLOOR: f64 = 1e-10;
const NORM_EPS: f32 = 1e-7;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct C {
    re: f64,
    im: f64,
}

impl C {
    #[inline]
    fn mul(self, o: C) -> C {
        C { re: self.re * o.re - self.im * o.im, im: self.re * o.im + self.im * o.re }
    }
    #[inline]
    fn add(self, o: C) -> C {
        C { re: self.re + o.re, im: self.im + o.im }
    }
}

/// A planned complex FFT of one size (factors 2..=5 then any remainder, generic butterflies).
struct Fft {
    n: usize,
    factors: Vec<(usize, usize)>, // (p, m) per stage
    twiddles: Vec<C>,
}

impl Fft {
    fn new(n: usize) -> Fft {
        let mut factors = Vec::new();
        let mut rest = n;
        let mut p = 4;
        while rest > 1 {
            while rest % p != 0 {
                p = match p {
                    4 => 2,
                    2 => 3,
                    _ => p + 2,
                };
                if p * p > rest {
                    p = rest;
                }
            }
            rest /= p;
            factors.push((p, rest));
        }
        let twiddles = (0..n)
            .map(|i| {
                let a = -2.0 * std::f64::consts::PI * i as f64 / n as f64;
                C { re: a.cos(), im: a.sin() }
            })
            .collect();
        Fft { n, factors, twiddles }
    }

    fn run(&self, input: &[C], out: &mut [C], scratch: &mut Vec<C>) {
        debug_assert!(input.len() == self.n && out.len() == self.n);
        self.work(out, input, 0, 1, 0, scratch);
    }

    fn work(&self, out: &mut [C], f: &[C], f_off: usize, fstride: usize, stage: usize, scratch: &mut Vec<C>) {
        let (p, m) = self.factors[stage];
        if m == 1 {
            for j in 0..p {
                out[j] = f[f_off + j * fstride];
            }
        } else {
            for q in 0..p {
                self.work(&mut out[q * m..(q + 1) * m], f, f_off + q * fstride, fstride * p, stage + 1, scratch);
            }
        }
        // Generic butterfly: out[u + q1 m] = Σ_q out[u + q m] · W_N^(fstride · q · (u + q1 m)).
        scratch.clear();
        scratch.resize(p, C::default());
        for u in 0..m {
            for q1 in 0..p {
                scratch[q1] = out[u + q1 * m];
            }
            for q1 in 0..p {
                let k = u + q1 * m;
                let mut acc = scratch[0];
                let mut tw = 0;
                for s in scratch.iter().take(p).skip(1) {
                    tw += fstride * k;
                    tw %= self.n;
                    acc = acc.add(s.mul(self.twiddles[tw]));
                }
                out[k] = acc;
            }
        }
    }
}

/// One mel band's non-zero filter weights: FFT bins `start..start + w.len()`.
struct Band {
    start: usize,
    w: Vec<f64>,
}

/// numpy.linspace in f64 (the last point exactly `stop`).
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

fn hz_to_mel(f: f64) -> f64 {
    if f >= 1000.0 {
        15.0 + (f / 1000.0).ln() * (27.0 / 6.4f64.ln())
    } else {
        3.0 * f / 200.0
    }
}

fn mel_to_hz(m: f64) -> f64 {
    if m >= 15.0 {
        1000.0 * ((6.4f64.ln() / 27.0) * (m - 15.0)).exp()
    } else {
        200.0 * m / 3.0
    }
}

/// The Slaney-normalised triangular filterbank (`_build_mel_filterbank`), as `[band][bin]`.
pub fn mel_filterbank() -> Vec<Vec<f64>> {
    let mel = linspace(hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE as f64 / 2.0), N_MELS + 2);
    let hz: Vec<f64> = mel.iter().map(|&m| mel_to_hz(m)).collect();
    let fft_freqs = linspace(0.0, (SAMPLE_RATE / 2) as f64, N_BINS);
    (0..N_MELS)
        .map(|b| {
            let enorm = 2.0 / (hz[b + 2] - hz[b]);
            fft_freqs
                .iter()
                .map(|&f| {
                    let down = -(hz[b] - f) / (hz[b + 1] - hz[b]);
                    let up = (hz[b + 2] - f) / (hz[b + 2] - hz[b + 1]);
                    0f64.max(down.min(up)) * enorm
                })
                .collect()
        })
        .collect()
}

/// The front end for a fixed number of output frames (800 for 8 s, 3000 for 30 s).
pub struct LogMel {
    frames: usize,
    window: Vec<f64>,
    bands: Vec<Band>,
    fft: Fft,
}

impl LogMel {
    pub fn new(frames: usize) -> LogMel {
        assert!(frames > 0);
        // Periodic Hann: np.hanning(N + 1)[:-1] = 0.5 − 0.5 cos(2π i / N).
        let window =
            (0..N_FFT).map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos()).collect();
        let bands = mel_filterbank()
            .into_iter()
            .map(|row| {
                let start = row.iter().position(|&w| w != 0.0).unwrap_or(0);
                let end = row.iter().rposition(|&w| w != 0.0).map_or(start, |e| e + 1);
                Band { start, w: row[start..end].to_vec() }
            })
            .collect();
        LogMel { frames, window, bands, fft: Fft::new(N_FFT) }
    }

    /// Output frames (the model's time axis).
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Samples the features cover: `frames * 160`.
    pub fn samples(&self) -> usize {
        self.frames * HOP
    }

    /// Log-mel features `[80][frames]` of `audio` (16 kHz; zero-padded at the
    /// end or truncated to `samples()`), normalised first when `normalize`.
    pub fn compute(&self, audio: &[f32], normalize: bool) -> Vec<f32> {
        self.compute_frames(audio, normalize, self.frames)
    }

    /// As `compute`, for `frames` frames instead of the planned number (Whisper's
    /// window fitted to the audio). The clamp at max − 8 takes the maximum over
    /// the output, and zero padding only adds frames at the floor (−10 before
    /// the clamp), so while the audio ends more than `N_FFT / 2` samples before
    /// `frames * 160` the result is exactly the first `frames` columns of any
    /// longer window's (the 30 s one included) — without `normalize`, whose
    /// mean and variance take the padding in.
    pub fn compute_frames(&self, audio: &[f32], normalize: bool, frames: usize) -> Vec<f32> {
        assert!(frames > 0);
        let n = frames * HOP;
        let mut x: Vec<f32> = audio.iter().copied().take(n).collect();
        x.resize(n, 0.0);
        if normalize {
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            let (mean, sd) = (mean as f32, (var as f32 + NORM_EPS).sqrt());
            for v in &mut x {
                *v = (*v - mean) / sd;
            }
        }
        // Reflect padding by N_FFT/2 on both sides (numpy "reflect": the edge sample not repeated).
        let pad = N_FFT / 2;
        let mut padded = Vec::with_capacity(n + 2 * pad);
        padded.extend((1..=pad).rev().map(|i| x[i.min(n - 1)] as f64));
        padded.extend(x.iter().map(|&v| v as f64));
        padded.extend((0..pad).map(|i| x[n.saturating_sub(2 + i)] as f64));

        // 1 + n / HOP frames of STFT; the last is dropped.
        let mut out = vec![0f64; N_MELS * frames];
        let mut buf = vec![C::default(); N_FFT];
        let mut spec = vec![C::default(); N_FFT];
        let mut power = vec![0f64; N_BINS];
        let mut scratch = Vec::new();
        for t in 0..frames {
            let s = &padded[t * HOP..t * HOP + N_FFT];
            for i in 0..N_FFT {
                buf[i] = C { re: s[i] * self.window[i], im: 0.0 };
            }
            self.fft.run(&buf, &mut spec, &mut scratch);
            for k in 0..N_BINS {
                power[k] = spec[k].re * spec[k].re + spec[k].im * spec[k].im;
            }
            for (b, band) in self.bands.iter().enumerate() {
                let e: f64 = band.w.iter().zip(&power[band.start..]).map(|(w, p)| w * p).sum();
                out[b * frames + t] = e.max(MEL_FLOOR).log10();
            }
        }
        let max = out.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        out.iter().map(|&v| ((v.max(max - 8.0) + 4.0) / 4.0) as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_dft(x: &[C]) -> Vec<C> {
        let n = x.len();
        (0..n)
            .map(|k| {
                x.iter().enumerate().fold(C::default(), |acc, (j, v)| {
                    let a = -2.0 * std::f64::consts::PI * ((j * k) % n) as f64 / n as f64;
                    acc.add(v.mul(C { re: a.cos(), im: a.sin() }))
                })
            })
            .collect()
    }

    #[test]
    fn fft_matches_a_direct_dft() {
        for n in [400, 16, 30, 7, 3000] {
            let x: Vec<C> =
                (0..n).map(|i| C { re: ((i * 37 % 11) as f64 - 5.0) / 3.0, im: ((i * 13 % 7) as f64) / 5.0 }).collect();
            let fft = Fft::new(n);
            let mut out = vec![C::default(); n];
            fft.run(&x, &mut out, &mut Vec::new());
            for (a, b) in out.iter().zip(naive_dft(&x)) {
                assert!((a.re - b.re).abs() < 1e-9 && (a.im - b.im).abs() < 1e-9, "n={n}: {a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn filterbank_is_slaney_normalised() {
        let fb = mel_filterbank();
        assert_eq!((fb.len(), fb[0].len()), (80, 201));
        // Every band has weight; triangle areas (in Hz) are ~1 by Slaney normalisation.
        for row in &fb {
            assert!(row.iter().any(|&w| w > 0.0));
            let area: f64 = row.iter().sum::<f64>() * 40.0;
            assert!((0.5..1.5).contains(&area), "{area}");
        }
    }

    #[test]
    fn silence_and_shape() {
        let m = LogMel::new(800);
        let f = m.compute(&[], true);
        assert_eq!(f.len(), 80 * 800);
        // All-zero input: every value is the floor, log10(1e-10) = −10 → (−10 + 4) / 4.
        assert!(f.iter().all(|&v| (v - -1.5).abs() < 1e-6));
        let tone: Vec<f32> =
            (0..16000).map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16000.0).sin() * 0.1).collect();
        let f = LogMel::new(100).compute(&tone, false);
        // The loudest band in a frame of a 1 kHz tone is the one around 1 kHz (Slaney mel 15 → band ~28).
        let col: Vec<f32> = (0..80).map(|b| f[b * 100 + 50]).collect();
        let best = col.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert!((25..=31).contains(&best), "{best}");
    }

    #[test]
    fn a_shorter_window_is_the_head_of_the_longer_one() {
        // 2.5 s of a tone that changes: fitted to 400 frames (4 s) it must equal the first 400
        // columns of the 3000-frame window (same maximum, so the same max − 8 clamp).
        let audio: Vec<f32> = (0..40_000).map(|i| (i as f32 * (0.05 + i as f32 * 1e-6)).sin() * 0.3).collect();
        let m = LogMel::new(3000);
        let full = m.compute(&audio, false);
        let fitted = m.compute_frames(&audio, false, 400);
        assert_eq!(fitted.len(), 80 * 400);
        for b in 0..80 {
            assert_eq!(&fitted[b * 400..(b + 1) * 400], &full[b * 3000..b * 3000 + 400], "band {b}");
        }
        // The padding clamps to max − 8 in both, i.e. (max − 8 + 4) / 4.
        let max = full.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert!((fitted[399] - (max - 2.0)).abs() < 1e-5, "{} vs {}", fitted[399], max - 2.0);
    }
}
