//! `redis-operator`: the operator binary. Parses flags and hands over to the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use redis_operator::actors::instance::Timings;
use redis_operator::instance_logs;
use redis_operator::leader::LeaseConfig;
use redis_operator::limiter::Limits;
use redis_operator::run::{Options, run};
use redis_operator::telemetry::{self, LogFormat};

/// Runs Redis servers declared as RedisInstance resources (redis.github.com/v1) and restarts
/// them safely when their config changes.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: watch RedisInstances and keep their ConfigMap, Service and StatefulSet
    /// in line with the spec; restart pods when the rendered redis.conf's hash changes.
    Run(RunArgs),
    /// Print the RedisInstance CustomResourceDefinition as YAML (what deploy/base/crd.yaml holds).
    Crd,
    /// Print one instance's story: the operator's lines about it, interleaved with its Redis
    /// pods' own logs, each line tagged with its source. In a cluster, first run
    /// `kubectl -n redis-operator port-forward deploy/redis-operator 8081`.
    Logs(LogsArgs),
    /// Preview what applying a RedisInstance would do, without writing anything: refused (and
    /// why), nothing, a live CONFIG SET (which directives), or a restart (which directives
    /// force it, and the strategy). Exits 1 when the spec would be refused.
    Diff(DiffArgs),
}

#[derive(clap::Args)]
struct DiffArgs {
    /// The RedisInstance manifest to preview.
    #[arg(short = 'f', long = "filename")]
    file: Option<PathBuf>,
    /// Namespace (default: the manifest's, else the kubeconfig context's).
    #[arg(short, long)]
    namespace: Option<String>,
    /// Preview the live object of this name instead of a file (what the operator would do
    /// now, for example while paused).
    #[arg(long)]
    name: Option<String>,
    /// Kubeconfig (default: in-cluster, $KUBECONFIG, ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

#[derive(clap::Args)]
struct LogsArgs {
    /// The RedisInstance, as NAMESPACE/NAME.
    #[arg(value_parser = instance_logs::parse_target)]
    target: (String, String),
    /// Keep printing new lines until the instance is deleted or the operator stops.
    #[arg(short, long)]
    follow: bool,
    /// Only lines of the last DURATION (30s, 5m, 2h, 1d).
    #[arg(long, value_parser = instance_logs::parse_duration)]
    since: Option<Duration>,
    /// The operator's debug address (its --debug-addr, reached through a port-forward).
    #[arg(long, default_value = "127.0.0.1:8081")]
    addr: String,
    /// Only the operator's lines, not the pods' logs.
    #[arg(long)]
    no_pods: bool,
    /// Kubeconfig for reading the pods' logs (default: in-cluster, $KUBECONFIG, ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Address for /instances and /logs, which show every instance's state and log lines:
    /// loopback only (reach it with `kubectl port-forward`); any other address is refused.
    #[arg(long, env = "DEBUG_ADDR", default_value = "127.0.0.1:8081")]
    debug_addr: SocketAddr,
    /// Kubeconfig file (default: in-cluster config, else $KUBECONFIG, else ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Log format: json (one object per line, for log pipelines) or text.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
    /// Log level (error, warn, info, debug, trace), or filter directives such as
    /// `info,redis_operator=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log_level: String,
    /// Seconds a restart may take, from its start as recorded in status, before it counts as
    /// failing: a RolloutStuck Event is posted, pods stuck on an older revision are replaced,
    /// and a newer config may replace its target.
    #[arg(long, default_value_t = 300)]
    progress_deadline: u64,
    /// Seconds a restart that follows another waits for the spec to stop changing, so that a
    /// storm of edits costs at most two restarts.
    #[arg(long, default_value_t = 5)]
    settle_seconds: u64,
    /// Seconds between checks, with `CONFIG GET`, that the pods of a `configUpdate: Live`
    /// instance still run its live directives; drift found is set back.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    live_check_seconds: u64,
    /// Milliseconds an EndpointSlice change takes to reach every node's service proxy
    /// (kube-proxy applies changes at most once per its --*-min-sync-period, 1 s by default).
    /// Before a switchover the new primary joins the `<name>` Service this long ahead of
    /// `FAILOVER`, so that clients reach it as soon as it takes the role; 0 for a proxy that
    /// applies changes at once.
    #[arg(long, default_value_t = 1200)]
    route_settle_ms: u64,
    /// Seconds an instance stays converged with nothing pending before its actor hibernates
    /// (stops, keeping its status, metrics and logs), to save memory with many instances; the
    /// next event for the instance starts it again. 0: never.
    #[arg(long, default_value_t = 300)]
    hibernate_after_seconds: u64,
    /// Sustained API writes per second, shared by all instances (reads come from watch caches).
    #[arg(long, default_value_t = 200.0)]
    api_qps: f64,
    /// API writes allowed in a burst after a quiet period.
    #[arg(long, default_value_t = 1000)]
    api_burst: u32,
    /// API writes in flight at once.
    #[arg(long, default_value_t = 32)]
    api_concurrency: usize,
    /// Instance steps (read the caches, decide, write) running at once; the other instances
    /// wait their turn holding nothing, which bounds memory when thousands start together.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    max_concurrent_steps: u64,
    /// Checks of pods' Redis running at once, across instances: the live config checks of
    /// `configUpdate: Live` instances and the served-certificate checks of TLS instances. Each
    /// waits for a pod at most its dial timeouts (3 s to connect, 5 s to answer).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    max_concurrent_pod_checks: u64,
    /// Act only while holding a coordination.k8s.io Lease, so that of several replicas (or a
    /// second install by mistake) exactly one acts; the others stand by and take over when it
    /// stops renewing. `--leader-elect=false` acts without one.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true",
        action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "redis-operator")]
    lease_name: String,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else --namespace, else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Seconds a Lease hold lasts without renewal; a standby takes over after that.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            print!(
                "{}",
                serde_yaml::to_string(&redis_operator::crd::definition())
                    .context("serializing the CRD")?
            );
            Ok(())
        }
        Command::Logs(args) => {
            let (namespace, name) = args.target;
            instance_logs::print(instance_logs::LogsRequest {
                namespace,
                name,
                follow: args.follow,
                since: args.since,
                addr: args.addr,
                pods: !args.no_pods,
                kubeconfig: args.kubeconfig,
            })
            .await
            .context("redis-operator logs failed")
        }
        Command::Diff(args) => {
            let code = redis_operator::preview::diff(redis_operator::preview::DiffRequest {
                file: args.file,
                namespace: args.namespace,
                name: args.name,
                kubeconfig: args.kubeconfig,
            })
            .await
            .context("redis-operator diff failed")?;
            std::process::exit(code);
        }
        Command::Run(args) => {
            let logs = telemetry::init(args.log_format, &args.log_level)?;
            let timings = Timings {
                progress_deadline: Duration::from_secs(args.progress_deadline),
                settle: Duration::from_secs(args.settle_seconds),
                live_check: Duration::from_secs(args.live_check_seconds),
                route_settle: Duration::from_millis(args.route_settle_ms),
                hibernate_after: (args.hibernate_after_seconds > 0)
                    .then(|| Duration::from_secs(args.hibernate_after_seconds)),
                ..Timings::default()
            };
            let limits = Limits {
                qps: args.api_qps,
                burst: args.api_burst,
                concurrency: args.api_concurrency,
                steps: usize::try_from(args.max_concurrent_steps).unwrap_or(usize::MAX),
                pod_checks: usize::try_from(args.max_concurrent_pod_checks).unwrap_or(usize::MAX),
            };
            let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| "redis-operator".into());
                format!("{host}-{}", std::process::id())
            });
            let lease = args.leader_elect.then(|| LeaseConfig {
                name: args.lease_name.clone(),
                namespace: args
                    .lease_namespace
                    .clone()
                    .or_else(|| args.namespace.clone())
                    .unwrap_or_else(|| "default".into()),
                identity,
                duration: Duration::from_secs(args.lease_duration.max(2)),
                renew_every: Duration::from_secs((args.lease_duration / 3).max(1)),
                retry_every: Duration::from_secs(2),
            });
            run(Options {
                lease,
                kubeconfig: args.kubeconfig,
                namespace: args.namespace,
                metrics_addr: args.metrics_addr,
                debug_addr: args.debug_addr,
                timings,
                limits,
                logs,
            })
            .await
            .context("redis-operator failed")
        }
    }
}
