//! Media: RTP and RTCP, codecs (G.711, Opus) with concealment, resampling,
//! the jitter buffer, the pacer, DTMF and RTP port allocation.
pub mod amd;
pub mod codec;
pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod pacer;
pub mod ports;
pub mod resample;
pub mod rtcp;
pub mod rtp;
