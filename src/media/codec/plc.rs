//! Packet-loss concealment for G.711 at 8 kHz, after ITU-T G.711 Appendix I.
//!
//! The algorithm, as in the Appendix:
//! * keep 48.75 ms of history (3 longest pitch periods + ¼ period of overlap);
//! * at the start of a loss, find the pitch (40–120 samples, 200–66 Hz) by
//!   normalised cross-correlation of the last 20 ms against the history, a
//!   coarse search on every other sample refined around the best lag;
//! * replay the last pitch period, cross-fading its join with ¼ period of
//!   overlap-add so the loop has no seam;
//! * after 10 ms and again after 20 ms add one more period to the replayed
//!   segment (repeating a single period for long sounds buzzy), cross-fading
//!   from the old segment into the new one;
//! * from 10 ms on, attenuate linearly by 20 % per 10 ms; silence from 60 ms;
//! * at the first good samples after a loss, overlap-add the continuing
//!   synthetic signal into them over ¼ period plus 4 ms per extra 10 ms lost.
//!
//! The Appendix delays its output by 3.75 ms ([`DELAY`] samples) so the
//! last real samples before a loss can still be cross-faded into the
//! synthetic signal; we do the same.
//!
//! Generalisations: the Appendix works on 10 ms frames; here good and lost
//! spans may have any length. The loss schedule runs per sample (same
//! result as the Appendix for 10 ms frames), and the closing overlap-add is
//! cut short if the first good span is shorter than it.

/// 10 ms at 8 kHz: the unit of the loss schedule.
const FRAME: usize = 80;
const PITCH_MIN: usize = 40;
const PITCH_MAX: usize = 120;
const PITCH_DIFF: usize = PITCH_MAX - PITCH_MIN;
const OVERLAP_MAX: usize = PITCH_MAX / 4;
/// 390 samples = 48.75 ms.
const HISTORY: usize = 3 * PITCH_MAX + OVERLAP_MAX;
/// Decimation of the coarse pitch search.
const NDEC: usize = 2;
/// The 20 ms window matched against the history.
const CORR_LEN: usize = 160;
const CORR_BUF: usize = CORR_LEN + PITCH_MAX;
/// Floor for the energy normaliser, so near-silence does not divide by ~0.
const CORR_MIN_POWER: f32 = 250.0;
/// Closing overlap grows by 4 ms per extra 10 ms lost.
const END_OVERLAP_INCR: usize = 32;
/// 20 % per 10 ms.
const ATTEN_PER_SAMPLE: f32 = 0.2 / FRAME as f32;
const SILENT_AFTER: usize = 6 * FRAME;
/// Ring buffer for the history; a power of two above `HISTORY`.
const RING: usize = 512;
const MASK: usize = RING - 1;

/// Output delay in 8 kHz samples (3.75 ms).
pub const DELAY: usize = OVERLAP_MAX;

/// Concealment state for one G.711 stream at 8 kHz.
pub struct G711Plc {
    /// The last `RING` samples of the (possibly concealed) signal; the
    /// newest `DELAY` have not been output yet.
    ring: [i16; RING],
    /// Samples written so far (wrapping); the next write goes to `w & MASK`.
    w: usize,
    /// Linear copy of the history taken when a loss starts; the replayed
    /// segment is its last `seg_len` samples.
    pitchbuf: [f32; HISTORY],
    /// The original last ¼ period before the loss, for re-blending the tail.
    lastq: [f32; OVERLAP_MAX],
    pitch: usize,
    overlap: usize,
    seg_len: usize,
    offset: usize,
    /// Samples concealed in the current loss; 0 while packets arrive.
    erased: usize,
    /// Continuation of the previous segment, faded out after a period was added.
    xfade: [f32; OVERLAP_MAX],
    xfade_len: usize,
    xfade_pos: usize,
}

impl Default for G711Plc {
    fn default() -> Self {
        Self::new()
    }
}

fn to_i16(v: f32) -> i16 {
    // `as` saturates, so loud overlaps clip rather than wrap.
    v.round() as i16
}

impl G711Plc {
    pub fn new() -> Self {
        G711Plc {
            ring: [0; RING],
            w: 0,
            pitchbuf: [0.0; HISTORY],
            lastq: [0.0; OVERLAP_MAX],
            pitch: PITCH_MAX,
            overlap: OVERLAP_MAX,
            seg_len: PITCH_MAX,
            offset: 0,
            erased: 0,
            xfade: [0.0; OVERLAP_MAX],
            xfade_len: 0,
            xfade_pos: 0,
        }
    }

    /// Received audio: replaced in place by the output, which is the input
    /// delayed by [`DELAY`] samples (smoothed into the concealment after a loss).
    pub fn good_frame(&mut self, pcm: &mut [i16]) {
        if self.erased > 0 {
            self.end_loss(pcm);
        }
        for s in pcm.iter_mut() {
            *s = self.push(*s);
        }
    }

    /// Lost audio: fill `out` with concealment (the output stream, delayed
    /// by [`DELAY`] like `good_frame`'s).
    pub fn conceal(&mut self, out: &mut [i16]) {
        for o in out.iter_mut() {
            let s = self.synth_sample();
            *o = self.push(s);
        }
    }

    /// Store `x` in the history and return the sample `DELAY` older.
    fn push(&mut self, x: i16) -> i16 {
        let y = self.ring[self.w.wrapping_sub(DELAY) & MASK];
        self.ring[self.w & MASK] = x;
        self.w = self.w.wrapping_add(1);
        y
    }

    fn synth_sample(&mut self) -> i16 {
        let t = self.erased;
        if t == 0 {
            self.start_loss();
        } else if t == FRAME || t == 2 * FRAME {
            self.add_period();
        }
        self.erased = t.saturating_add(1);
        if t >= SILENT_AFTER {
            return 0;
        }
        let mut v = self.next_raw();
        if self.xfade_pos < self.xfade_len {
            let k = (self.xfade_pos + 1) as f32 / self.xfade_len as f32;
            v = (1.0 - k) * self.xfade[self.xfade_pos] + k * v;
            self.xfade_pos += 1;
        }
        let gain = if t < FRAME { 1.0 } else { 1.0 - (t - FRAME) as f32 * ATTEN_PER_SAMPLE };
        to_i16(v * gain)
    }

    /// Next sample of the replayed segment, unattenuated.
    fn next_raw(&mut self) -> f32 {
        let v = self.pitchbuf[HISTORY - self.seg_len + self.offset];
        self.offset += 1;
        if self.offset == self.seg_len {
            self.offset = 0;
        }
        v
    }

    fn start_loss(&mut self) {
        for (i, p) in self.pitchbuf.iter_mut().enumerate() {
            *p = f32::from(self.ring[self.w.wrapping_sub(HISTORY - i) & MASK]);
        }
        self.pitch = self.find_pitch();
        self.overlap = self.pitch / 4;
        let ov = self.overlap;
        self.lastq[..ov].copy_from_slice(&self.pitchbuf[HISTORY - ov..]);
        self.offset = 0;
        self.seg_len = self.pitch;
        self.xfade_len = 0;
        self.xfade_pos = 0;
        self.blend_tail();
        // The blended tail is still inside the output delay: replace the
        // real samples there so the played signal flows into the loop.
        for i in 0..ov {
            self.ring[self.w.wrapping_sub(ov - i) & MASK] = to_i16(self.pitchbuf[HISTORY - ov + i]);
        }
    }

    /// Lengthen the replayed segment by one period (at 10 and 20 ms).
    fn add_period(&mut self) {
        let saved = self.offset;
        for i in 0..self.overlap {
            self.xfade[i] = self.next_raw();
        }
        self.xfade_len = self.overlap;
        self.xfade_pos = 0;
        // Same phase, one period earlier in the history.
        self.offset = saved;
        while self.offset > self.pitch {
            self.offset -= self.pitch;
        }
        self.seg_len += self.pitch;
        self.blend_tail();
    }

    /// Cross-fade the history's last ¼ period (the original `lastq`) into
    /// the ¼ period just before the segment start, so that looping from the
    /// end of the segment to its start is seamless.
    fn blend_tail(&mut self) {
        let ov = self.overlap;
        let start = HISTORY - self.seg_len;
        for i in 0..ov {
            let k = (i + 1) as f32 / ov as f32;
            let v = (1.0 - k) * self.lastq[i] + k * self.pitchbuf[start - ov + i];
            self.pitchbuf[HISTORY - ov + i] = v.clamp(-32768.0, 32767.0);
        }
    }

    /// First good samples after a loss: fade the continuing synthetic
    /// signal out and the real one in, instead of switching abruptly.
    fn end_loss(&mut self, pcm: &mut [i16]) {
        let frames = self.erased.div_ceil(FRAME);
        let len = (self.overlap + (frames - 1).saturating_mul(END_OVERLAP_INCR)).min(FRAME).min(pcm.len());
        // The synthetic signal's gain where the loss stopped (0 after 60 ms,
        // when this becomes a plain fade-in from silence).
        let gain = (1.0 - (frames - 1) as f32 * 0.2).max(0.0);
        for (i, s) in pcm.iter_mut().take(len).enumerate() {
            let k = (i + 1) as f32 / len as f32;
            let f = self.next_raw();
            *s = to_i16(gain * (1.0 - k) * f + k * f32::from(*s));
        }
        self.erased = 0;
        self.xfade_len = 0;
    }

    /// Pitch period in samples (40–120): the lag that maximises the
    /// correlation of the last 20 ms with the history, normalised by the
    /// energy of the history segment.
    fn find_pitch(&self) -> usize {
        let l = &self.pitchbuf[HISTORY - CORR_LEN..];
        let r = &self.pitchbuf[HISTORY - CORR_BUF..];
        let score = |j: usize, step: usize| -> f32 {
            let (mut energy, mut corr) = (0.0f32, 0.0f32);
            for i in (0..CORR_LEN).step_by(step) {
                energy += r[j + i] * r[j + i];
                corr += r[j + i] * l[i];
            }
            corr / energy.max(CORR_MIN_POWER).sqrt()
        };
        // Coarse search on every other sample and lag.
        let mut best = 0;
        let mut best_corr = score(0, NDEC);
        for j in (NDEC..=PITCH_DIFF).step_by(NDEC) {
            let c = score(j, NDEC);
            if c >= best_corr {
                best_corr = c;
                best = j;
            }
        }
        // Full-resolution refinement around the coarse winner.
        let lo = best.saturating_sub(NDEC - 1);
        let hi = (best + NDEC - 1).min(PITCH_DIFF);
        let mut fine = lo;
        let mut fine_corr = score(lo, 1);
        for j in lo + 1..=hi {
            let c = score(j, 1);
            if c > fine_corr {
                fine_corr = c;
                fine = j;
            }
        }
        PITCH_MAX - fine
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    /// A vowel-like signal: fundamental `f0` with 10 harmonics falling 6 dB/octave.
    fn voiced(f0: f64, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = i as f64 / 8000.0;
                let v: f64 = (1..=10).map(|k| (2.0 * PI * f0 * k as f64 * t + 0.3 * k as f64).sin() / k as f64).sum();
                (v * 5000.0).round() as i16
            })
            .collect()
    }

    /// Run `x` through the PLC in 20 ms packets, concealing those in `lost`.
    fn run(x: &[i16], lost: &[usize]) -> Vec<i16> {
        let mut plc = G711Plc::new();
        let mut out = Vec::new();
        for (k, frame) in x.chunks(160).enumerate() {
            let mut f = frame.to_vec();
            if lost.contains(&k) {
                plc.conceal(&mut f);
            } else {
                plc.good_frame(&mut f);
            }
            out.extend_from_slice(&f);
        }
        out
    }

    fn snr_db(reference: &[i16], test: &[i16]) -> f64 {
        let sig: f64 = reference.iter().map(|&v| f64::from(v).powi(2)).sum();
        let err: f64 = reference.iter().zip(test).map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2)).sum();
        10.0 * (sig / err.max(1e-9)).log10()
    }

    fn max_step(x: &[i16]) -> i32 {
        x.windows(2).map(|w| (i32::from(w[1]) - i32::from(w[0])).abs()).max().unwrap_or(0)
    }

    #[test]
    fn a_lost_20ms_of_voiced_speech_is_replaced_by_its_pitch() {
        let mut worst: f64 = f64::MAX;
        for f0 in [120.0, 137.0, 150.0, 163.0, 181.0, 200.0] {
            let x = voiced(f0, 8000);
            let y = run(&x, &[20]);
            // Output lags the input by DELAY; the gap is samples 3200..3360.
            let gap = 3200..3360;
            let out_gap = &y[gap.start + DELAY..gap.end + DELAY];
            let snr = snr_db(&x[gap.clone()], out_gap);
            worst = worst.min(snr);
            // Zero-fill scores 0 dB by definition.
            assert_eq!(snr_db(&x[gap.clone()], &[0; 160]).round(), 0.0);

            // No clicks where the loss begins or ends: no step larger than
            // the signal's own steepest, with a little room for the fades.
            let natural = max_step(&x);
            let edges = &y[gap.start + DELAY - 40..gap.end + DELAY + 120];
            assert!(max_step(edges) as f64 <= natural as f64 * 1.25, "{f0} Hz: step {} vs {natural}", max_step(edges));
            // After the recovery overlap the output is the input again.
            assert_eq!(&y[3460 + DELAY..4000], &x[3460..4000 - DELAY]);
        }
        // Measured: 10.4 dB worst (150 Hz), 12.5–21.6 dB for the others.
        assert!(worst >= 9.0, "worst SNR over the gap {worst:.1} dB");
    }

    #[test]
    fn long_losses_fade_to_silence_and_recover_without_a_click() {
        let x = voiced(140.0, 8000);
        // 100 ms lost: packets 20..25.
        let y = run(&x, &[20, 21, 22, 23, 24]);
        let start = 3200 + DELAY;
        let energy = |r: std::ops::Range<usize>| y[r].iter().map(|&v| f64::from(v).powi(2)).sum::<f64>();
        let per_10ms: Vec<f64> = (0..6).map(|k| energy(start + 80 * k..start + 80 * (k + 1))).collect();
        assert!(per_10ms.windows(2).skip(1).all(|w| w[1] < w[0]), "attenuation not monotonic: {per_10ms:?}");
        assert!(y[start + 480..start + 800].iter().all(|&v| v == 0), "not silent after 60 ms");
        // Recovery from silence is a fade-in over ¼ pitch + 4 ms per extra
        // 10 ms lost (capped at 10 ms), not a jump.
        let back = 4000 + DELAY;
        assert!(max_step(&y[back - 10..back + 80]) <= max_step(&x), "click on recovery");
        assert!(y[back].unsigned_abs() < 2000, "first recovered sample {}", y[back]);
    }

    #[test]
    fn concealment_is_independent_of_how_the_loss_is_chunked() {
        let x = voiced(150.0, 4000);
        let mut a = G711Plc::new();
        let mut b = G711Plc::new();
        let (mut ya, mut yb) = (x[..2000].to_vec(), x[..2000].to_vec());
        a.good_frame(&mut ya);
        b.good_frame(&mut yb);
        let mut ca = vec![0; 400];
        a.conceal(&mut ca);
        let mut cb = vec![0; 400];
        for c in cb.chunks_mut(7) {
            b.conceal(c);
        }
        assert_eq!(ca, cb);
    }

    #[test]
    fn silence_conceals_to_silence_and_good_audio_is_only_delayed() {
        let mut plc = G711Plc::new();
        let mut out = [123i16; 400];
        plc.conceal(&mut out);
        assert!(out.iter().all(|&v| v == 0));

        let mut plc = G711Plc::new();
        let x = voiced(120.0, 800);
        let mut y = x.clone();
        plc.good_frame(&mut y[..333]);
        plc.good_frame(&mut y[333..]);
        assert!(y[..DELAY].iter().all(|&v| v == 0));
        assert_eq!(&y[DELAY..], &x[..800 - DELAY]);
    }

    #[test]
    fn full_scale_input_does_not_overflow() {
        let x: Vec<i16> = (0..2000).map(|i| if (i / 37) % 2 == 0 { i16::MAX } else { i16::MIN }).collect();
        let mut plc = G711Plc::new();
        let mut y = x.clone();
        plc.good_frame(&mut y);
        let mut c = vec![0; 1000];
        plc.conceal(&mut c);
        let mut z = x[..500].to_vec();
        plc.good_frame(&mut z);
    }
}
