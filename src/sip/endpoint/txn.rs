//! Transaction state (RFC 3261 §17, with RFC 6026's Accepted state) and its timers.
//!
//! Server transactions absorb retransmitted requests by re-sending the last
//! response; INVITE error responses are retransmitted until ACK (Timer G/H);
//! our BYE and REFER client transactions retransmit until a final response (Timer E/F).

use super::types::{CallKey, Transmit};
use crate::sip::message::Method;
use std::time::{Duration, Instant};

/// RFC 3261 §17.2.3 matching key: branch, sent-by and method (ACK and CANCEL
/// are looked up under INVITE by the caller).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxKey {
    pub branch: String,
    pub sent_by: String,
    pub method: Method,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// INVITE waiting for the TU's final answer.
    Proceeding,
    /// INVITE answered with an error, waiting for the ACK (Timer G retransmits, Timer H gives up).
    Completed,
    /// ACK for the error arrived; absorbing ACK retransmissions until Timer I.
    Confirmed,
    /// INVITE answered 2xx (RFC 6026): absorb INVITE retransmissions until Timer L.
    Accepted,
    /// Non-INVITE answered: absorb retransmissions until Timer J.
    Done,
}

#[derive(Debug)]
pub struct ServerTx {
    pub state: ServerState,
    pub call: Option<CallKey>,
    /// Last response sent, with its destination, re-sent on retransmitted requests.
    pub last_response: Option<Transmit>,
    pub retransmit_at: Option<Instant>,
    pub interval: Duration,
    /// When the transaction is forgotten.
    pub expire_at: Option<Instant>,
}

impl ServerTx {
    pub fn new_invite(call: Option<CallKey>) -> ServerTx {
        ServerTx {
            state: ServerState::Proceeding,
            call,
            last_response: None,
            retransmit_at: None,
            interval: Duration::ZERO,
            expire_at: None,
        }
    }
    pub fn next_timer(&self) -> Option<Instant> {
        match (self.retransmit_at, self.expire_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A request we sent (BYE, REFER), retransmitted until a final response or Timer F.
#[derive(Debug)]
pub struct ClientTx {
    pub call_id: String,
    /// The call it belongs to, while the call lives.
    pub call: Option<CallKey>,
    /// The account whose REGISTER this is.
    pub account: Option<usize>,
    pub method: Method,
    pub request: Transmit,
    pub retransmit_at: Option<Instant>,
    pub interval: Duration,
    pub timeout_at: Instant,
}

impl ClientTx {
    pub fn next_timer(&self) -> Instant {
        match self.retransmit_at {
            Some(r) => r.min(self.timeout_at),
            None => self.timeout_at,
        }
    }
}
