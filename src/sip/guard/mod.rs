//! Who may use the endpoint (sans-IO, like the endpoint it serves): the source-address ACL,
//! known scanners, per-source rate limits and temporary blocks, and digest authentication of
//! inbound INVITEs. The endpoint asks it about every datagram (before parsing: blocked and
//! flooding sources cost a hash lookup) and about every new request and call.
//!
//! Trusted sources (in `allow`, a route's own list, or an account's registrar for that
//! account's calls) are never rate limited or blocked: a busy trunk must not be cut off by its
//! own peak. Everyone else is: scanners are dropped without an answer and blocked, and a
//! source over its message rate or failing authentication too often is ignored for a while.

mod limiter;

pub use crate::config::{any_contains, Cidr, DEFAULT_SCANNERS};
pub use limiter::{Admit, BlockReason, LimitConfig, Limiter};

use crate::sip::digest;
use crate::sip::message::SipMessage;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Inbound digest authentication: callers outside the ACL (or everyone, with `for_trusted`)
/// must prove one of these users' passwords.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundAuth {
    pub realm: String,
    /// username → password.
    pub users: HashMap<String, String>,
    pub for_trusted: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GuardConfig {
    /// Sources that may send requests (and calls, unless their route has its own list).
    pub allow: Vec<Cidr>,
    /// Per route, in the endpoint's route order: a list that replaces `allow` for that route.
    pub route_allow: Vec<Option<Vec<Cidr>>>,
    pub auth: Option<InboundAuth>,
    /// Lower-case substrings of scanner User-Agents.
    pub scanners: Vec<String>,
    pub limits: LimitConfig,
    /// How long an issued nonce is accepted.
    pub nonce_lifetime: Duration,
}

impl GuardConfig {
    /// From the YAML. Inbound auth users come without passwords: the driver reads those
    /// (environment, files) and fills them in with `LoadedConfig::secret`.
    pub fn from_config(c: &crate::config::Config) -> GuardConfig {
        let s = &c.security;
        let r = &s.rate_limit;
        GuardConfig {
            allow: s.allow.clone(),
            route_allow: c.routes.iter().map(|r| r.allow.clone()).collect(),
            auth: s.auth.as_ref().map(|a| InboundAuth {
                realm: a.realm.clone(),
                users: HashMap::new(),
                for_trusted: a.for_allowed,
            }),
            scanners: s.scanner_user_agents.iter().map(|u| u.to_ascii_lowercase()).collect(),
            limits: LimitConfig {
                requests_per_s: r.requests_per_s.get() as f64,
                burst: r.burst.get() as f64,
                rate_block: Duration::from_secs(r.block_s.get()),
                max_failed_auth: r.max_failed_auth.get() as u32,
                auth_window: Duration::from_secs(r.failed_auth_window_s.get()),
                auth_block: Duration::from_secs(r.failed_auth_block_s.get()),
                scanner_block: Duration::from_secs(r.scanner_block_s.get()),
                ..LimitConfig::default()
            },
            nonce_lifetime: Duration::from_secs(300),
        }
    }

    /// Everyone may call, nothing is limited: for tests of other parts of the endpoint.
    pub fn open() -> GuardConfig {
        GuardConfig {
            allow: vec!["0.0.0.0/0".parse().expect("literal"), "::/0".parse().expect("literal")],
            route_allow: Vec::new(),
            auth: None,
            scanners: DEFAULT_SCANNERS.iter().map(|s| s.to_string()).collect(),
            limits: LimitConfig { requests_per_s: 0.0, ..LimitConfig::default() },
            nonce_lifetime: Duration::from_secs(300),
        }
    }
}

/// Counters the driver exports as metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GuardStats {
    /// Requests answered 403 because their source is not allowed.
    pub acl_rejected: u64,
    /// Requests from scanners, dropped unanswered.
    pub scanners: u64,
    /// Datagrams dropped because their source is blocked.
    pub blocked_dropped: u64,
    /// Blocks imposed, by reason.
    pub rate_blocks: u64,
    pub auth_blocks: u64,
    pub scanner_blocks: u64,
    /// 401 challenges sent, failed and successful authentications.
    pub auth_challenges: u64,
    pub auth_failures: u64,
    pub auth_ok: u64,
}

/// What the endpoint does with an INVITE after authentication was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthVerdict {
    /// Authenticated as this user.
    User(String),
    /// Answer 401 with this WWW-Authenticate value.
    Challenge(String),
}

pub struct Guard {
    cfg: GuardConfig,
    limiter: Limiter,
    secret: [u8; 32],
    epoch: Instant,
    stats: GuardStats,
}

impl Guard {
    /// `now` starts the nonces' clock (a nonce carries its age from it).
    pub fn new(cfg: GuardConfig, secret: [u8; 32], now: Instant) -> Guard {
        let limiter = Limiter::new(cfg.limits.clone());
        Guard { cfg, limiter, secret, epoch: now, stats: GuardStats::default() }
    }

    pub fn stats(&self) -> GuardStats {
        self.stats
    }

    pub fn blocked_sources(&self, now: Instant) -> usize {
        self.limiter.blocked_sources(now)
    }

    pub fn trusted(&self, ip: IpAddr) -> bool {
        any_contains(&self.cfg.allow, ip)
    }

    /// Trust one more address from now on (an account's registrar or outbound proxy).
    pub fn trust(&mut self, ip: IpAddr) {
        if !self.trusted(ip) {
            self.cfg.allow.push(Cidr::host(ip));
        }
    }

    /// May this call's source use the route at `route` (an index into the endpoint's routes)?
    /// `account_hop` is the registrar of the account the call came in on: its calls may come
    /// from it even where a route has a narrower list.
    pub fn call_allowed(&self, ip: IpAddr, route: Option<usize>, account_hop: Option<IpAddr>) -> bool {
        if account_hop.is_some_and(|h| same_ip(h, ip)) {
            return true;
        }
        match route.and_then(|i| self.cfg.route_allow.get(i)).and_then(|a| a.as_ref()) {
            Some(list) => any_contains(list, ip),
            None => self.trusted(ip),
        }
    }

    /// Every datagram, before it is parsed. False: drop it.
    pub fn admit_datagram(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.trusted(ip) {
            return true;
        }
        match self.limiter.admit(ip, now) {
            Admit::Pass => true,
            Admit::Blocked => {
                self.stats.blocked_dropped += 1;
                false
            }
            Admit::NewlyBlocked => {
                self.stats.rate_blocks += 1;
                self.stats.blocked_dropped += 1;
                let l = self.limiter.config();
                warn!(source = %ip, rate_per_s = l.requests_per_s, burst = l.burst, block_s = l.rate_block.as_secs(), "SIP source over its message rate: blocked");
                false
            }
        }
    }

    /// Is this request from a scanner? If so it is counted, and its (untrusted) source blocked.
    pub fn screen_scanner(&mut self, req: &SipMessage, ip: IpAddr, now: Instant) -> bool {
        let Some(ua) = req.headers.get("User-Agent").or_else(|| req.headers.get("Server")) else { return false };
        let lower = ua.to_ascii_lowercase();
        if !self.cfg.scanners.iter().any(|s| !s.is_empty() && lower.contains(s.as_str())) {
            return false;
        }
        self.stats.scanners += 1;
        if !self.trusted(ip) && !self.limiter.is_blocked(ip, now) {
            self.limiter.block(ip, BlockReason::Scanner, now);
            self.stats.scanner_blocks += 1;
            warn!(source = %ip, user_agent = %ua, block_s = self.cfg.limits.scanner_block.as_secs(), "SIP scanner dropped and blocked");
        }
        true
    }

    pub fn acl_rejected(&mut self) {
        self.stats.acl_rejected += 1;
    }

    /// Does this INVITE need to authenticate? (Auth configured, and the source is not trusted
    /// or trusted sources must authenticate too.)
    pub fn needs_auth(&self, trusted: bool) -> bool {
        self.cfg.auth.as_ref().is_some_and(|a| !trusted || a.for_trusted)
    }

    /// Check an INVITE's Authorization against the users, with a nonce we issued to this source.
    pub fn authenticate(&mut self, req: &SipMessage, ip: IpAddr, now: Instant) -> AuthVerdict {
        let Some(auth) = self.cfg.auth.as_ref() else { return AuthVerdict::User(String::new()) };
        let Some(authorization) = req.headers.get("Authorization") else {
            let challenge = self.challenge(&auth.realm, ip, now, false);
            self.stats.auth_challenges += 1;
            return AuthVerdict::Challenge(challenge);
        };
        let method = req.method().map(|m| m.as_str().to_string()).unwrap_or_default();
        let nonce = digest::authorization_param(authorization, "nonce").unwrap_or_default();
        let user = digest::authorization_param(authorization, "username").unwrap_or_default();
        let fresh = self.nonce_ok(&nonce, ip, now);
        let verified = digest::verify(authorization, &auth.realm, &nonce, |u| auth.users.get(u).cloned(), &method);
        match (verified, fresh) {
            (Some(u), Some(true)) => {
                self.stats.auth_ok += 1;
                AuthVerdict::User(u)
            }
            // Right password on a nonce we issued that has expired: ask again, marked stale.
            (Some(_), Some(false)) => {
                let challenge = self.challenge(&auth.realm, ip, now, true);
                self.stats.auth_challenges += 1;
                AuthVerdict::Challenge(challenge)
            }
            _ => {
                let challenge = self.challenge(&auth.realm, ip, now, false);
                self.stats.auth_failures += 1;
                info!(source = %ip, user = %user, "inbound authentication failed");
                if !self.trusted(ip) && self.limiter.failed_auth(ip, now) {
                    self.stats.auth_blocks += 1;
                    let l = self.limiter.config();
                    warn!(source = %ip, failures = l.max_failed_auth, block_s = l.auth_block.as_secs(), "SIP source failing authentication: blocked");
                }
                self.stats.auth_challenges += 1;
                AuthVerdict::Challenge(challenge)
            }
        }
    }

    fn challenge(&self, realm: &str, ip: IpAddr, now: Instant, stale: bool) -> String {
        let nonce = self.issue_nonce(ip, now);
        let stale = if stale { ", stale=true" } else { "" };
        format!("Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\"{stale}")
    }

    /// A nonce is `<seconds since start, hex>.<MAC of that and the source address>`: stateless,
    /// bound to the source, and its age is readable.
    fn issue_nonce(&self, ip: IpAddr, now: Instant) -> String {
        let t = now.saturating_duration_since(self.epoch).as_secs();
        format!("{t:x}.{}", self.nonce_mac(t, ip))
    }

    fn nonce_mac(&self, t: u64, ip: IpAddr) -> String {
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update(t.to_be_bytes());
        h.update(ip.to_string().as_bytes());
        h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    /// Some(true): ours and fresh; Some(false): ours but expired; None: not ours.
    fn nonce_ok(&self, nonce: &str, ip: IpAddr, now: Instant) -> Option<bool> {
        let (t, mac) = nonce.split_once('.')?;
        let t = u64::from_str_radix(t, 16).ok()?;
        let expected = self.nonce_mac(t, ip);
        if !digest::constant_time_eq(&expected, mac) {
            return None;
        }
        let age = now.saturating_duration_since(self.epoch).as_secs().saturating_sub(t);
        Some(age <= self.cfg.nonce_lifetime.as_secs())
    }
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    Cidr::host(a).contains(b)
}

#[cfg(test)]
mod tests;
