//! Outbound calls as the driver sees them: a dial request (from the admin API or a campaign),
//! the RTP port bound before the INVITE leaves (our offer names it), the progress reported back
//! to whoever asked, and a table of recent outbound calls for `GET /calls/{call_id}`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// One call to place.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialRequest {
    /// A number (dialled at the account's domain), a `tel:` or a `sip:` URI.
    pub to: String,
    pub agent: String,
    /// The account or trunk to call through; absent: a `sip:` URI is called directly.
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default = "default_ring_timeout")]
    pub ring_timeout_s: u64,
    /// Per-call variables for the agent's instructions (`{name}`).
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// The Call-ID to use (a campaign stores it with the attempt before the INVITE leaves).
    #[serde(skip)]
    pub call_id: Option<String>,
    /// Detect an answering machine and do this when one answers (campaigns).
    #[serde(skip)]
    pub answering_machine: Option<crate::agent::amd_gate::MachinePolicy>,
}
fn default_ring_timeout() -> u64 {
    30
}

/// How an outbound call is going, sent to whoever placed it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum OutboundUpdate {
    Ringing {
        code: u16,
        early_media: bool,
    },
    Answered,
    /// The call is over. `outcome`: answered, busy, no_answer or failed; `record`: the call
    /// record (transcripts, replies, tools) of an answered call, when records are kept.
    Ended {
        outcome: String,
        code: Option<u16>,
        reason: String,
        record_path: Option<String>,
    },
}

/// Told every `OutboundUpdate` of one call (a campaign's attempt, for instance).
pub type Notify = Box<dyn Fn(OutboundUpdate) + Send>;

/// What the server loop is asked to do from outside (the admin API, campaigns).
pub enum Command {
    Dial {
        req: DialRequest,
        next_hop: Option<SocketAddr>,
        notify: Option<Notify>,
        reply: oneshot::Sender<Result<String, String>>,
    },
    Hangup {
        call_id: String,
        reply: oneshot::Sender<bool>,
    },
}

/// The state of recent outbound calls, by Call-ID (the last 1,000).
#[derive(Clone, Default)]
pub struct OutboundTable {
    inner: Arc<Mutex<Recent>>,
}

/// Statuses by Call-ID, and the Call-IDs oldest first (to forget the oldest past `KEEP`).
#[derive(Default)]
struct Recent {
    by_id: HashMap<String, OutboundStatus>,
    order: VecDeque<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutboundStatus {
    pub call_id: String,
    pub to: String,
    pub agent: String,
    /// dialling, ringing, answered, ended
    pub state: String,
    pub outcome: Option<String>,
    pub code: Option<u16>,
    pub reason: Option<String>,
    pub record_path: Option<String>,
}

const KEEP: usize = 1000;

impl OutboundTable {
    pub fn insert(&self, s: OutboundStatus) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Recent { by_id: map, order } = &mut *g;
        order.push_back(s.call_id.clone());
        map.insert(s.call_id.clone(), s);
        while order.len() > KEEP {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }
    pub fn update(&self, call_id: &str, u: &OutboundUpdate) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = g.by_id.get_mut(call_id) else { return };
        match u {
            OutboundUpdate::Ringing { code, .. } => {
                s.state = "ringing".into();
                s.code = Some(*code);
            }
            OutboundUpdate::Answered => {
                s.state = "answered".into();
                s.code = Some(200);
            }
            OutboundUpdate::Ended { outcome, code, reason, record_path } => {
                s.state = "ended".into();
                s.outcome = Some(outcome.clone());
                s.code = code.or(s.code);
                s.reason = Some(reason.clone());
                s.record_path = record_path.clone();
            }
        }
    }
    pub fn get(&self, call_id: &str) -> Option<OutboundStatus> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).by_id.get(call_id).cloned()
    }
}

/// Where a direct `sip:` target goes when its host is a name: resolved off the server loop.
pub async fn resolve_direct(to: &str) -> Result<Option<SocketAddr>, String> {
    let lower = to.trim().to_ascii_lowercase();
    if !(lower.starts_with("sip:") || lower.starts_with("sips:")) {
        return Ok(None);
    }
    let uri = crate::sip::message::SipUri::parse(to.trim()).ok_or_else(|| format!("`{to}` is not a SIP URI"))?;
    let host = uri.host.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port.unwrap_or(5060);
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(Some(SocketAddr::new(ip, port)));
    }
    let mut addrs =
        tokio::net::lookup_host((host.as_str(), port)).await.map_err(|e| format!("cannot resolve {host}: {e}"))?;
    addrs.next().map(Some).ok_or_else(|| format!("{host} has no address"))
}
