//! One call's media and agent: a sans-IO core (`CallMedia`) joining RTP,
//! jitter buffer, codec, agent and pacer, and the tokio task that drives it.

pub mod bargein;
pub mod bargein_sim;
pub mod echo_check;
pub mod media;
mod metrics;
pub mod record;
pub mod record_recover;
pub mod task;
pub mod transcriber;
pub mod turns;

pub use media::{CallMedia, MediaParams, MediaStats};

#[cfg(test)]
mod media_tests;
