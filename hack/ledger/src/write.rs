//! The writer: unique keys over a fixed number of connections for a fixed time, each
//! acknowledged key appended to the ledger file, gaps tracked across all connections.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::Value;
use redis::aio::MultiplexedConnection;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;

use crate::conn::{self, Failure};
use crate::control::Control;
use crate::gaps::{GapReport, GapTracker};
use crate::target::Target;

/// Failures that end a run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ledger file could not be created or written.
    #[error("failed to write the ledger {0}: {1}")]
    Ledger(PathBuf, #[source] std::io::Error),
}

/// When a write counts as acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ack {
    /// Variant A: `SET` returned OK.
    Set,
    /// Variant B: `SET` returned OK and then `WAIT 1 <timeout>` on the same connection
    /// returned at least 1.
    Wait,
}

/// What to write, where, and for how long.
pub struct WriteOptions {
    pub target: Target,
    pub connections: u32,
    pub duration: Duration,
    /// Writes per second per connection, at most.
    pub rate: u32,
    pub ack: Ack,
    /// The timeout given to `WAIT`.
    pub wait_timeout: Duration,
    /// How long a command (on top of `WAIT`'s own timeout) may take.
    pub op_timeout: Duration,
    /// How long a connection attempt may take. Short: an address whose pod is gone often
    /// answers nothing at all, and the next attempt may find the new address.
    pub connect_timeout: Duration,
    pub reconnect_delay: Duration,
    pub ledger: PathBuf,
    /// Keys are `<prefix>:<connection>:<sequence>`; their value is the key itself.
    pub prefix: String,
    pub gap_threshold: Duration,
    /// Writes that took at least this long (from sending `SET` to its reply, or to giving up)
    /// are listed one by one.
    pub slow_threshold: Duration,
}

/// A write that took at least the slow threshold: one held in a `FAILOVER`'s pause shows here,
/// answered (`ok`, or `readonly` once the primary became a replica) after the pause.
#[derive(Debug, Clone, Serialize)]
pub struct SlowWrite {
    pub start_ms: f64,
    pub ms: f64,
    /// `ok`, or the failure's label (`readonly`, `io`, `timeout`, ...).
    pub outcome: &'static str,
}

/// An address a connection was opened to, first seen at `at_ms`.
#[derive(Debug, Clone, Serialize)]
pub struct TargetSeen {
    pub at_ms: f64,
    pub addr: String,
}

/// The JSON the `write` command prints.
#[derive(Debug, Serialize)]
pub struct WriteReport {
    pub variant: &'static str,
    pub ack: Ack,
    pub prefix: String,
    pub ledger: PathBuf,
    pub connections: u32,
    /// Wall clock at the run's start; every `*_ms` field counts from there.
    pub started_unix_ms: u128,
    pub ran_ms: f64,
    pub connects: u64,
    pub targets: Vec<TargetSeen>,
    pub slow_threshold_ms: f64,
    /// Every write that took at least `slow_threshold_ms`, in the order they ended.
    pub slow_writes: Vec<SlowWrite>,
    #[serde(flatten)]
    pub gaps: GapReport,
}

/// State every connection updates, behind one lock so gaps see acks in time order.
struct Shared {
    start: Instant,
    inner: Mutex<Inner>,
}

struct Inner {
    tracker: GapTracker,
    ledger: BufWriter<File>,
    ledger_error: Option<std::io::Error>,
    connects: u64,
    targets: Vec<TargetSeen>,
    slow_writes: Vec<SlowWrite>,
}

impl Shared {
    fn now_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ack(&self, key: &str) {
        let mut inner = self.lock();
        let now = self.now_ms();
        inner.tracker.ack(now);
        if inner.ledger_error.is_none()
            && let Err(e) = writeln!(inner.ledger, "{key}\t{now:.1}")
        {
            inner.ledger_error = Some(e);
        }
    }

    fn fail(&self, failure: Failure) {
        let mut inner = self.lock();
        let now = self.now_ms();
        inner.tracker.fail(now, failure.label());
    }

    fn took(&self, start_ms: f64, outcome: &'static str, slow_ms: f64) {
        let ms = self.now_ms() - start_ms;
        if ms >= slow_ms {
            self.lock().slow_writes.push(SlowWrite {
                start_ms,
                ms,
                outcome,
            });
        }
    }

    fn connected(&self, addr: &str) {
        let mut inner = self.lock();
        inner.connects += 1;
        if inner.targets.last().is_none_or(|t| t.addr != addr) {
            let at_ms = self.now_ms();
            inner.targets.push(TargetSeen {
                at_ms,
                addr: addr.to_owned(),
            });
        }
    }
}

/// Writes until the duration is over or a `stop` arrives, then reports.
pub async fn run(
    options: WriteOptions,
    mut controls: mpsc::UnboundedReceiver<Control>,
) -> Result<WriteReport, Error> {
    let file =
        File::create(&options.ledger).map_err(|e| Error::Ledger(options.ledger.clone(), e))?;
    let started_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let shared = Arc::new(Shared {
        start: Instant::now(),
        inner: Mutex::new(Inner {
            tracker: GapTracker::new(options.gap_threshold.as_secs_f64() * 1000.0),
            ledger: BufWriter::new(file),
            ledger_error: None,
            connects: 0,
            targets: Vec::new(),
            slow_writes: Vec::new(),
        }),
    });
    let options = Arc::new(options);
    let (stop_tx, stop_rx) = watch::channel(false);
    let tasks: Vec<_> = (0..options.connections)
        .map(|id| {
            tokio::spawn(connection_loop(
                id,
                shared.clone(),
                options.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();

    let deadline = tokio::time::sleep(options.duration);
    tokio::pin!(deadline);
    let mut controls_open = true;
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            control = controls.recv(), if controls_open => match control {
                Some(Control::Mark(text)) => {
                    let mut inner = shared.lock();
                    let now = shared.now_ms();
                    inner.tracker.mark(now, &text);
                }
                Some(Control::Stop) => break,
                None => controls_open = false,
            },
        }
    }
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }

    let now = shared.now_ms();
    let Ok(shared) = Arc::try_unwrap(shared) else {
        unreachable!("every connection task has ended");
    };
    let mut inner = shared.inner.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = inner.ledger_error.take() {
        return Err(Error::Ledger(options.ledger.clone(), e));
    }
    inner
        .ledger
        .flush()
        .map_err(|e| Error::Ledger(options.ledger.clone(), e))?;
    Ok(WriteReport {
        variant: match options.ack {
            Ack::Set => "A",
            Ack::Wait => "B",
        },
        ack: options.ack,
        prefix: options.prefix.clone(),
        ledger: options.ledger.clone(),
        connections: options.connections,
        started_unix_ms,
        ran_ms: now,
        connects: inner.connects,
        targets: inner.targets,
        slow_threshold_ms: options.slow_threshold.as_secs_f64() * 1000.0,
        slow_writes: inner.slow_writes,
        gaps: inner.tracker.finish(now),
    })
}

/// One connection's writes: a key per tick, reconnecting after any failure but a short `WAIT`.
async fn connection_loop(
    id: u32,
    shared: Arc<Shared>,
    options: Arc<WriteOptions>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / options.rate);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut connection: Option<MultiplexedConnection> = None;
    let mut sequence = 0u64;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        let open = match connection.as_mut() {
            Some(open) => open,
            None => match open(&shared, &options).await {
                Ok(open) => connection.insert(open),
                Err(failure) => {
                    shared.fail(failure);
                    pause(options.reconnect_delay, &mut stop).await;
                    continue;
                }
            },
        };
        sequence += 1;
        let key = format!("{}:{id}:{sequence}", options.prefix);
        let slow_ms = options.slow_threshold.as_secs_f64() * 1000.0;
        let start_ms = shared.now_ms();
        match write_one(open, &key, &options).await {
            Ok(()) => {
                shared.took(start_ms, "ok", slow_ms);
                shared.ack(&key);
            }
            Err(failure) => {
                shared.took(start_ms, failure.label(), slow_ms);
                shared.fail(failure);
                if !failure.keeps_connection() {
                    connection = None;
                    pause(options.reconnect_delay, &mut stop).await;
                }
            }
        }
    }
}

async fn open(shared: &Shared, options: &WriteOptions) -> Result<MultiplexedConnection, Failure> {
    let addr = options
        .target
        .resolve()
        .await
        .map_err(|_| Failure::NoTarget)?;
    let connection = conn::connect(&addr, options.connect_timeout).await?;
    shared.connected(&addr);
    Ok(connection)
}

async fn write_one(
    connection: &mut MultiplexedConnection,
    key: &str,
    options: &WriteOptions,
) -> Result<(), Failure> {
    let reply: Value = conn::query(
        connection,
        redis::cmd("SET").arg(key).arg(key),
        options.op_timeout,
    )
    .await?;
    if reply != Value::Okay {
        return Err(Failure::Other);
    }
    if options.ack == Ack::Wait {
        let wait_ms = options.wait_timeout.as_millis() as u64;
        let replicas: i64 = conn::query(
            connection,
            redis::cmd("WAIT").arg(1).arg(wait_ms),
            options.wait_timeout + options.op_timeout,
        )
        .await?;
        if replicas < 1 {
            return Err(Failure::Wait);
        }
    }
    Ok(())
}

/// Sleeps, unless the run stops first.
async fn pause(delay: Duration, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = stop.changed() => {}
    }
}
