//! Registration of our accounts with a registrar (RFC 3261 §10): REGISTER with digest
//! authentication (401/407, stale nonces), refresh before expiry, back-off after failures
//! (timeouts, 5xx, rejected credentials) and de-registration (Expires: 0) at shutdown.
//!
//! One `Registration` per account keeps the binding's Call-ID and CSeq (§10.2.4: refreshes reuse
//! the Call-ID), the last challenge (later refreshes answer it at once with the next nonce count,
//! saving a round trip) and the retry timer. The endpoint owns the client transactions and feeds
//! each final response here; `Event::Registration` tells the driver every change of state.

use super::types::{Event, Target, Transmit, Transport};
use super::Endpoint;
use crate::sip::digest::{self, Challenge, Credentials};
use crate::sip::message::{Headers, Method, SipMessage, StartLine};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// An account as the endpoint needs it (the driver resolved the addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSpec {
    pub name: String,
    /// The registrar's domain: the REGISTER's Request-URI is `sip:{domain}` and the address
    /// of record `sip:{username}@{domain}`.
    pub domain: String,
    pub username: String,
    pub auth_username: String,
    pub password: String,
    pub transport: Transport,
    /// Where requests go: the outbound proxy, else the registrar, resolved.
    pub next_hop: SocketAddr,
    /// Our address as the registrar reaches it (Via and Contact).
    pub local: SocketAddr,
    /// The binding lifetime we ask for.
    pub expires_s: u32,
    /// False for a trunk that is only dialled through (no REGISTER).
    pub register: bool,
    /// The agent that answers calls arriving on this registration.
    pub agent: Option<String>,
    /// The From user of our outbound calls.
    pub caller_id: String,
}

impl AccountSpec {
    pub fn aor(&self) -> String {
        format!("sip:{}@{}", self.username, self.domain)
    }
    /// The Contact we register: the account's user at our address, so a call the registrar
    /// forwards (Request-URI = this Contact) is recognised as this account's.
    pub fn contact_uri(&self) -> String {
        let host = super::build::bracket_v6(&self.local.ip().to_string());
        match self.transport {
            Transport::Udp => format!("sip:{}@{host}:{}", self.username, self.local.port()),
            Transport::Tcp => format!("sip:{}@{host}:{};transport=tcp", self.username, self.local.port()),
        }
    }
}

/// Where an account's registration stands (the health endpoint and metrics show it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegState {
    /// Not registering (a trunk, or before start).
    Idle,
    /// A REGISTER is on its way (first time, refresh or after a challenge).
    Registering,
    /// The registrar holds our binding for `expires_s` from the 200.
    Registered { expires_s: u32 },
    /// The last attempt failed; the next one is scheduled (back-off).
    Failed { code: u16, reason: String, retry_in_s: u64 },
    /// De-registered (shutdown): the binding is gone or its removal was not answered.
    Unregistered,
}

impl RegState {
    pub fn label(&self) -> &'static str {
        match self {
            RegState::Idle => "idle",
            RegState::Registering => "registering",
            RegState::Registered { .. } => "registered",
            RegState::Failed { .. } => "failed",
            RegState::Unregistered => "unregistered",
        }
    }
}

/// What a final response to a REGISTER means for the account.
#[derive(Debug, PartialEq)]
enum Step {
    /// Send again now (answering a challenge, or 423 with a longer Expires).
    Resend,
    Registered(u32),
    Failed {
        code: u16,
        reason: String,
        retry_after: Option<u64>,
        auth: bool,
    },
    Unregistered,
}

#[derive(Debug)]
pub(super) struct Registration {
    pub spec: AccountSpec,
    call_id: String,
    from_tag: String,
    cseq: u32,
    expires_s: u32,
    pub state: RegState,
    /// The last challenge, whether it came as 407 (proxy), and how many requests used its nonce.
    challenge: Option<(Challenge, bool)>,
    nc: u32,
    /// This round (since the last success or failure) answered a fresh challenge: another
    /// rejection without `stale` means the credentials are wrong.
    answered_challenge: bool,
    /// Consecutive failures, for the back-off.
    failures: u32,
    /// When to send the next REGISTER (refresh or retry).
    pub next_at: Option<Instant>,
    /// The branch of the REGISTER in flight.
    pub in_flight: Option<String>,
    /// Shutting down: the REGISTER in flight (or the next) removes the binding.
    pub unregistering: bool,
    /// When a registered binding lapses if no refresh succeeds.
    registered_until: Option<Instant>,
}

/// Back-off after consecutive failures: 5 s doubling to 5 min for transport and server
/// errors, 60 s doubling to 10 min for rejected credentials (a wrong password must not hammer
/// the PBX, which may block us). `jitter` in [0, 1) spreads accounts apart by up to 10 %.
fn backoff(failures: u32, auth: bool, jitter: f64) -> Duration {
    let (base, cap) = if auth { (60u64, 600u64) } else { (5, 300) };
    let secs = base.saturating_mul(1u64 << failures.saturating_sub(1).min(10)).min(cap);
    Duration::from_secs_f64(secs as f64 * (1.0 + 0.1 * jitter))
}

/// When to refresh a binding of `expires` seconds: at 80 % of its life, and at least 5 s early
/// when it is long enough, so a lost REGISTER can still be retransmitted before it lapses.
fn refresh_in(expires: u32) -> Duration {
    let e = expires as f64;
    let early = (e * 0.2).max(5.0_f64.min(e * 0.5));
    Duration::from_secs_f64((e - early).max(1.0))
}

impl Registration {
    pub fn new(spec: AccountSpec, call_id: String, from_tag: String) -> Registration {
        let expires_s = spec.expires_s;
        Registration {
            spec,
            call_id,
            from_tag,
            cseq: 0,
            expires_s,
            state: RegState::Idle,
            challenge: None,
            nc: 0,
            answered_challenge: false,
            failures: 0,
            next_at: None,
            in_flight: None,
            unregistering: false,
            registered_until: None,
        }
    }

    /// The next REGISTER (with credentials when we hold a challenge).
    fn request(&mut self, branch: &str, cnonce: &str, user_agent: &str) -> Transmit {
        self.cseq += 1;
        let s = &self.spec;
        let expires = if self.unregistering { 0 } else { self.expires_s };
        let uri = format!("sip:{}", s.domain);
        let local = super::build::bracket_v6(&s.local.ip().to_string());
        let mut h = Headers::default();
        h.push("Via", format!("SIP/2.0/{} {local}:{};branch={branch};rport", s.transport.via_name(), s.local.port()));
        h.push("Max-Forwards", "70");
        h.push("From", format!("<{}>;tag={}", s.aor(), self.from_tag));
        h.push("To", format!("<{}>", s.aor()));
        h.push("Call-ID", self.call_id.as_str());
        h.push("CSeq", format!("{} REGISTER", self.cseq));
        h.push("Contact", format!("<{}>;expires={expires}", s.contact_uri()));
        h.push("Expires", expires.to_string());
        if let Some((c, proxy)) = &self.challenge {
            self.nc += 1;
            let cred = Credentials { username: &s.auth_username, password: &s.password };
            let value = digest::authorize(c, &cred, "REGISTER", &uri, self.nc, cnonce);
            h.push(if *proxy { "Proxy-Authorization" } else { "Authorization" }, value);
        }
        h.push("User-Agent", user_agent);
        h.push("Allow", super::ALLOW);
        let m =
            SipMessage { start: StartLine::Request { method: Method::Register, uri }, headers: h, body: Vec::new() };
        Transmit { transport: s.transport, target: Target::Addr(s.next_hop), conn: None, data: m.to_bytes() }
    }

    /// Read a final response to our REGISTER.
    fn on_response(&mut self, resp: &SipMessage) -> Step {
        let StartLine::Response { code, reason } = &resp.start else { return Step::Resend };
        let code = *code;
        match code {
            200..=299 if self.unregistering => Step::Unregistered,
            200..=299 => Step::Registered(self.granted_expires(resp)),
            401 | 407 => {
                let header = if code == 401 { "WWW-Authenticate" } else { "Proxy-Authenticate" };
                let challenge = resp.headers.get_all(header).filter_map(|v| Challenge::parse(v).ok()).next();
                let Some(c) = challenge else {
                    return Step::Failed {
                        code,
                        reason: format!("{reason} (no digest challenge we can answer)"),
                        retry_after: None,
                        auth: true,
                    };
                };
                if self.answered_challenge && !c.stale {
                    return Step::Failed {
                        code,
                        reason: format!("{reason} (credentials rejected)"),
                        retry_after: None,
                        auth: true,
                    };
                }
                // A fresh nonce: count from 1 again.
                self.challenge = Some((c, code == 407));
                self.nc = 0;
                self.answered_challenge = true;
                Step::Resend
            }
            423 => {
                // Interval Too Brief: ask again with the registrar's minimum (once per round).
                let min = resp.headers.get("Min-Expires").and_then(|v| v.trim().parse::<u32>().ok());
                match min {
                    Some(m) if m > self.expires_s => {
                        self.expires_s = m;
                        Step::Resend
                    }
                    _ => Step::Failed { code, reason: reason.clone(), retry_after: None, auth: false },
                }
            }
            _ if self.unregistering => Step::Unregistered,
            _ => {
                let retry_after =
                    resp.headers.get("Retry-After").and_then(|v| v.split(';').next()?.trim().parse().ok());
                Step::Failed { code, reason: reason.clone(), retry_after, auth: code == 403 }
            }
        }
    }

    /// The lifetime the registrar granted our binding: our Contact's `expires`, else the
    /// Expires header, else what we asked for.
    fn granted_expires(&self, resp: &SipMessage) -> u32 {
        let ours = self.spec.contact_uri();
        let ours = crate::sip::message::SipUri::parse(&ours);
        let from_contact = resp
            .headers
            .get_all("Contact")
            .flat_map(|v| crate::sip::headers::split_outside(v, ','))
            .filter_map(crate::sip::message::NameAddr::parse)
            .find(|na| ours.as_ref().is_some_and(|o| same_binding(o, &na.uri)))
            .and_then(|na| na.param("expires").flatten().and_then(|e| e.parse::<u32>().ok()));
        from_contact
            .or_else(|| resp.headers.get("Expires").and_then(|e| e.trim().parse().ok()))
            .unwrap_or(self.expires_s)
    }
}

/// §10.3: bindings compare by URI; we compare what identifies us (user, host, port).
fn same_binding(a: &crate::sip::message::SipUri, b: &crate::sip::message::SipUri) -> bool {
    let host = |h: &str| h.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    a.user == b.user && host(&a.host) == host(&b.host) && a.port.unwrap_or(5060) == b.port.unwrap_or(5060)
}

impl Endpoint {
    /// Add an account; one that registers sends its first REGISTER now.
    pub fn add_account(&mut self, spec: AccountSpec, now: Instant) {
        let call_id = format!("{}@switchboard", self.random_token(20));
        let tag = self.random_token(12);
        let register = spec.register;
        // The registrar (or outbound proxy) talks to us on the account's behalf: keep-alive
        // OPTIONS, NOTIFYs and the account's calls. It is trusted like an allowed address.
        self.guard.trust(spec.next_hop.ip());
        self.registrations.push(Registration::new(spec, call_id, tag));
        if register {
            let i = self.registrations.len() - 1;
            self.send_register(i, now);
        }
    }

    /// Each account's name and registration state.
    pub fn registrations(&self) -> Vec<(String, RegState)> {
        self.registrations.iter().map(|r| (r.spec.name.clone(), r.state.clone())).collect()
    }

    pub fn account(&self, name: &str) -> Option<&AccountSpec> {
        self.registrations.iter().map(|r| &r.spec).find(|s| s.name == name)
    }

    /// The agent for a call whose Request-URI names one of our registered Contacts.
    /// The agent of the account whose Contact user this is, and the account's registrar (or
    /// outbound proxy) address, which is trusted to send that account's calls.
    pub(super) fn account_agent(&self, called_user: &str) -> Option<(String, std::net::IpAddr)> {
        self.registrations
            .iter()
            .find(|r| r.spec.username == called_user)
            .and_then(|r| Some((r.spec.agent.clone()?, r.spec.next_hop.ip())))
    }

    /// Shutdown: remove every binding we hold (Expires: 0). `is_idle` stays false until the
    /// registrar answers or the transaction times out.
    pub fn unregister_all(&mut self, now: Instant) {
        for i in 0..self.registrations.len() {
            let r = &mut self.registrations[i];
            if !r.spec.register || r.unregistering {
                continue;
            }
            r.unregistering = true;
            r.next_at = None;
            let was_bound = matches!(r.state, RegState::Registered { .. }) || r.in_flight.is_some();
            if let Some(b) = r.in_flight.take() {
                // The REGISTER in flight would re-create the binding: forget it, unbind instead.
                self.client_txs.remove(&b);
            }
            if was_bound {
                self.send_register(i, now);
            } else {
                self.set_reg_state(i, RegState::Unregistered);
            }
        }
    }

    pub(super) fn registration_timer(&self) -> Option<Instant> {
        self.registrations.iter().filter_map(|r| r.next_at).min()
    }

    fn send_register(&mut self, i: usize, now: Instant) {
        let branch = self.new_branch();
        let cnonce = self.random_token(16);
        let ua = self.cfg.user_agent.clone();
        let r = &mut self.registrations[i];
        let t = r.request(&branch, &cnonce, &ua);
        r.in_flight = Some(branch.clone());
        r.next_at = None;
        let name = r.spec.name.clone();
        if !r.unregistering && !matches!(r.state, RegState::Registered { .. }) {
            self.set_reg_state(i, RegState::Registering);
        }
        self.transmits.push_back(t.clone());
        let reliable = t.transport.is_reliable();
        // At shutdown a dead registrar must not hold the exit for Timer F's 32 s.
        let timeout = if self.registrations[i].unregistering { self.cfg.t1 * 8 } else { self.cfg.t1 * 64 };
        self.client_txs.insert(
            branch,
            super::txn::ClientTx {
                call_id: name,
                call: None,
                account: Some(i),
                method: Method::Register,
                request: t,
                retransmit_at: (!reliable).then_some(now + self.cfg.t1),
                interval: self.cfg.t1,
                timeout_at: now + timeout,
            },
        );
    }

    fn set_reg_state(&mut self, i: usize, state: RegState) {
        let r = &mut self.registrations[i];
        if r.state != state {
            r.state = state.clone();
            self.events.push_back(Event::Registration { account: r.spec.name.clone(), state });
        }
    }

    /// A final response (or Timer F: 408) for account `i`'s REGISTER.
    pub(super) fn register_answered(&mut self, i: usize, resp: Option<&SipMessage>, now: Instant) {
        let Some(r) = self.registrations.get_mut(i) else { return };
        r.in_flight = None;
        let step = match resp {
            Some(m) => r.on_response(m),
            None => Step::Failed {
                code: 408,
                reason: "no answer from the registrar".into(),
                retry_after: None,
                auth: false,
            },
        };
        let name = r.spec.name.clone();
        match step {
            Step::Resend => self.send_register(i, now),
            Step::Registered(expires) => {
                let r = &mut self.registrations[i];
                r.failures = 0;
                r.answered_challenge = false;
                r.registered_until = Some(now + Duration::from_secs(expires as u64));
                r.next_at = Some(now + refresh_in(expires));
                info!(account = %name, expires, "registered");
                // A refresh changes nothing the driver shows unless the lifetime changed.
                self.set_reg_state(i, RegState::Registered { expires_s: expires });
            }
            Step::Unregistered => {
                info!(account = %name, "unregistered");
                self.registrations[i].registered_until = None;
                self.set_reg_state(i, RegState::Unregistered);
            }
            Step::Failed { code, reason, retry_after, auth } => {
                if self.registrations[i].unregistering {
                    self.set_reg_state(i, RegState::Unregistered);
                    return;
                }
                let jitter: f64 = rand::Rng::random(&mut self.rng);
                let r = &mut self.registrations[i];
                r.failures += 1;
                r.answered_challenge = false;
                let mut wait = backoff(r.failures, auth, jitter);
                if let Some(s) = retry_after {
                    wait = wait.max(Duration::from_secs(s.min(3600)));
                }
                // A binding still valid is refreshed sooner than the back-off if it would lapse.
                if let Some(until) = r.registered_until {
                    if until > now {
                        wait = wait.min((until - now) / 2).max(Duration::from_secs(1));
                    } else {
                        r.registered_until = None;
                    }
                }
                r.next_at = Some(now + wait);
                warn!(account = %name, code, %reason, retry_in_s = wait.as_secs(), failures = r.failures, "registration failed");
                self.set_reg_state(i, RegState::Failed { code, reason, retry_in_s: wait.as_secs() });
            }
        }
    }

    /// Refreshes and retries that are due.
    pub(super) fn registration_timeouts(&mut self, now: Instant) {
        for i in 0..self.registrations.len() {
            let r = &self.registrations[i];
            if r.next_at.is_some_and(|t| t <= now) && r.in_flight.is_none() {
                self.send_register(i, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::endpoint::{EndpointConfig, Source};

    fn endpoint() -> Endpoint {
        let cfg = EndpointConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            user_agent: "switchboard-test".into(),
            advertised: None,
            media_advertised: None,
            codecs: vec![crate::sip::sdp::Codec::Pcmu],
            ptime_ms: 20,
            routes: vec![("*".into(), "default".into())],
            guard: crate::sip::guard::GuardConfig::open(),
            max_calls: 0,
            agent_max_calls: Default::default(),
            retry_after_s: 10,
            max_transactions: crate::sip::endpoint::MAX_TRANSACTIONS,
        };
        Endpoint::new(cfg, 7, Instant::now())
    }

    fn spec(password: &str, sha: bool) -> AccountSpec {
        AccountSpec {
            name: "pbx".into(),
            domain: if sha { "sha.example".into() } else { "pbx.example".into() },
            username: "agent".into(),
            auth_username: "agent".into(),
            password: password.into(),
            transport: Transport::Udp,
            next_hop: "10.0.0.9:5060".parse().unwrap(),
            local: "10.0.0.1:5060".parse().unwrap(),
            expires_s: 300,
            register: true,
            agent: Some("sales".into()),
            caller_id: "agent".into(),
        }
    }

    /// A registrar in the test: challenges, checks the digest with our own `verify`, grants
    /// `grant` seconds; `stale` re-challenges once with stale=true.
    struct Registrar {
        nonce: u32,
        grant: u32,
        sha: bool,
        bindings: Option<u32>,
        seen: Vec<SipMessage>,
    }

    impl Registrar {
        fn new(grant: u32, sha: bool) -> Registrar {
            Registrar { nonce: 1, grant, sha, bindings: None, seen: Vec::new() }
        }
        fn answer(&mut self, req: &SipMessage, stale: bool) -> String {
            self.seen.push(req.clone());
            let realm = "pbx.example";
            let nonce = format!("n{}", self.nonce);
            let ok = req.headers.get("Authorization").and_then(|a| {
                digest::verify(a, realm, &nonce, |u| (u == "agent").then(|| "secret".to_string()), "REGISTER")
            });
            let head = |code: &str| {
                format!(
                    "SIP/2.0 {code}\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=r1\r\nCall-ID: {}\r\nCSeq: {}\r\n",
                    req.headers.get("Via").unwrap(),
                    req.headers.get("From").unwrap(),
                    req.headers.get("To").unwrap(),
                    req.headers.get("Call-ID").unwrap(),
                    req.headers.get("CSeq").unwrap()
                )
            };
            let alg = if self.sha { ", algorithm=SHA-256" } else { "" };
            if ok.is_none() || stale {
                if stale {
                    self.nonce += 1;
                }
                let nonce = format!("n{}", self.nonce);
                let st = if stale { ", stale=true" } else { "" };
                return format!("{}WWW-Authenticate: Digest realm=\"{realm}\", nonce=\"{nonce}\", qop=\"auth\"{alg}{st}\r\nContent-Length: 0\r\n\r\n", head("401 Unauthorized"));
            }
            let expires: u32 = req.headers.get("Expires").unwrap().parse().unwrap();
            self.bindings = (expires > 0).then_some(self.grant);
            let contact = req.headers.get("Contact").unwrap().split(';').next().unwrap().to_string();
            let c = if expires > 0 { format!("Contact: {contact};expires={}\r\n", self.grant) } else { String::new() };
            format!("{}{c}Content-Length: 0\r\n\r\n", head("200 OK"))
        }
    }

    fn registrar_src() -> Source {
        Source {
            transport: Transport::Udp,
            addr: "10.0.0.9:5060".parse().unwrap(),
            conn: None,
            local: "10.0.0.1:5060".parse().unwrap(),
        }
    }

    /// Send what the endpoint sent to the registrar and feed back its answers until quiet.
    fn exchange(ep: &mut Endpoint, reg: &mut Registrar, now: Instant, stale_once: &mut bool) -> usize {
        let mut n = 0;
        while let Some(t) = ep.poll_transmit() {
            assert_eq!(t.target, Target::Addr("10.0.0.9:5060".parse().unwrap()));
            let req = SipMessage::parse(&t.data).unwrap();
            let stale = std::mem::take(stale_once) && req.headers.get("Authorization").is_some();
            let resp = reg.answer(&req, stale);
            ep.handle_message(resp.as_bytes(), registrar_src(), now);
            n += 1;
        }
        n
    }

    fn states(ep: &mut Endpoint) -> Vec<String> {
        std::iter::from_fn(|| ep.poll_event())
            .filter_map(|e| match e {
                Event::Registration { state, .. } => Some(state.label().to_string()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn registers_with_digest_refreshes_before_expiry_and_unregisters() {
        for sha in [false, true] {
            let mut ep = endpoint();
            let mut reg = Registrar::new(60, sha);
            let mut now = Instant::now();
            let mut stale = false;
            ep.add_account(spec("secret", sha), now);
            assert_eq!(
                exchange(&mut ep, &mut reg, now, &mut stale),
                2,
                "REGISTER, 401, REGISTER with credentials, 200"
            );
            assert_eq!(states(&mut ep), ["registering", "registered"]);
            assert_eq!(ep.registrations()[0].1, RegState::Registered { expires_s: 60 });
            let first = &reg.seen[0];
            assert_eq!(
                first.request_uri().unwrap().to_string(),
                if sha { "sip:sha.example" } else { "sip:pbx.example" }
            );
            assert!(first.headers.get("Contact").unwrap().contains("sip:agent@10.0.0.1:5060"));
            assert!(reg.seen[1].headers.get("Authorization").unwrap().contains(if sha { "SHA-256" } else { "MD5" }));
            // §10.2.4: the same Call-ID, a higher CSeq.
            assert_eq!(first.call_id(), reg.seen[1].call_id());
            assert!(reg.seen[1].cseq().unwrap().seq > first.cseq().unwrap().seq);

            // The refresh is due at 48 s of the 60 s granted; it answers the cached challenge at once.
            let due = ep.poll_timeout().unwrap();
            assert_eq!(due - now, Duration::from_secs(48));
            now = due;
            ep.handle_timeout(now);
            assert_eq!(
                exchange(&mut ep, &mut reg, now, &mut stale),
                1,
                "a refresh with the cached nonce needs no new challenge"
            );
            assert!(reg.seen[2].headers.get("Authorization").unwrap().contains("nc=00000002"));
            assert!(states(&mut ep).is_empty(), "a refresh keeps the state");

            // The next refresh meets a stale nonce: answered with the new one, no failure.
            now = ep.poll_timeout().unwrap();
            ep.handle_timeout(now);
            stale = true;
            assert_eq!(exchange(&mut ep, &mut reg, now, &mut stale), 2);
            assert!(reg.seen[4].headers.get("Authorization").unwrap().contains("nonce=\"n2\""));
            assert!(states(&mut ep).is_empty());
            assert_eq!(reg.bindings, Some(60));

            // Shutdown: Expires 0, and the endpoint is idle once answered.
            ep.unregister_all(now);
            assert!(!ep.is_idle());
            exchange(&mut ep, &mut reg, now, &mut stale);
            assert_eq!(reg.seen.last().unwrap().headers.get("Expires"), Some("0"));
            assert_eq!(reg.bindings, None);
            assert_eq!(states(&mut ep), ["unregistered"]);
            assert!(ep.is_idle());
            assert_eq!(ep.poll_timeout(), None, "no refresh after de-registration");
        }
    }

    #[test]
    fn wrong_password_fails_once_per_round_and_backs_off() {
        let mut ep = endpoint();
        let mut reg = Registrar::new(300, false);
        let now = Instant::now();
        ep.add_account(spec("wrong", false), now);
        let mut stale = false;
        assert_eq!(exchange(&mut ep, &mut reg, now, &mut stale), 2, "one challenge answered, then no loop");
        assert_eq!(states(&mut ep), ["registering", "failed"]);
        match &ep.registrations()[0].1 {
            RegState::Failed { code: 401, reason, retry_in_s } => {
                assert!(reason.contains("credentials rejected"), "{reason}");
                assert!((60..=66).contains(retry_in_s), "{retry_in_s}");
            }
            s => panic!("{s:?}"),
        }
        // The retry comes after the back-off, and the second failure waits twice as long.
        let due = ep.poll_timeout().unwrap();
        assert!(due - now >= Duration::from_secs(60));
        ep.handle_timeout(due);
        exchange(&mut ep, &mut reg, due, &mut stale);
        match &ep.registrations()[0].1 {
            RegState::Failed { retry_in_s, .. } => assert!((120..=132).contains(retry_in_s), "{retry_in_s}"),
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn an_unanswered_register_is_retransmitted_then_retried_with_backoff() {
        let mut ep = endpoint();
        let start = Instant::now();
        ep.add_account(spec("secret", false), start);
        let mut sent = 0;
        let mut now = start;
        while now - start < Duration::from_secs(40) {
            while ep.poll_transmit().is_some() {
                sent += 1;
            }
            let Some(t) = ep.poll_timeout() else { break };
            now = t;
            ep.handle_timeout(now);
            if matches!(ep.registrations()[0].1, RegState::Failed { .. }) {
                break;
            }
        }
        // Timer E over UDP: 0, 0.5, 1.5, 3.5, 7.5, then every 4 s until Timer F at 32 s.
        assert_eq!(sent, 11, "the first send and ten retransmissions");
        assert_eq!(now - start, Duration::from_secs(32));
        match &ep.registrations()[0].1 {
            RegState::Failed { code: 408, retry_in_s, .. } => assert!((5..=6).contains(retry_in_s)),
            s => panic!("{s:?}"),
        }
        // The registrar comes back: the retry registers.
        let mut reg = Registrar::new(300, false);
        now = ep.poll_timeout().unwrap();
        ep.handle_timeout(now);
        while ep.poll_transmit().is_some() {}
        now += Duration::from_millis(500);
        // Drop the retransmission timers' sends; answer a fresh REGISTER instead.
        ep.handle_timeout(now);
        let mut stale = false;
        exchange(&mut ep, &mut reg, now, &mut stale);
        assert!(matches!(ep.registrations()[0].1, RegState::Registered { .. }), "{:?}", ep.registrations());
    }

    #[test]
    fn a_call_to_the_registered_contact_goes_to_the_accounts_agent() {
        let mut ep = endpoint();
        ep.add_account(spec("secret", false), Instant::now());
        while ep.poll_transmit().is_some() {}
        let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let invite = format!(
            "INVITE sip:agent@10.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKk1\r\nMax-Forwards: 69\r\n\
From: <sip:alice@pbx.example>;tag=a\r\nTo: <sip:agent@pbx.example>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:alice@10.0.0.9>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        ep.handle_message(invite.as_bytes(), registrar_src(), Instant::now());
        let ic = std::iter::from_fn(|| ep.poll_event()).find_map(|e| match e {
            Event::Incoming(ic) => Some(ic),
            _ => None,
        });
        assert_eq!(ic.expect("incoming").agent, "sales", "the account's agent, not the catch-all route");
    }

    #[test]
    fn refresh_comes_before_expiry_with_room_for_retransmission() {
        assert_eq!(refresh_in(300), Duration::from_secs(240));
        assert_eq!(refresh_in(3600), Duration::from_secs(2880));
        assert_eq!(refresh_in(10), Duration::from_secs(5));
        assert_eq!(refresh_in(4), Duration::from_secs(2));
        assert_eq!(refresh_in(1), Duration::from_secs(1));
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_is_slower_for_bad_credentials() {
        let s = |n, auth| backoff(n, auth, 0.0).as_secs();
        assert_eq!([s(1, false), s(2, false), s(3, false), s(7, false), s(30, false)], [5, 10, 20, 300, 300]);
        assert_eq!([s(1, true), s(2, true), s(5, true)], [60, 120, 600]);
        assert!(backoff(1, false, 0.99).as_secs_f64() < 5.5);
    }
}
