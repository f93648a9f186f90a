//! G.711 μ-law and A-law (ITU-T G.711), bit-exact with the classic Sun
//! `g711.c` as used by CPython's `audioop` (`lin2ulaw`, `lin2alaw`,
//! `ulaw2lin`, `alaw2lin`) for 16-bit samples.
//!
//! Decoding is a 256-entry table built at compile time from the reference
//! algorithm. Encoding finds the segment with `leading_zeros` instead of the
//! reference's linear table search; the unit tests check every one of the
//! 65 536 inputs against a literal port of the reference.

/// μ-law code for silence (linear 0 encodes to positive zero).
pub const ULAW_SILENCE: u8 = 0xFF;
/// A-law code for silence (linear 0 encodes to +8, the smallest positive step).
pub const ALAW_SILENCE: u8 = 0xD5;

/// μ-law bias (0x84 in 16-bit terms, 33 in the 14-bit domain the encoder uses).
const ULAW_BIAS: i32 = 0x84;
/// Largest 14-bit magnitude the μ-law encoder represents before clipping.
const ULAW_CLIP: i32 = 8159;

const fn ulaw_to_linear(code: u8) -> i16 {
    let u = !code;
    let mut t = (((u & 0x0F) as i32) << 3) + ULAW_BIAS;
    t <<= (u & 0x70) >> 4;
    (if u & 0x80 != 0 { ULAW_BIAS - t } else { t - ULAW_BIAS }) as i16
}

const fn alaw_to_linear(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

const fn build_table(alaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = if alaw { alaw_to_linear(i as u8) } else { ulaw_to_linear(i as u8) };
        i += 1;
    }
    table
}

static ULAW_DECODE: [i16; 256] = build_table(false);
static ALAW_DECODE: [i16; 256] = build_table(true);

/// Encode one 16-bit sample to μ-law.
#[inline]
pub fn ulaw_encode(s: i16) -> u8 {
    // The reference works on 14 bits: arithmetic shift, then sign/magnitude.
    let s = i32::from(s) >> 2;
    let (mag, mask) = if s < 0 { (-s, 0x7F) } else { (s, 0xFF) };
    // Clip and bias. The reference returns 0x7F^mask when the biased value
    // reaches segment 8 (only 8192 = 8159 + 33); clamping to 0x1FFF gives
    // segment 7 with all quantisation bits set, which is the same code.
    let v = (mag.min(ULAW_CLIP) + (ULAW_BIAS >> 2)).min(0x1FFF) as u32;
    // Segment = how far the top bit sits above bit 5 (values <= 0x3F are segment 0).
    let seg = (32 - v.leading_zeros()).saturating_sub(6);
    let code = (seg << 4) | ((v >> (seg + 1)) & 0x0F);
    (code as u8) ^ mask
}

/// Decode one μ-law code to a 16-bit sample.
#[inline]
pub fn ulaw_decode(b: u8) -> i16 {
    ULAW_DECODE[usize::from(b)]
}

/// Encode one 16-bit sample to A-law.
#[inline]
pub fn alaw_encode(s: i16) -> u8 {
    // The reference works on 13 bits; negatives use one's complement magnitude
    // (-s - 1) so that the range is symmetric (0..=4095 on both sides).
    let s = i32::from(s) >> 3;
    let (mag, mask) = if s >= 0 { (s, 0xD5) } else { (-s - 1, 0x55) };
    let v = mag as u32; // 0..=4095, always within segment 7
                        // Segment = how far the top bit sits above bit 4 (values <= 0x1F are segment 0).
    let seg = (32 - v.leading_zeros()).saturating_sub(5);
    let shift = if seg < 2 { 1 } else { seg };
    let code = (seg << 4) | ((v >> shift) & 0x0F);
    (code as u8) ^ mask
}

/// Decode one A-law code to a 16-bit sample.
#[inline]
pub fn alaw_decode(b: u8) -> i16 {
    ALAW_DECODE[usize::from(b)]
}

/// Append the μ-law encoding of `pcm` to `out`.
pub fn encode_ulaw(pcm: &[i16], out: &mut Vec<u8>) {
    out.extend(pcm.iter().map(|&s| ulaw_encode(s)));
}

/// Append the decoded samples of μ-law `data` to `out`.
pub fn decode_ulaw(data: &[u8], out: &mut Vec<i16>) {
    out.extend(data.iter().map(|&b| ulaw_decode(b)));
}

/// Append the A-law encoding of `pcm` to `out`.
pub fn encode_alaw(pcm: &[i16], out: &mut Vec<u8>) {
    out.extend(pcm.iter().map(|&s| alaw_encode(s)));
}

/// Append the decoded samples of A-law `data` to `out`.
pub fn decode_alaw(data: &[u8], out: &mut Vec<i16>) {
    out.extend(data.iter().map(|&b| alaw_decode(b)));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Literal port of the reference `lin2ulaw` (linear segment search).
    fn ref_lin2ulaw(s: i16) -> u8 {
        let mut s = i32::from(s) >> 2;
        let mask: i32;
        if s < 0 {
            s = -s;
            mask = 0x7F;
        } else {
            mask = 0xFF;
        }
        s = s.min(8159) + 33;
        let ends = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
        let mut seg = 0;
        while seg < 8 && s > ends[seg] {
            seg += 1;
        }
        if seg >= 8 {
            return (0x7F ^ mask) as u8;
        }
        (((seg << 4) as i32 | ((s >> (seg + 1)) & 0xF)) ^ mask) as u8
    }

    /// Literal port of the reference `lin2alaw` (Sun `linear2alaw` on `s >> 3`).
    fn ref_lin2alaw(s: i16) -> u8 {
        let mut s = i32::from(s) >> 3;
        let mask;
        if s >= 0 {
            mask = 0xD5;
        } else {
            mask = 0x55;
            s = -s - 1;
        }
        let ends = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
        let mut seg = 0;
        while seg < 8 && s > ends[seg] {
            seg += 1;
        }
        if seg >= 8 {
            return (0x7F ^ mask) as u8;
        }
        let mut a = (seg << 4) as i32;
        a |= if seg < 2 { (s >> 1) & 0xF } else { (s >> seg) & 0xF };
        (a ^ mask) as u8
    }

    #[test]
    fn encoders_match_reference_for_every_input() {
        for s in i16::MIN..=i16::MAX {
            assert_eq!(ulaw_encode(s), ref_lin2ulaw(s), "ulaw {s}");
            assert_eq!(alaw_encode(s), ref_lin2alaw(s), "alaw {s}");
        }
    }

    #[test]
    fn known_vectors() {
        // Values checked against CPython 3.11 audioop.
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(-1), 0x7E); // -1 >> 2 == -1: smallest negative step, not zero
        assert_eq!(ulaw_decode(0x7E), -8);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_encode(1000), 0xCE);
        assert_eq!(ulaw_encode(-1000), 0x4E);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        assert_eq!(alaw_encode(1000), 0xFA);
        assert_eq!(alaw_encode(-1000), 0x7A);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0xCE), 988);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_decode(0xFA), 1008);
        assert_eq!(ULAW_SILENCE, ulaw_encode(0));
        assert_eq!(ALAW_SILENCE, alaw_encode(0));
    }

    #[test]
    fn decode_tables_checksum() {
        // Position-weighted sums over all 256 decoded values, computed with
        // CPython 3.11 audioop.ulaw2lin / alaw2lin.
        let weighted = |t: &[i16; 256]| t.iter().enumerate().map(|(i, &v)| (i as i64 + 1) * i64::from(v)).sum::<i64>();
        let abs_sum = |t: &[i16; 256]| t.iter().map(|&v| i64::from(v).abs()).sum::<i64>();
        assert_eq!(weighted(&ULAW_DECODE), 98_107_392);
        assert_eq!(weighted(&ALAW_DECODE), 100_139_008);
        assert_eq!(abs_sum(&ULAW_DECODE), 1_532_928);
        assert_eq!(abs_sum(&ALAW_DECODE), 1_564_672);
        // Symmetry: code with the sign bit flipped decodes to the negation.
        for b in 0..=255u8 {
            assert_eq!(ulaw_decode(b), -ulaw_decode(b ^ 0x80));
            assert_eq!(alaw_decode(b), -alaw_decode(b ^ 0x80));
        }
    }

    #[test]
    fn ulaw_code_round_trip() {
        // Every code survives decode->encode except negative zero (0x7F),
        // which decodes to 0 and re-encodes as positive zero (0xFF).
        for b in 0..=255u8 {
            let back = ulaw_encode(ulaw_decode(b));
            if b == 0x7F {
                assert_eq!(back, 0xFF);
            } else {
                assert_eq!(back, b, "code {b:#04x}");
            }
        }
    }

    #[test]
    fn alaw_code_round_trip() {
        // A-law has no zero code (±8 are the smallest steps), so all 256 survive.
        for b in 0..=255u8 {
            assert_eq!(alaw_encode(alaw_decode(b)), b, "code {b:#04x}");
        }
    }

    #[test]
    fn ulaw_error_bounds_per_segment() {
        // Segment k of the μ-law curve has a 16-bit step of 8 << k; the
        // reconstruction sits mid-step, so the error is at most half a step
        // plus 3 (the encoder drops the two low bits before quantising).
        // Inputs beyond the outermost level (±32124) are measured against it.
        let mut worst = [0i32; 8];
        for s in i16::MIN..=i16::MAX {
            let code = ulaw_encode(s);
            let seg = usize::from((!code & 0x70) >> 4);
            let err = (i32::from(s).clamp(-32124, 32124) - i32::from(ulaw_decode(code))).abs();
            assert!(err <= (4 << seg) + 3, "s={s} seg={seg} err={err}");
            worst[seg] = worst[seg].max(err);
        }
        // The bounds are tight (CPython audioop gives the same maxima).
        assert_eq!(worst, [7, 11, 19, 35, 67, 131, 259, 515]);
    }

    #[test]
    fn alaw_error_bounds_per_segment() {
        // A-law segments 0 and 1 share a 16-bit step of 16; segment k >= 2 has
        // 16 << (k - 1). Reconstruction is mid-step: error <= half a step.
        // Inputs beyond the outermost level (±32256) are measured against it.
        let mut worst = [0i32; 8];
        for s in i16::MIN..=i16::MAX {
            let code = alaw_encode(s);
            let seg = usize::from(((code ^ 0x55) & 0x70) >> 4);
            let err = (i32::from(s).clamp(-32256, 32256) - i32::from(alaw_decode(code))).abs();
            let half_step = if seg < 2 { 8 } else { 8 << (seg - 1) };
            assert!(err <= half_step, "s={s} seg={seg} err={err}");
            worst[seg] = worst[seg].max(err);
        }
        assert_eq!(worst, [8, 8, 16, 32, 64, 128, 256, 512]);
    }

    #[test]
    fn slice_helpers_append() {
        let pcm = [0i16, 1000, -1000, i16::MAX, i16::MIN];
        let mut u = vec![0x11];
        encode_ulaw(&pcm, &mut u);
        assert_eq!(u, [0x11, 0xFF, 0xCE, 0x4E, 0x80, 0x00]);
        let mut back = vec![7];
        decode_ulaw(&u[1..], &mut back);
        assert_eq!(back.len(), 6);
        assert_eq!(back[0], 7);
        let mut a = Vec::new();
        encode_alaw(&pcm, &mut a);
        assert_eq!(a, [0xD5, 0xFA, 0x7A, 0xAA, 0x2A]);
        let mut back = Vec::new();
        decode_alaw(&a, &mut back);
        assert_eq!(back, [8, 1008, -1008, 32256, -32256]);
    }
}
