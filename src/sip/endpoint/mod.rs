//! The sans-IO SIP endpoint: a user agent server core (RFC 3261) that owns
//! transactions, dialogs and calls, and never touches a socket or a clock.
//!
//! Drive it with `handle_message(bytes, source, now)` and `handle_timeout(now)`;
//! take what it wants sent from `poll_transmit()` and what happened from
//! `poll_event()`; answer calls with `ring`/`answer`/`reject` and end them with
//! `hangup`, or hand them on with `transfer` (REFER). `poll_timeout()` says when it next needs
//! `handle_timeout`.

mod build;
mod call;
mod dial;
mod register;
mod transfer;
mod txn;
mod types;

#[cfg(test)]
mod guard_tests;
#[cfg(test)]
mod tests;

pub use build::{bracket_v6 as bracket_host, ACCEPT, ALLOW};
pub use dial::{request_uri, DialOutcome, DialSpec, OutgoingCall};
pub use register::{AccountSpec, RegState};
pub use types::*;

use crate::config::glob_match;
use crate::sip::guard::{AuthVerdict, Guard, GuardConfig, GuardStats};
use crate::sip::message::{Method, ParseError, SipMessage, StartLine, Via};
use crate::sip::sdp::{self, Codec, Origin};
use call::{Call, Phase, Retx};
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};
use txn::{ClientTx, ServerState, ServerTx, TxKey};

#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
    pub user_agent: String,
    /// Host for our Contact/Via (NAT); None = the local address a request arrived on.
    pub advertised: Option<IpAddr>,
    /// Address for SDP c= lines; None = `advertised`, else the local address.
    pub media_advertised: Option<IpAddr>,
    pub codecs: Vec<Codec>,
    pub ptime_ms: u32,
    /// (pattern, agent) in order; the first match wins.
    pub routes: Vec<(String, String)>,
    /// Who may call (ACLs, scanners, rate limits, inbound digest auth).
    pub guard: GuardConfig,
    /// Most calls at once, in and out (0: no limit); beyond it new INVITEs get 503.
    pub max_calls: usize,
    /// Per agent, most calls at once.
    pub agent_max_calls: HashMap<String, usize>,
    /// Retry-After of a 503 for a full appliance or agent.
    pub retry_after_s: u64,
    /// Most server transactions kept at once; beyond it requests get a stateless 503.
    pub max_transactions: usize,
}

impl EndpointConfig {
    pub fn from_config(c: &crate::config::Config) -> EndpointConfig {
        let t1 = Duration::from_millis(c.sip.t1_ms.get());
        EndpointConfig {
            t1,
            t2: Duration::from_secs(4).max(t1),
            t4: Duration::from_secs(5),
            user_agent: c.sip.user_agent.clone(),
            advertised: c.sip.advertised_address,
            media_advertised: c.media.advertised_address,
            codecs: c.media.codecs.iter().map(|&c| c.into()).collect(),
            ptime_ms: c.media.ptime_ms.get() as u32,
            routes: c.routes.iter().map(|r| (r.pattern.clone(), r.agent.clone())).collect(),
            guard: GuardConfig::from_config(c),
            max_calls: c.calls.max_concurrent as usize,
            agent_max_calls: c
                .agents
                .iter()
                .filter_map(|(n, a)| a.max_concurrent_calls.map(|m| (n.clone(), m as usize)))
                .collect(),
            retry_after_s: c.calls.retry_after_s,
            max_transactions: MAX_TRANSACTIONS,
        }
    }
}

/// Default bound on server transactions. A transaction lives at most 64*T1 (32 s); an INVITE
/// flood answered 503 keeps one per INVITE for T4 after its ACK, so 16384 covers a sustained
/// 1000 INVITEs/s from trusted sources (each under 2 KB) before the stateless fallback.
pub const MAX_TRANSACTIONS: usize = 16_384;

/// Counters the driver exports as metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EndpointStats {
    pub requests: u64,
    pub responses_sent: u64,
    pub malformed: u64,
    pub retransmissions_absorbed: u64,
    /// New calls refused with 503 because the appliance or their agent was full.
    pub call_limit: u64,
    /// New calls refused with 503 because the models were saturated (`calls.max_queue_wait_ms`).
    pub models_busy: u64,
    /// Requests answered with a stateless 503 because the transaction table was full.
    pub overload: u64,
    pub guard: GuardStats,
}

pub struct Endpoint {
    cfg: EndpointConfig,
    rng: rand::rngs::StdRng,
    next_key: u64,
    calls: HashMap<CallKey, Call>,
    /// (Call-ID, local tag) -> call, for in-dialog requests.
    dialogs: HashMap<(String, String), CallKey>,
    server_txs: HashMap<TxKey, ServerTx>,
    client_txs: HashMap<String, ClientTx>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    draining: bool,
    /// Why the models cannot take another call now (admission from measured load), if so.
    overloaded: Option<String>,
    stats: EndpointStats,
    registrations: Vec<register::Registration>,
    /// Our pending INVITEs by branch, and the ACKs of their error answers (Timer D).
    uac_branches: HashMap<String, CallKey>,
    uac_acked: HashMap<String, (Transmit, Instant)>,
    guard: Guard,
}

impl Endpoint {
    /// `seed` feeds every random choice (tags, branches, nonces' secret); `now` starts its clocks.
    pub fn new(cfg: EndpointConfig, seed: u64, now: Instant) -> Endpoint {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let guard = Guard::new(cfg.guard.clone(), rng.random(), now);
        Endpoint {
            cfg,
            rng,
            next_key: 1,
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            server_txs: HashMap::new(),
            client_txs: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            draining: false,
            overloaded: None,
            stats: EndpointStats::default(),
            registrations: Vec::new(),
            uac_branches: HashMap::new(),
            uac_acked: HashMap::new(),
            guard,
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn stats(&self) -> EndpointStats {
        EndpointStats { guard: self.guard.stats(), ..self.stats }
    }

    /// Sources serving a temporary block now.
    pub fn blocked_sources(&self, now: Instant) -> usize {
        self.guard.blocked_sources(now)
    }

    /// Why a new call for `agent` cannot be taken now (appliance or agent full, models saturated), if so.
    fn call_limit_reached(&self, agent: &str) -> Option<String> {
        if let Some(why) = &self.overloaded {
            return Some(why.clone());
        }
        let max = self.cfg.max_calls;
        if max > 0 && self.calls.len() >= max {
            return Some(format!("the appliance is at its limit of {max} calls (calls.max_concurrent)"));
        }
        let agent_max = *self.cfg.agent_max_calls.get(agent)?;
        let n = self.calls.values().filter(|c| c.agent == agent).count();
        (n >= agent_max).then(|| format!("agent `{agent}` is at its limit of {agent_max} calls (max_concurrent_calls)"))
    }

    /// Calls not yet ended (ringing, answered or confirmed).
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Pending work that must finish before a clean exit (calls and BYE transactions).
    pub fn is_idle(&self) -> bool {
        self.calls.is_empty() && self.client_txs.is_empty()
    }

    /// Refuse new calls with 503 + Retry-After (graceful shutdown); calls in progress continue.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// While `Some(why)`, new calls get 503 + Retry-After (and dials are refused) for that reason:
    /// the models are saturated (see `calls.max_queue_wait_ms`).
    pub fn set_overloaded(&mut self, why: Option<String>) {
        self.overloaded = why;
    }

    pub fn overloaded(&self) -> bool {
        self.overloaded.is_some()
    }

    pub fn call_keys(&self) -> Vec<CallKey> {
        self.calls.keys().copied().collect()
    }

    fn random_token(&mut self, len: usize) -> String {
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..len).map(|_| CHARS[self.rng.random_range(0..CHARS.len())] as char).collect()
    }

    fn new_branch(&mut self) -> String {
        format!("z9hG4bK{}", self.random_token(16))
    }

    fn send(&mut self, mut t: Transmit, msg: &SipMessage) {
        t.data = msg.to_bytes();
        self.transmits.push_back(t);
    }

    /// When `handle_timeout` must next run (None: nothing pending).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let tx = self.server_txs.values().filter_map(ServerTx::next_timer);
        let ctx = self.client_txs.values().map(ClientTx::next_timer);
        let calls = self.calls.values().filter_map(Call::next_timer);
        tx.chain(ctx).chain(calls).chain(self.registration_timer()).chain(self.uac_timer()).min()
    }

    // ---------------------------------------------------------------- input

    pub fn handle_message(&mut self, data: &[u8], src: Source, now: Instant) {
        // Blocked and flooding sources are dropped before the parser spends anything on them.
        if !self.guard.admit_datagram(src.addr.ip(), now) {
            return;
        }
        match SipMessage::parse(data) {
            Ok(msg) if msg.is_request() => {
                self.stats.requests += 1;
                self.handle_request(msg, src, now)
            }
            Ok(msg) => self.handle_response(msg, now),
            Err(e) => self.handle_malformed(e, src),
        }
    }

    /// A request we could read the start line of gets a 400; anything else is dropped.
    fn handle_malformed(&mut self, e: ParseError, src: Source) {
        self.stats.malformed += 1;
        let via = e.headers.get("Via").and_then(Via::parse);
        match via {
            Some(via) if e.request_line_ok => {
                debug!(peer = %src.addr, error = %e, "malformed request: 400");
                let fixed = build::fixed_top_via(&via, &src);
                let tag = self.random_token(10);
                let mut resp = build::response(&e.headers, &fixed, 400, Some(&tag), &self.cfg.user_agent);
                resp.start = StartLine::Response { code: 400, reason: format!("Bad Request ({e})") };
                let target = build::response_target(&via, &src);
                self.stats.responses_sent += 1;
                self.send(target, &resp);
            }
            _ => debug!(peer = %src.addr, error = %e, "unreadable SIP message dropped"),
        }
    }

    fn handle_request(&mut self, req: SipMessage, src: Source, now: Instant) {
        let Some(method) = req.method().cloned() else { return };
        let Some(via) = req.top_via() else {
            debug!(peer = %src.addr, "request without a readable Via dropped");
            self.stats.malformed += 1;
            return;
        };
        let fixed_via = build::fixed_top_via(&via, &src);
        let target = build::response_target(&via, &src);
        let ctx = ReqCtx { req, src, via: fixed_via, target, method };

        // §8.1.1 mandatory headers; the CSeq method must match the request's.
        let missing = [
            ("From", ctx.req.from().is_none()),
            ("To", ctx.req.to().is_none()),
            ("Call-ID", ctx.req.call_id().is_none()),
        ]
        .into_iter()
        .find(|(_, m)| *m)
        .map(|(n, _)| n)
        .or(match ctx.req.cseq() {
            None => Some("CSeq"),
            Some(c) if c.method != ctx.method => Some("CSeq method"),
            _ => None,
        });
        if let Some(what) = missing {
            if ctx.method != Method::Ack {
                self.stats.malformed += 1;
                self.respond_reason(&ctx, 400, None, &format!("Bad Request (missing or bad {what})"), |_| {});
            }
            return;
        }

        let branch = via.branch().unwrap_or("").to_string();
        let sent_by = format!("{}:{}", via.host, via.port.unwrap_or(5060));
        let key_for = |m: Method| TxKey { branch: branch.clone(), sent_by: sent_by.clone(), method: m };

        match ctx.method {
            Method::Ack => {
                // ACK for an error response belongs to the INVITE transaction; for a 2xx, to the dialog.
                if let Some(tx) = self.server_txs.get_mut(&key_for(Method::Invite)) {
                    if tx.state == ServerState::Completed {
                        tx.state = ServerState::Confirmed;
                        tx.retransmit_at = None;
                        tx.expire_at =
                            Some(now + if ctx.src.transport.is_reliable() { Duration::ZERO } else { self.cfg.t4 });
                        return;
                    }
                    if tx.state == ServerState::Confirmed {
                        return;
                    }
                }
                self.handle_ack(ctx, now);
                return;
            }
            Method::Cancel => {
                let k = key_for(Method::Cancel);
                if self.absorb_retransmission(&k) {
                    return;
                }
                self.handle_cancel(ctx, key_for(Method::Invite), k, now);
                return;
            }
            _ => {}
        }

        let tx_method = if ctx.method == Method::Invite { Method::Invite } else { ctx.method.clone() };
        let key = key_for(tx_method);
        if self.absorb_retransmission(&key) {
            return;
        }
        // Scanners get no answer at all: an answer tells them something listens here.
        if self.guard.screen_scanner(&ctx.req, ctx.src.addr.ip(), now) {
            debug!(peer = %ctx.src.addr, "scanner request dropped");
            return;
        }
        // A full transaction table: answer without keeping state, so memory stays bounded.
        if self.server_txs.len() >= self.cfg.max_transactions {
            self.stats.overload += 1;
            let retry = self.cfg.retry_after_s.to_string();
            self.respond_reason(&ctx, 503, None, "Service Unavailable (overloaded)", |m| {
                m.headers.push("Retry-After", retry)
            });
            return;
        }

        // Checks every new request passes before its method is looked at.
        if let Some(uri) = ctx.req.request_uri() {
            if !matches!(uri.scheme.as_str(), "sip" | "sips" | "tel") {
                self.respond_tx(key, &ctx, 416, None, now, |_| {});
                return;
            }
        } else {
            self.respond_tx(key, &ctx, 416, None, now, |_| {});
            return;
        }
        if let Some(req_ext) = ctx.req.headers.get_all("Require").find(|r| !r.trim().is_empty()) {
            let unsupported = req_ext.trim().to_string();
            self.respond_tx(key, &ctx, 420, None, now, |m| m.headers.push("Unsupported", unsupported.clone()));
            return;
        }

        let to_tag = ctx.req.to().and_then(|t| t.tag().map(str::to_string));
        if let Some(tag) = to_tag {
            self.handle_in_dialog(ctx, key, tag, now);
            return;
        }
        // Out of dialog, only allowed sources are served; an INVITE is judged by its route
        // (which may have its own list) and may authenticate instead.
        if ctx.method != Method::Invite && !self.guard.trusted(ctx.src.addr.ip()) {
            self.guard.acl_rejected();
            info!(peer = %ctx.src.addr, method = ctx.method.as_str(), "source not allowed (security.allow): 403");
            self.respond_tx(key, &ctx, 403, None, now, |_| {});
            return;
        }
        match ctx.method {
            Method::Invite => self.handle_invite(ctx, key, now),
            Method::Options => {
                self.respond_tx(key, &ctx, 200, None, now, |m| {
                    m.headers.push("Allow", ALLOW);
                    m.headers.push("Accept", ACCEPT);
                    m.headers.push("Supported", "");
                });
            }
            Method::Bye | Method::Info | Method::Update => self.respond_tx(key, &ctx, 481, None, now, |_| {}),
            _ => self.respond_tx(key, &ctx, 405, None, now, |m| m.headers.push("Allow", ALLOW)),
        }
    }

    /// A retransmitted request: re-send the last response (or stay quiet while
    /// an INVITE still waits for its answer). True when the request was one.
    fn absorb_retransmission(&mut self, key: &TxKey) -> bool {
        let Some(tx) = self.server_txs.get(key) else { return false };
        self.stats.retransmissions_absorbed += 1;
        if let Some(t) = tx.last_response.clone() {
            self.transmits.push_back(t);
        }
        true
    }

    fn handle_response(&mut self, resp: SipMessage, now: Instant) {
        let StartLine::Response { code, .. } = resp.start else { return };
        let Some(branch) = resp.top_via().and_then(|v| v.branch().map(str::to_string)) else { return };
        if resp.cseq().is_some_and(|c| c.method == Method::Invite) {
            if let Some(&key) = self.uac_branches.get(&branch) {
                self.handle_uac_response(key, resp, now);
            } else if code >= 300 {
                self.absorb_uac_final(&branch);
            }
            return;
        }
        if code < 200 {
            // Provisional: stop retransmitting, keep waiting for the final answer (Timer F still runs).
            if let Some(tx) = self.client_txs.get_mut(&branch) {
                tx.retransmit_at = None;
            }
            return;
        }
        if let Some(tx) = self.client_txs.remove(&branch) {
            debug!(call_id = %tx.call_id, code, method = tx.method.as_str(), "final response to our request");
            if let Some(i) = tx.account {
                self.register_answered(i, Some(&resp), now);
                return;
            }
            if let (Method::Refer, Some(key)) = (&tx.method, tx.call) {
                let reason = match &resp.start {
                    StartLine::Response { reason, .. } => reason.clone(),
                    _ => String::new(),
                };
                self.refer_answered(key, code, &reason);
            }
        }
    }

    // ---------------------------------------------------------------- INVITE

    fn handle_invite(&mut self, ctx: ReqCtx, key: TxKey, now: Instant) {
        let call_id = ctx.req.call_id().unwrap_or_default().to_string();
        let called = called_user(&ctx.req);
        if self.draining {
            info!(%call_id, "shutting down: 503 to new call");
            self.respond_tx(key, &ctx, 503, None, now, |m| m.headers.push("Retry-After", "30"));
            return;
        }
        // A call the registrar forwards to one of our registered Contacts goes to that account's agent.
        let account = self.account_agent(&called);
        let route =
            if account.is_some() { None } else { self.cfg.routes.iter().position(|(p, _)| glob_match(p, &called)) };
        let agent = account.as_ref().map(|(a, _)| a.clone()).or_else(|| route.map(|i| self.cfg.routes[i].1.clone()));
        // Who may call is decided before anything else is told: a stranger learns nothing of our routes.
        let ip = ctx.src.addr.ip();
        let allowed = self.guard.call_allowed(ip, route, account.as_ref().map(|(_, hop)| *hop));
        if self.guard.needs_auth(allowed) {
            match self.guard.authenticate(&ctx.req, ip, now) {
                AuthVerdict::User(user) => debug!(%call_id, %user, "caller authenticated"),
                AuthVerdict::Challenge(value) => {
                    self.respond_tx(key, &ctx, 401, None, now, |m| m.headers.push("WWW-Authenticate", value));
                    return;
                }
            }
        } else if !allowed {
            self.guard.acl_rejected();
            info!(%call_id, peer = %ctx.src.addr, %called, "caller's address not allowed (security.allow / the route's allow): 403");
            self.respond_tx(key, &ctx, 403, None, now, |_| {});
            return;
        }
        let Some(agent) = agent else {
            info!(%call_id, %called, "no route for called user: 404");
            self.respond_tx(key, &ctx, 404, None, now, |_| {});
            return;
        };
        if let Some(why) = self.call_limit_reached(&agent) {
            let phrase = if self.overloaded.is_some() {
                self.stats.models_busy += 1;
                "Service Unavailable (models saturated)"
            } else {
                self.stats.call_limit += 1;
                "Service Unavailable (call limit reached)"
            };
            info!(%call_id, %agent, "{why}: 503");
            let retry = self.cfg.retry_after_s.to_string();
            self.respond_tx(key, &ctx, 503, None, now, |m| {
                m.start = StartLine::Response { code: 503, reason: phrase.into() };
                m.headers.push("Retry-After", retry);
            });
            return;
        }
        if ctx.req.body.is_empty() {
            // Offerless INVITE (we would have to offer in the 200 and read the answer in ACK).
            info!(%call_id, "INVITE without SDP offer: 488");
            self.respond_reason_tx(key, &ctx, 488, "Not Acceptable Here (an SDP offer is required)", now);
            return;
        }
        let ctype = ctx.req.headers.get("Content-Type").unwrap_or("application/sdp").to_ascii_lowercase();
        if !ctype.starts_with("application/sdp") {
            self.respond_tx(key, &ctx, 415, None, now, |m| m.headers.push("Accept", ACCEPT));
            return;
        }
        let offer = match sdp::parse(&ctx.req.body) {
            Ok(o) => o,
            Err(e) => {
                info!(%call_id, error = %e, "unreadable SDP: 400");
                self.respond_reason_tx(key, &ctx, 400, &format!("Bad Request ({e})"), now);
                return;
            }
        };
        let negotiated = match sdp::negotiate(&offer, &self.cfg.codecs, self.cfg.ptime_ms) {
            Ok(n) => n,
            Err(e) => {
                info!(%call_id, error = %e, "offer not acceptable: 488");
                self.respond_reason_tx(key, &ctx, 488, &format!("Not Acceptable Here ({e})"), now);
                return;
            }
        };

        let call_key = CallKey(self.next_key);
        self.next_key += 1;
        let local_tag = self.random_token(12);
        let from = ctx.req.from().expect("checked");
        let to = ctx.req.to().expect("checked");
        let remote_target = ctx.req.contact().map(|c| c.uri.to_string()).unwrap_or_else(|| from.uri.to_string());
        let mut local_na = to.clone();
        local_na.set_tag(&local_tag);
        let local_host = self.cfg.advertised.unwrap_or(ctx.src.local.ip()).to_string();
        let call = Call {
            agent: agent.clone(),
            key: call_key,
            call_id: call_id.clone(),
            local_tag: local_tag.clone(),
            local_uri: local_na.to_string(),
            remote_uri: from.to_string(),
            remote_target,
            route_set: ctx.req.headers.get_all("Record-Route").map(str::to_string).collect(),
            remote_cseq: ctx.req.cseq().map(|c| c.seq).unwrap_or(0),
            local_cseq: 0,
            invite: ctx.req.clone(),
            invite_via: ctx.via.clone(),
            invite_tx: key.clone(),
            response_target: ctx.target.clone(),
            symmetric: via_wants_rport(&ctx.req),
            source: ctx.src,
            contact: build::contact(&local_host, ctx.src.local.port(), ctx.src.transport),
            local_host,
            phase: Phase::Early,
            bye_reason: String::new(),
            ended_notified: false,
            offer: offer.clone(),
            negotiated: negotiated.clone(),
            origin: Origin { session_id: self.rng.random_range(1..1u64 << 48), version: 1 },
            local_rtp_port: None,
            retx: None,
            refer: None,
            uac: None,
        };
        info!(%call_id, key = %call_key, from = %from.uri, %called, %agent, codec = ?negotiated.codec, "incoming call");
        self.server_txs.insert(key, ServerTx::new_invite(Some(call_key)));
        self.dialogs.insert((call_id.clone(), local_tag), call_key);
        self.calls.insert(call_key, call);
        // 100 Trying at once: it stops the caller's INVITE retransmissions (§17.2.1).
        self.invite_response(call_key, 100, now);
        self.events.push_back(Event::Incoming(IncomingCall {
            key: call_key,
            call_id,
            from: from.uri.to_string(),
            called,
            agent,
            negotiated,
            source: ctx.src,
        }));
    }

    /// Send 180 Ringing for a call the driver has accepted to handle.
    pub fn ring(&mut self, key: CallKey, now: Instant) {
        if self.calls.get(&key).is_some_and(|c| c.phase == Phase::Early && c.uac.is_none()) {
            self.invite_response(key, 180, now);
        }
    }

    /// Answer with 200 OK; our SDP carries `rtp_port` at the advertised media address.
    pub fn answer(&mut self, key: CallKey, rtp_port: u16, now: Instant) {
        let Some(c) = self.calls.get_mut(&key) else { return };
        if c.phase != Phase::Early || c.uac.is_some() {
            return;
        }
        c.local_rtp_port = Some(rtp_port);
        c.phase = Phase::Answered;
        self.invite_response(key, 200, now);
    }

    /// Refuse a call that has not been answered (503 when out of ports, 486, ...).
    pub fn reject(&mut self, key: CallKey, code: u16, now: Instant) {
        if self.calls.get(&key).is_some_and(|c| c.phase == Phase::Early && c.uac.is_none()) {
            self.invite_response(key, code, now);
            self.end_call(key, EndReason::Rejected(code));
        }
    }

    /// End a call from our side: BYE once answered, 480 while still ringing.
    pub fn hangup(&mut self, key: CallKey, reason: &str, now: Instant) {
        let Some(c) = self.calls.get(&key) else { return };
        match c.phase {
            // Our own INVITE still rings: CANCEL it; `Ended` follows its 487.
            Phase::Early if c.uac.is_some() => self.cancel_outbound(key, now),
            Phase::Early => {
                self.invite_response(key, 480, now);
                self.end_call(key, EndReason::LocalHangup(reason.to_string()));
            }
            Phase::Answered => {
                // §15: no BYE before the ACK of our 2xx. Stop the media now; the BYE follows.
                if let Some(c) = self.calls.get_mut(&key) {
                    c.phase = Phase::ByePending;
                    c.bye_reason = reason.to_string();
                }
                self.notify_ended(key, EndReason::LocalHangup(reason.to_string()));
            }
            Phase::Confirmed => {
                self.send_bye(key, reason, now);
                self.end_call(key, EndReason::LocalHangup(reason.to_string()));
            }
            Phase::ByePending => {}
        }
    }

    /// Build and send a response to the call's INVITE, updating its transaction.
    fn invite_response(&mut self, key: CallKey, code: u16, now: Instant) {
        let Some(c) = self.calls.get_mut(&key) else { return };
        let tag = (code != 100).then_some(c.local_tag.as_str());
        let mut m = build::response(&c.invite.headers, &c.invite_via, code, tag, &self.cfg.user_agent);
        if (101..300).contains(&code) {
            // Dialog-creating responses carry Record-Route (§12.1.1) and our Contact.
            for rr in c.invite.headers.get_all("Record-Route") {
                m.headers.push("Record-Route", rr);
            }
            m.headers.push("Contact", c.contact.as_str());
        }
        if code == 200 {
            m.headers.push("Allow", ALLOW);
            m.headers.push("Supported", "");
            m.headers.push("Content-Type", "application/sdp");
            let port = c.local_rtp_port.unwrap_or(0);
            let ip = self.cfg.media_advertised.or(self.cfg.advertised).unwrap_or(c.source.local.ip());
            m.body =
                sdp::build_answer(&c.offer, &c.negotiated, std::net::SocketAddr::new(ip, port), c.origin).into_bytes();
        }
        if code == 503 {
            m.headers.push("Retry-After", "30");
        }
        let mut t = c.response_target.clone();
        t.data = m.to_bytes();
        let reliable = c.source.transport.is_reliable();
        let tx_key = c.invite_tx.clone();
        if code == 200 {
            // The UAS core retransmits the 2xx until ACK (§13.3.1.4), over UDP; the
            // 64*T1 give-up applies on every transport.
            c.retx = Some(Retx {
                data: t.clone(),
                next: (!reliable).then_some(now + self.cfg.t1),
                interval: self.cfg.t1,
                give_up: now + self.cfg.t1 * 64,
                cseq: c.remote_cseq,
            });
        }
        if let Some(tx) = self.server_txs.get_mut(&tx_key) {
            tx.last_response = Some(t.clone());
            match code {
                100..=199 => {}
                200..=299 => {
                    tx.state = ServerState::Accepted;
                    tx.expire_at = Some(now + self.cfg.t1 * 64);
                }
                _ => {
                    tx.state = ServerState::Completed;
                    tx.interval = self.cfg.t1;
                    tx.retransmit_at = (!reliable).then_some(now + self.cfg.t1);
                    tx.expire_at = Some(now + self.cfg.t1 * 64);
                }
            }
        }
        self.stats.responses_sent += 1;
        self.transmits.push_back(t);
    }

    fn handle_ack(&mut self, ctx: ReqCtx, now: Instant) {
        let call_id = ctx.req.call_id().unwrap_or_default().to_string();
        let Some(tag) = ctx.req.to().and_then(|t| t.tag().map(str::to_string)) else { return };
        let Some(&key) = self.dialogs.get(&(call_id, tag)) else { return };
        let Some(c) = self.calls.get_mut(&key) else { return };
        let cseq = ctx.req.cseq().map(|c| c.seq).unwrap_or(0);
        match &c.retx {
            Some(r) if r.cseq == cseq => {
                c.retx = None;
                if c.phase == Phase::ByePending {
                    let reason = c.bye_reason.clone();
                    self.send_bye(key, &reason, now);
                    self.forget_call(key);
                    return;
                }
                if c.phase == Phase::Answered {
                    c.phase = Phase::Confirmed;
                    info!(call_id = %c.call_id, key = %key, "call confirmed (ACK)");
                    self.events.push_back(Event::Confirmed { key });
                }
            }
            _ => {} // ACK retransmission or stray ACK: nothing to do
        }
    }

    fn handle_cancel(&mut self, ctx: ReqCtx, invite_key: TxKey, cancel_key: TxKey, now: Instant) {
        let call = self.server_txs.get(&invite_key).map(|tx| (tx.state, tx.call));
        match call {
            None => self.respond_tx(cancel_key, &ctx, 481, None, now, |_| {}),
            Some((state, call)) => {
                let tag = call.and_then(|k| self.calls.get(&k)).map(|c| c.local_tag.clone());
                self.respond_tx(cancel_key, &ctx, 200, tag.as_deref(), now, |_| {});
                if let (ServerState::Proceeding, Some(k)) = (state, call) {
                    info!(call_id = %ctx.req.call_id().unwrap_or_default(), key = %k, "cancelled before answer: 487");
                    self.invite_response(k, 487, now);
                    self.end_call(k, EndReason::Cancelled);
                }
            }
        }
    }

    // ---------------------------------------------------------------- dialogs

    fn handle_in_dialog(&mut self, ctx: ReqCtx, key: TxKey, to_tag: String, now: Instant) {
        let call_id = ctx.req.call_id().unwrap_or_default().to_string();
        let Some(&ck) = self.dialogs.get(&(call_id.clone(), to_tag.clone())) else {
            self.respond_tx(key, &ctx, 481, None, now, |_| {});
            return;
        };
        let cseq = ctx.req.cseq().map(|c| c.seq).unwrap_or(0);
        let Some(c) = self.calls.get_mut(&ck) else { return };
        // §12.2.2: requests with a lower or equal CSeq than the last are out of order.
        if cseq <= c.remote_cseq && ctx.method != Method::Ack {
            self.respond_reason_tx(key, &ctx, 500, "Server Internal Error (CSeq out of order)", now);
            return;
        }
        c.remote_cseq = cseq;
        // A target refresh (re-INVITE/UPDATE) may move the peer (§12.2.2).
        if matches!(ctx.method, Method::Invite | Method::Update) {
            if let Some(contact) = ctx.req.contact() {
                c.remote_target = contact.uri.to_string();
            }
        }
        match ctx.method {
            Method::Bye => {
                info!(%call_id, key = %ck, "BYE from peer");
                let early = c.phase == Phase::Early && c.uac.is_none();
                self.respond_tx(key, &ctx, 200, None, now, |_| {});
                if early {
                    self.invite_response(ck, 487, now);
                }
                self.end_call(ck, EndReason::RemoteBye);
            }
            Method::Invite | Method::Update => self.handle_reoffer(ctx, key, ck, now),
            Method::Notify => self.handle_notify(ctx, key, ck, now),
            Method::Info | Method::Options => {
                self.respond_tx(key, &ctx, 200, None, now, |m| {
                    m.headers.push("Allow", ALLOW);
                });
                if ctx.method == Method::Info && !ctx.req.body.is_empty() {
                    let content_type = ctx.req.headers.get("Content-Type").unwrap_or("").to_string();
                    self.events.push_back(Event::Info { key: ck, content_type, body: ctx.req.body });
                }
            }
            _ => self.respond_tx(key, &ctx, 405, None, now, |m| m.headers.push("Allow", ALLOW)),
        }
    }

    /// re-INVITE or UPDATE inside a dialog: renegotiate and answer at once with the same local port.
    fn handle_reoffer(&mut self, ctx: ReqCtx, key: TxKey, ck: CallKey, now: Instant) {
        let is_invite = ctx.method == Method::Invite;
        let Some(c) = self.calls.get(&ck) else { return };
        if is_invite && c.retx.is_some() {
            // §14.2: an INVITE while our previous 2xx awaits its ACK.
            self.respond_tx(key, &ctx, 500, None, now, |m| m.headers.push("Retry-After", "1"));
            return;
        }
        let mut new_neg = None;
        if !ctx.req.body.is_empty() {
            let parsed = sdp::parse(&ctx.req.body).map_err(|e| e.to_string());
            let neg = parsed.and_then(|o| {
                sdp::negotiate(&o, &self.cfg.codecs, self.cfg.ptime_ms).map(|n| (o, n)).map_err(|e| e.to_string())
            });
            match neg {
                Ok(n) => new_neg = Some(n),
                Err(e) => {
                    // The old session stays as it was (RFC 3261 §14.2).
                    self.respond_reason_tx(key, &ctx, 488, &format!("Not Acceptable Here ({e})"), now);
                    return;
                }
            }
        } else if !is_invite {
            self.respond_tx(key, &ctx, 200, None, now, |_| {});
            return;
        }
        let ip = self.cfg.media_advertised.or(self.cfg.advertised);
        let c = self.calls.get_mut(&ck).expect("looked up above");
        if let Some((offer, neg)) = new_neg {
            c.offer = offer;
            c.negotiated = neg.clone();
            c.origin.version += 1;
            self.events.push_back(Event::MediaChanged { key: ck, negotiated: neg });
        }
        let ip = ip.unwrap_or(c.source.local.ip());
        let body = sdp::build_answer(
            &c.offer,
            &c.negotiated,
            std::net::SocketAddr::new(ip, c.local_rtp_port.unwrap_or(0)),
            c.origin,
        );
        let contact = c.contact.clone();
        let tag = c.local_tag.clone();
        let cseq = ctx.req.cseq().map(|s| s.seq).unwrap_or(0);
        let t1 = self.cfg.t1;
        let reliable = ctx.src.transport.is_reliable();
        let sent = self.respond_tx_sent(key, &ctx, 200, Some(&tag), now, |m| {
            m.headers.push("Contact", contact.as_str());
            m.headers.push("Allow", ALLOW);
            m.headers.push("Content-Type", "application/sdp");
            m.body = body.into_bytes();
        });
        if is_invite {
            if let (Some(c), Some(t)) = (self.calls.get_mut(&ck), sent) {
                c.retx = Some(Retx {
                    data: t,
                    next: (!reliable).then_some(now + t1),
                    interval: t1,
                    give_up: now + t1 * 64,
                    cseq,
                });
            }
        }
    }

    fn send_bye(&mut self, key: CallKey, reason: &str, now: Instant) {
        if let Some(c) = self.calls.get(&key) {
            info!(call_id = %c.call_id, key = %key, reason, "sending BYE");
        }
        let reason = format!("SIP;cause=200;text=\"{}\"", reason.replace('"', "'"));
        self.send_in_dialog(key, Method::Bye, now, |m| m.headers.push("Reason", reason));
    }

    /// Send a request inside the call's dialog (BYE, REFER) as a client transaction.
    fn send_in_dialog(&mut self, key: CallKey, method: Method, now: Instant, edit: impl FnOnce(&mut SipMessage)) {
        let branch = self.new_branch();
        let Some(c) = self.calls.get_mut(&key) else { return };
        c.local_cseq += 1;
        let routing = build::route_request(&c.remote_target, &c.route_set);
        let transport = c.source.transport;
        let mut m = build::dialog_request(
            method.clone(),
            &routing,
            &c.local_host,
            c.source.local.port(),
            transport,
            &branch,
            &c.local_uri,
            &c.remote_uri,
            &c.call_id,
            c.local_cseq,
            &self.cfg.user_agent,
        );
        edit(&mut m);
        // Next hop: the first route; else back the way the INVITE came when the
        // caller uses symmetric signalling (rport) or TCP, else its Contact.
        let (target, transport, conn) = match &routing.next_hop {
            Some(uri) => {
                let (t, tr) = build::uri_target(uri, transport);
                (t, tr, None)
            }
            None if c.symmetric || transport.is_reliable() => (Target::Addr(c.source.addr), transport, c.source.conn),
            None => match crate::sip::message::SipUri::parse(&c.remote_target) {
                Some(uri) => {
                    let (t, tr) = build::uri_target(&uri, transport);
                    (t, tr, None)
                }
                None => (Target::Addr(c.source.addr), transport, c.source.conn),
            },
        };
        let call_id = c.call_id.clone();
        let request = Transmit { transport, target, conn, data: m.to_bytes() };
        self.transmits.push_back(request.clone());
        self.client_txs.insert(
            branch,
            ClientTx {
                call_id,
                call: Some(key),
                account: None,
                method,
                request,
                retransmit_at: (!transport.is_reliable()).then_some(now + self.cfg.t1),
                interval: self.cfg.t1,
                timeout_at: now + self.cfg.t1 * 64,
            },
        );
    }

    /// The call is over: tell the driver (once) and forget its dialog.
    fn end_call(&mut self, key: CallKey, reason: EndReason) {
        self.notify_ended(key, reason);
        self.forget_call(key);
    }

    /// Emit `Ended` (stops media) unless already emitted; the dialog may live on (ByePending).
    fn notify_ended(&mut self, key: CallKey, reason: EndReason) {
        if let Some(c) = self.calls.get_mut(&key) {
            if !c.ended_notified {
                c.ended_notified = true;
                info!(call_id = %c.call_id, key = %key, reason = ?reason, "call ended");
                self.events.push_back(Event::Ended { key, call_id: c.call_id.clone(), reason });
            }
        }
    }

    fn forget_call(&mut self, key: CallKey) {
        if let Some(c) = self.calls.remove(&key) {
            if let Some(u) = &c.uac {
                self.uac_branches.remove(&u.branch);
            }
            self.dialogs.remove(&(c.call_id, c.local_tag));
        }
    }

    // ---------------------------------------------------------------- timers

    pub fn handle_timeout(&mut self, now: Instant) {
        let t2 = self.cfg.t2;
        // Server transactions: error-response retransmission and expiry.
        let mut expired = Vec::new();
        for (k, tx) in self.server_txs.iter_mut() {
            if tx.expire_at.is_some_and(|e| e <= now) {
                if tx.state == ServerState::Completed {
                    debug!(branch = %k.branch, "no ACK for error response (Timer H)");
                }
                expired.push(k.clone());
                continue;
            }
            if tx.retransmit_at.is_some_and(|at| at <= now) {
                if let Some(t) = &tx.last_response {
                    self.transmits.push_back(t.clone());
                }
                tx.interval = txn::doubled(tx.interval, t2);
                tx.retransmit_at = Some(now + tx.interval);
            }
        }
        for k in expired {
            self.server_txs.remove(&k);
        }
        // Client transactions (our BYE).
        let mut done = Vec::new();
        let mut unanswered_refers = Vec::new();
        let mut unanswered_registers = Vec::new();
        for (b, tx) in self.client_txs.iter_mut() {
            if tx.timeout_at <= now {
                warn!(call_id = %tx.call_id, "no answer to our {} (Timer F)", tx.method.as_str());
                done.push(b.clone());
                if let (Method::Refer, Some(key)) = (&tx.method, tx.call) {
                    unanswered_refers.push(key);
                }
                if let Some(i) = tx.account {
                    unanswered_registers.push(i);
                }
                continue;
            }
            if tx.retransmit_at.is_some_and(|at| at <= now) {
                self.transmits.push_back(tx.request.clone());
                tx.interval = txn::doubled(tx.interval, t2);
                tx.retransmit_at = Some(now + tx.interval);
            }
        }
        for b in done {
            self.client_txs.remove(&b);
        }
        for key in unanswered_refers {
            self.refer_answered(key, 408, "no answer to REFER");
        }
        for i in unanswered_registers {
            self.register_answered(i, None, now);
        }
        self.registration_timeouts(now);
        self.uac_timeouts(now);
        // 2xx retransmission until ACK; BYE after 64*T1 without one.
        let mut ack_timeouts = Vec::new();
        for c in self.calls.values_mut() {
            let Some(r) = &mut c.retx else { continue };
            if r.give_up <= now {
                ack_timeouts.push(c.key);
                continue;
            }
            if r.next.is_some_and(|n| n <= now) {
                self.transmits.push_back(r.data.clone());
                r.interval = txn::doubled(r.interval, t2);
                r.next = Some(now + r.interval);
            }
        }
        for k in ack_timeouts {
            let phase = self.calls.get(&k).map(|c| c.phase);
            let mut reason = "no ACK".to_string();
            if let Some(c) = self.calls.get_mut(&k) {
                c.retx = None;
                if c.phase == Phase::ByePending {
                    reason = c.bye_reason.clone();
                }
                warn!(call_id = %c.call_id, key = %k, "no ACK for our 2xx within 64*T1: ending call with BYE");
            }
            self.send_bye(k, &reason, now);
            self.end_call(
                k,
                match phase {
                    Some(Phase::Answered) => EndReason::AckTimeout,
                    _ => EndReason::LocalHangup("no ACK for re-INVITE".into()),
                },
            );
        }
    }

    // ---------------------------------------------------------------- helpers

    /// Respond to a request, record the response in its server transaction
    /// (for retransmissions) and return what was sent.
    fn respond_tx(
        &mut self,
        key: TxKey,
        ctx: &ReqCtx,
        code: u16,
        to_tag: Option<&str>,
        now: Instant,
        edit: impl FnOnce(&mut SipMessage),
    ) {
        self.respond_tx_sent(key, ctx, code, to_tag, now, edit);
    }

    fn respond_tx_sent(
        &mut self,
        key: TxKey,
        ctx: &ReqCtx,
        code: u16,
        to_tag: Option<&str>,
        now: Instant,
        edit: impl FnOnce(&mut SipMessage),
    ) -> Option<Transmit> {
        // A final response to a request without a To tag gets one (§8.2.6.2).
        let untagged = ctx.req.to().is_some_and(|t| t.tag().is_none());
        let tag = to_tag.map(str::to_string).or_else(|| (code >= 200 && untagged).then(|| self.random_token(10)));
        let mut m = build::response(&ctx.req.headers, &ctx.via, code, tag.as_deref(), &self.cfg.user_agent);
        edit(&mut m);
        self.record_and_send(key, ctx, m, now)
    }

    /// `respond_tx` with our own reason phrase (says why: which codec, which header).
    fn respond_reason_tx(&mut self, key: TxKey, ctx: &ReqCtx, code: u16, reason: &str, now: Instant) {
        self.respond_tx(key, ctx, code, None, now, |m| {
            m.start = StartLine::Response { code, reason: reason.to_string() }
        });
    }

    fn record_and_send(&mut self, key: TxKey, ctx: &ReqCtx, m: SipMessage, now: Instant) -> Option<Transmit> {
        let code = match m.start {
            StartLine::Response { code, .. } => code,
            _ => return None,
        };
        let mut t = ctx.target.clone();
        t.data = m.to_bytes();
        let reliable = ctx.src.transport.is_reliable();
        let is_invite = ctx.method == Method::Invite;
        let tx = if is_invite && code >= 300 {
            ServerTx {
                state: ServerState::Completed,
                call: None,
                last_response: Some(t.clone()),
                retransmit_at: (!reliable).then_some(now + self.cfg.t1),
                interval: self.cfg.t1,
                expire_at: Some(now + self.cfg.t1 * 64),
            }
        } else {
            ServerTx {
                state: if is_invite { ServerState::Accepted } else { ServerState::Done },
                call: None,
                last_response: Some(t.clone()),
                retransmit_at: None,
                interval: Duration::ZERO,
                // Timer J (non-INVITE) / L (2xx INVITE): 64*T1 on UDP; TCP needs no absorbing.
                expire_at: Some(now + if reliable && !is_invite { Duration::ZERO } else { self.cfg.t1 * 64 }),
            }
        };
        self.server_txs.insert(key, tx);
        self.stats.responses_sent += 1;
        self.transmits.push_back(t.clone());
        Some(t)
    }

    /// A response outside any transaction (400 to a request missing headers).
    fn respond_reason(
        &mut self,
        ctx: &ReqCtx,
        code: u16,
        to_tag: Option<&str>,
        reason: &str,
        edit: impl FnOnce(&mut SipMessage),
    ) {
        let tag = to_tag.map(str::to_string).unwrap_or_else(|| self.random_token(10));
        let mut m = build::response(&ctx.req.headers, &ctx.via, code, Some(&tag), &self.cfg.user_agent);
        m.start = StartLine::Response { code, reason: reason.to_string() };
        edit(&mut m);
        self.stats.responses_sent += 1;
        self.send(ctx.target.clone(), &m);
    }
}

/// A request being handled, with its fixed Via and where responses go.
struct ReqCtx {
    req: SipMessage,
    src: Source,
    via: Via,
    target: Transmit,
    method: Method,
}

/// The user the caller dialled: the Request-URI user part, else the To user.
fn called_user(req: &SipMessage) -> String {
    req.request_uri()
        .and_then(|u| u.user.clone())
        .or_else(|| req.to().and_then(|t| t.uri.user.clone()))
        .unwrap_or_default()
}

fn via_wants_rport(req: &SipMessage) -> bool {
    req.top_via().is_some_and(|v| v.param("rport").is_some())
}
