//! Outbound calls: the INVITE client transaction (RFC 3261 §17.1.1) and the UAC side of the
//! dialog. We offer our codecs, retransmit over UDP until a response (Timer A/B), answer 401/407
//! challenges with the account's credentials, report provisional answers (180, 183 with early
//! media), CANCEL when the ring timeout passes, ACK every final answer and, on 2xx, hold a dialog
//! that the rest of the endpoint treats exactly like an answered inbound call.

use super::call::{Call, Phase};
use super::txn::{ClientTx, TxKey};
use super::types::{CallKey, EndReason, Event, Source, Target, Transmit, Transport};
use super::Endpoint;
use crate::sip::digest::{self, Challenge, Credentials};
use crate::sip::message::{Headers, Method, SipMessage, SipUri, StartLine};
use crate::sip::sdp::{self, Origin};
use rand::Rng;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// What the driver asks for.
#[derive(Debug, Clone)]
pub struct DialSpec {
    /// A SIP URI (`sip:`/`sips:`), a `tel:` URI or a bare number/user; bare numbers and tel:
    /// URIs need an account (they are dialled at its domain).
    pub target: String,
    /// The account to call through (credentials, caller ID, outbound proxy).
    pub account: Option<String>,
    /// Without an account: where the INVITE goes (the target's host, resolved by the driver)
    /// and our address towards it.
    pub next_hop: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    pub transport: Transport,
    /// Our RTP port, already bound by the driver.
    pub rtp_port: u16,
    /// CANCEL when nobody answers within this.
    pub ring_timeout: Duration,
    pub agent: String,
    /// The Call-ID to use (else a fresh one).
    pub call_id: Option<String>,
}

/// How an outbound call that never got answered ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialOutcome {
    Busy,
    NoAnswer,
    Failed,
}

impl DialOutcome {
    /// 486 Busy Here, 600 Busy Everywhere and 603 Decline are the callee saying no; 408/480 and
    /// our own CANCEL (487) after the ring timeout are nobody answering; the rest is failure.
    pub fn from_code(code: u16) -> DialOutcome {
        match code {
            486 | 600 | 603 => DialOutcome::Busy,
            408 | 480 | 487 => DialOutcome::NoAnswer,
            _ => DialOutcome::Failed,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            DialOutcome::Busy => "busy",
            DialOutcome::NoAnswer => "no_answer",
            DialOutcome::Failed => "failed",
        }
    }
}

/// An outbound call that has been placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingCall {
    pub key: CallKey,
    pub call_id: String,
    /// Our From URI and the Request-URI we dialled.
    pub from: String,
    pub to: String,
    pub agent: String,
}

/// The UAC's transaction and dialog-setup state, while the INVITE is pending and afterwards
/// (to re-send the ACK when the callee retransmits its 2xx).
#[derive(Debug)]
pub struct Uac {
    pub request_uri: String,
    pub branch: String,
    pub cseq: u32,
    /// The INVITE as sent, re-sent by Timer A (the call's `invite` is the same message, parsed:
    /// the base for CANCEL and the ACK of an error).
    pub invite: Transmit,
    pub retransmit_at: Option<Instant>,
    pub interval: Duration,
    /// Timer B: no response at all by then.
    pub timeout_at: Option<Instant>,
    pub ring_deadline: Instant,
    pub provisional: bool,
    pub cancel_sent: bool,
    /// Challenges answered for this call (one each for 401 and 407 is enough; more is a loop).
    pub auth_tries: u8,
    pub account: Option<usize>,
    /// The ACK of the 2xx, re-sent when the 2xx is retransmitted.
    pub ack: Option<Transmit>,
    pub our_offer: String,
    pub to_header: String,
}

fn tx_key(branch: &str) -> TxKey {
    TxKey { branch: branch.to_string(), sent_by: String::new(), method: Method::Invite }
}

impl Endpoint {
    /// Place a call. Returns its key at once; `Event::Progress`, `Event::Answered` or
    /// `Event::Ended` (with `EndReason::Unanswered`) follow.
    pub fn dial(&mut self, spec: DialSpec, now: Instant) -> Result<OutgoingCall, String> {
        if self.draining {
            return Err("shutting down".into());
        }
        if let Some(limit) = self.call_limit_reached(&spec.agent) {
            return Err(limit);
        }
        let account = match &spec.account {
            Some(name) => Some(
                self.registrations
                    .iter()
                    .position(|r| &r.spec.name == name)
                    .ok_or_else(|| format!("unknown account `{name}`"))?,
            ),
            None => None,
        };
        let acct = account.map(|i| self.registrations[i].spec.clone());
        let request_uri = request_uri(&spec.target, acct.as_ref().map(|a| a.domain.as_str()))?;
        let (next_hop, local, transport) = match &acct {
            Some(a) => (a.next_hop, a.local, a.transport),
            None => (
                spec.next_hop.ok_or("a direct call needs the target's address")?,
                spec.local.ok_or("a direct call needs our local address")?,
                spec.transport,
            ),
        };
        let local_host = self.cfg.advertised.unwrap_or(local.ip()).to_string();
        let host = super::build::bracket_v6(&local_host);
        let (from_user, from_domain) = match &acct {
            Some(a) => (a.caller_id.clone(), a.domain.clone()),
            None => ("switchboard".to_string(), format!("{host}:{}", local.port())),
        };
        let contact_user = acct.as_ref().map(|a| a.username.clone()).unwrap_or_else(|| "switchboard".into());
        let contact = match transport {
            Transport::Udp => format!("<sip:{contact_user}@{host}:{}>", local.port()),
            Transport::Tcp => format!("<sip:{contact_user}@{host}:{};transport=tcp>", local.port()),
        };
        let key = CallKey(self.next_key);
        self.next_key += 1;
        let call_id = match spec.call_id.clone() {
            Some(id) if !id.is_empty() && !id.chars().any(|c| c.is_whitespace() || c.is_control()) => id,
            Some(id) => return Err(format!("`{id}` is not a Call-ID")),
            None => format!("{}@switchboard", self.random_token(20)),
        };
        let local_tag = self.random_token(12);
        let from = format!("<sip:{from_user}@{from_domain}>;tag={local_tag}");
        let to_header = format!("<{request_uri}>");
        let origin = Origin { session_id: self.rng.random_range(1..1u64 << 48), version: 1 };
        let media_ip = self.cfg.media_advertised.or(self.cfg.advertised).unwrap_or(local.ip());
        let our_offer =
            sdp::build_offer(&self.cfg.codecs, self.cfg.ptime_ms, SocketAddr::new(media_ip, spec.rtp_port), origin);
        let offer_sd = sdp::parse(our_offer.as_bytes()).map_err(|e| format!("our own offer: {e}"))?;
        let placeholder = sdp::negotiate(&offer_sd, &self.cfg.codecs, self.cfg.ptime_ms)
            .map_err(|e| format!("our own offer: {e}"))?;
        let source = Source { transport, addr: next_hop, conn: None, local };
        let branch = self.new_branch();
        let ring_deadline = now + spec.ring_timeout;
        let mut uac = Uac {
            request_uri: request_uri.clone(),
            branch: branch.clone(),
            cseq: 1,
            invite: Transmit { transport, target: Target::Addr(next_hop), conn: None, data: Vec::new() },
            retransmit_at: None,
            interval: self.cfg.t1,
            timeout_at: None,
            ring_deadline,
            provisional: false,
            cancel_sent: false,
            auth_tries: 0,
            account,
            ack: None,
            our_offer,
            to_header: to_header.clone(),
        };
        let msg = build_invite(
            &uac,
            &from,
            &call_id,
            &contact,
            transport,
            &local_host,
            local.port(),
            &branch,
            &self.cfg.user_agent,
            None,
        );
        uac.invite.data = msg.to_bytes();
        uac.retransmit_at = (!transport.is_reliable()).then_some(now + self.cfg.t1);
        uac.timeout_at = Some(now + self.cfg.t1 * 64);
        let via = msg.top_via().ok_or("our own Via")?;
        let call = Call {
            agent: spec.agent.clone(),
            key,
            call_id: call_id.clone(),
            local_tag: local_tag.clone(),
            local_uri: from.clone(),
            remote_uri: to_header.clone(),
            remote_target: request_uri.clone(),
            route_set: Vec::new(),
            remote_cseq: 0,
            local_cseq: 1,
            invite: msg,
            invite_via: via,
            invite_tx: tx_key(&branch),
            response_target: uac.invite.clone(),
            symmetric: false,
            source,
            contact,
            local_host,
            phase: Phase::Early,
            bye_reason: String::new(),
            ended_notified: false,
            offer: offer_sd,
            negotiated: placeholder,
            origin,
            local_rtp_port: Some(spec.rtp_port),
            retx: None,
            refer: None,
            uac: Some(Box::new(uac)),
        };
        info!(%call_id, key = %key, to = %request_uri, via = %next_hop, agent = %spec.agent, "dialling");
        let t = call.uac.as_ref().map(|u| u.invite.clone()).expect("just set");
        self.uac_branches.insert(branch, key);
        self.dialogs.insert((call_id.clone(), local_tag), key);
        self.calls.insert(key, call);
        self.transmits.push_back(t);
        Ok(OutgoingCall {
            key,
            call_id,
            from: format!("sip:{from_user}@{from_domain}"),
            to: request_uri,
            agent: spec.agent,
        })
    }

    /// A response whose top Via branch is one of our INVITEs (or its CANCEL).
    pub(super) fn handle_uac_response(&mut self, key: CallKey, resp: SipMessage, now: Instant) {
        let StartLine::Response { code, reason } = resp.start.clone() else { return };
        let is_cancel = resp.cseq().is_some_and(|c| c.method == Method::Cancel);
        if is_cancel {
            return; // 200 to our CANCEL: the INVITE's 487 ends the call.
        }
        let Some(c) = self.calls.get_mut(&key) else { return };
        let Some(u) = c.uac.as_mut() else { return };
        if resp.cseq().map(|s| s.seq) != Some(u.cseq) {
            return; // an answer to an INVITE we have replaced (after a challenge)
        }
        if code >= 200 && c.phase != Phase::Early {
            // A retransmitted final answer: a 2xx gets its ACK again (§13.2.2.4).
            if (200..300).contains(&code) {
                if let Some(ack) = u.ack.clone() {
                    self.transmits.push_back(ack);
                }
            }
            return;
        }
        u.retransmit_at = None;
        match code {
            100 => {}
            101..=199 => {
                u.timeout_at = None;
                let first = !u.provisional;
                u.provisional = true;
                let early = (!resp.body.is_empty())
                    .then(|| sdp::parse(&resp.body).ok())
                    .flatten()
                    .and_then(|a| sdp::negotiate(&a, &self.cfg.codecs, self.cfg.ptime_ms).ok());
                if first || early.is_some() {
                    debug!(call_id = %c.call_id, code, early_media = early.is_some(), "outbound call progress");
                    self.events.push_back(Event::Progress { key, code, early_media: early });
                }
                // The ring timeout passed before any provisional: CANCEL is allowed now (§9.1).
                if u.ring_deadline <= now && !u.cancel_sent {
                    self.send_cancel(key, now);
                }
            }
            200..=299 => self.uac_answered(key, resp, now),
            401 | 407 => {
                self.ack_error(key, &resp, now);
                if !self.answer_challenge(key, &resp, now) {
                    self.uac_failed(key, code, &format!("{reason} (credentials rejected)"));
                }
            }
            _ => {
                self.ack_error(key, &resp, now);
                self.uac_failed(key, code, &reason);
            }
        }
    }

    /// 2xx: ACK it (a new transaction, along the route set), read the answer, the call is up.
    fn uac_answered(&mut self, key: CallKey, resp: SipMessage, now: Instant) {
        let codecs = self.cfg.codecs.clone();
        let ptime = self.cfg.ptime_ms;
        let branch = self.new_branch();
        let ua = self.cfg.user_agent.clone();
        let Some(c) = self.calls.get_mut(&key) else { return };
        let Some(to) = resp.to() else { return };
        c.remote_uri = to.to_string();
        if let Some(contact) = resp.contact() {
            c.remote_target = contact.uri.to_string();
        }
        // §12.1.2: the UAC's route set is the Record-Route of the 2xx, reversed.
        let mut rr: Vec<String> = resp
            .headers
            .get_all("Record-Route")
            .flat_map(|v| crate::sip::headers::split_outside(v, ','))
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect();
        rr.reverse();
        c.route_set = rr;
        let answer = sdp::parse(&resp.body)
            .map_err(|e| e.to_string())
            .and_then(|a| sdp::negotiate(&a, &codecs, ptime).map(|n| (a, n)).map_err(|e| e.to_string()));
        let routing = super::build::route_request(&c.remote_target, &c.route_set);
        let cseq = c.uac.as_ref().map(|u| u.cseq).unwrap_or(1);
        let ack = super::build::dialog_request(
            Method::Ack,
            &routing,
            &c.local_host,
            c.source.local.port(),
            c.source.transport,
            &branch,
            &c.local_uri,
            &c.remote_uri,
            &c.call_id,
            cseq,
            &ua,
        );
        let (target, transport) = match &routing.next_hop {
            Some(uri) => super::build::uri_target(uri, c.source.transport),
            None => match SipUri::parse(&c.remote_target) {
                Some(uri) => super::build::uri_target(&uri, c.source.transport),
                None => (Target::Addr(c.source.addr), c.source.transport),
            },
        };
        let ack = Transmit { transport, target, conn: None, data: ack.to_bytes() };
        self.transmits.push_back(ack.clone());
        if let Some(u) = c.uac.as_mut() {
            u.ack = Some(ack);
            u.timeout_at = None;
        }
        c.phase = Phase::Confirmed;
        c.local_cseq = cseq;
        if c.uac.as_ref().is_some_and(|u| u.cancel_sent) {
            // Answered while our CANCEL was on its way: the callee picked up too late.
            info!(call_id = %c.call_id, key = %key, "answered after our CANCEL: BYE");
            self.send_bye(key, "ring timeout", now);
            self.end_call(key, EndReason::Unanswered { code: 487, reason: "answered after the ring timeout".into() });
            return;
        }
        match answer {
            Ok((sd, neg)) => {
                c.offer = sd;
                c.negotiated = neg.clone();
                info!(call_id = %c.call_id, key = %key, codec = ?neg.codec, "outbound call answered");
                self.events.push_back(Event::Answered { key, negotiated: neg });
            }
            Err(e) => {
                // Answered without an answer we can use: hang up at once, say why.
                warn!(call_id = %c.call_id, key = %key, error = %e, "outbound call answered with unusable SDP: BYE");
                self.send_bye(key, "no usable SDP answer", now);
                self.end_call(key, EndReason::Unanswered { code: 488, reason: format!("unusable SDP answer: {e}") });
            }
        }
    }

    /// ACK a non-2xx final answer: same branch, same Request-URI, the To of the answer (§17.1.1.3).
    fn ack_error(&mut self, key: CallKey, resp: &SipMessage, now: Instant) {
        let Some(c) = self.calls.get(&key) else { return };
        let Some(u) = c.uac.as_ref() else { return };
        let t = same_transaction(c, u, Method::Ack, resp.headers.get("To").unwrap_or(&u.to_header));
        // Timer D: the callee may retransmit its answer for 32 s; each gets this ACK again.
        self.uac_acked.insert(u.branch.clone(), (t.clone(), now + self.cfg.t1 * 64));
        self.transmits.push_back(t);
    }

    /// Re-send the INVITE with credentials for the challenge in `resp`. False when we cannot
    /// (no account, no usable challenge, or this challenge follows our credentials already).
    fn answer_challenge(&mut self, key: CallKey, resp: &SipMessage, now: Instant) -> bool {
        let proxy = matches!(resp.start, StartLine::Response { code: 407, .. });
        let header = if proxy { "Proxy-Authenticate" } else { "WWW-Authenticate" };
        let Some(challenge) = resp.headers.get_all(header).find_map(|v| Challenge::parse(v).ok()) else { return false };
        let branch = self.new_branch();
        let cnonce = self.random_token(16);
        let ua = self.cfg.user_agent.clone();
        let Some(c) = self.calls.get_mut(&key) else { return false };
        let Some(u) = c.uac.as_mut() else { return false };
        let Some(acct) = u.account.and_then(|i| self.registrations.get(i)).map(|r| r.spec.clone()) else {
            return false;
        };
        if u.auth_tries >= 2 && !challenge.stale {
            return false;
        }
        u.auth_tries += 1;
        let cred = Credentials { username: &acct.auth_username, password: &acct.password };
        let value = digest::authorize(&challenge, &cred, "INVITE", &u.request_uri, 1, &cnonce);
        let old_branch = std::mem::replace(&mut u.branch, branch.clone());
        u.cseq += 1;
        let auth = (if proxy { "Proxy-Authorization" } else { "Authorization" }, value);
        let msg = build_invite(
            u,
            &c.local_uri,
            &c.call_id,
            &c.contact,
            c.source.transport,
            &c.local_host,
            c.source.local.port(),
            &branch,
            &ua,
            Some(auth),
        );
        u.invite.data = msg.to_bytes();
        u.retransmit_at = (!c.source.transport.is_reliable()).then_some(now + self.cfg.t1);
        u.interval = self.cfg.t1;
        u.timeout_at = Some(now + self.cfg.t1 * 64);
        c.invite = msg;
        c.local_cseq = u.cseq;
        c.invite_tx = tx_key(&branch);
        let t = u.invite.clone();
        info!(call_id = %c.call_id, key = %key, proxy, "answering the INVITE's challenge");
        self.uac_branches.remove(&old_branch);
        self.uac_branches.insert(branch, key);
        self.transmits.push_back(t);
        true
    }

    /// CANCEL the pending INVITE (same branch, CSeq number and Request-URI; §9.1).
    fn send_cancel(&mut self, key: CallKey, now: Instant) {
        let t1 = self.cfg.t1;
        let Some(u) = self.calls.get_mut(&key).and_then(|c| c.uac.as_mut()) else { return };
        u.cancel_sent = true;
        // No 487 within 64*T1 ends the call anyway.
        u.timeout_at = Some(now + t1 * 64);
        let Some(c) = self.calls.get(&key) else { return };
        let Some(u) = c.uac.as_ref() else { return };
        let t = same_transaction(c, u, Method::Cancel, &u.to_header);
        info!(call_id = %c.call_id, key = %key, "no answer in time: CANCEL");
        let call_id = c.call_id.clone();
        let reliable = t.transport.is_reliable();
        self.transmits.push_back(t.clone());
        self.client_txs.insert(
            u.branch.clone(),
            ClientTx {
                call_id,
                call: Some(key),
                account: None,
                method: Method::Cancel,
                request: t,
                retransmit_at: (!reliable).then_some(now + self.cfg.t1),
                interval: self.cfg.t1,
                timeout_at: now + self.cfg.t1 * 64,
            },
        );
    }

    fn uac_failed(&mut self, key: CallKey, code: u16, reason: &str) {
        if let Some(c) = self.calls.get(&key) {
            let outcome = if c.uac.as_ref().is_some_and(|u| u.cancel_sent) {
                DialOutcome::NoAnswer
            } else {
                DialOutcome::from_code(code)
            };
            info!(call_id = %c.call_id, key = %key, code, reason, outcome = outcome.label(), "outbound call not answered");
            if let Some(u) = &c.uac {
                self.uac_branches.remove(&u.branch);
            }
        }
        self.end_call(key, EndReason::Unanswered { code, reason: reason.to_string() });
    }

    /// Hang up an outbound call that is still ringing: CANCEL (or, before any provisional
    /// answer, wait for one: a CANCEL may not overtake the INVITE).
    pub(super) fn cancel_outbound(&mut self, key: CallKey, now: Instant) {
        let Some(u) = self.calls.get_mut(&key).and_then(|c| c.uac.as_mut()) else { return };
        if u.cancel_sent {
            return;
        }
        if u.provisional {
            self.send_cancel(key, now);
        } else {
            u.ring_deadline = now;
        }
    }

    /// Timer A (retransmit), Timer B (no answer at all), the ring timeout and Timer D.
    pub(super) fn uac_timeouts(&mut self, now: Instant) {
        let t2 = self.cfg.t2;
        let mut cancel = Vec::new();
        let mut timed_out = Vec::new();
        for c in self.calls.values_mut() {
            let Some(u) = c.uac.as_mut() else { continue };
            if c.phase != Phase::Early {
                continue;
            }
            if u.timeout_at.is_some_and(|t| t <= now) {
                timed_out.push(c.key);
                continue;
            }
            if u.retransmit_at.is_some_and(|t| t <= now) {
                self.transmits.push_back(u.invite.clone());
                u.interval = super::txn::doubled(u.interval, t2);
                u.retransmit_at = Some(now + u.interval);
            }
            if u.ring_deadline <= now && u.provisional && !u.cancel_sent {
                cancel.push(c.key);
            }
        }
        for k in cancel {
            self.send_cancel(k, now);
        }
        for k in timed_out {
            let cancelled = self.calls.get(&k).and_then(|c| c.uac.as_ref()).is_some_and(|u| u.cancel_sent);
            self.uac_failed(
                k,
                if cancelled { 487 } else { 408 },
                if cancelled { "no 487 after CANCEL" } else { "no answer to INVITE" },
            );
        }
        self.uac_acked.retain(|_, (_, until)| *until > now);
    }

    pub(super) fn uac_timer(&self) -> Option<Instant> {
        let calls =
            self.calls.values().filter(|c| c.phase == Phase::Early).filter_map(|c| c.uac.as_ref()).flat_map(|u| {
                let ring = (u.provisional && !u.cancel_sent).then_some(u.ring_deadline);
                [u.retransmit_at, u.timeout_at, ring]
            });
        calls.flatten().chain(self.uac_acked.values().map(|(_, t)| *t)).min()
    }

    /// A retransmitted error answer to an INVITE we already ACKed: ACK again. True if it was one.
    pub(super) fn absorb_uac_final(&mut self, branch: &str) -> bool {
        match self.uac_acked.get(branch) {
            Some((t, _)) => {
                self.transmits.push_back(t.clone());
                true
            }
            None => false,
        }
    }
}

/// The ACK of an error answer, or the CANCEL, of our INVITE (§17.1.1.3, §9.1): its Via (same
/// branch), Request-URI, Call-ID, From, CSeq number and Route; `to` is the answer's To for an ACK.
fn same_transaction(c: &Call, u: &Uac, method: Method, to: &str) -> Transmit {
    let mut h = Headers::default();
    if let Some(v) = c.invite.headers.get("Via") {
        h.push("Via", v);
    }
    h.push("Max-Forwards", "70");
    h.push("From", c.local_uri.as_str());
    h.push("To", to);
    h.push("Call-ID", c.call_id.as_str());
    h.push("CSeq", format!("{} {}", u.cseq, method.as_str()));
    for r in c.invite.headers.get_all("Route") {
        h.push("Route", r);
    }
    h.push("Content-Length", "0");
    let m =
        SipMessage { start: StartLine::Request { method, uri: u.request_uri.clone() }, headers: h, body: Vec::new() };
    Transmit { data: m.to_bytes(), ..u.invite.clone() }
}

#[allow(clippy::too_many_arguments)]
fn build_invite(
    u: &Uac,
    from: &str,
    call_id: &str,
    contact: &str,
    transport: Transport,
    host: &str,
    port: u16,
    branch: &str,
    ua: &str,
    auth: Option<(&str, String)>,
) -> SipMessage {
    let mut h = Headers::default();
    h.push(
        "Via",
        format!("SIP/2.0/{} {}:{port};branch={branch};rport", transport.via_name(), super::build::bracket_v6(host)),
    );
    h.push("Max-Forwards", "70");
    h.push("From", from);
    h.push("To", u.to_header.as_str());
    h.push("Call-ID", call_id);
    h.push("CSeq", format!("{} INVITE", u.cseq));
    h.push("Contact", contact);
    if let Some((name, value)) = auth {
        h.push(name, value);
    }
    h.push("Allow", super::ALLOW);
    h.push("Supported", "");
    h.push("User-Agent", ua);
    h.push("Content-Type", "application/sdp");
    SipMessage {
        start: StartLine::Request { method: Method::Invite, uri: u.request_uri.clone() },
        headers: h,
        body: u.our_offer.clone().into_bytes(),
    }
}

/// The Request-URI for `target`: a sip:/sips: URI as given; a tel: URI or a bare number at
/// the account's domain. Bare names with characters a user part cannot hold are refused.
pub fn request_uri(target: &str, domain: Option<&str>) -> Result<String, String> {
    let t = target.trim();
    let lower = t.to_ascii_lowercase();
    if lower.starts_with("sip:") || lower.starts_with("sips:") {
        let uri = SipUri::parse(t).ok_or_else(|| format!("`{t}` is not a SIP URI"))?;
        if uri.host.is_empty() {
            return Err(format!("`{t}` has no host"));
        }
        return Ok(uri.to_string());
    }
    let number = match lower.strip_prefix("tel:") {
        Some(_) => t[4..].split(';').next().unwrap_or("").to_string(),
        None => t.to_string(),
    };
    let ok = !number.is_empty()
        && number
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_' | '*' | '#' | '(' | ')'));
    if !ok {
        return Err(format!("`{t}` is neither a SIP URI nor a number"));
    }
    let number: String = number.chars().filter(|c| !matches!(c, '-' | '.' | '(' | ')')).collect();
    let number = number.replace('#', "%23");
    match domain {
        Some(d) => Ok(format!("sip:{number}@{d}")),
        None => Err(format!("`{t}` is a number: name an account to dial it through (or give a sip: URI)")),
    }
}
