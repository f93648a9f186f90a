//! Wire codecs behind one shape: every decoder yields 16 kHz mono PCM (the
//! "agent rate" that VAD, ASR and end-of-turn models take) and conceals lost
//! packets; every encoder takes 16 kHz mono PCM, one packet time per call.
//!
//! * G.711 (PCMU/PCMA, RTP clock 8000): decode at 8 kHz, ITU-T G.711
//!   Appendix I concealment at 8 kHz, resample 8 → 16 kHz; the encoder
//!   resamples 16 → 8 kHz first. See [`g711`].
//! * Opus (`opus/48000/2` in SDP, mono content): libopus decodes straight to
//!   16 kHz and encodes from 16 kHz, so no resampler runs on Opus calls. The
//!   RTP clock stays 48 kHz whatever the internal rate (RFC 7587): 960 ticks
//!   per 20 ms packet. The pacer and jitter buffer work in 48 kHz ticks and
//!   convert with [`samples_16k`]. See [`opus`].
//!
//! Decoders keep per-call streaming state (concealment history, resampler
//! and libopus state): one decoder and one encoder per call and direction.

pub mod g711;
pub mod opus;
pub mod plc;

use crate::media::resample::ResampleError;

/// The sample rate of every PCM buffer that crosses this API.
pub const AGENT_RATE: u32 = 16_000;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The payload cannot be decoded (corrupt or truncated Opus packet,
    /// empty payload). The caller conceals the packet instead.
    #[error("undecodable payload: {0}")]
    InvalidPayload(String),
    /// `encode` was given a buffer that is not exactly one packet time.
    #[error("encoder expects {expected} samples per packet, got {got}")]
    FrameSize { expected: usize, got: usize },
    #[error("packet time {ptime_ms} ms not supported for {kind:?}")]
    UnsupportedPtime { kind: CodecKind, ptime_ms: u32 },
    #[error("invalid Opus parameters: {0}")]
    InvalidParams(String),
    /// libopus refused an encoder or decoder setting or call.
    #[error("opus: {0}")]
    Opus(#[source] audiopus::Error),
    #[error(transparent)]
    Resample(#[from] ResampleError),
}

/// Decodes one RTP payload stream to PCM at 16 kHz mono, and conceals losses.
pub trait Decoder: Send {
    /// Decode one packet's payload, appending 16 kHz samples to `out`.
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError>;
    /// A packet is missing: append `samples_16k` samples of concealment. `next` is the payload of the
    /// following packet if the jitter buffer already has it (Opus recovers the lost frame from its in-band FEC).
    fn conceal(&mut self, samples_16k: usize, next: Option<&[u8]>, out: &mut Vec<i16>);
    /// RTP clock rate of the wire format (8000 for G.711, 48000 for Opus).
    fn clock_rate(&self) -> u32;
}

/// Encodes 16 kHz mono PCM, one packet time per call.
pub trait Encoder: Send {
    /// Encode exactly one packet time of 16 kHz PCM (e.g. 320 samples for 20 ms), appending the payload.
    fn encode(&mut self, pcm_16k: &[i16], out: &mut Vec<u8>) -> Result<(), CodecError>;
    fn clock_rate(&self) -> u32;
}

/// Opus encoder settings (from config; the SDP fmtp may lower them).
#[derive(Debug, Clone, PartialEq)]
pub struct OpusParams {
    /// Target bitrate, 6 000..=510 000 bit/s.
    pub bitrate_bps: u32,
    /// In-band FEC (LBRR): each packet also carries a coarse copy of the
    /// previous frame. libopus only emits it when `expected_loss_pct > 0`.
    pub fec: bool,
    /// 0..=100; tunes how much of the bitrate FEC takes.
    pub expected_loss_pct: u8,
    /// 0..=10, CPU against quality.
    pub complexity: u8,
}

impl Default for OpusParams {
    /// 24 kbit/s is transparent for 16 kHz speech with room for FEC; 10 %
    /// expected loss turns FEC on at a modest cost; complexity 5 halves the
    /// encoder's CPU against 10 for a barely audible difference on speech.
    fn default() -> Self {
        OpusParams { bitrate_bps: 24_000, fec: true, expected_loss_pct: 10, complexity: 5 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecKind {
    Pcmu,
    Pcma,
    Opus,
}

impl CodecKind {
    /// RTP clock rate (RFC 3551 for G.711, RFC 7587 for Opus).
    pub fn clock_rate(self) -> u32 {
        match self {
            CodecKind::Pcmu | CodecKind::Pcma => 8000,
            CodecKind::Opus => 48_000,
        }
    }
}

/// Number of 16 kHz samples that `ticks` of `clock_rate` RTP time span
/// (e.g. 960 Opus ticks → 320 samples, 160 G.711 ticks → 320 samples).
pub fn samples_16k(ticks: u32, clock_rate: u32) -> usize {
    (u64::from(ticks) * u64::from(AGENT_RATE) / u64::from(clock_rate.max(1))) as usize
}

/// A decoder for one call. `ptime_ms` is only a hint: decoders take packets
/// of any length (the Opus decoder reads it from the packet).
pub fn decoder(kind: CodecKind, ptime_ms: u32) -> Result<Box<dyn Decoder>, CodecError> {
    let _ = ptime_ms;
    Ok(match kind {
        CodecKind::Pcmu => Box::new(g711::G711Decoder::new(g711::Law::Mu)?),
        CodecKind::Pcma => Box::new(g711::G711Decoder::new(g711::Law::A)?),
        CodecKind::Opus => Box::new(opus::OpusDecoder::new()?),
    })
}

/// An encoder for one call, producing one packet per `ptime_ms` of audio.
pub fn encoder(kind: CodecKind, ptime_ms: u32, opus: &OpusParams) -> Result<Box<dyn Encoder>, CodecError> {
    Ok(match kind {
        CodecKind::Pcmu => Box::new(g711::G711Encoder::new(g711::Law::Mu, ptime_ms)?),
        CodecKind::Pcma => Box::new(g711::G711Encoder::new(g711::Law::A, ptime_ms)?),
        CodecKind::Opus => Box::new(opus::OpusEncoder::new(ptime_ms, opus)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_convert_to_agent_samples() {
        assert_eq!(samples_16k(960, 48_000), 320);
        assert_eq!(samples_16k(160, 8000), 320);
        assert_eq!(samples_16k(160, 0), 2_560_000);
    }

    #[test]
    fn factories_build_every_codec_and_refuse_bad_settings() {
        for kind in [CodecKind::Pcmu, CodecKind::Pcma, CodecKind::Opus] {
            let d = decoder(kind, 20).unwrap();
            let e = encoder(kind, 20, &OpusParams::default()).unwrap();
            assert_eq!(d.clock_rate(), kind.clock_rate());
            assert_eq!(e.clock_rate(), kind.clock_rate());
        }
        assert!(matches!(
            encoder(CodecKind::Opus, 30, &OpusParams::default()),
            Err(CodecError::UnsupportedPtime { .. })
        ));
        assert!(matches!(
            encoder(CodecKind::Pcmu, 0, &OpusParams::default()),
            Err(CodecError::UnsupportedPtime { .. })
        ));
        let bad = OpusParams { bitrate_bps: 1000, ..OpusParams::default() };
        assert!(matches!(encoder(CodecKind::Opus, 20, &bad), Err(CodecError::InvalidParams(_))));
    }

    #[test]
    fn every_codec_round_trips_a_frame_at_the_agent_rate() {
        for kind in [CodecKind::Pcmu, CodecKind::Pcma, CodecKind::Opus] {
            let mut e = encoder(kind, 20, &OpusParams::default()).unwrap();
            let mut d = decoder(kind, 20).unwrap();
            let (mut payload, mut pcm) = (Vec::new(), Vec::new());
            for _ in 0..5 {
                payload.clear();
                e.encode(&[0; 320], &mut payload).unwrap();
                d.decode(&payload, &mut pcm).unwrap();
            }
            assert_eq!(pcm.len(), 5 * 320, "{kind:?}");
            assert!(e.encode(&[0; 321], &mut payload).is_err());
        }
    }
}
