//! The operations HTTP port: /metrics (Prometheus text) and /healthz.

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
    pub accounts: crate::server::AccountStates,
}

pub fn router(state: HttpState) -> Router {
    Router::new().route("/metrics", get(metrics)).route("/healthz", get(healthz)).with_state(state)
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], s.metrics.render())
}

/// 200 while taking calls (`status` ok, or `degraded` when an account is not registered),
/// 503 while draining; the body lists each account's registration.
async fn healthz(State(s): State<HttpState>) -> impl IntoResponse {
    let active = s.metrics.active_calls.get();
    let accounts = crate::server::accounts_json(&s.accounts);
    let unregistered = accounts.as_object().is_some_and(|m| m.values().any(|a| a["state"] != "registered" && a["state"] != "idle"));
    let (code, status) = match (s.draining.load(Ordering::Relaxed), unregistered) {
        (true, _) => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
        (false, true) => (StatusCode::OK, "degraded"),
        (false, false) => (StatusCode::OK, "ok"),
    };
    let body = serde_json::json!({ "status": status, "active_calls": active, "accounts": accounts });
    (code, format!("{body}\n"))
}

pub async fn serve(listener: tokio::net::TcpListener, state: HttpState, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
