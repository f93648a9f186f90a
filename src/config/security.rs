//! `security:` — who may use the SIP side. The defaults are the safe ones: with no `security`
//! section only loopback may call, scanners are dropped, and untrusted sources are rate limited.

use super::schema::U64Range;
use super::Cidr;
use serde::Deserialize;
use std::path::PathBuf;

/// User agents of SIP scanners and toll-fraud tools (matched case-insensitively as substrings
/// of User-Agent): SIPVicious (`friendly-scanner`), sipcli, SIPScan, sundayddr, iWar,
/// VaxSIPUserAgent, smap, sip-scan, SIPArmyKnife, pplsip, SiVuS, Nessus and sipptk.
pub const DEFAULT_SCANNERS: &[&str] = &[
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sipscan",
    "sip-scan",
    "sundayddr",
    "iwar",
    "vaxsipuseragent",
    "smap",
    "siparmyknife",
    "pplsip",
    "sivus",
    "nessus",
    "sipptk",
];

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// Addresses and blocks (`192.0.2.10`, `198.51.100.0/24`, `2001:db8::/32`) that may send
    /// requests and calls: your PBX, your trunk's signalling addresses, your LAN. Others get 403
    /// (or a digest challenge, with `auth`). An account's registrar may always send that
    /// account's calls; a route may carry its own `allow`.
    #[serde(default = "default_allow")]
    pub allow: Vec<Cidr>,
    /// Digest authentication of inbound INVITEs (callers outside `allow` may call if they
    /// authenticate; with `for_allowed: true` everyone must).
    #[serde(default)]
    pub auth: Option<InboundAuthConfig>,
    /// Requests whose User-Agent contains one of these (case-insensitive) are dropped without
    /// an answer and their source blocked. Default: SIPVicious, sipcli, SIPScan and friends.
    #[serde(default = "default_scanners")]
    pub scanner_user_agents: Vec<String>,
    /// Per-source limits for sources outside `allow` (trusted sources are never limited).
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            allow: default_allow(),
            auth: None,
            scanner_user_agents: default_scanners(),
            rate_limit: RateLimitConfig::default(),
        }
    }
}

fn default_allow() -> Vec<Cidr> {
    vec!["127.0.0.0/8".parse().expect("literal"), "::1".parse().expect("literal")]
}
fn default_scanners() -> Vec<String> {
    DEFAULT_SCANNERS.iter().map(|s| s.to_string()).collect()
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InboundAuthConfig {
    #[serde(default = "default_realm")]
    pub realm: String,
    pub users: Vec<InboundUser>,
    /// Sources in `allow` must authenticate too.
    #[serde(default)]
    pub for_allowed: bool,
}
fn default_realm() -> String {
    "switchboard".into()
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InboundUser {
    pub username: String,
    /// Exactly one of these.
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained SIP messages per second per untrusted source (0: no limit).
    pub requests_per_s: U64Range<0, 100_000>,
    pub burst: U64Range<1, 1_000_000>,
    /// A source over its rate is ignored this long.
    pub block_s: U64Range<1, 86_400>,
    /// This many failed authentications within `failed_auth_window_s` block a source for
    /// `failed_auth_block_s`.
    pub max_failed_auth: U64Range<0, 1000>,
    pub failed_auth_window_s: U64Range<1, 86_400>,
    pub failed_auth_block_s: U64Range<1, 604_800>,
    /// A scanner is ignored this long.
    pub scanner_block_s: U64Range<1, 604_800>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            requests_per_s: U64Range(20),
            burst: U64Range(50),
            block_s: U64Range(60),
            max_failed_auth: U64Range(5),
            failed_auth_window_s: U64Range(60),
            failed_auth_block_s: U64Range(600),
            scanner_block_s: U64Range(3600),
        }
    }
}
