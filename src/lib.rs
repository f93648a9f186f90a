//! switchboard: a self-hosted SIP voice-agent appliance.
//!
//! The crate is split by domain; every protocol core (SIP transactions and
//! dialogs, jitter buffer, pacer, the per-call media core) is a sans-IO state
//! machine driven with explicit `now` instants, and the tokio code around
//! them is a thin driver. See docs/ARCHITECTURE.md.

pub mod agent;
pub mod call;
pub mod campaign;
pub mod config;
pub mod fuzzing;
pub mod media;
pub mod metrics;
pub mod models;
pub mod server;
pub mod sip;
pub mod telemetry;
pub mod wallclock;
