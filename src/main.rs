//! `redis-operator`: the operator binary. Parses flags and hands over to the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kube::CustomResourceExt;
use redis_operator::actors::instance::Timings;
use redis_operator::crd::RedisInstance;
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
    /// Print the RedisInstance CustomResourceDefinition as YAML (what deploy/crd.yaml holds).
    Crd,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address for /metrics, /healthz, /readyz and /instances.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Kubeconfig file (default: in-cluster config, else $KUBECONFIG, else ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Log format: json (one object per line, for log pipelines) or text.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
    /// Seconds a Recreate restart waits for the old StatefulSet and pods to vanish before it
    /// reports a RecreateTimeout Event (it keeps waiting).
    #[arg(long, default_value_t = 120)]
    recreate_timeout: u64,
    /// Seconds a rollout may take before a RolloutStuck Event is reported (it keeps waiting).
    #[arg(long, default_value_t = 300)]
    rollout_timeout: u64,
    /// Seconds between drift checks of an instance that is at rest.
    #[arg(long, default_value_t = 60)]
    resync: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            print!(
                "{}",
                serde_yaml::to_string(&RedisInstance::crd()).context("serializing the CRD")?
            );
            Ok(())
        }
        Command::Run(args) => {
            telemetry::init(args.log_format);
            let timings = Timings {
                recreate_timeout: Duration::from_secs(args.recreate_timeout),
                rollout_timeout: Duration::from_secs(args.rollout_timeout),
                resync: Duration::from_secs(args.resync),
                ..Timings::default()
            };
            run(Options {
                kubeconfig: args.kubeconfig,
                namespace: args.namespace,
                metrics_addr: args.metrics_addr,
                timings,
            })
            .await
            .context("redis-operator failed")
        }
    }
}
