//! SIP accounts at start-up: the password read, the registrar or outbound proxy resolved, our
//! address towards it found; and each registration's state kept for /healthz and the metrics.

use crate::config::{AccountConfig, LoadedConfig, TransportKind};
use crate::metrics::Metrics;
use crate::sip::endpoint::{AccountSpec, RegState, Transport};
use anyhow::{anyhow, Context};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Every account's registration state, shared with the HTTP port.
pub type AccountStates = Arc<Mutex<BTreeMap<String, RegState>>>;

/// The account's password from the environment, a file (first line) or the config.
pub fn password(loaded: &LoadedConfig, name: &str, a: &AccountConfig) -> anyhow::Result<String> {
    loaded
        .password(
            &format!("accounts.{name}.password"),
            a.password_env.as_deref(),
            a.password_file.as_deref(),
            a.password.as_deref(),
        )
        .map_err(|e| anyhow!("{e}"))
}

/// Build the endpoint's view of each account. A registrar that does not resolve stops
/// start-up with the account's name: registering nowhere would fail silently.
pub async fn specs(loaded: &LoadedConfig, sip_listen: SocketAddr) -> anyhow::Result<Vec<AccountSpec>> {
    let cfg = &loaded.config;
    let mut out = Vec::new();
    for (name, a) in &cfg.accounts {
        let hop = a.outbound_proxy.as_deref().unwrap_or(&a.domain);
        let (host, port) = crate::config::host_port(hop)
            .ok_or_else(|| anyhow!("accounts.{name}: `{hop}` is not host or host:port"))?;
        let next_hop = tokio::net::lookup_host((host.as_str(), port))
            .await
            .with_context(|| format!("accounts.{name}: cannot resolve {host}"))?
            .find(|a| a.is_ipv4() == sip_listen.is_ipv4() || sip_listen.ip().is_unspecified())
            .ok_or_else(|| anyhow!("accounts.{name}: {host} has no address of our IP version"))?;
        let local = match cfg.sip.advertised_address {
            Some(ip) => SocketAddr::new(ip, sip_listen.port()),
            None => super::transport::LocalAddrCache::new(sip_listen).local_for(next_hop),
        };
        // The Request-URI and AOR domain: the domain as written, without a default port.
        let domain = a.domain.trim().trim_start_matches("sip:").to_string();
        out.push(AccountSpec {
            name: name.clone(),
            domain,
            username: a.username.clone(),
            auth_username: a.auth_username.clone().unwrap_or_else(|| a.username.clone()),
            password: password(loaded, name, a)?,
            transport: match a.transport {
                TransportKind::Udp => Transport::Udp,
                TransportKind::Tcp => Transport::Tcp,
            },
            next_hop,
            local,
            expires_s: a.expires_s.get() as u32,
            register: a.register,
            agent: a.agent.clone(),
            caller_id: a.caller_id.clone().unwrap_or_else(|| a.username.clone()),
        });
    }
    Ok(out)
}

/// Record a registration's new state: the shared map (for /healthz) and the metrics.
pub fn record_state(states: &AccountStates, metrics: &Metrics, account: &str, state: &RegState) {
    for label in ["idle", "registering", "registered", "failed", "unregistered"] {
        metrics.registration_state.with_label_values(&[account, label]).set((label == state.label()) as i64);
    }
    match state {
        RegState::Registered { .. } => metrics.registrations.with_label_values(&[account, "registered"]).inc(),
        RegState::Failed { .. } => metrics.registrations.with_label_values(&[account, "failed"]).inc(),
        _ => {}
    }
    states.lock().unwrap_or_else(|p| p.into_inner()).insert(account.to_string(), state.clone());
}

/// The accounts' states as JSON for /healthz.
pub fn states_json(states: &AccountStates) -> serde_json::Value {
    let map = states.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = serde_json::Map::new();
    for (name, s) in map.iter() {
        let mut v = serde_json::json!({ "state": s.label() });
        match s {
            RegState::Registered { expires_s } => v["expires_s"] = (*expires_s).into(),
            RegState::Failed { code, reason, retry_in_s } => {
                v["code"] = (*code).into();
                v["reason"] = reason.clone().into();
                v["retry_in_s"] = (*retry_in_s).into();
            }
            _ => {}
        }
        out.insert(name.clone(), v);
    }
    serde_json::Value::Object(out)
}
