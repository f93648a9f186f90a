//! Media: RTP packets, G.711, the jitter buffer, the pacer and RTP port allocation.
pub mod g711;
pub mod jitter;
pub mod pacer;
pub mod ports;
pub mod rtp;
