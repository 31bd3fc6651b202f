//! HTTP endpoints: `/metrics` for Prometheus, `/healthz` and `/readyz` for the kubelet, and, on a
//! loopback-only listener, `/instances` and `/logs/{namespace}/{name}` for a person debugging.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use k8s_openapi::jiff::Timestamp;
use ractor::{ActorCell, ActorRef, ActorStatus};
use tokio::sync::{broadcast, watch};

use crate::actors::instance::{InstanceSnapshot, Snapshots};
use crate::actors::metrics::{InstanceKey, MetricsMsg};
use crate::health::Health;
use crate::telemetry::LogBuffers;

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
    /// `/instances` and `/logs` show every instance's state and log lines, so they are served
    /// only where nothing from the pod network reaches them (`kubectl port-forward` does).
    #[error(
        "--debug-addr {0} is not a loopback address; /instances and /logs are served on loopback only"
    )]
    DebugNotLoopback(SocketAddr),
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
    /// Each instance's recent log lines.
    pub logs: LogBuffers,
    /// Turns true at shutdown, so followed log streams end and the server can stop.
    pub stopping: watch::Receiver<bool>,
}

/// What Prometheus and the kubelet reach over the pod network; separate from binding so tests
/// can drive it.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// What only a caller on the operator's own loopback reaches: every instance's state and log
/// lines, which are not for anyone who can reach the pod.
pub fn debug_router(state: HttpState) -> Router {
    Router::new()
        .route("/instances", get(instances))
        .route("/logs/{namespace}/{name}", get(logs))
        .with_state(state)
}

/// Where the two routers listen.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    /// `/metrics`, `/healthz`, `/readyz`.
    pub metrics: SocketAddr,
    /// `/instances`, `/logs`; must be a loopback address.
    pub debug: SocketAddr,
}

/// Serves both listeners until `state.stopping` turns true.
pub async fn serve(addrs: Addrs, state: HttpState) -> Result<(), Error> {
    if !addrs.debug.ip().is_loopback() {
        return Err(Error::DebugNotLoopback(addrs.debug));
    }
    let public = bind(addrs.metrics).await?;
    let debug = bind(addrs.debug).await?;
    // With port 0 the OS picks one; say which.
    let bound = public.local_addr().unwrap_or(addrs.metrics);
    tracing::info!(addr = %bound, "serving /metrics, /healthz, /readyz");
    let debug_bound = debug.local_addr().unwrap_or(addrs.debug);
    tracing::info!(debug_addr = %debug_bound, "serving /instances, /logs on loopback only");
    let until_stopping = |mut stopping: watch::Receiver<bool>| async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    let public = axum::serve(public, router(state.clone()))
        .with_graceful_shutdown(until_stopping(state.stopping.clone()));
    let debug = axum::serve(debug, debug_router(state.clone()))
        .with_graceful_shutdown(until_stopping(state.stopping.clone()));
    let (public, debug) = tokio::join!(public.into_future(), debug.into_future());
    public.and(debug).map_err(Error::Serve)
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

async fn metrics(State(state): State<HttpState>) -> Response {
    match ractor::call_t!(state.metrics, MetricsMsg::Render, 2000) {
        Ok(Ok(text)) => {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
        }
        Ok(Err(why)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{why}\n")).into_response(),
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
        // Still starting counts as alive; only an actor on its way out is dead.
        .filter(|cell| {
            matches!(
                cell.get_status(),
                ActorStatus::Draining | ActorStatus::Stopping | ActorStatus::Stopped
            )
        })
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

/// What `/logs/{namespace}/{name}` accepts.
#[derive(Debug, serde::Deserialize)]
pub struct LogQuery {
    /// Keep the response open and send each new line as it is written.
    #[serde(default)]
    follow: bool,
    /// Only lines written in the last this many seconds.
    since_seconds: Option<u64>,
}

/// One instance's recent lines as JSON lines; 404 once the instance is deleted.
async fn logs(
    State(state): State<HttpState>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Response {
    let key = InstanceKey { namespace, name };
    let Some(ring) = state.logs.ring(&key) else {
        return (
            StatusCode::NOT_FOUND,
            format!(
                "no RedisInstance {key} is known to the operator (deleted, or never created)\n"
            ),
        )
            .into_response();
    };
    let since = query
        .since_seconds
        .map(|s| Timestamp::now() - Duration::from_secs(s));
    let (kept, receiver) = ring.read(since);
    // The ring is held only by the buffers: when the instance is deleted, the stream ends.
    drop(ring);
    let mut body: String = kept.iter().map(|line| format!("{line}\n")).collect();
    if !query.follow {
        return ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response();
    }
    let backlog = futures::stream::once(async move {
        Ok::<_, std::convert::Infallible>(std::mem::take(&mut body))
    });
    let live = futures::stream::unfold(
        (receiver, state.stopping),
        |(mut receiver, mut stopping)| async move {
            let line = tokio::select! {
                line = receiver.recv() => line,
                _ = stopping.wait_for(|stop| *stop) => return None,
            };
            let text = match line {
                Ok(line) => format!("{line}\n"),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    format!("{{\"message\":\"{missed} lines skipped: the reader was too slow\"}}\n")
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((Ok(text), (receiver, stopping)))
        },
    );
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(futures::StreamExt::chain(backlog, live)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use axum::http::Request;
    use ractor::Actor;
    use tower::ServiceExt;

    use super::*;
    use crate::actors::metrics::MetricsActor;

    async fn state() -> (HttpState, ActorRef<MetricsMsg>, watch::Sender<bool>) {
        let (metrics, _) = Actor::spawn(None, MetricsActor, prometheus::Registry::new())
            .await
            .unwrap();
        let (stop, stopping) = watch::channel(false);
        let state = HttpState {
            metrics: metrics.clone(),
            snapshots: Snapshots::default(),
            health: Arc::new(Health::default()),
            vital: Arc::new(Mutex::new(vec![metrics.get_cell()])),
            logs: LogBuffers::default(),
            stopping,
        };
        (state, metrics, stop)
    }

    async fn get(state: &HttpState, path: &str) -> (StatusCode, String) {
        let router = if path.starts_with("/logs") || path.starts_with("/instances") {
            debug_router(state.clone())
        } else {
            router(state.clone())
        };
        let response = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn healthz_fails_once_a_vital_actor_is_dead() {
        let (state, metrics, _stop) = state().await;
        assert_eq!(
            get(&state, "/healthz").await,
            (StatusCode::OK, "ok\n".into())
        );
        metrics.stop(None);
        tokio::time::timeout(Duration::from_secs(5), async {
            while metrics.get_status() != ActorStatus::Stopped {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        let (status, body) = get(&state, "/healthz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("actors not running"), "{body}");
        let (status, body) = get(&state, "/metrics").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }

    #[tokio::test]
    async fn readyz_waits_for_the_caches_and_logs_serve_only_known_instances() {
        let (state, _metrics, _stop) = state().await;
        assert_eq!(
            get(&state, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.health.set_synced();
        assert_eq!(get(&state, "/readyz").await.0, StatusCode::OK);

        let (status, body) = get(&state, "/logs/ns/gone").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let key = InstanceKey {
            namespace: "ns".into(),
            name: "r".into(),
        };
        state.logs.open(&key);
        assert_eq!(
            get(&state, "/logs/ns/r").await,
            (StatusCode::OK, String::new())
        );
    }

    #[tokio::test]
    async fn a_followed_log_stream_ends_at_shutdown() {
        let (state, _metrics, stop) = state().await;
        let key = InstanceKey {
            namespace: "ns".into(),
            name: "r".into(),
        };
        state.logs.open(&key);
        let response = debug_router(state.clone())
            .oneshot(
                Request::get("/logs/ns/r?follow=true")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        stop.send(true).unwrap();
        let body = tokio::time::timeout(
            Duration::from_secs(5),
            to_bytes(response.into_body(), 1 << 20),
        )
        .await
        .expect("the stream ends at shutdown")
        .unwrap();
        assert!(body.is_empty());
    }

    #[tokio::test]
    async fn the_public_router_serves_no_instance_state_or_logs() {
        let (state, _metrics, _stop) = state().await;
        let key = InstanceKey {
            namespace: "ns".into(),
            name: "r".into(),
        };
        state.logs.open(&key);
        for path in ["/logs/ns/r", "/instances"] {
            let response = router(state.clone())
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(get(&state, path).await.0, StatusCode::OK, "{path}");
        }
        assert_eq!(get(&state, "/metrics").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_debug_address_off_loopback_is_refused() {
        let (state, _metrics, _stop) = state().await;
        for debug in ["0.0.0.0:0", "10.0.0.1:8081", "[::]:0"] {
            let addrs = Addrs {
                metrics: "127.0.0.1:0".parse().unwrap(),
                debug: debug.parse().unwrap(),
            };
            let err = serve(addrs, state.clone()).await.unwrap_err();
            assert!(matches!(err, Error::DebugNotLoopback(_)), "{debug}: {err}");
        }
    }
}
