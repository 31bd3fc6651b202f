//! HTTP endpoints: `/metrics` for Prometheus, `/healthz` and `/readyz` for the kubelet,
//! `/instances` for a person debugging.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use ractor::{ActorCell, ActorRef, ActorStatus};

use crate::actors::instance::{InstanceSnapshot, Snapshots};
use crate::actors::metrics::MetricsMsg;
use crate::health::Health;

/// Failures of the HTTP server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address could not be bound.
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The server stopped with an error.
    #[error("failed to serve http: {0}")]
    Serve(#[source] std::io::Error),
}

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// Renders `/metrics`.
    pub metrics: ActorRef<MetricsMsg>,
    /// Read by `/instances`.
    pub snapshots: Snapshots,
    /// Caches synced, watches failing.
    pub health: Arc<Health>,
    /// The actors whose death makes the operator unhealthy (the supervisor joins on leadership).
    pub vital: Arc<Mutex<Vec<ActorCell>>>,
}

/// The router, separate from binding so tests can drive it.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/instances", get(instances))
        .with_state(state)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    // With port 0 the OS picks one; say which.
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, "serving /metrics, /healthz, /readyz, /instances");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(Error::Serve)
}

async fn metrics(State(state): State<HttpState>) -> Response {
    match ractor::call_t!(state.metrics, MetricsMsg::Render, 2000) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("metrics unavailable: {err}\n"),
        )
            .into_response(),
    }
}

/// How long a watch may fail before the operator counts as dead and wants a restart.
const WATCH_FAILURE_LIMIT: Duration = Duration::from_secs(120);

fn verdict(result: Result<String, String>) -> Response {
    match result {
        Ok(what) => format!("{what}\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn readyz(State(state): State<HttpState>) -> Response {
    verdict(state.health.readiness())
}

async fn healthz(State(state): State<HttpState>) -> Response {
    let vital = state.vital.lock().expect("vital lock").clone();
    let dead: Vec<_> = vital
        .iter()
        .filter(|cell| cell.get_status() != ActorStatus::Running)
        .map(|cell| cell.get_name().unwrap_or_else(|| cell.get_id().to_string()))
        .collect();
    if !dead.is_empty() {
        return verdict(Err(format!("actors not running: {}", dead.join(", "))));
    }
    verdict(
        state
            .health
            .liveness(WATCH_FAILURE_LIMIT)
            .map(|()| "ok".into()),
    )
}

async fn instances(State(state): State<HttpState>) -> Json<BTreeMap<String, InstanceSnapshot>> {
    Json(
        state
            .snapshots
            .iter()
            .map(|entry| (entry.key().to_string(), entry.value().clone()))
            .collect(),
    )
}
