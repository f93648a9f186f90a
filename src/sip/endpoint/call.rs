//! Per-call dialog state kept by the endpoint.

use super::txn::TxKey;
use super::types::{CallKey, Source, Transmit};
use crate::sip::message::{SipMessage, Via};
use crate::sip::sdp::{Negotiated, Origin, SessionDescription};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// INVITE received, not answered (100/180 sent).
    Early,
    /// 200 sent, waiting for ACK.
    Answered,
    /// ACK received.
    Confirmed,
    /// We hung up after our 200 but before its ACK: media has stopped and the
    /// BYE waits for the ACK (RFC 3261 §15) or the 64*T1 give-up.
    ByePending,
}

/// A 2xx being retransmitted until its ACK (§13.3.1.4).
#[derive(Debug)]
pub struct Retx {
    pub data: Transmit,
    /// None on reliable transports: only the give-up timer runs.
    pub next: Option<Instant>,
    pub interval: Duration,
    pub give_up: Instant,
    /// CSeq of the INVITE this 2xx answers (the ACK carries the same number).
    pub cseq: u32,
}

#[derive(Debug)]
pub struct Call {
    pub key: CallKey,
    /// The agent serving it (per-agent call limits count by it).
    pub agent: String,
    pub call_id: String,
    pub local_tag: String,
    /// Our side as the To header we answered with (tag included): the From of our requests.
    pub local_uri: String,
    /// The caller's From header (tag included): the To of our requests.
    pub remote_uri: String,
    pub remote_target: String,
    /// Record-Route values from the INVITE, in order (the UAS's route set, §12.1.1).
    pub route_set: Vec<String>,
    pub remote_cseq: u32,
    pub local_cseq: u32,
    pub invite: SipMessage,
    pub invite_via: Via,
    pub invite_tx: TxKey,
    pub response_target: Transmit,
    /// The caller asked for symmetric response routing (rport): send our requests back to its source.
    pub symmetric: bool,
    pub source: Source,
    pub contact: String,
    pub local_host: String,
    pub phase: Phase,
    /// Why we hang up, kept for a BYE that waits for the ACK.
    pub bye_reason: String,
    /// `Event::Ended` has been emitted (exactly once per call).
    pub ended_notified: bool,
    pub offer: SessionDescription,
    pub negotiated: Negotiated,
    pub origin: Origin,
    pub local_rtp_port: Option<u16>,
    pub retx: Option<Retx>,
    /// The transfer we asked for (REFER sent), until it succeeds or fails.
    pub refer: Option<Refer>,
    /// Outbound calls: the INVITE client transaction (we are the UAC). For them `invite` is
    /// our INVITE, `offer` the callee's answer, and `Early` means our INVITE is pending.
    pub uac: Option<Box<super::dial::Uac>>,
}

/// A REFER we sent and the implicit subscription it created (RFC 3515 §2.4.4).
#[derive(Debug)]
pub struct Refer {
    pub target: String,
}

impl Call {
    pub fn next_timer(&self) -> Option<Instant> {
        let r = self.retx.as_ref()?;
        Some(match r.next {
            Some(n) => n.min(r.give_up),
            None => r.give_up,
        })
    }
}
