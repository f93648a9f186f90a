//! G.711 μ-law / A-law at the agent rate: 8 kHz on the wire, 16 kHz to and
//! from the agent, with Appendix I concealment at 8 kHz (where the
//! algorithm is specified) before upsampling.
//!
//! Both directions hand out exactly one packet time per call (2 samples per
//! payload byte when decoding, `ptime × 8` bytes when encoding). With packet
//! times that are multiples of 10 ms the resampler's blocks line up and no
//! buffering is needed; for other lengths a small FIFO absorbs the block
//! granularity, padding with silence once, at most one block (10 ms), the
//! first time the resampler is behind.
//!
//! Delay, decode: 30 samples of PLC look-behind (3.75 ms) + 5 ms of filter,
//! 140 samples at 16 kHz; encode: 5 ms of filter.

use super::plc::{self, G711Plc};
use super::{CodecError, CodecKind, Decoder, Encoder};
use crate::media::g711 as law;
use crate::media::resample::Resampler;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    Mu,
    A,
}

const WIRE_RATE: u32 = 8000;
const AGENT_RATE: u32 = super::AGENT_RATE;
/// Longest packet time accepted for encoding (RFC 3551 senders use ≤ 200 ms).
const MAX_PTIME_MS: u32 = 200;

/// Output FIFO that always yields the requested number of samples.
#[derive(Default)]
struct Fifo {
    buf: Vec<i16>,
}

impl Fifo {
    /// Move exactly `n` samples to `out`. If the resampler has not produced
    /// enough yet, silence goes first: the stream is delayed from here on,
    /// and the surplus that builds up means it never happens twice.
    fn take(&mut self, n: usize, out: &mut Vec<i16>) {
        if self.buf.len() < n {
            out.resize(out.len() + n - self.buf.len(), 0);
            out.append(&mut self.buf);
        } else {
            out.extend(self.buf.drain(..n));
        }
    }
}

pub struct G711Decoder {
    law: Law,
    plc: G711Plc,
    up: Resampler,
    pcm8: Vec<i16>,
    ready: Fifo,
    /// 16 kHz samples asked for and 8 kHz samples generated: concealment of
    /// an odd sample count rounds, and these keep the rounding from drifting.
    asked_16k: u64,
    made_8k: u64,
}

impl G711Decoder {
    pub fn new(law: Law) -> Result<Self, CodecError> {
        Ok(G711Decoder {
            law,
            plc: G711Plc::new(),
            up: Resampler::new(WIRE_RATE, AGENT_RATE)?,
            pcm8: Vec::with_capacity(480),
            ready: Fifo { buf: Vec::with_capacity(640) },
            asked_16k: 0,
            made_8k: 0,
        })
    }

    /// Delay from wire to output, in 16 kHz samples.
    pub fn delay(&self) -> usize {
        2 * plc::DELAY + self.up.delay()
    }

    fn finish(&mut self, n16: usize, out: &mut Vec<i16>) {
        self.up.process(&self.pcm8, &mut self.ready.buf);
        self.made_8k += self.pcm8.len() as u64;
        self.asked_16k += n16 as u64;
        self.ready.take(n16, out);
    }
}

impl Decoder for G711Decoder {
    /// Every byte is a valid sample, so this never fails.
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError> {
        self.pcm8.clear();
        match self.law {
            Law::Mu => law::decode_ulaw(payload, &mut self.pcm8),
            Law::A => law::decode_alaw(payload, &mut self.pcm8),
        }
        self.plc.good_frame(&mut self.pcm8);
        self.finish(2 * payload.len(), out);
        Ok(())
    }

    fn conceal(&mut self, samples_16k: usize, _next: Option<&[u8]>, out: &mut Vec<i16>) {
        let want_8k = (self.asked_16k + samples_16k as u64).div_ceil(2);
        let n8 = want_8k.saturating_sub(self.made_8k) as usize;
        self.pcm8.clear();
        self.pcm8.resize(n8, 0);
        self.plc.conceal(&mut self.pcm8);
        self.finish(samples_16k, out);
    }

    fn clock_rate(&self) -> u32 {
        WIRE_RATE
    }
}

pub struct G711Encoder {
    law: Law,
    down: Resampler,
    frame_16k: usize,
    frame_8k: usize,
    ready: Fifo,
    pcm8: Vec<i16>,
}

impl G711Encoder {
    pub fn new(law: Law, ptime_ms: u32) -> Result<Self, CodecError> {
        if ptime_ms == 0 || ptime_ms > MAX_PTIME_MS {
            let kind = if law == Law::Mu { CodecKind::Pcmu } else { CodecKind::Pcma };
            return Err(CodecError::UnsupportedPtime { kind, ptime_ms });
        }
        let frame_8k = (WIRE_RATE * ptime_ms / 1000) as usize;
        Ok(G711Encoder {
            law,
            down: Resampler::new(AGENT_RATE, WIRE_RATE)?,
            frame_16k: 2 * frame_8k,
            frame_8k,
            ready: Fifo { buf: Vec::with_capacity(2 * frame_8k) },
            pcm8: Vec::with_capacity(frame_8k),
        })
    }

    /// Delay from input to wire, in 16 kHz samples.
    pub fn delay(&self) -> usize {
        2 * self.down.delay()
    }
}

impl Encoder for G711Encoder {
    fn encode(&mut self, pcm_16k: &[i16], out: &mut Vec<u8>) -> Result<(), CodecError> {
        if pcm_16k.len() != self.frame_16k {
            return Err(CodecError::FrameSize { expected: self.frame_16k, got: pcm_16k.len() });
        }
        self.down.process(pcm_16k, &mut self.ready.buf);
        self.pcm8.clear();
        self.ready.take(self.frame_8k, &mut self.pcm8);
        match self.law {
            Law::Mu => law::encode_ulaw(&self.pcm8, out),
            Law::A => law::encode_alaw(&self.pcm8, out),
        }
        Ok(())
    }

    fn clock_rate(&self) -> u32 {
        WIRE_RATE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn tone(freq: f64, rate: f64, n: usize) -> Vec<i16> {
        (0..n).map(|i| (8000.0 * (2.0 * PI * freq * i as f64 / rate).sin()).round() as i16).collect()
    }

    #[test]
    fn round_trip_through_the_wire_keeps_a_tone() {
        for l in [Law::Mu, Law::A] {
            let mut enc = G711Encoder::new(l, 20).unwrap();
            let mut dec = G711Decoder::new(l).unwrap();
            let x = tone(440.0, 16000.0, 16000);
            let (mut wire, mut y) = (Vec::new(), Vec::new());
            for f in x.chunks(320) {
                wire.clear();
                enc.encode(f, &mut wire).unwrap();
                assert_eq!(wire.len(), 160);
                dec.decode(&wire, &mut y).unwrap();
            }
            assert_eq!(y.len(), x.len());
            let d = enc.delay() + dec.delay();
            assert_eq!(d, 40 * 2 + 140);
            let (mut sig, mut err) = (0.0, 0.0);
            for i in 1000..15000 - d {
                sig += f64::from(x[i]).powi(2);
                err += (f64::from(y[i + d]) - f64::from(x[i])).powi(2);
            }
            let snr = 10.0 * (sig / err).log10();
            // G.711's own SNR is ≈ 38 dB; resampling adds nothing measurable.
            assert!(snr > 33.0, "{l:?}: {snr:.1} dB");
        }
    }

    #[test]
    fn concealment_yields_exactly_what_is_asked() {
        let mut dec = G711Decoder::new(Law::Mu).unwrap();
        let mut y = Vec::new();
        dec.decode(&[0x80; 160], &mut y).unwrap();
        for n in [320, 1, 3, 160, 0, 7] {
            let before = y.len();
            dec.conceal(n, None, &mut y);
            assert_eq!(y.len() - before, n);
        }
        dec.decode(&[0xFF; 160], &mut y).unwrap();
        assert_eq!(y.len(), 320 + 320 + 1 + 3 + 160 + 7 + 320);
    }

    #[test]
    fn odd_packet_times_still_give_one_packet_per_call() {
        let mut enc = G711Encoder::new(Law::A, 5).unwrap();
        let mut dec = G711Decoder::new(Law::A).unwrap();
        let (mut wire, mut y) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            wire.clear();
            enc.encode(&[500; 80], &mut wire).unwrap();
            assert_eq!(wire.len(), 40);
            let before = y.len();
            dec.decode(&wire, &mut y).unwrap();
            assert_eq!(y.len() - before, 80);
        }
        assert!(G711Encoder::new(Law::Mu, 201).is_err());
    }

    #[test]
    fn a_lost_packet_is_concealed_not_zeroed() {
        let x = tone(150.0, 8000.0, 4000);
        let mut wire = Vec::new();
        law::encode_ulaw(&x, &mut wire);
        let mut dec = G711Decoder::new(Law::Mu).unwrap();
        let mut y = Vec::new();
        for (k, p) in wire.chunks(160).enumerate() {
            if k == 10 {
                dec.conceal(320, None, &mut y);
            } else {
                dec.decode(p, &mut y).unwrap();
            }
        }
        let gap = &y[3200 + dec.delay()..3520 + dec.delay()];
        let rms = (gap.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / 320.0).sqrt();
        assert!(rms > 3000.0, "concealment rms {rms:.0}");
    }
}
