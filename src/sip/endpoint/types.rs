//! What goes in and out of the sans-IO endpoint.

use super::register::RegState;
use crate::sip::sdp::Negotiated;
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp)
    }
}

/// A TCP connection, as numbered by the transport driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub transport: Transport,
    /// The peer's address (the packet's source).
    pub addr: SocketAddr,
    /// The TCP connection it arrived on.
    pub conn: Option<ConnId>,
    /// Our local address it arrived at (what we advertise unless configured otherwise).
    pub local: SocketAddr,
}

/// Where to send a message: an address, or a host name the driver must resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Addr(SocketAddr),
    Host(String, u16),
}

/// A message for the transport driver to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub transport: Transport,
    pub target: Target,
    /// For TCP: the connection to reuse if it is still open (else connect to `target`).
    pub conn: Option<ConnId>,
    pub data: Vec<u8>,
}

/// The endpoint's handle for one call (stable for the call's life, never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey(pub u64);

impl std::fmt::Display for CallKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCall {
    pub key: CallKey,
    pub call_id: String,
    /// The caller (From URI).
    pub from: String,
    /// The called user or number the route matched on.
    pub called: String,
    pub agent: String,
    pub negotiated: Negotiated,
    pub source: Source,
}

/// Why a call ended; `status_label` is the `status` label of the calls metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The peer sent BYE.
    RemoteBye,
    /// The caller cancelled before answer.
    Cancelled,
    /// We answered but no ACK came within 64*T1; we sent BYE.
    AckTimeout,
    /// We hung up (maximum duration, shutdown, agent decision).
    LocalHangup(String),
    /// We refused the call with this final status code.
    Rejected(u16),
    /// We transferred the caller (REFER, the target answered) and hung up.
    Transferred,
    /// Our outbound call was never answered: the final status (486 busy, 487 after our
    /// CANCEL, 408 nobody responded, ...) and why.
    Unanswered { code: u16, reason: String },
}

impl EndReason {
    pub fn status_label(&self) -> &'static str {
        match self {
            EndReason::RemoteBye => "completed_remote_bye",
            EndReason::Cancelled => "cancelled",
            EndReason::AckTimeout => "ack_timeout",
            EndReason::LocalHangup(_) => "completed_local_bye",
            EndReason::Rejected(_) => "rejected",
            EndReason::Transferred => "transferred",
            EndReason::Unanswered { code, .. } => super::dial::DialOutcome::from_code(*code).label(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A routable INVITE with an acceptable offer: allocate media, then `ring`/`answer`/`reject`.
    Incoming(IncomingCall),
    /// The ACK for our 200 arrived: the call is up.
    Confirmed { key: CallKey },
    /// A re-INVITE or UPDATE changed the session (new address, codec, direction, hold).
    MediaChanged { key: CallKey, negotiated: Negotiated },
    /// The call is over; stop its media. Sent exactly once per call.
    Ended { key: CallKey, call_id: String, reason: EndReason },
    /// An in-dialog INFO with a body (DTMF relay and the like), already answered 200.
    Info { key: CallKey, content_type: String, body: Vec<u8> },
    /// How a transfer asked for with `Endpoint::transfer` is going.
    Transfer { key: CallKey, progress: TransferProgress },
    /// Our outbound call is ringing (the first provisional answer), or announces early media.
    Progress { key: CallKey, code: u16, early_media: Option<Negotiated> },
    /// Our outbound call was answered (2xx, ACK sent): start its media and agent.
    Answered { key: CallKey, negotiated: Negotiated },
    /// An account's registration changed state (registered, failed with the retry time, ...).
    Registration { account: String, state: RegState },
}

/// A blind transfer (REFER, RFC 3515) as the peer reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferProgress {
    /// The peer accepted the REFER (2xx): it is calling the target.
    Accepted,
    /// The peer's NOTIFY reports a provisional answer of the target (a sipfrag 1xx).
    Trying(u16),
    /// The target answered (a sipfrag 2xx). The endpoint has sent BYE; `Ended` (`Transferred`) follows.
    Succeeded,
    /// No transfer: the peer refused the REFER (e.g. 405, 403), the target refused or did not
    /// answer (the sipfrag's final status), or the REFER went unanswered (408). The call goes on.
    Failed { code: u16, reason: String },
}
