//! SIP (RFC 3261): message syntax, SDP, digest authentication, the sans-IO endpoint core (transactions
//! and dialogs), who may use it (guard: ACLs, scanners, rate limits, inbound auth) and the UDP/TCP transport drivers.
pub mod digest;
pub mod endpoint;
pub mod guard;
pub mod headers;
pub mod message;
pub mod sdp;
