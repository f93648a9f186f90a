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
}

pub fn router(state: HttpState) -> Router {
    Router::new().route("/metrics", get(metrics)).route("/healthz", get(healthz)).with_state(state)
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], s.metrics.render())
}

async fn healthz(State(s): State<HttpState>) -> impl IntoResponse {
    let active = s.metrics.active_calls.get();
    if s.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, format!("{{\"status\":\"draining\",\"active_calls\":{active}}}\n"))
    } else {
        (StatusCode::OK, format!("{{\"status\":\"ok\",\"active_calls\":{active}}}\n"))
    }
}

pub async fn serve(listener: tokio::net::TcpListener, state: HttpState, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
