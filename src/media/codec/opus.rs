//! Opus through libopus (Debian's, via audiopus), run at the agent rate:
//! the decoder outputs 16 kHz mono (libopus decodes any packet natively to
//! 8/12/16/24/48 kHz and downmixes stereo), the encoder takes 16 kHz mono.
//! The RTP clock stays 48 kHz (RFC 7587): 960 ticks per 20 ms.
//!
//! Loss: with the next packet at hand and carrying in-band FEC (LBRR), the
//! lost frame is decoded from it; otherwise libopus's own PLC runs. A
//! corrupt packet is an error, and the caller conceals it instead.

use super::{CodecError, CodecKind, Decoder, Encoder, OpusParams, AGENT_RATE};
use audiopus::coder::{Decoder as RawDecoder, Encoder as RawEncoder};
use audiopus::packet::Packet;
use audiopus::{Application, Bitrate, Channels, MutSignals, SampleRate, Signal};

const CLOCK_RATE: u32 = 48_000;
/// Longest Opus packet: 120 ms at 16 kHz.
const MAX_PACKET_SAMPLES: usize = 1920;
/// libopus conceals in multiples of 2.5 ms (40 samples at 16 kHz).
const PLC_STEP: usize = 40;
/// The encoder's output buffer; libopus's recommended maximum packet.
const MAX_PAYLOAD: usize = 4000;

fn opus_err(e: audiopus::Error) -> CodecError {
    CodecError::Opus(e)
}

pub struct OpusDecoder {
    dec: RawDecoder,
    scratch: Vec<i16>,
    /// Concealment samples libopus produced beyond what was asked (it works
    /// in 2.5 ms steps); they are handed out first next time, so the output
    /// is libopus's stream, never cut.
    carry: Vec<i16>,
    fec_recoveries: u64,
}

impl OpusDecoder {
    pub fn new() -> Result<Self, CodecError> {
        Ok(OpusDecoder {
            dec: RawDecoder::new(SampleRate::Hz16000, Channels::Mono).map_err(opus_err)?,
            scratch: vec![0; MAX_PACKET_SAMPLES],
            carry: Vec::with_capacity(PLC_STEP),
            fec_recoveries: 0,
        })
    }

    /// Lost frames rebuilt from the next packet's FEC so far.
    pub fn fec_recoveries(&self) -> u64 {
        self.fec_recoveries
    }

    /// Run libopus on `packet` (`None`: PLC) for `n` samples into the scratch.
    fn run(&mut self, packet: Option<&[u8]>, n: usize, fec: bool) -> Result<usize, CodecError> {
        let packet = match packet {
            Some(p) => Some(Packet::try_from(p).map_err(|e| CodecError::InvalidPayload(e.to_string()))?),
            None => None,
        };
        let signals = MutSignals::try_from(&mut self.scratch[..n]).map_err(opus_err)?;
        self.dec.decode(packet, signals, fec).map_err(|e| CodecError::InvalidPayload(e.to_string()))
    }

    /// `n` samples (a multiple of 2.5 ms) of libopus PLC, appended to `out`.
    fn plc(&mut self, mut n: usize, out: &mut Vec<i16>) {
        while n > 0 {
            let step = n.min(MAX_PACKET_SAMPLES);
            match self.run(None, step, false) {
                Ok(got) => out.extend_from_slice(&self.scratch[..got.min(step)]),
                // PLC with valid arguments does not fail; if it ever did,
                // silence keeps the stream the right length.
                Err(_) => out.resize(out.len() + step, 0),
            }
            n -= step;
        }
    }
}

impl Decoder for OpusDecoder {
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError> {
        if payload.is_empty() {
            // libopus would treat an empty packet as a loss; for us it is a
            // broken packet, and the caller decides how to conceal it.
            return Err(CodecError::InvalidPayload("empty payload".into()));
        }
        let n = self.run(Some(payload), MAX_PACKET_SAMPLES, false)?;
        out.append(&mut self.carry);
        out.extend_from_slice(&self.scratch[..n]);
        Ok(())
    }

    fn conceal(&mut self, samples_16k: usize, next: Option<&[u8]>, out: &mut Vec<i16>) {
        let from_carry = samples_16k.min(self.carry.len());
        out.extend(self.carry.drain(..from_carry));
        let need = samples_16k - from_carry;
        if need == 0 {
            return;
        }
        let total = need.div_ceil(PLC_STEP) * PLC_STEP;
        let start = out.len();
        // FEC rebuilds the last frame of the gap (the one just before
        // `next`); anything earlier in a longer gap is PLC.
        let fec_len =
            next.filter(|p| has_fec(p)).and_then(frame_samples_16k).filter(|&f| f <= total && f <= MAX_PACKET_SAMPLES);
        match (next, fec_len) {
            (Some(p), Some(f)) => {
                self.plc(total - f, out);
                match self.run(Some(p), f, true) {
                    Ok(got) => {
                        out.extend_from_slice(&self.scratch[..got.min(f)]);
                        self.fec_recoveries += 1;
                    }
                    Err(_) => self.plc(f, out),
                }
            }
            _ => self.plc(total, out),
        }
        // Keep the stream whole: hand out `need`, keep the rest for later.
        let end = start + need;
        if out.len() > end {
            self.carry.extend_from_slice(&out[end..]);
            out.truncate(end);
        } else {
            out.resize(end, 0);
        }
    }

    fn clock_rate(&self) -> u32 {
        CLOCK_RATE
    }
}

/// Samples per frame of `packet` at 16 kHz, from its TOC byte (RFC 6716 §3.1).
fn frame_samples_16k(packet: &[u8]) -> Option<usize> {
    let config = packet.first()? >> 3;
    // Frame sizes in units of 2.5 ms.
    let units: usize = match config {
        0..=11 => [4, 8, 16, 24][usize::from(config & 3)],
        12..=15 => [4, 8][usize::from(config & 1)],
        _ => [1, 2, 4, 8][usize::from(config & 3)],
    };
    Some(units * PLC_STEP)
}

/// Whether the packet's first frame carries LBRR (in-band FEC) data.
///
/// libopus 1.3 has no `opus_packet_has_lbrr` (1.5 does); this is the same
/// test. In SILK and hybrid frames the range coder's first symbols are the
/// per-20 ms VAD flags and then the LBRR flag, each with probability ½, so
/// they are plain bits at the top of the frame's first byte.
pub(crate) fn has_fec(packet: &[u8]) -> bool {
    let Some(&toc) = packet.first() else { return false };
    let config = toc >> 3;
    if config >= 16 {
        return false; // CELT-only frames have no LBRR
    }
    let silk_frames = match frame_samples_16k(packet) {
        Some(n) if n > 320 => n / 320,
        _ => 1,
    };
    let Some(first) = first_frame(packet) else { return false };
    let Some(&b) = first.first() else { return false };
    let mut lbrr = (b >> (7 - silk_frames)) & 1;
    if toc & 0x04 != 0 {
        // Stereo: the side channel's VAD and LBRR flags follow.
        lbrr |= (b >> (6 - 2 * silk_frames)) & 1;
    }
    lbrr == 1
}

/// The first frame of a packet (RFC 6716 §3.2), or `None` if malformed.
fn first_frame(p: &[u8]) -> Option<&[u8]> {
    // A frame length: one byte below 252, else two (RFC 6716 §3.2.1).
    fn length(p: &[u8], at: usize) -> Option<(usize, usize)> {
        let b0 = usize::from(*p.get(at)?);
        if b0 < 252 {
            Some((b0, 1))
        } else {
            Some((b0 + 4 * usize::from(*p.get(at + 1)?), 2))
        }
    }
    let toc = *p.first()?;
    match toc & 3 {
        0 => p.get(1..),
        1 => {
            let body = p.len() - 1;
            (body % 2 == 0).then(|| &p[1..1 + body / 2])
        }
        2 => {
            let (len, hdr) = length(p, 1)?;
            p.get(1 + hdr..1 + hdr + len)
        }
        _ => {
            let fc = *p.get(1)?;
            let count = usize::from(fc & 0x3F);
            if count == 0 {
                return None;
            }
            let mut pos = 2;
            let mut padding = 0usize;
            if fc & 0x40 != 0 {
                loop {
                    let b = *p.get(pos)?;
                    pos += 1;
                    padding += if b == 255 { 254 } else { usize::from(b) };
                    if b != 255 {
                        break;
                    }
                }
            }
            if fc & 0x80 != 0 && count > 1 {
                // VBR: the first frame's length is the first length field
                // (the other count-2 fields follow; the frame starts after all).
                let (len, hdr) = length(p, pos)?;
                let mut data = pos + hdr;
                for _ in 2..count {
                    let (_, h) = length(p, data)?;
                    data += h;
                }
                p.get(data..data.checked_add(len)?)
            } else {
                let body = p.len().checked_sub(pos)?.checked_sub(padding)?;
                (body % count == 0).then(|| &p[pos..pos + body / count])
            }
        }
    }
}

pub struct OpusEncoder {
    enc: RawEncoder,
    frame: usize,
    buf: Vec<u8>,
}

impl OpusEncoder {
    pub fn new(ptime_ms: u32, params: &OpusParams) -> Result<Self, CodecError> {
        // Frame sizes libopus encodes (2.5 ms is not a whole millisecond).
        if ![5, 10, 20, 40, 60, 80, 100, 120].contains(&ptime_ms) {
            return Err(CodecError::UnsupportedPtime { kind: CodecKind::Opus, ptime_ms });
        }
        if !(6_000..=510_000).contains(&params.bitrate_bps) || params.expected_loss_pct > 100 || params.complexity > 10
        {
            return Err(CodecError::InvalidParams(format!("{params:?}")));
        }
        let mut enc = RawEncoder::new(SampleRate::Hz16000, Channels::Mono, Application::Voip).map_err(opus_err)?;
        enc.set_bitrate(Bitrate::BitsPerSecond(params.bitrate_bps as i32)).map_err(opus_err)?;
        enc.set_inband_fec(params.fec).map_err(opus_err)?;
        enc.set_packet_loss_perc(params.expected_loss_pct).map_err(opus_err)?;
        enc.set_complexity(params.complexity).map_err(opus_err)?;
        // Silence must keep flowing as packets: the jitter buffer and the
        // agent expect one per packet time.
        enc.set_dtx(false).map_err(opus_err)?;
        enc.set_signal(Signal::Voice).map_err(opus_err)?;
        Ok(OpusEncoder { enc, frame: (AGENT_RATE * ptime_ms / 1000) as usize, buf: vec![0; MAX_PAYLOAD] })
    }

    /// Encoder lookahead in 16 kHz samples (the decoder adds none).
    pub fn delay(&self) -> usize {
        self.enc.lookahead().map(|n| n as usize).unwrap_or(0)
    }
}

impl Encoder for OpusEncoder {
    fn encode(&mut self, pcm_16k: &[i16], out: &mut Vec<u8>) -> Result<(), CodecError> {
        if pcm_16k.len() != self.frame {
            return Err(CodecError::FrameSize { expected: self.frame, got: pcm_16k.len() });
        }
        let n = self.enc.encode(pcm_16k, &mut self.buf).map_err(opus_err)?;
        out.extend_from_slice(&self.buf[..n]);
        Ok(())
    }

    fn clock_rate(&self) -> u32 {
        CLOCK_RATE
    }
}

#[cfg(test)]
#[path = "opus_tests.rs"]
mod tests;
