//! The operations HTTP port: /metrics (Prometheus text), /healthz, and the admin API that
//! places outbound calls (`POST /calls`, `GET /calls/{call_id}`, `POST /calls/{call_id}/hangup`).

use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    /// Set when shutdown begins: /healthz turns 503 so load balancers stop sending calls.
    pub draining: Arc<AtomicBool>,
    /// Each SIP account's registration state.
    pub accounts: super::AccountStates,
    /// Commands for the server loop (dial, hang up).
    pub commands: tokio::sync::mpsc::UnboundedSender<super::Command>,
    pub outbound: super::OutboundTable,
    /// Required as `Authorization: Bearer …` by the endpoints that change state, when set.
    pub admin_token: String,
    pub campaigns: super::campaigns::Campaigns,
    pub campaign_store: std::path::PathBuf,
    pub config: Arc<crate::config::Config>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/calls", axum::routing::post(dial))
        .route("/calls/{call_id}", get(call_status))
        .route("/calls/{call_id}/hangup", axum::routing::post(hangup))
        .route("/campaigns", axum::routing::post(campaign_run))
        .route("/campaigns/{name}", get(campaign_status))
        .with_state(state)
}

fn json_error(code: StatusCode, message: &str) -> (StatusCode, String) {
    (code, format!("{}\n", serde_json::json!({ "error": message })))
}

/// The token check for endpoints that change state (constant-time compare).
fn authorized(s: &HttpState, headers: &axum::http::HeaderMap) -> Result<(), (StatusCode, String)> {
    let token = &s.admin_token;
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if crate::sip::digest::constant_time_eq(given, token) {
        Ok(())
    } else {
        Err(json_error(StatusCode::UNAUTHORIZED, "a valid `Authorization: Bearer` admin token is required (http.admin_token_env / _file, else the admin.token file beside the config)"))
    }
}

/// Place one outbound call: `{"to": "+44…" | "sip:…", "agent": "…", "account": "…",
/// "ring_timeout_s": 30, "variables": {…}}` → 201 `{"call_id": …}`.
async fn dial(
    State(s): State<HttpState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, String) {
    if let Err(e) = authorized(&s, &headers) {
        return e;
    }
    let req: super::DialRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("bad dial request: {e}")),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    if s.commands.send(super::Command::Dial { req, next_hop: None, notify: None, reply: tx }).is_err() {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    match rx.await {
        Ok(Ok(call_id)) => (StatusCode::CREATED, format!("{}\n", serde_json::json!({ "call_id": call_id }))),
        Ok(Err(e)) => json_error(StatusCode::UNPROCESSABLE_ENTITY, &e),
        Err(_) => json_error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    }
}

/// Start or resume a campaign: `{"file": "/path/campaign.yaml"}` → 202 `{"campaign": name}`.
async fn campaign_run(
    State(s): State<HttpState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, String) {
    if let Err(e) = authorized(&s, &headers) {
        return e;
    }
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("bad request: {e}")),
    };
    let Some(file) = v["file"].as_str().map(std::path::PathBuf::from) else {
        return json_error(StatusCode::BAD_REQUEST, "give the campaign file: {\"file\": \"/path/campaign.yaml\"}");
    };
    let (c, store, cfg, cmds) = (s.campaigns.clone(), s.campaign_store.clone(), s.config.clone(), s.commands.clone());
    // Importing a large contact list and syncing the store block: off the runtime.
    let r = tokio::task::spawn_blocking(move || c.start(&file, &store, &cfg, cmds)).await;
    match r {
        Ok(Ok(name)) => (StatusCode::ACCEPTED, format!("{}\n", serde_json::json!({ "campaign": name }))),
        Ok(Err(e)) => json_error(StatusCode::UNPROCESSABLE_ENTITY, &e),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn campaign_status(
    State(s): State<HttpState>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> (StatusCode, String) {
    let (store, state) = (s.campaign_store.clone(), s.campaigns.state(&name));
    let r = tokio::task::spawn_blocking(move || {
        let st = crate::campaign::Store::open(&store).map_err(|e| e.to_string())?;
        super::campaigns::status_json(&st, &name)
    })
    .await;
    match r {
        Ok(Ok(mut v)) => {
            v["runner"] = state.map(Into::into).unwrap_or(serde_json::Value::Null);
            (StatusCode::OK, format!("{v}\n"))
        }
        Ok(Err(e)) if e.contains("unknown campaign") || e.contains("UnknownCampaign") => {
            json_error(StatusCode::NOT_FOUND, &e)
        }
        Ok(Err(e)) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn call_status(
    State(s): State<HttpState>,
    axum::extract::Path(call_id): axum::extract::Path<String>,
) -> (StatusCode, String) {
    match s.outbound.get(&call_id) {
        Some(st) => (StatusCode::OK, format!("{}\n", serde_json::to_string(&st).unwrap_or_default())),
        None => json_error(StatusCode::NOT_FOUND, "no such outbound call"),
    }
}

async fn hangup(
    State(s): State<HttpState>,
    headers: axum::http::HeaderMap,
    axum::extract::Path(call_id): axum::extract::Path<String>,
) -> (StatusCode, String) {
    if let Err(e) = authorized(&s, &headers) {
        return e;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    if s.commands.send(super::Command::Hangup { call_id, reply: tx }).is_err() {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    match rx.await {
        Ok(true) => (StatusCode::ACCEPTED, "{\"status\":\"hanging up\"}\n".into()),
        _ => json_error(StatusCode::NOT_FOUND, "no such call in progress"),
    }
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], s.metrics.render())
}

/// 200 while taking calls (`status` ok, or `degraded` when an account is not registered),
/// 503 while draining; the body lists each account's registration.
async fn healthz(State(s): State<HttpState>) -> impl IntoResponse {
    let active = s.metrics.active_calls.get();
    let accounts = super::accounts_json(&s.accounts);
    let unregistered =
        accounts.as_object().is_some_and(|m| m.values().any(|a| a["state"] != "registered" && a["state"] != "idle"));
    let (code, status) = match (s.draining.load(Ordering::Relaxed), unregistered) {
        (true, _) => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
        (false, true) => (StatusCode::OK, "degraded"),
        (false, false) => (StatusCode::OK, "ok"),
    };
    let body = serde_json::json!({ "status": status, "active_calls": active, "accounts": accounts });
    (code, format!("{body}\n"))
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
