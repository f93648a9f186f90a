//! Transaction state (RFC 3261 §17, with RFC 6026's Accepted state) and its timers.
//!
//! Server transactions absorb retransmitted requests by re-sending the last
//! response; INVITE error responses are retransmitted until ACK (Timer G/H);
//! our BYE and REFER client transactions retransmit until a final response (Timer E/F).

use super::types::{CallKey, Transmit};
use crate::sip::message::Method;
use std::time::{Duration, Instant};

/// The interval after a retransmission: twice the last, at most T2. RFC 3261 doubles this way for
/// Timer G (§17.2.1), Timer E (§17.1.2.2) and the 2xx until its ACK (§13.3.1.4). The INVITE
/// client's Timer A is capped the same way here, though §17.1.1.2 lets it double without a cap
/// (eleven sends before Timer B at the default T1 and T2, not the RFC's seven): kept as it was, to
/// change apart.
pub fn doubled(interval: Duration, t2: Duration) -> Duration {
    (interval * 2).min(t2.max(interval))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmissions_double_up_to_t2() {
        let (t1, t2) = (Duration::from_millis(500), Duration::from_secs(4));
        let mut i = t1;
        let mut seen = Vec::new();
        for _ in 0..6 {
            i = doubled(i, t2);
            seen.push(i.as_millis());
        }
        assert_eq!(seen, [1000, 2000, 4000, 4000, 4000, 4000]);
    }
}
