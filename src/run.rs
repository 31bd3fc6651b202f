//! Wires the operator together: client, actors, HTTP server, and shutdown on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::Reporter;
use kube::{Api, Client, Config};
use ractor::Actor;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::actors::instance::Timings;
use crate::actors::metrics::MetricsActor;
use crate::actors::supervisor::{SupervisorActor, SupervisorArgs, SupervisorMsg};
use crate::api_traffic::ApiTraffic;
use crate::crd::RedisInstance;
use crate::health::Health;
use crate::http::{self, HttpState};
use crate::leader::{self, Elector, Fence, LeaseConfig};
use crate::limiter::{Limiter, Limits};
use crate::telemetry::LogBuffers;

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
        "cannot list RedisInstances ({0}); is deploy/base/crd.yaml applied and the API server reachable?"
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
    /// Another operator took the leader Lease.
    #[error("lost the leader lease to {0}")]
    LostLease(String),
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
    /// Where `/instances` and `/logs` are served; loopback only.
    pub debug_addr: SocketAddr,
    /// Deadlines and backoff of the instance actors.
    pub timings: Timings,
    /// Bounds on the operator's API writes.
    pub limits: Limits,
    /// The leader-election Lease; `None` acts without one.
    pub lease: Option<LeaseConfig>,
    /// Filled by the log subscriber; served on `/logs`.
    pub logs: LogBuffers,
}

/// `redis-operator/<version>`, sent on every request.
pub const USER_AGENT: &str = concat!("redis-operator/", env!("CARGO_PKG_VERSION"));

/// The client config from `kubeconfig`, else in-cluster, `$KUBECONFIG` or `~/.kube/config`,
/// with the operator's User-Agent so the API server's audit log and metrics tell its requests
/// apart. Shared by `run` and `logs`.
pub async fn client_config(kubeconfig: Option<&PathBuf>) -> Result<Config, String> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| e.to_string())?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| e.to_string())?
        }
        None => Config::infer().await.map_err(|e| e.to_string())?,
    };
    config.headers.push((
        ::http::header::USER_AGENT,
        ::http::HeaderValue::from_static(USER_AGENT),
    ));
    Ok(config)
}

/// The User-Agent of a replica under leader election: [`USER_AGENT`] and the replica's
/// identity in the Lease, so the audit log tells which of two replicas sent a request.
pub fn user_agent(identity: &str) -> String {
    format!("{USER_AGENT} ({identity})")
}

/// A client whose requests each give up after `timeout`, when given (the watches' client has
/// none: a watch is a request that lasts minutes), sent as the replica `identity` if given.
async fn new_client(
    kubeconfig: Option<&PathBuf>,
    traffic: &ApiTraffic,
    timeout: Option<std::time::Duration>,
    identity: Option<&str>,
) -> Result<Client, Error> {
    let mut config = client_config(kubeconfig).await.map_err(Error::Config)?;
    if let Some(identity) = identity {
        send_as(&mut config, identity);
    }
    client_with(config, traffic, timeout)
}

/// Makes `config`'s requests carry the User-Agent of the replica `identity`. An identity that
/// is no valid header value (a pod or host name always is) leaves the plain one.
fn send_as(config: &mut Config, identity: &str) {
    if let Ok(agent) = ::http::HeaderValue::from_str(&user_agent(identity)) {
        config
            .headers
            .retain(|(name, _)| name != ::http::header::USER_AGENT);
        config.headers.push((::http::header::USER_AGENT, agent));
    }
}

/// [`new_client`] from `config`. The connection's timeouts each bound one step (connecting,
/// one read, one write) and start again with the next; the request as a whole, from its first
/// byte sent to the response's headers, is bounded too, or a server answering a byte at a time
/// could hold a write past the fence.
fn client_with(
    mut config: Config,
    traffic: &ApiTraffic,
    timeout: Option<std::time::Duration>,
) -> Result<Client, Error> {
    if let Some(timeout) = timeout {
        config.connect_timeout = Some(timeout);
        config.read_timeout = Some(timeout);
        config.write_timeout = Some(timeout);
    }
    let builder = kube::client::ClientBuilder::try_from(config)
        .map_err(Error::Client)?
        .with_layer(traffic);
    Ok(match timeout {
        Some(timeout) => builder
            .with_layer(&tower::timeout::TimeoutLayer::new(timeout))
            .build(),
        None => builder.build(),
    })
}

/// Why the operator stops.
enum Outcome {
    /// SIGTERM or SIGINT.
    Signal(&'static str),
    /// The HTTP server ended (it failed to bind, say).
    Server(Result<Result<(), http::Error>, tokio::task::JoinError>),
    /// The supervisor actor ended on its own.
    SupervisorDied,
    /// Another operator holds the Lease now.
    LostLease(String),
}

/// Runs until SIGTERM or SIGINT, then lets every instance actor finish its current step. With
/// leader election, waits for the Lease first, and stops at once if it is lost.
pub async fn run(options: Options) -> Result<(), Error> {
    let registry = prometheus::Registry::new();
    let traffic = ApiTraffic::register(&registry).map_err(Error::Metrics)?;
    let identity = options.lease.as_ref().map(|lease| lease.identity.as_str());
    let client = new_client(options.kubeconfig.as_ref(), &traffic, None, identity).await?;
    // Under leader election every write must land or fail within the fence's margin, so a
    // deposed leader's request cannot arrive after a standby has taken over.
    let write_timeout = options
        .lease
        .as_ref()
        .map(|lease| leader::request_timeout(lease.duration));
    let writer = new_client(
        options.kubeconfig.as_ref(),
        &traffic,
        write_timeout,
        identity,
    )
    .await?;
    let probe: Api<RedisInstance> = match &options.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    probe
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(Error::Crd)?;

    let leader_gauge = prometheus::IntGauge::new(
        "redis_operator_leader",
        "1 while this replica holds the leader Lease and acts on instances, else 0",
    )
    .map_err(Error::Metrics)?;
    registry
        .register(Box::new(leader_gauge.clone()))
        .map_err(Error::Metrics)?;
    let (metrics, metrics_handle) = Actor::spawn(Some("metrics".into()), MetricsActor, registry)
        .await
        .map_err(|e| Error::Spawn("metrics", e))?;
    let snapshots = Arc::new(DashMap::new());
    let health = Arc::new(Health::default());
    let reporter = Reporter {
        controller: "redis-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let vital = Arc::new(Mutex::new(vec![metrics.get_cell()]));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut server = tokio::spawn(http::serve(
        http::Addrs {
            metrics: options.metrics_addr,
            debug: options.debug_addr,
        },
        HttpState {
            metrics: metrics.clone(),
            snapshots: snapshots.clone(),
            health: health.clone(),
            vital: vital.clone(),
            logs: options.logs.clone(),
            stopping: stop_rx.clone(),
        },
    ));
    info!(namespace = options.namespace.as_deref().unwrap_or("*"), metrics_addr = %options.metrics_addr,
        leader_election = options.lease.is_some(), "redis-operator started");
    let mut signal = std::pin::pin!(shutdown_signal());

    let (fence, mut elector) = match &options.lease {
        Some(config) => (
            Arc::new(Fence::closed()),
            Some(Elector::new(
                writer.clone(),
                config.clone(),
                reporter.clone(),
            )),
        ),
        None => (Arc::new(Fence::open()), None),
    };
    // A standby starts its watches at once, so that when it takes over its caches are warm
    // and it acts without waiting for a full relist; it starts no instance actor until then.
    let (actor, mut handle) = Actor::spawn(
        Some("supervisor".into()),
        SupervisorActor,
        SupervisorArgs {
            client,
            writer,
            namespace: options.namespace.clone(),
            metrics: metrics.clone(),
            snapshots,
            timings: options.timings,
            health: health.clone(),
            reporter,
            limiter: Limiter::new(options.limits, fence.clone())
                .with_pod_write_timeout(write_timeout),
            regained: fence.regained(),
            traffic,
            logs: options.logs.clone(),
            leading: elector.is_none(),
        },
    )
    .await
    .map_err(|e| Error::Spawn("supervisor", e))?;
    vital.lock().expect("vital lock").push(actor.get_cell());
    let mut outcome = None;
    if let Some(elector) = elector.as_mut() {
        tokio::select! {
            _ = leader::acquire(elector, &fence, &health) => {
                let _ = actor.send_message(SupervisorMsg::Lead);
            }
            name = &mut signal => outcome = Some(Outcome::Signal(name)),
            result = &mut server => outcome = Some(Outcome::Server(result)),
            _ = &mut handle => outcome = Some(Outcome::SupervisorDied),
        }
    }
    if outcome.is_none() {
        leader_gauge.set(1);
        let lost = async {
            match elector.as_mut() {
                Some(elector) => leader::keep(elector, &fence, &health, &leader_gauge).await,
                None => std::future::pending().await,
            }
        };
        outcome = Some(tokio::select! {
            name = &mut signal => Outcome::Signal(name),
            result = &mut server => Outcome::Server(result),
            _ = &mut handle => Outcome::SupervisorDied,
            holder = lost => Outcome::LostLease(holder),
        });
    }
    let supervisor = Some((actor, handle));
    let outcome = outcome.expect("set on every path");
    match &outcome {
        Outcome::Signal(name) => {
            info!(
                signal = name,
                "shutting down: letting in-flight steps reach a safe point"
            )
        }
        Outcome::LostLease(holder) => {
            // The fence already refuses every write; the actors' steps end at once.
            error!(%holder, "lost the leader lease to another operator; stopping at once");
            leader_gauge.set(0);
        }
        Outcome::SupervisorDied => error!("the supervisor actor died"),
        Outcome::Server(_) => {}
    }
    let _ = stop_tx.send(true);
    if let Some((actor, handle)) = supervisor
        && !matches!(outcome, Outcome::SupervisorDied)
    {
        // The supervisor's post_stop waits for its children to finish their current step.
        actor.stop(Some("shutdown".into()));
        let _ = handle.await;
    }
    if let (Some(elector), Outcome::Signal(_)) = (elector.as_mut(), &outcome) {
        elector.release().await;
    }
    metrics.stop(None);
    let _ = metrics_handle.await;
    let server_result = match outcome {
        Outcome::Server(result) => result,
        Outcome::SupervisorDied => return Err(Error::SupervisorDied),
        Outcome::LostLease(holder) => return Err(Error::LostLease(holder)),
        Outcome::Signal(_) => server.await,
    };
    match server_result {
        Ok(result) => result?,
        Err(err) => warn!(error = %err, "http server task ended abnormally"),
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

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
