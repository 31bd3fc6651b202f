//! `ledger`: the failover bench's client. Wiring only; see the modules and `hack/bench-failover`.

mod conn;
mod control;
mod gaps;
mod roles;
mod target;
mod verify;
mod write;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use target::Target;

/// Writes unique keys to Redis and records which were acknowledged and how long writes
/// stalled (`write`), reads them back (`verify`), or polls `ROLE` on a set of pods (`roles`).
///
/// Aim it only at servers you run for the bench: it writes as fast as its flags allow.
/// `write` and `roles` read `mark <text>` and `stop` lines on stdin (SIGUSR1: a mark too);
/// `mark <event> start` ... `mark <event> end` frames an event that gets its own figures.
/// Every command prints one JSON object on stdout.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write keys for a fixed time over a fixed number of connections.
    Write(WriteArgs),
    /// Read back every key of a ledger and report the lost ones.
    Verify(VerifyArgs),
    /// Poll `ROLE` on every pod a command lists.
    Roles(RolesArgs),
}

/// Where to connect: `--addr`, `--target-cmd`, or both (the address is the fallback).
#[derive(Debug, Args)]
struct TargetArgs {
    /// `host:port` to connect to.
    #[arg(long, required_unless_present = "target_cmd")]
    addr: Option<String>,
    /// A shell command that prints `host:port` (first line), run again on reconnect, so the
    /// writer can follow a primary whose address changes.
    #[arg(long)]
    target_cmd: Option<String>,
    /// The command's answer is reused for this long, whichever connection asks.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    target_refresh_ms: u64,
}

impl TargetArgs {
    fn target(&self) -> Target {
        match &self.target_cmd {
            Some(cmd) => Target::command(
                cmd,
                self.addr.clone(),
                Duration::from_millis(self.target_refresh_ms),
            ),
            None => Target::fixed(self.addr.clone().expect("clap requires one of them")),
        }
    }
}

#[derive(Debug, Args)]
struct WriteArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Connections writing side by side.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32))]
    connections: u32,
    /// How long to write, in seconds (a `stop` line ends it sooner).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration_s: u64,
    /// Writes per second per connection, at most.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=2000))]
    rate: u32,
    /// `set`: variant A, acknowledged when SET returns OK; `wait`: variant B, only after
    /// `WAIT 1 <wait-timeout-ms>` returned at least 1.
    #[arg(long, value_enum, default_value = "set")]
    ack: write::Ack,
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    wait_timeout_ms: u64,
    /// Bound on a command (added to WAIT's own timeout).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    op_timeout_ms: u64,
    /// Bound on a connection attempt: a gone pod's address often answers nothing, and the
    /// next attempt may find the new one.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    connect_timeout_ms: u64,
    /// Pause after a failed connection or a broken one.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    reconnect_ms: u64,
    /// Gaps at least this long are listed one by one.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    gap_threshold_ms: u64,
    /// Writes that take at least this long are listed one by one (the `FAILOVER` pause shows
    /// as writes held that long).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    slow_ms: u64,
    /// The ledger: one acknowledged key a line, with when it was acknowledged.
    #[arg(long)]
    ledger: PathBuf,
    /// Key prefix; defaults to `ledger:<variant>:<unix ms>`, unique per run.
    #[arg(long)]
    prefix: Option<String>,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The ledger a `write` run produced.
    #[arg(long)]
    ledger: PathBuf,
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    op_timeout_ms: u64,
}

#[derive(Debug, Args)]
struct RolesArgs {
    /// A shell command printing one pod a line: `<name> <host:port>` or `<host:port>`.
    #[arg(long)]
    targets_cmd: String,
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    interval_ms: u64,
    /// How often the pod list is asked for again (sooner after a pod stopped answering).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    refresh_ms: u64,
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration_s: u64,
}

fn print(report: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(report)?);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Write(args) => {
            let variant = match args.ack {
                write::Ack::Set => "a",
                write::Ack::Wait => "b",
            };
            let prefix = args.prefix.unwrap_or_else(|| {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                format!("ledger:{variant}:{}", now.as_millis())
            });
            let options = write::WriteOptions {
                target: args.target.target(),
                connections: args.connections,
                duration: Duration::from_secs(args.duration_s),
                rate: args.rate,
                ack: args.ack,
                wait_timeout: Duration::from_millis(args.wait_timeout_ms),
                op_timeout: Duration::from_millis(args.op_timeout_ms),
                connect_timeout: Duration::from_millis(args.connect_timeout_ms),
                reconnect_delay: Duration::from_millis(args.reconnect_ms),
                ledger: args.ledger,
                prefix,
                gap_threshold: Duration::from_millis(args.gap_threshold_ms),
                slow_threshold: Duration::from_millis(args.slow_ms),
            };
            let report = write::run(options, control::listen()).await?;
            print(&report)
        }
        Command::Verify(args) => {
            let addr = args
                .target
                .target()
                .resolve()
                .await
                .context("no address to verify against")?;
            let timeout = Duration::from_millis(args.op_timeout_ms);
            let report = verify::run(&args.ledger, &addr, timeout).await?;
            print(&report)
        }
        Command::Roles(args) => {
            let options = roles::RolesOptions {
                targets_cmd: args.targets_cmd,
                interval: Duration::from_millis(args.interval_ms),
                refresh: Duration::from_millis(args.refresh_ms),
                duration: Duration::from_secs(args.duration_s),
            };
            let report = roles::run(options, control::listen()).await;
            print(&report)
        }
    }
}
