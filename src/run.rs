//! Wires the operator together: client, actors, HTTP server, and shutdown on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use dashmap::DashMap;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::Reporter;
use kube::{Api, Client, Config};
use ractor::Actor;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::actors::instance::Timings;
use crate::actors::metrics::MetricsActor;
use crate::actors::supervisor::{SupervisorActor, SupervisorArgs};
use crate::crd::RedisInstance;
use crate::health::Health;
use crate::http::{self, HttpState};
use crate::limiter::{Limiter, Limits};

/// Failures that stop the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable kubeconfig or in-cluster config.
    #[error("failed to load Kubernetes client config: {0}")]
    Config(String),
    /// The client could not be built.
    #[error("failed to create Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The CRD is not installed or the API server is unreachable.
    #[error(
        "cannot list RedisInstances ({0}); is deploy/crd.yaml applied and the API server reachable?"
    )]
    Crd(#[source] kube::Error),
    /// An actor failed to start.
    #[error("failed to start the {0} actor: {1}")]
    Spawn(&'static str, #[source] ractor::SpawnErr),
    /// The HTTP server failed.
    #[error(transparent)]
    Http(#[from] http::Error),
    /// The supervisor actor ended on its own.
    #[error("the supervisor actor died; no instance would be acted on")]
    SupervisorDied,
    /// The metrics registry refused a family.
    #[error("failed to register metrics: {0}")]
    Metrics(#[source] prometheus::Error),
}

/// What `redis-operator run` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Kubeconfig path; in-cluster config or `KUBECONFIG` when `None`.
    pub kubeconfig: Option<PathBuf>,
    /// One namespace, or all.
    pub namespace: Option<String>,
    /// Where `/metrics`, `/healthz`, `/readyz` are served.
    pub metrics_addr: SocketAddr,
    /// Deadlines and backoff of the instance actors.
    pub timings: Timings,
    /// Bounds on the operator's API writes.
    pub limits: Limits,
}

/// `redis-operator/<version>`, sent on every request.
pub const USER_AGENT: &str = concat!("redis-operator/", env!("CARGO_PKG_VERSION"));

async fn client(kubeconfig: Option<&PathBuf>) -> Result<Client, Error> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|e| Error::Config(e.to_string()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Config(e.to_string()))?
        }
        None => Config::infer()
            .await
            .map_err(|e| Error::Config(e.to_string()))?,
    };
    let mut config = config;
    // Lets the API server's audit log and metrics tell the operator's requests apart.
    config.headers.push((
        ::http::header::USER_AGENT,
        ::http::HeaderValue::from_static(USER_AGENT),
    ));
    Client::try_from(config).map_err(Error::Client)
}

/// Runs until SIGTERM or SIGINT, then lets every instance actor finish its current step.
pub async fn run(options: Options) -> Result<(), Error> {
    let client = client(options.kubeconfig.as_ref()).await?;
    let probe: Api<RedisInstance> = match &options.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    probe
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(Error::Crd)?;

    let registry = prometheus::Registry::new();
    let (metrics, metrics_handle) = Actor::spawn(Some("metrics".into()), MetricsActor, registry)
        .await
        .map_err(|e| Error::Spawn("metrics", e))?;
    let snapshots = Arc::new(DashMap::new());
    let health = Arc::new(Health::default());
    let reporter = Reporter {
        controller: "redis-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let (supervisor, mut supervisor_handle) = Actor::spawn(
        Some("supervisor".into()),
        SupervisorActor,
        SupervisorArgs {
            client,
            namespace: options.namespace.clone(),
            metrics: metrics.clone(),
            snapshots: snapshots.clone(),
            timings: options.timings,
            health: health.clone(),
            reporter,
            limiter: Limiter::new(options.limits),
        },
    )
    .await
    .map_err(|e| Error::Spawn("supervisor", e))?;
    info!(namespace = options.namespace.as_deref().unwrap_or("*"), metrics_addr = %options.metrics_addr, "redis-operator started");

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let mut server = tokio::spawn(http::serve(
        options.metrics_addr,
        HttpState {
            metrics: metrics.clone(),
            snapshots,
            health,
            vital: vec![supervisor.get_cell(), metrics.get_cell()],
        },
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        },
    ));
    // A server that fails early (port taken) stops the operator too, and so does a supervisor
    // that died: nothing would act on instances any more.
    let mut supervisor_died = false;
    let early_exit = tokio::select! {
        signal = shutdown_signal() => {
            info!(signal, "shutting down: letting in-flight steps reach a safe point");
            None
        }
        result = &mut server => Some(result),
        _ = &mut supervisor_handle => {
            supervisor_died = true;
            None
        }
    };
    let _ = stop_tx.send(true);
    if !supervisor_died {
        // The supervisor's post_stop waits for its children to finish their current step.
        supervisor.stop(Some("shutdown".into()));
        let _ = supervisor_handle.await;
    }
    metrics.stop(None);
    let _ = metrics_handle.await;
    let server_result = match early_exit {
        Some(result) => result,
        None => server.await,
    };
    match server_result {
        Ok(result) => result?,
        Err(err) => warn!(error = %err, "http server task ended abnormally"),
    }
    if supervisor_died {
        return Err(Error::SupervisorDied);
    }
    info!("redis-operator stopped");
    Ok(())
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
